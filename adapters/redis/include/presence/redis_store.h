// File: presence/redis_store.h
//
// presence::RedisStore is the Redis adapter of presence::Store (docs/design.md
// section 5), in its own library, presence_redis (hiredis). It keeps the seed
// design's layout, a hash per user plus a sorted set by last_seen, and holds
// the store's rules (presence/store.h) on the server: every write goes
// through a Lua script that compares versions and erasure floors atomically,
// so a replay, a retry or a stale writer never overwrites a newer record,
// even with several engines writing to one server.
//
// Example:
//
//   presence::RedisStoreOptions ro;
//   ro.host = "10.0.0.7";
//   ro.key_prefix = "presence:eu1:";
//   auto redis = presence::RedisStore::Open(ro);
//   if (!redis.ok()) return redis.status();      // unreachable, or AUTH failed
//   presence::Options o;
//   o.store = redis->get();
//   auto engine = presence::Engine::Create(o);    // loads what Redis holds
//
// KEY LAYOUT (P is options.key_prefix; ids are raw bytes, Redis keys and
// fields are binary-safe):
//   P u:<user_id>   hash, one per user:
//                     field "u"            the user record
//                     field "d<device_id>" one per device record
//                     field "f"            the erasure floor (20 digits)
//   P seen          sorted set: member user_id, score the latest last_seen
//                   (ms) of any record written for the user; the index for
//                   expiry sweeps (SweepSeenBefore)
//   P offsets       hash: field bus partition (decimal), value the next
//                   offset (20 digits)
// A record value is a 21-byte header, then protobuf: the version as 20
// zero-padded decimal digits (so that the scripts compare versions exactly,
// with no floating point), one kind byte ('u' user; 'o' device with an open
// session, 'c' closed), then presence.v1.UserRecord or presence.v1.DeviceRecord
// (proto/presence/v1/presence.proto) without the ids and the version, which
// the key, the field and the header carry.
//
// WRITES: Write sends one EVALSHA per user in the batch (that user's
// erasure, user record and devices, applied in batch order), plus one for
// the offsets, all pipelined: one round trip per batch. Each script call is
// atomic; a batch as a whole is not (the Store contract allows that: the
// engine retries). When the server lost its script cache (a restart), the
// scripts are loaded again and the batch is sent once more.
//
// DURABILITY: an OK from Write means the server applied the batch. What
// survives a crash of the server is its persistence configuration:
// `appendonly yes` keeps every acknowledged write through a crash of the
// Redis process (the AOF is written before the reply); add `appendfsync
// always` to keep them through a crash of the machine too. Without
// persistence a Redis restart loses everything, and the engine cannot tell.
//
// CLUSTER: every key of a call is declared to the script, but the sorted set
// and the offsets are shared by all users, so a Redis Cluster must put the
// whole prefix in one slot with a hash tag (key_prefix "{presence}:").
//
// THREAD SAFETY: every method may be called from any number of threads; each
// call leases one of options.connections connections (and waits for one when
// all are in use).
//
// FAILURES: a call that cannot reach the server, times out, or gets an error
// reply returns Unavailable (Internal for an unexpected reply); the
// connection is dropped and made again by the next call that leases it.
#ifndef PRESENCE_REDIS_STORE_H_
#define PRESENCE_REDIS_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "presence/store.h"

namespace presence {

struct RedisStoreOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  // Sent with AUTH after connecting when not empty.
  std::string password;
  // Sent with SELECT after connecting when not 0.
  int database = 0;
  // Every key starts with this, so that several stores (or tests) can share
  // a server. Must not be empty.
  std::string key_prefix = "presence:";
  // Connections kept open, at most one call on each at a time. Must be > 0.
  int connections = 4;
  // Time allowed to connect, and for each reply. Must be > 0.
  int64_t connect_timeout_ms = 2000;
  int64_t io_timeout_ms = 5000;
};

class RedisStore : public Store {
 public:
  // RedisStore::Open connects once (and loads the scripts) to check the
  // server and the options. Errors: InvalidArgument for bad options,
  // Unavailable when the server cannot be reached or refuses AUTH.
  static absl::StatusOr<std::unique_ptr<RedisStore>> Open(const RedisStoreOptions& options);

  // Write and Load: see presence::Store. Load scans every key under the
  // prefix (SCAN, then HGETALL per user, pipelined), so a record written
  // during a Load may or may not be seen; a record that does not decode is
  // skipped and counted (presence_redis_records_dropped_total).

  // RedisStore::SweepSeenBefore removes the users whose latest last_seen is
  // before cutoff_ms and who hold no device with an open session: the user
  // record and its devices go, the erasure floor stays. A user with an open
  // device is kept however old (its device may still be live in some
  // engine). Each user is checked and removed atomically (a record written
  // meanwhile keeps it). Returns how many users were removed.
  virtual absl::StatusOr<size_t> SweepSeenBefore(int64_t cutoff_ms) = 0;

  // Prometheus text: writes, round trips, errors, reconnections, script
  // reloads, records dropped by Load.
  virtual std::string RenderMetrics() const = 0;
};

}  // namespace presence

#endif  // PRESENCE_REDIS_STORE_H_
