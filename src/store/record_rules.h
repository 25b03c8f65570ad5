// The rules every store keeps, in one place: the version rule and erasure
// floors for records (presence/store.h), and the audit trail's order and
// idempotence (presence/history.h). The in-memory stores are these; the file
// store keeps these in memory and makes them durable with its log.
#ifndef PRESENCE_SRC_STORE_RECORD_RULES_H_
#define PRESENCE_SRC_STORE_RECORD_RULES_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "presence/history.h"
#include "presence/store.h"

namespace presence::internal {

class RecordSet {
 public:
  // Each returns whether the set changed. A record taken by value is moved
  // into the set.
  bool ApplyErasure(const StoreBatch::Erasure& e);
  bool ApplyUser(UserRecord u);
  bool ApplyDevice(DeviceRecord d);
  bool ApplyOffset(const CommittedOffset& o);
  // Erasures, then users, devices and offsets, in that order.
  void Apply(const StoreBatch& batch);

  // Every user record, then every device record, then the offsets.
  void Visit(StoreVisitor* visitor) const;
  // The erasure floors held (a snapshot must keep them).
  const absl::flat_hash_map<std::string, uint64_t>& floors() const { return floors_; }
  size_t users() const { return users_count_; }
  size_t devices() const { return devices_count_; }

 private:
  // What is held of one user: one hash lookup finds its record and its
  // devices (a user has few: Options::max_devices_per_user).
  struct Held {
    std::optional<UserRecord> user;
    std::vector<DeviceRecord> devices;
  };
  uint64_t FloorOf(const std::string& user_id) const;

  absl::flat_hash_map<std::string, Held> held_;
  size_t users_count_ = 0;
  size_t devices_count_ = 0;
  absl::flat_hash_map<std::string, uint64_t> floors_;
  absl::flat_hash_map<uint32_t, uint64_t> offsets_;
};

class TransitionLog {
 public:
  // Returns false when (user_id, version) was already held.
  bool Append(const Transition& t);
  std::vector<Transition> Query(absl::string_view user_id, int64_t from_ms, int64_t to_ms) const;
  std::optional<Transition> LastBefore(absl::string_view user_id, int64_t before_ms) const;
  // Returns false when a device transition with the same key (user,
  // device, session, at_ms, event) was already held.
  //
  // A user's device transitions are kept up to kMaxDeviceEntriesPerUser:
  // past it, the user's oldest eighth go, so that devices that connect and
  // disconnect without end cannot fill the memory of a store that keeps the
  // audit in it.
  static constexpr size_t kMaxDeviceEntriesPerUser = size_t{1} << 16;
  bool AppendDevice(const DeviceTransition& t);
  uint64_t device_entries_dropped() const { return device_entries_dropped_; }
  std::vector<DeviceTransition> QueryDevice(absl::string_view user_id,
                                            absl::string_view device_id, int64_t from_ms,
                                            int64_t to_ms) const;
  // Both erase and retention cover the user's device transitions too.
  void Erase(absl::string_view user_id);
  void DropBefore(int64_t before_ms);
  template <typename F>
  void ForEach(F&& f) const {
    for (const auto& [user, list] : by_user_) {
      for (const Transition& t : list) f(t);
    }
  }
  template <typename F>
  void ForEachDevice(F&& f) const {
    for (const auto& [user, list] : devices_by_user_) {
      for (const DeviceTransition& t : list) f(t);
    }
  }
  size_t size() const;
  size_t device_size() const;

 private:
  // Per user, ordered by (at_ms, version).
  absl::flat_hash_map<std::string, std::vector<Transition>> by_user_;
  // Per user, every device's, ordered by at_ms (then as they came in).
  absl::flat_hash_map<std::string, std::vector<DeviceTransition>> devices_by_user_;
  uint64_t device_entries_dropped_ = 0;
};

}  // namespace presence::internal

#endif  // PRESENCE_SRC_STORE_RECORD_RULES_H_
