// Device records in fixed chunks that never move.
//
// A heartbeat on a handle reads its record without the shard lock, so records
// must stay where they are while other threads add devices. The table is an
// array of chunk pointers, allocated up front (64 KiB per shard, twice that
// with a detector: see Learned); chunks of 4096 records are added under the
// shard lock and published with a release store. A free list threads
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

#include "src/core/device.h"

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
  // Chunks of 4096 records (192 KiB): a shard holds at most one chunk more
  // than it uses (at 10^5 devices in 16 shards, a third; at 10^6, 5%).
  static constexpr uint32_t kChunkBits = 12;
  static constexpr uint32_t kChunkSize = 1u << kChunkBits;
  static constexpr uint32_t kMaxChunks = 8192;  // 33.5M devices per shard
  static_assert(uint64_t{kMaxChunks} * kChunkSize <= Device::kNextNone,
                "every record's index fits Device::next_ beside its none");

  // `learning`: the engine has a detector (rule 6), so a record may need its
  // answer kept (Learned).
  explicit DeviceTable(bool learning) : chunks_(new std::atomic<Device*>[kMaxChunks]) {
    for (uint32_t i = 0; i < kMaxChunks; ++i) chunks_[i].store(nullptr, std::memory_order_relaxed);
    if (learning) {
      learned_.reset(new std::atomic<std::atomic<uint32_t>*>[kMaxChunks]);
      for (uint32_t i = 0; i < kMaxChunks; ++i) learned_[i].store(nullptr, std::memory_order_relaxed);
    }
  }
  ~DeviceTable() {
    for (uint32_t i = 0; i < num_chunks_; ++i) {
      delete[] chunks_[i].load(std::memory_order_relaxed);
      if (learned_) delete[] learned_[i].load(std::memory_order_relaxed);
    }
  }
  DeviceTable(const DeviceTable&) = delete;
  DeviceTable& operator=(const DeviceTable&) = delete;

  // Any thread. Null when `index` was never allocated.
  Device* Find(uint32_t index) const {
    const uint32_t c = index >> kChunkBits;
    if (c >= kMaxChunks) return nullptr;
    Device* chunk = chunks_[c].load(std::memory_order_acquire);
    return chunk ? chunk + (index & (kChunkSize - 1)) : nullptr;
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
    if (!learned_ || (index >> kChunkBits) >= kMaxChunks) return nullptr;
    std::atomic<uint32_t>* chunk = learned_[index >> kChunkBits].load(std::memory_order_acquire);
    return chunk ? chunk + (index & (kChunkSize - 1)) : nullptr;
  }
  // Under the shard lock, for an allocated index, in an engine with a
  // detector: the record's answer is kept from now on, from zero.
  void Watch(uint32_t index) {
    std::atomic<std::atomic<uint32_t>*>& slot = learned_[index >> kChunkBits];
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
    return chunks_[index >> kChunkBits].load(std::memory_order_relaxed)[index & (kChunkSize - 1)];
  }
  const Device& at(uint32_t index) const {
    return chunks_[index >> kChunkBits].load(std::memory_order_relaxed)[index & (kChunkSize - 1)];
  }

  // Under the shard lock. kNone when the table is full.
  uint32_t Allocate(const SlotEpochs& epochs) {
    if (free_ == kNone) Reclaim(epochs.safe.load(std::memory_order_acquire));
    if (free_ == kNone) {
      if (num_chunks_ == kMaxChunks) return kNone;
      Device* chunk = new Device[kChunkSize];
      const uint32_t base = num_chunks_ << kChunkBits;
      for (uint32_t i = 0; i < kChunkSize; ++i) {
        chunk[i].set_next(i + 1 < kChunkSize ? base + i + 1 : kNone);
        chunk[i].gen_fast.store(fast::Make(1, 0), std::memory_order_relaxed);
      }
      chunks_[num_chunks_].store(chunk, std::memory_order_release);
      ++num_chunks_;
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

  std::unique_ptr<std::atomic<Device*>[]> chunks_;
  // Per chunk of records, their detector's answers (see Learned); null
  // without a detector.
  std::unique_ptr<std::atomic<std::atomic<uint32_t>*>[]> learned_;
  uint32_t num_chunks_ = 0;
  uint32_t free_ = kNone;
  size_t used_ = 0;
  std::deque<std::pair<uint32_t, uint64_t>> limbo_;  // (index, epoch freed in), oldest first
};

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_DEVICE_TABLE_H_
