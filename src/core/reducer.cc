#include "src/core/reducer.h"

namespace presence::internal {

const Override* TopOverride(const std::vector<Override>* stack, int64_t now_ms) {
  if (stack == nullptr) return nullptr;
  for (auto it = stack->rbegin(); it != stack->rend(); ++it) {
    if (it->active(now_ms)) return &*it;
  }
  return nullptr;
}

static State FromOverride(OverrideState s) {
  switch (s) {
    case OverrideState::kOnline:
      return State::kOnline;
    case OverrideState::kAway:
      return State::kAway;
    case OverrideState::kDnd:
      return State::kDnd;
    case OverrideState::kInvisible:
      break;
  }
  return State::kOffline;
}

Reduced Reduce(bool any_live, bool any_online, const Override* top, bool require_live_device) {
  Reduced r;
  const State base = !any_live ? State::kOffline : any_online ? State::kOnline : State::kAway;
  r.state = r.self_state = base;
  if (top == nullptr) return r;
  if (top->state == OverrideState::kInvisible) {
    // Hidden whether or not a device is live: what the user does under it
    // (connecting the first device included) must not show (rule 8).
    r.shown = top;
    r.invisible = true;
    r.state = State::kOffline;  // the user itself still sees its own state
    return r;
  }
  if (require_live_device && !any_live) return r;
  r.shown = top;
  r.state = r.self_state = FromOverride(top->state);
  return r;
}

}  // namespace presence::internal
