// The core's lock: std::mutex, with Abseil's thread-safety annotations so
// that clang's -Wthread-safety checks ABSL_GUARDED_BY as before.
//
// Why not absl::Mutex: Debian's Abseil is built with deadlock detection on
// (measured at 11-18% of the keyed signal path in engine_bench), and without
// ThreadSanitizer hooks, so a TSan build of presence could not see its locks.
// std::mutex is pthread's, which TSan understands.
#ifndef PRESENCE_SRC_MUTEX_H_
#define PRESENCE_SRC_MUTEX_H_

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace presence::internal {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { m_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { m_.unlock(); }

 private:
  std::mutex m_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

}  // namespace presence::internal

#endif  // PRESENCE_SRC_MUTEX_H_
