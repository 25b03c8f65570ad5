// A fixed set of client connections shared by the threads of one adapter
// (presence_redis, presence_postgres). A caller leases one for the length of
// a call; a connection found broken is dropped by its owner and reconnected
// on its next lease, so one server restart costs each connection one failed
// call at most.
#ifndef PRESENCE_ADAPTERS_COMMON_CONNECTION_POOL_H_
#define PRESENCE_ADAPTERS_COMMON_CONNECTION_POOL_H_

#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace presence::adapters {

template <typename Conn>
class ConnectionPool {
 public:
  explicit ConnectionPool(int size) {
    for (int i = 0; i < (size < 1 ? 1 : size); ++i) {
      all_.push_back(std::make_unique<Conn>());
      free_.push_back(all_.back().get());
    }
  }
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // One connection, for as long as the Lease lives.
  class Lease {
   public:
    Lease(ConnectionPool* pool, Conn* conn) : pool_(pool), conn_(conn) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { pool_->Release(conn_); }
    Conn* operator->() const { return conn_; }
    Conn& operator*() const { return *conn_; }

   private:
    ConnectionPool* pool_;
    Conn* conn_;
  };

  // Waits until a connection is free.
  Lease Acquire() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](std::vector<Conn*>* free) { return !free->empty(); }, &free_));
    Conn* c = free_.back();
    free_.pop_back();
    return Lease(this, c);
  }

 private:
  void Release(Conn* c) {
    absl::MutexLock lock(&mu_);
    free_.push_back(c);
  }

  std::vector<std::unique_ptr<Conn>> all_;
  absl::Mutex mu_;
  std::vector<Conn*> free_ ABSL_GUARDED_BY(mu_);
};

}  // namespace presence::adapters

#endif  // PRESENCE_ADAPTERS_COMMON_CONNECTION_POOL_H_
