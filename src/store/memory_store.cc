// The in-memory Store, HistoryStore and Bus: the embedded defaults, and the
// references the conformance suites hold every adapter to.
#include <algorithm>
#include <map>
#include <tuple>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "src/core/mutex.h"
#include "presence/bus.h"
#include "presence/history.h"
#include "presence/store.h"
#include "src/store/record_rules.h"

namespace presence {

StoreVisitor::~StoreVisitor() = default;
Store::~Store() = default;
HistoryStore::~HistoryStore() = default;
Bus::~Bus() = default;

absl::StatusOr<uint64_t> Bus::KnownEndOffset(uint32_t partition) { return EndOffset(partition); }

void Bus::Prefetch(uint32_t, uint64_t) {}

absl::StatusOr<std::vector<uint64_t>> Bus::PublishBatch(absl::Span<const BusMessage> messages) {
  std::vector<uint64_t> offsets;
  offsets.reserve(messages.size());
  for (const BusMessage& m : messages) {
    absl::StatusOr<uint64_t> offset = Publish(m.type, m.key, m.payload);
    if (!offset.ok()) return offset.status();
    offsets.push_back(*offset);
  }
  return offsets;
}

namespace {

class MemoryStore final : public Store {
 public:
  absl::Status Write(const StoreBatch& batch) override {
    internal::MutexLock lock(&mu_);
    records_.Apply(batch);
    return absl::OkStatus();
  }
  absl::Status Load(StoreVisitor* visitor) override {
    if (visitor == nullptr) return absl::InvalidArgumentError("visitor is null");
    internal::MutexLock lock(&mu_);
    records_.Visit(visitor);
    return absl::OkStatus();
  }

 private:
  internal::Mutex mu_;
  internal::RecordSet records_ ABSL_GUARDED_BY(mu_);
};

class MemoryHistory final : public HistoryStore {
 public:
  absl::Status Append(absl::Span<const Transition> transitions) override {
    internal::MutexLock lock(&mu_);
    for (const Transition& t : transitions) log_.Append(t);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<Transition>> Query(absl::string_view user_id, int64_t from_ms,
                                                int64_t to_ms) override {
    internal::MutexLock lock(&mu_);
    return log_.Query(user_id, from_ms, to_ms);
  }
  absl::StatusOr<std::optional<Transition>> LastBefore(absl::string_view user_id,
                                                       int64_t before_ms) override {
    internal::MutexLock lock(&mu_);
    return log_.LastBefore(user_id, before_ms);
  }
  absl::Status AppendDevices(absl::Span<const DeviceTransition> transitions) override {
    internal::MutexLock lock(&mu_);
    for (const DeviceTransition& t : transitions) log_.AppendDevice(t);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<DeviceTransition>> QueryDevice(absl::string_view user_id,
                                                            absl::string_view device_id,
                                                            int64_t from_ms,
                                                            int64_t to_ms) override {
    internal::MutexLock lock(&mu_);
    return log_.QueryDevice(user_id, device_id, from_ms, to_ms);
  }
  absl::Status Erase(absl::string_view user_id) override {
    internal::MutexLock lock(&mu_);
    log_.Erase(user_id);
    return absl::OkStatus();
  }
  absl::Status DropBefore(int64_t before_ms) override {
    internal::MutexLock lock(&mu_);
    log_.DropBefore(before_ms);
    return absl::OkStatus();
  }

 private:
  internal::Mutex mu_;
  internal::TransitionLog log_ ABSL_GUARDED_BY(mu_);
};

class InProcessBus final : public Bus {
 public:
  explicit InProcessBus(uint32_t partitions) : parts_(partitions) {}
  uint32_t partitions() const override { return static_cast<uint32_t>(parts_.size()); }

  absl::StatusOr<uint64_t> Publish(BusRecordType type, absl::string_view key,
                                   absl::string_view payload) override {
    if (BusRecordTypeName(type).empty()) {
      return absl::InvalidArgumentError("unknown bus record type");
    }
    const uint32_t p = PartitionFor(key, partitions());
    Partition& part = parts_[p];
    internal::MutexLock lock(&part.mu);
    BusRecord r;
    r.partition = p;
    r.offset = part.records.size();
    r.type = type;
    r.key = std::string(key);
    r.payload = std::string(payload);
    part.records.push_back(std::move(r));
    return part.records.back().offset;
  }

  absl::StatusOr<std::vector<BusRecord>> Read(uint32_t partition, uint64_t offset,
                                              size_t max) override {
    if (partition >= parts_.size()) return absl::InvalidArgumentError("no such partition");
    Partition& part = parts_[partition];
    internal::MutexLock lock(&part.mu);
    if (offset > part.records.size()) {
      return absl::OutOfRangeError(
          absl::StrCat("offset ", offset, " is past the end (", part.records.size(), ")"));
    }
    const size_t end = std::min<size_t>(part.records.size(), offset + max);
    return std::vector<BusRecord>(part.records.begin() + offset, part.records.begin() + end);
  }

  absl::StatusOr<uint64_t> EndOffset(uint32_t partition) override {
    if (partition >= parts_.size()) return absl::InvalidArgumentError("no such partition");
    internal::MutexLock lock(&parts_[partition].mu);
    return parts_[partition].records.size();
  }

 private:
  struct Partition {
    internal::Mutex mu;
    std::vector<BusRecord> records ABSL_GUARDED_BY(mu);
  };
  std::vector<Partition> parts_;
};

}  // namespace

std::unique_ptr<Store> NewMemoryStore() { return std::make_unique<MemoryStore>(); }
std::unique_ptr<HistoryStore> NewMemoryHistoryStore() { return std::make_unique<MemoryHistory>(); }
std::unique_ptr<Bus> NewInProcessBus(uint32_t partitions) {
  return std::make_unique<InProcessBus>(std::max<uint32_t>(partitions, 1));
}

}  // namespace presence
