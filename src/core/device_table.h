// Device records in fixed chunks that never move.
//
// A heartbeat on a handle reads its record without the shard lock, so records
// must stay where they are while other threads add devices. Chunks of 512
// records are added under the shard lock; a directory of chunk pointers
// (and of the detector's answers: see Learned) finds them. The directory
// doubles when full: the grown copy is published with a release store and
// the old ones are kept until the table goes, since a heartbeat may still
// read one (together at most the size of the newest). A free list threads
// through Device::next().
//
// A lock-free heartbeat checks the record's generation and then writes its
// time and rate; a record freed in between must not be handed to another
// device before that write landed. So a freed record waits in limbo, tagged
// with the epoch it was freed in, until SlotEpochs::safe passes that epoch:
// then no heartbeat that might have read its old generation still runs.
// Its heartbeat fields are reset only then, when no heartbeat can write them.
#ifndef PRESENCE_SRC_CORE_DEVICE_TABLE_H_
#define PRESENCE_SRC_CORE_DEVICE_TABLE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <utility>
#include <vector>

#include "src/core/device.h"
#include "src/core/prefetch.h"

namespace presence::internal {

// The grace period of freed records. The engine opens an epoch (`now`) on
// each Tick; a heartbeat on a handle runs pinned to the epoch it began in;
// `safe` is the oldest epoch in which a running heartbeat began, as of the
// last Tick. A record freed in epoch F may be reused once F < safe.
struct SlotEpochs {
  std::atomic<uint64_t> now{1};
  std::atomic<uint64_t> safe{1};
};

class DeviceTable {
 public:
  // Chunks of 512 records (24 KiB): a shard holds at most one chunk more
  // than it uses (at 10^5 devices in 16 shards, 8%; at 10^6, 0.8%).
  static constexpr uint32_t kChunkBits = 9;
  static constexpr uint32_t kChunkSize = 1u << kChunkBits;
  static constexpr uint32_t kMaxChunks = (1u << 25) >> kChunkBits;  // 2^25 records per shard
  static_assert(uint64_t{kMaxChunks} * kChunkSize <= Device::kNextNone,
                "every record's index fits Device::next_ beside its none");

  // `learning`: the engine has a detector (rule 6), so a record may need its
  // answer kept (Learned).
  explicit DeviceTable(bool learning) : learning_(learning) {}
  ~DeviceTable() {
    for (uint32_t i = 0; i < chunks(); ++i) {
      delete[] records_.current.load(std::memory_order_relaxed)[i].load(std::memory_order_relaxed);
      if (learning_) {
        delete[] learned_.current.load(std::memory_order_relaxed)[i].load(std::memory_order_relaxed);
      }
    }
  }
  DeviceTable(const DeviceTable&) = delete;
  DeviceTable& operator=(const DeviceTable&) = delete;

  // Any thread. Null when `index` was never allocated.
  Device* Find(uint32_t index) const {
    const std::atomic<Device*>* chunk = EntryOf(records_, index);
    return chunk ? chunk->load(std::memory_order_acquire) + (index & (kChunkSize - 1)) : nullptr;
  }
  // Any thread: starts loading the directory entry that Find(index) reads.
  void PrefetchEntry(uint32_t index) const {
    if (const auto* entry = EntryOf(records_, index)) Prefetch(entry);
  }
  // Rule 6: the detector's latest answer for record `index`'s heartbeat
  // sources, clamped (0: none yet), kept beside the records, a chunk of them
  // for each chunk of records that holds a watched device. Written by
  // whoever told the detector of a signal, with or without the lock; reset
  // when the record is reused.
  //
  // Any thread: 0 when none was kept (the engine has no detector, or no
  // device of the record's chunk was watched yet).
  uint32_t LearnedValue(uint32_t index) const {
    std::atomic<uint32_t>* a = Learned(index);
    return a ? a->load(std::memory_order_relaxed) : 0;
  }
  // Any thread: null as above. A record whose fast bits say watched has
  // one: Watch made it before the bits were set (and released them).
  std::atomic<uint32_t>* Learned(uint32_t index) const {
    const std::atomic<std::atomic<uint32_t>*>* chunk = learning_ ? EntryOf(learned_, index) : nullptr;
    std::atomic<uint32_t>* answers = chunk ? chunk->load(std::memory_order_acquire) : nullptr;
    return answers ? answers + (index & (kChunkSize - 1)) : nullptr;
  }
  // Under the shard lock, for an allocated index, in an engine with a
  // detector: the record's answer is kept from now on, from zero.
  void Watch(uint32_t index) {
    std::atomic<std::atomic<uint32_t>*>& slot =
        learned_.current.load(std::memory_order_relaxed)[index >> kChunkBits];
    std::atomic<uint32_t>* chunk = slot.load(std::memory_order_relaxed);
    if (chunk == nullptr) {
      chunk = new std::atomic<uint32_t>[kChunkSize];
      for (uint32_t i = 0; i < kChunkSize; ++i) chunk[i].store(0, std::memory_order_relaxed);
      slot.store(chunk, std::memory_order_release);
    }
    chunk[index & (kChunkSize - 1)].store(0, std::memory_order_relaxed);
  }

