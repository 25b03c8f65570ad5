// Wrapping 32-bit millisecond times for per-device fields.
//
// A device only needs times close to now (its last signals, its next timer),
// so it stores the low 32 bits of the millisecond clock and compares them with
// serial-number arithmetic, like TCP sequence numbers. That is exact while the
// two times are less than 2^31 ms (24.8 days) apart; every device record is
// freed long before (Options::dead_retention_ms).
#ifndef PRESENCE_SRC_CORE_TIME32_H_
#define PRESENCE_SRC_CORE_TIME32_H_

#include <cstdint>

namespace presence::internal {

using Time32 = uint32_t;

inline Time32 ToTime32(int64_t ms) { return static_cast<Time32>(static_cast<uint64_t>(ms)); }

// a - b, in ms, for two wrapping times less than 24.8 days apart.
inline int32_t Diff32(Time32 a, Time32 b) { return static_cast<int32_t>(a - b); }

// The full time of `t`, given the full time `now` that it is close to.
inline int64_t Expand32(Time32 t, int64_t now_ms) {
  return now_ms + Diff32(t, ToTime32(now_ms));
}

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_TIME32_H_
