// The C ABI's clock: a manual clock that the host moves, shared by the
// engines that read it (reference counted; see capi/c_internal.h).
#include <cstdint>
#include <memory>
#include <new>

#include "capi/c_common.h"
#include "capi/c_internal.h"
#include "presence/c.h"

using presence::capi::Guard;
using presence::capi::Invalid;
using presence::capi::NullArgument;
using presence::capi::Ok;
using presence::capi::Unref;

// ---- Clock ----------------------------------------------------------------------------------------

int presence_clock_manual_new(presence_clock_t** out_clock, int64_t start_ms, char** errmsg) {
  if (out_clock == nullptr) return NullArgument(errmsg, "out_clock");
  *out_clock = nullptr;
  return Guard(errmsg, [&] {
    *out_clock = new presence_clock_t(start_ms);
    return Ok(errmsg);
  });
}

void presence_clock_destroy(presence_clock_t* clock) { Unref(clock); }

int presence_clock_advance(presence_clock_t* clock, int64_t delta_ms, char** errmsg) {
  if (clock == nullptr) return NullArgument(errmsg, "clock");
  return Guard(errmsg, [&] {
    if (delta_ms < 0) {
      return Invalid(errmsg, absl::StrCat("delta_ms is ", delta_ms, "; a clock never goes back"));
    }
    clock->clock.Advance(delta_ms);
    return Ok(errmsg);
  });
}

int presence_clock_set(presence_clock_t* clock, int64_t now_ms, char** errmsg) {
  if (clock == nullptr) return NullArgument(errmsg, "clock");
  return Guard(errmsg, [&] {
    const int64_t now = clock->clock.NowMs();
    if (now_ms < now) {
      return Invalid(errmsg, absl::StrCat("now_ms ", now_ms, " is before the clock's time ", now,
                                          "; a clock never goes back"));
    }
    clock->clock.Set(now_ms);
    return Ok(errmsg);
  });
}

int presence_clock_now(int64_t* out_now_ms, const presence_clock_t* clock, char** errmsg) {
  if (out_now_ms != nullptr) *out_now_ms = 0;
  if (clock == nullptr) return NullArgument(errmsg, "clock");
  if (out_now_ms != nullptr) *out_now_ms = clock->clock.NowMs();
  return Ok(errmsg);
}
