// A store and a bus that a test can make fail, over the in-memory ones.
#ifndef PRESENCE_TESTS_FLAKY_H_
#define PRESENCE_TESTS_FLAKY_H_

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "presence/bus.h"
#include "presence/store.h"
#include "tests/conformance/loaded.h"

namespace presence::testing {

class FlakyStore : public Store {
 public:
  absl::Status Write(const StoreBatch& batch) override {
    ++writes;
    if (failing) return absl::UnavailableError("store is down");
    return inner_->Write(batch);
  }
  absl::Status Load(StoreVisitor* v) override {
    if (failing_load) return absl::UnavailableError("store is unreachable");
    return inner_->Load(v);
  }
  conformance::Loaded Contents() {
    conformance::Loaded l;
    EXPECT_TRUE(inner_->Load(&l).ok());
    return l;
  }
  bool failing = false;       // writes fail
  bool failing_load = false;  // loads fail
  int writes = 0;

 private:
  std::unique_ptr<Store> inner_ = NewMemoryStore();
};

class FlakyBus : public Bus {
 public:
  explicit FlakyBus(uint32_t partitions) : inner_(NewInProcessBus(partitions)) {}
  uint32_t partitions() const override { return inner_->partitions(); }
  absl::StatusOr<uint64_t> Publish(BusRecordType type, absl::string_view key,
                                   absl::string_view payload) override {
    if (failing || failing_publish) return absl::UnavailableError("bus is down");
    return inner_->Publish(type, key, payload);
  }
  absl::StatusOr<std::vector<BusRecord>> Read(uint32_t partition, uint64_t offset,
                                              size_t max) override {
    if (failing) return absl::UnavailableError("bus is down");
    return inner_->Read(partition, offset, max);
  }
  absl::StatusOr<uint64_t> EndOffset(uint32_t partition) override {
    return inner_->EndOffset(partition);
  }
  // Every record of every partition, in partition then offset order.
  std::vector<BusRecord> All() {
    std::vector<BusRecord> out;
    for (uint32_t p = 0; p < partitions(); ++p) {
      auto recs = inner_->Read(p, 0, 1 << 30);
      EXPECT_TRUE(recs.ok());
      if (recs.ok()) out.insert(out.end(), recs->begin(), recs->end());
    }
    return out;
  }
  bool failing = false;          // publishes and reads fail
  bool failing_publish = false;  // publishes fail

 private:
  std::unique_ptr<Bus> inner_;
};

}  // namespace presence::testing

#endif  // PRESENCE_TESTS_FLAKY_H_
