// The reducer: docs/design.md rule 3, in one place. It folds a user's devices and
// override stack into what others see and what the user sees.
#ifndef PRESENCE_SRC_CORE_REDUCER_H_
#define PRESENCE_SRC_CORE_REDUCER_H_

#include <cstdint>
#include <vector>

#include "presence/types.h"

namespace presence::internal {

struct Override {
  uint64_t id = 0;
  int64_t set_at_ms = 0;
  int64_t until_ms = 0;  // 0: until revoked
  OverrideState state = OverrideState::kOnline;

  bool active(int64_t now_ms) const { return until_ms == 0 || now_ms < until_ms; }
};

// The override that shows: the most recently set one that has not expired
// (overrides stack, so when a timed one ends the one below shows again).
// `stack` is ordered oldest first. Null when none is active.
const Override* TopOverride(const std::vector<Override>* stack, int64_t now_ms);

struct Reduced {
  State state = State::kOffline;       // what everyone else sees
  State self_state = State::kOffline;  // what the user's own clients see
  bool invisible = false;              // an INVISIBLE override is showing
  const Override* shown = nullptr;     // the override in effect, if any
};

// any_live: the user has a live device; any_online: one of them counts ONLINE.
// An INVISIBLE override shows whenever it is on top; any other override shows
// when active and (the user has a live device, or require_live_device is
// false).
Reduced Reduce(bool any_live, bool any_online, const Override* top, bool require_live_device);

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_REDUCER_H_