  // Under the shard lock, for an index known to be allocated.
  Device& at(uint32_t index) {
    return records_.current.load(std::memory_order_relaxed)[index >> kChunkBits].load(
        std::memory_order_relaxed)[index & (kChunkSize - 1)];
  }
  const Device& at(uint32_t index) const {
    return records_.current.load(std::memory_order_relaxed)[index >> kChunkBits].load(
        std::memory_order_relaxed)[index & (kChunkSize - 1)];
  }

  // Under the shard lock. kNone when the table is full.
  uint32_t Allocate(const SlotEpochs& epochs) {
    if (free_ == kNone) Reclaim(epochs.safe.load(std::memory_order_acquire));
    if (free_ == kNone) {
      const uint32_t n = chunks();
      if (n == kMaxChunks) return kNone;
      // Each directory grows on its own (a failed allocation leaves the
      // other as it was, to grow next time), and before the chunk is made.
      if (n == records_.capacity()) records_.Grow(n);
      if (learning_ && n == learned_.capacity()) learned_.Grow(n);
      Device* chunk = new Device[kChunkSize];
      const uint32_t base = n << kChunkBits;
      for (uint32_t i = 0; i < kChunkSize; ++i) {
        chunk[i].set_next(i + 1 < kChunkSize ? base + i + 1 : kNone);
        chunk[i].gen_fast.store(fast::Make(1, 0), std::memory_order_relaxed);
      }
      records_.current.load(std::memory_order_relaxed)[n].store(chunk, std::memory_order_relaxed);
      // Publishes the chunk, and the directories that hold it.
      published_.store(n + 1, std::memory_order_release);
      free_ = base;
    }
    const uint32_t index = free_;
    free_ = at(index).next();
    ++used_;
    return index;
  }
  // Under the shard lock, after the record's generation was bumped (so no
  // heartbeat that begins from now on passes its check); the record must
  // already be reset but for its heartbeat fields. It is reused only after
  // the grace period.
  void Release(uint32_t index, const SlotEpochs& epochs) {
    // Orders the generation's bump before the epoch's read, as a pinned
    // heartbeat orders its pin before reading the generation.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    limbo_.push_back({index, epochs.now.load(std::memory_order_seq_cst)});
    --used_;
  }

  size_t used() const { return used_; }

 private:
  // Moves the records freed before epoch `safe` to the free list.
  void Reclaim(uint64_t safe) {
    while (!limbo_.empty() && limbo_.front().second < safe) {
      const uint32_t index = limbo_.front().first;
      limbo_.pop_front();
      Device& d = at(index);
      for (auto& s : d.seen) s.store(0, std::memory_order_relaxed);
      d.rate.store(0, std::memory_order_relaxed);
      if (std::atomic<uint32_t>* learned = Learned(index)) {
        learned->store(0, std::memory_order_relaxed);
      }
      d.set_next(free_);
      free_ = index;
    }
  }

  // A directory: per chunk, a pointer (to its records, or to their
  // detector's answers). Grown as said above.
  template <typename T>
  struct Directory {
    std::atomic<std::atomic<T*>*> current{nullptr};
    std::vector<std::unique_ptr<std::atomic<T*>[]>> all;  // the current one last

    uint32_t capacity() const { return all.empty() ? 0 : kFirstDirectory << (all.size() - 1); }
    // Under the shard lock, with `n` chunks, the directory full: one twice
    // the size holding the same replaces it; the old one is kept.
    void Grow(uint32_t n) {
      all.push_back(std::make_unique<std::atomic<T*>[]>(n == 0 ? kFirstDirectory : 2 * n));
      std::atomic<T*>* grown = all.back().get();
      const std::atomic<T*>* old = current.load(std::memory_order_relaxed);
      for (uint32_t i = 0; i < n; ++i) {
        grown[i].store(old[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
      }
      current.store(grown, std::memory_order_release);
    }
  };
  static constexpr uint32_t kFirstDirectory = 16;

  // Any thread: an allocated index's entry in `dir`, or null. A reader that
  // sees the count of chunks sees directories that hold them.
  template <typename T>
  const std::atomic<T*>* EntryOf(const Directory<T>& dir, uint32_t index) const {
    const uint32_t c = index >> kChunkBits;
    if (c >= published_.load(std::memory_order_acquire)) return nullptr;
    return &dir.current.load(std::memory_order_acquire)[c];
  }
  // Under the shard lock: the chunks allocated.
  uint32_t chunks() const { return published_.load(std::memory_order_relaxed); }

  const bool learning_;
  Directory<Device> records_;
  Directory<std::atomic<uint32_t>> learned_;  // with a detector only
  std::atomic<uint32_t> published_{0};        // the chunks allocated
  uint32_t free_ = kNone;
  size_t used_ = 0;
  std::deque<std::pair<uint32_t, uint64_t>> limbo_;  // (index, epoch freed in), oldest first
};

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_DEVICE_TABLE_H_
