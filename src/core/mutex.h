// The core's lock: std::mutex, with Abseil's thread-safety annotations so
// that clang's -Wthread-safety checks ABSL_GUARDED_BY as before.
//
// Why not absl::Mutex: Debian's Abseil is built with deadlock detection on
// (measured at 11-18% of the keyed signal path in engine_bench), and without
// ThreadSanitizer hooks, so a TSan build of presence could not see its locks.
// std::mutex is pthread's, which TSan understands.
#ifndef PRESENCE_SRC_CORE_MUTEX_H_
#define PRESENCE_SRC_CORE_MUTEX_H_

#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace presence::internal {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { m_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { m_.unlock(); }

 private:
  friend class CondVar;
  std::mutex m_;
};

// A condition variable over Mutex.
class CondVar {
 public:
  // Releases *mu, waits until woken (SignalAll, or spuriously: wait in a
  // loop that tests the condition), and takes *mu again.
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->m_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
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

#endif  // PRESENCE_SRC_CORE_MUTEX_H_
