// Names of the public enums, for logs and metrics labels.
#include "presence/history.h"
#include "presence/types.h"

namespace presence {

absl::string_view StateName(State s) {
  switch (s) {
    case State::kOffline: return "offline";
    case State::kAway: return "away";
    case State::kOnline: return "online";
    case State::kDnd: return "dnd";
  }
  return "unknown";
}

absl::string_view SourceName(Source s) {
  switch (s) {
    case Source::kInferred: return "inferred";
    case Source::kApp: return "app";
    case Source::kManual: return "manual";
  }
  return "unknown";
}

absl::string_view PlatformName(Platform p) {
  switch (p) {
    case Platform::kWeb: return "web";
    case Platform::kDesktop: return "desktop";
    case Platform::kMobile: return "mobile";
    case Platform::kConsole: return "console";
    case Platform::kOther: return "other";
  }
  return "unknown";
}

absl::string_view CauseName(Cause c) {
  switch (c) {
    case Cause::kSignal: return "signal";
    case Cause::kTimeout: return "timeout";
    case Cause::kDisconnect: return "disconnect";
    case Cause::kOverride: return "override";
    case Cause::kOverrideExpiry: return "override_expiry";
    case Cause::kMerge: return "merge";
    case Cause::kWithheld: return "withheld";
  }
  return "unknown";
}

absl::string_view DeviceEventName(DeviceEvent e) {
  switch (e) {
    case DeviceEvent::kConnect: return "connect";
    case DeviceEvent::kGrace: return "grace";
    case DeviceEvent::kDeadTimeout: return "dead_timeout";
    case DeviceEvent::kDeadAfterGrace: return "dead_after_grace";
    case DeviceEvent::kDeadAbrupt: return "dead_abrupt";
    case DeviceEvent::kDeadClean: return "dead_clean";
    case DeviceEvent::kDeadDrained: return "dead_drained";
    case DeviceEvent::kDeadReplaced: return "dead_replaced";
    case DeviceEvent::kProbeAnswered: return "probe_answered";
    case DeviceEvent::kProbeGivenUp: return "probe_given_up";
  }
  return "unknown";
}

absl::string_view OverrideStateName(OverrideState s) {
  switch (s) {
    case OverrideState::kOnline: return "online";
    case OverrideState::kAway: return "away";
    case OverrideState::kDnd: return "dnd";
    case OverrideState::kInvisible: return "invisible";
  }
  return "unknown";
}

}  // namespace presence
