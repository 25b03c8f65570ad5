// A single-level timing wheel with 1 ms slots, for device timers.
//
// Each entry is only a device index; the device record holds the time its one
// canonical timer is due (Device::due). Entries are never removed: a device
// that is rescheduled simply gets a new entry, and the old one is dropped when
// its slot comes round and the device's due time no longer points at it. A due
// time beyond the wheel's horizon stays in its slot and is looked at once per
// rotation. So scheduling is O(1), a heartbeat never touches the wheel, and a
// timer that fires early (the device signalled since) just reschedules.
#ifndef PRESENCE_SRC_CORE_TIMER_WHEEL_H_
#define PRESENCE_SRC_CORE_TIMER_WHEEL_H_

#include <cstdint>
#include <vector>

#include "src/core/chunked.h"
#include "src/core/time32.h"

namespace presence::internal {

class TimerWheel {
 public:
  static constexpr uint32_t kSlots = 8192;  // 8.2 s horizon at 1 ms per slot

  explicit TimerWheel(Time32 now) : slots_(kSlots), cur_(now) {}

  // Adds an entry for `index` that fires at `due` (at the next Advance if
  // `due` is not in the future).
  void Insert(uint32_t index, Time32 due) {
    if (Diff32(due, cur_) <= 0) due = cur_ + 1;
    slots_[due & (kSlots - 1)].push_back(index);
    ++size_;
  }

  // What a firing entry asks of the wheel.
  enum class Verdict { kDone, kKeep };

  // Moves the wheel to `now`, visiting every slot passed. For each entry,
  // fire(index, slot_time, now) decides: kKeep leaves it in its slot for a
  // later rotation, kDone drops it (the callback may Insert anew). A jump
  // longer than the horizon visits each slot once, so every entry due by
  // `now` is seen.
  template <typename Fire>
  void Advance(Time32 now, Fire&& fire) {
    int32_t steps = Diff32(now, cur_);
    if (steps <= 0) return;
    const uint32_t n = steps > static_cast<int32_t>(kSlots) ? kSlots : static_cast<uint32_t>(steps);
    for (uint32_t i = 1; i <= n; ++i) {
      const Time32 t = cur_ + 1;
      std::vector<uint32_t>& slot = slots_[t & (kSlots - 1)];
      cur_ = t;
      if (slot.empty()) continue;
      scratch_.clear();
      scratch_.swap(slot);
      size_ -= scratch_.size();
      for (uint32_t index : scratch_) {
        if (fire(index, t, now) == Verdict::kKeep) {
          slot.push_back(index);
          ++size_;
        }
      }
      // A burst (every device rescheduled in the same ms) leaves a large
      // buffer here; let it go rather than pass it on to the next slot.
      scratch_.clear();
      ReleaseBurst(scratch_);
    }
    cur_ = now;
  }

  Time32 now() const { return cur_; }
  size_t size() const { return size_; }

 private:
  std::vector<std::vector<uint32_t>> slots_;
  std::vector<uint32_t> scratch_;
  Time32 cur_;  // last time processed
  size_t size_ = 0;
};

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_TIMER_WHEEL_H_
