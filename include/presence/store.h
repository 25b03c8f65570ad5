// File: presence/store.h
//
// presence::Store is the durable seam for device and user records (docs/design.md
// section 5). The engine writes through it before it publishes a change, and
// loads from it to rebuild. Embedded implementations: NewMemoryStore() here,
// and the crash-safe file store (presence/file_store.h); adapters for Redis
// and PostgreSQL live in their own libraries.
//
// VERSIONS: every record carries a version that only grows (a hybrid of the
// writer's clock in ms, shifted left by 10 bits, and a counter). A store
// keeps, per key, the record with the greatest version it was given: writing
// a record whose version is not greater than the stored one changes nothing.
// So replays and retries are safe, and a stale writer never overwrites a
// newer record.
//
// ERASURE: erasing a user removes its record and all of its devices and
// leaves a floor: records of that user with a version below the floor are
// ignored for ever after, so a late or replayed write, a compaction or a
// rebuild never brings the user back.
//
// THREAD SAFETY: implementations must accept calls from several threads at
// once (the engine writes from each shard's tick).
//
// FAILURE: Write returns a non-OK status when the batch may not be durable.
// Part of it may have been applied; the engine retries the same records (or
// newer ones) later, which the version rule makes safe.
#ifndef PRESENCE_STORE_H_
#define PRESENCE_STORE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "presence/engine.h"
#include "presence/export.h"
#include "presence/types.h"

namespace presence {

// presence::DeviceRecord: the durable form of a device (the seed design's
// presence table row). Keyed by (user_id, device_id).
struct DeviceRecord {
  std::string user_id;
  std::string device_id;
  uint64_t session_id = 0;
  Platform platform = Platform::kOther;
  // Last signal per source in this session, in ms (0: none), indexed by
  // static_cast<int>(Source) - 1; and what that signal said.
  std::array<int64_t, kSourceCount> last_signal_ms{};
  std::array<Activity, kSourceCount> activity{Activity::kActive, Activity::kActive,
                                              Activity::kActive};
  bool closed = false;  // the session was disconnected
  // true: the engine no longer holds this device; the store deletes it.
  bool gone = false;
  std::string gateway;
  uint64_t version = 0;
};

// presence::UserRecord: the durable form of a user. Keyed by user_id.
struct UserRecord {
  std::string user_id;
  uint64_t version = 0;        // of this record
  uint64_t state_version = 0;  // of the last published change (own view)
  State state = State::kOffline;       // as last published, public view
  State self_state = State::kOffline;  // as last published, own view
  int64_t last_seen_ms = 0;            // own view
  int64_t published_at_ms = 0;         // of the last change of the public view
  uint64_t public_version = 0;         // of the last change of the public view
  // While the user is invisible: the last_seen that the public view shows
  // (where it stood when the user went invisible). 0 otherwise.
  int64_t hidden_last_seen_ms = 0;
  std::vector<OverrideInfo> overrides;
};

// presence::CommittedOffset: how far the engine consumed a bus partition;
// kept in the store so that a rebuild replays from there.
struct CommittedOffset {
  uint32_t partition = 0;
  uint64_t offset = 0;  // the next offset to read
  friend bool operator==(const CommittedOffset& a, const CommittedOffset& b) {
    return a.partition == b.partition && a.offset == b.offset;
  }
  friend bool operator!=(const CommittedOffset& a, const CommittedOffset& b) { return !(a == b); }
};

// presence::StoreBatch: what one Write applies. Erasures first, then
// records, then offsets.
struct StoreBatch {
  struct Erasure {
    std::string user_id;
    uint64_t floor = 0;  // records of the user with a smaller version are ignored for ever
  };
  std::vector<Erasure> erasures;
  std::vector<UserRecord> users;
  std::vector<DeviceRecord> devices;
  std::vector<CommittedOffset> offsets;

  bool empty() const {
    return erasures.empty() && users.empty() && devices.empty() && offsets.empty();
  }
};

// presence::StoreVisitor receives what Store::Load finds, in no set order.
class PRESENCE_EXPORT StoreVisitor {
 public:
  virtual ~StoreVisitor();
  virtual void OnUser(const UserRecord& user) = 0;
  virtual void OnDevice(const DeviceRecord& device) = 0;
  virtual void OnOffset(const CommittedOffset& offset) = 0;
};

class PRESENCE_EXPORT Store {
 public:
  virtual ~Store();

  // Store::Write applies `batch` under the version rule. OK means it is
  // durable as far as the implementation promises (see its sync policy).
  virtual absl::Status Write(const StoreBatch& batch) = 0;

  // Store::Load calls `visitor` once for every record and offset held. It
  // reports a store it cannot read as an error, and data it had to drop
  // (a torn tail, a bad checksum) through its own metrics, not as an error.
  virtual absl::Status Load(StoreVisitor* visitor) = 0;
};

// An in-memory Store: the default when durability is not wanted, and the
// reference that every adapter's conformance suite is also run against.
PRESENCE_EXPORT std::unique_ptr<Store> NewMemoryStore();

}  // namespace presence

#endif  // PRESENCE_STORE_H_
