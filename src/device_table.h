// Device records in fixed chunks that never move.
//
// A heartbeat on a handle reads its record without the shard lock, so records
// must stay where they are while other threads add devices. The table is an
// array of chunk pointers, allocated up front (64 KiB per shard); chunks of
// 16384 records are added under the shard lock and published with a release
// store. A free list threads through Device::next.
#ifndef PRESENCE_SRC_DEVICE_TABLE_H_
#define PRESENCE_SRC_DEVICE_TABLE_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "src/device.h"

namespace presence::internal {

class DeviceTable {
 public:
  static constexpr uint32_t kChunkBits = 14;
  static constexpr uint32_t kChunkSize = 1u << kChunkBits;
  static constexpr uint32_t kMaxChunks = 8192;  // 134M devices per shard

  DeviceTable() : chunks_(new std::atomic<Device*>[kMaxChunks]) {
    for (uint32_t i = 0; i < kMaxChunks; ++i) chunks_[i].store(nullptr, std::memory_order_relaxed);
  }
  ~DeviceTable() {
    for (uint32_t i = 0; i < num_chunks_; ++i) delete[] chunks_[i].load(std::memory_order_relaxed);
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
  // Under the shard lock, for an index known to be allocated.
  Device& at(uint32_t index) {
    return chunks_[index >> kChunkBits].load(std::memory_order_relaxed)[index & (kChunkSize - 1)];
  }
  const Device& at(uint32_t index) const {
    return chunks_[index >> kChunkBits].load(std::memory_order_relaxed)[index & (kChunkSize - 1)];
  }

  // Under the shard lock. kNone when the table is full.
  uint32_t Allocate() {
    if (free_ == kNone) {
      if (num_chunks_ == kMaxChunks) return kNone;
      Device* chunk = new Device[kChunkSize];
      const uint32_t base = num_chunks_ << kChunkBits;
      for (uint32_t i = 0; i < kChunkSize; ++i) {
        chunk[i].next = i + 1 < kChunkSize ? base + i + 1 : kNone;
        chunk[i].gen_fast.store(fast::Make(1, 0), std::memory_order_relaxed);
      }
      chunks_[num_chunks_].store(chunk, std::memory_order_release);
      ++num_chunks_;
      free_ = base;
    }
    const uint32_t index = free_;
    free_ = at(index).next;
    ++used_;
    return index;
  }
  // Under the shard lock; the record must already be reset.
  void Release(uint32_t index) {
    at(index).next = free_;
    free_ = index;
    --used_;
  }

  size_t used() const { return used_; }

 private:
  std::unique_ptr<std::atomic<Device*>[]> chunks_;
  uint32_t num_chunks_ = 0;
  uint32_t free_ = kNone;
  size_t used_ = 0;
};

}  // namespace presence::internal

#endif  // PRESENCE_SRC_DEVICE_TABLE_H_
