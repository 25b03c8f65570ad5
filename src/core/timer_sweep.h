// Device timers as a sweep of the device table in memory order.
//
// A device's one timer is its record's due time (Device::due); nothing else
// holds it. The sweep keeps, per block of 64 records, a time no later than
// the earliest due time in the block, and per chunk of the device table the
// earliest of its blocks'. Advance visits, in index order, the chunks and
// then the blocks whose bound has come, and hands each such block to a scan
// that fires what is due and returns the block's new bound. So a tick reads
// records one block after another instead of one random record per timer,
// holds no per-timer memory (a few bytes per 64 records), and a due time
// may be any 32-bit time ahead, with no horizon.
//
// A bound may be early (a device moved its timer later, or was freed): its
// block is then scanned for nothing, and its bound set right. It is never
// late: Note lowers it whenever a due time is set earlier.
#ifndef PRESENCE_SRC_CORE_TIMER_SWEEP_H_
#define PRESENCE_SRC_CORE_TIMER_SWEEP_H_

#include <cstdint>
#include <vector>

#include "src/core/time32.h"

namespace presence::internal {

class TimerSweep {
 public:
  static constexpr uint32_t kBlockBits = 6;  // 64 records per block
  static constexpr uint32_t kBlockSize = 1u << kBlockBits;
  // How far ahead a bound with nothing under it points: it comes round once
  // in that long, and its block is scanned for nothing.
  static constexpr int32_t kIdleMs = int32_t{1} << 30;

  // `chunk_bits`: log2 of the records per chunk of the device table (at
  // least kBlockBits).
  TimerSweep(Time32 now, uint32_t chunk_bits)
      : chunk_shift_(chunk_bits - kBlockBits), cur_(now) {}

  // The time of the last Advance: a due time at or before it fires at the
  // next Advance.
  Time32 now() const { return cur_; }

  // Record `index` is due at `due` (or later).
  void Note(uint32_t index, Time32 due) {
    const uint32_t b = index >> kBlockBits;
    if (b >= block_.size()) Grow(b);
    if (Diff32(due, block_[b]) < 0) block_[b] = due;
    const uint32_t c = b >> chunk_shift_;
    if (Diff32(due, chunk_[c]) < 0) chunk_[c] = due;
  }

  // Moves to `now`, calling scan(first, end) for each block [first, end)
  // whose bound is at or before `now`, in index order; scan fires what is
  // due among those records and returns the earliest due time left among
  // them (now + kIdleMs when none). Records of other blocks that scan
  // reschedules are noted as usual.
  template <typename Scan>
  void Advance(Time32 now, Scan&& scan) {
    if (Diff32(now, cur_) <= 0) return;
    const uint32_t per_chunk = 1u << chunk_shift_;
    for (uint32_t c = 0; c < chunk_.size(); ++c) {
      if (Diff32(chunk_[c], now) > 0) continue;
      chunk_[c] = now + kIdleMs;  // lowered again by scan's reschedules in the chunk
      Time32 least = now + kIdleMs;
      const uint32_t first = c * per_chunk;
      const uint32_t end = first + per_chunk < block_.size() ? first + per_chunk : block_.size();
      for (uint32_t b = first; b < end; ++b) {
        if (Diff32(block_[b], now) <= 0) {
          block_[b] = now + kIdleMs;  // scan's reschedules within the block lower it again
          const Time32 left = scan(b << kBlockBits, (b + 1) << kBlockBits);
          if (Diff32(left, block_[b]) < 0) block_[b] = left;
        }
        if (Diff32(block_[b], least) < 0) least = block_[b];
      }
      if (Diff32(least, chunk_[c]) < 0) chunk_[c] = least;
    }
    cur_ = now;
  }

 private:
  void Grow(uint32_t b) {
    const uint32_t per_chunk = 1u << chunk_shift_;
    const uint32_t blocks = (b / per_chunk + 1) * per_chunk;
    block_.resize(blocks, cur_ + kIdleMs);
    chunk_.resize(blocks / per_chunk, cur_ + kIdleMs);
  }

  const uint32_t chunk_shift_;  // log2 of the blocks per chunk
  std::vector<Time32> block_;   // per block of records: no due time in it is earlier
  std::vector<Time32> chunk_;   // per chunk: no block bound in it is earlier
  Time32 cur_;
};

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_TIMER_SWEEP_H_
