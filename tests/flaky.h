// A store and a bus that a test can make fail, over the in-memory ones.
#ifndef PRESENCE_TESTS_FLAKY_H_
#define PRESENCE_TESTS_FLAKY_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "presence/bus.h"
#include "presence/clock.h"
#include "presence/store.h"
#include "tests/conformance/loaded.h"

namespace presence::testing {

// Each call of a store or bus slowed down advances `clock` by `ms` (a slow
// store or bus, in the engine's time).
class SlowCalls {
 public:
  void SlowDown(ManualClock* clock, int64_t ms) {
    clock_ = clock;
    delay_ms_ = ms;
  }

 protected:
  void Wait() {
    if (clock_ != nullptr) clock_->Advance(delay_ms_);
  }

 private:
  ManualClock* clock_ = nullptr;
  int64_t delay_ms_ = 0;
};

class FlakyStore : public Store, public SlowCalls {
 public:
  absl::Status Write(const StoreBatch& batch) override {
    ++writes;
    Wait();
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

// A bus over another (by default an in-process bus of its own) for tests of
// what a real bus does to its readers: every call can be made to fail (a bus
// down, a cut network link) or only publishes; a Read answers at most
// `max_read` records (as a Kafka client may); and a record can be shown under
// another key than it was published with (a producer that partitioned it
// wrongly). The flags may be flipped from any thread.
class FlakyBus : public Bus, public SlowCalls {
 public:
  explicit FlakyBus(uint32_t partitions)
      : owned_(NewInProcessBus(partitions)), inner_(owned_.get()) {}
  explicit FlakyBus(Bus* inner) : inner_(inner) {}

  uint32_t partitions() const override { return inner_->partitions(); }
  absl::StatusOr<uint64_t> Publish(BusRecordType type, absl::string_view key,
                                   absl::string_view payload) override {
    if (failing || failing_publish) return absl::UnavailableError("bus is down");
    return inner_->Publish(type, key, payload);
  }
  absl::StatusOr<std::vector<uint64_t>> PublishBatch(
      absl::Span<const BusMessage> messages) override {
    Wait();
    if (failing || failing_publish) return absl::UnavailableError("bus is down");
    if (!scripted.empty()) {
      const bool passes = scripted.front();
      scripted.pop_front();
      if (!passes) return absl::UnavailableError("bus is down");
    }
    batch_sizes.push_back(messages.size());
    return inner_->PublishBatch(messages);
  }
  absl::StatusOr<std::vector<BusRecord>> Read(uint32_t partition, uint64_t offset,
                                              size_t max) override {
    reads.fetch_add(1, std::memory_order_relaxed);
    Wait();
    if (failing) return absl::UnavailableError("bus is down");
    auto records = inner_->Read(partition, offset, std::min<size_t>(max, max_read));
    if (records.ok() && !rekeyed_.empty()) {
      for (BusRecord& r : *records) {
        auto it = rekeyed_.find({partition, r.offset});
        if (it != rekeyed_.end()) r.key = it->second;
      }
    }
    return records;
  }
  void Prefetch(uint32_t partition, uint64_t offset) override {
    prefetched.push_back(Prefetched{partition, offset, reads.load(std::memory_order_relaxed)});
    inner_->Prefetch(partition, offset);
  }
  absl::StatusOr<uint64_t> EndOffset(uint32_t partition) override {
    if (failing) return absl::UnavailableError("bus is down");
    return inner_->EndOffset(partition);
  }
  // Reads of (partition, offset) show `key` from now on.
  void Rekey(uint32_t partition, uint64_t offset, std::string key) {
    rekeyed_[{partition, offset}] = std::move(key);
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

  std::atomic<bool> failing{false};          // every call fails
  std::atomic<bool> failing_publish{false};  // publishes fail
  std::deque<bool> scripted;                 // whether each next PublishBatch passes (set before the bus is shared)
  size_t max_read = SIZE_MAX;                // set before the bus is shared
  std::vector<size_t> batch_sizes;           // of every PublishBatch that went through
  std::atomic<size_t> reads{0};              // Read calls so far
  struct Prefetched {
    uint32_t partition;
    uint64_t offset;
    size_t reads_before;  // Read calls before this hint
  };
  std::vector<Prefetched> prefetched;  // every Prefetch hint (one engine at a time)

 private:
  std::unique_ptr<Bus> owned_;
  Bus* const inner_;
  std::map<std::pair<uint32_t, uint64_t>, std::string> rekeyed_;
};

}  // namespace presence::testing

#endif  // PRESENCE_TESTS_FLAKY_H_
