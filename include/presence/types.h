// File: presence/types.h
//
// The vocabulary of presence (docs/design.md section 1): states, sources, signals,
// device handles, change events and query answers. Every enum here has the same
// numbers as its twin in proto/presence/v1/presence.proto, and 0 is never a
// valid value, so a zeroed field is caught as "unspecified".
//
// Example:
//
//   presence::Signal s;
//   s.user_id = "alice";
//   s.device_id = "phone";
//   s.session_id = 7;
//   s.platform = presence::Platform::kMobile;
//   absl::StatusOr<presence::DeviceHandle> h = engine->Connect(s);
#ifndef PRESENCE_TYPES_H_
#define PRESENCE_TYPES_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "presence/export.h"

namespace presence {

// Limits on identifiers (docs/design.md section 1). Ids are opaque bytes; an id of
// length 0 or longer than the limit is rejected with InvalidArgument.
inline constexpr size_t kMaxUserIdBytes = 128;
inline constexpr size_t kMaxDeviceIdBytes = 128;
inline constexpr size_t kMaxGatewayIdBytes = 128;

// presence::State is what others see of a user.
enum class State : uint8_t { kOffline = 1, kAway = 2, kOnline = 3, kDnd = 4 };

// presence::Source says where a signal came from. Precedence is by value:
// kManual > kApp > kInferred.
//   kInferred: what the server deduces (a mobile background task, a push
//              receipt, an API call).
//   kApp:      the client app itself (WebSocket ping, foreground heartbeat).
//   kManual:   an explicit report by the user (a click, a typed message).
enum class Source : uint8_t { kInferred = 1, kApp = 2, kManual = 3 };
inline constexpr int kSourceCount = 3;

// presence::Activity: what a signal says about the person behind the device.
enum class Activity : uint8_t { kActive = 1, kIdle = 2 };

// presence::Platform: the kind of device, counted in device summaries.
enum class Platform : uint8_t {
  kWeb = 1,
  kDesktop = 2,
  kMobile = 3,
  kConsole = 4,
  kOther = 5,
};
inline constexpr int kPlatformCount = 5;

// presence::OverrideState: a manual state that a user sets (docs/design.md rule 3).
// kInvisible shows as kOffline to everyone but the user.
enum class OverrideState : uint8_t {
  kOnline = 1,
  kAway = 2,
  kDnd = 3,
  kInvisible = 4,
};

// presence::DisconnectKind: a clean disconnect (logout, tab closed normally)
// makes the device DEAD at once; an abrupt one (socket dropped, page reload)
// keeps it live for Options::reconnect_grace_ms so that a quick reconnect shows
// nothing.
enum class DisconnectKind : uint8_t { kClean = 1, kAbrupt = 2 };

// presence::Cause: why a user's published state changed.
enum class Cause : uint8_t {
  kSignal = 1,          // a device came alive or changed activity
  kTimeout = 2,         // a device stopped signalling (docs/design.md rule 1)
  kDisconnect = 3,      // a device disconnected (clean, or abrupt past grace)
  kOverride = 4,        // an override was set or revoked
  kOverrideExpiry = 5,  // an override reached its end time
  kMerge = 6,           // a record merged from elsewhere (rebuild, region)
  // Not part of the public view: what a history entry read by anyone but
  // the user says (Engine::History).
  kWithheld = 7,
};

// Names for logs and metrics ("online", "app", "timeout", ...).
PRESENCE_EXPORT absl::string_view StateName(State s);
PRESENCE_EXPORT absl::string_view SourceName(Source s);
PRESENCE_EXPORT absl::string_view PlatformName(Platform p);
PRESENCE_EXPORT absl::string_view CauseName(Cause c);
PRESENCE_EXPORT absl::string_view OverrideStateName(OverrideState s);

// presence::Signal says that a device is alive (docs/design.md section 1). The
// string views only need to live for the duration of the call that takes it.
struct Signal {
  absl::string_view user_id;    // 1..kMaxUserIdBytes bytes
  absl::string_view device_id;  // 1..kMaxDeviceIdBytes bytes
  // Identifies one connection of the device; must be > 0 and must grow when
  // the device reconnects. A signal from a session older than the device's
  // current one is stale and dropped.
  uint64_t session_id = 0;
  Platform platform = Platform::kOther;
  Source source = Source::kApp;
  Activity activity = Activity::kActive;
  // When the signal was produced, in ms on the engine's clock; 0 means "now".
  // A time more than Options::max_future_skew_ms ahead or more than
  // Options::max_signal_age_ms behind the engine's clock is rejected.
  int64_t timestamp_ms = 0;
  uint64_t trace_id = 0;        // carried into the change event it causes
  absl::string_view gateway;    // optional: the host process carrying it
};

// presence::OverrideCommand is an override call as it travels the bus
// (docs/scale-out.md, "presence_server as a cluster"): a gateway publishes
// it to the user's partition (GatewayPublisher::PublishOverride) and the
// partition's owner applies it (Engine::ApplyOverride), once: a set carries
// the id the gateway chose, and a set whose id the user already holds, a
// revoke of an id it does not hold, or a set that has already ended changes
// nothing, so that a replay of the bus or a retried publish is harmless.
enum class OverrideOp : uint8_t { kSet = 1, kRevoke = 2, kClear = 3 };
// The ids a caller chooses (a set's override_id) lie in
// [kFirstChosenOverrideId, kMaxOverrideId]; the engine's own
// (Engine::SetOverride) stay below, so the two never meet. Every id fits a
// JSON number exactly (below 2^53).
inline constexpr uint64_t kFirstChosenOverrideId = uint64_t{1} << 52;
inline constexpr uint64_t kMaxOverrideId = (uint64_t{1} << 53) - 1;
struct OverrideCommand {
  OverrideOp op = OverrideOp::kSet;
  absl::string_view user_id;
  uint64_t override_id = 0;     // kSet: the id it gets; kRevoke: the one removed
  OverrideState state = OverrideState::kDnd;  // kSet only
  int64_t set_at_ms = 0;        // when it was asked for; 0 means "now"
  int64_t until_ms = 0;         // kSet only: absolute end time, 0 until revoked
  uint64_t trace_id = 0;
  absl::string_view gateway;    // optional: the host process that published it
};

// presence::PartitionCommand is an operator's action on every user of one
// bus partition (docs/scale-out.md, "Operator actions in a cluster"): a
// gateway publishes one to each partition
// (GatewayPublisher::PublishToEveryPartition), and each partition's owner
// applies it to that partition's users when it reads it (Engine::ConsumeBus),
// in order with the partition's signals. Applying it again (a replay after a
// failover) changes nothing more for what it changed the first time.
struct PartitionCommand {
  enum class Action : uint8_t {
    // Engine::DrainGateway for the partition: every open device whose
    // signals named `drained_gateway` is disconnected cleanly.
    kDrain = 1,
    // Engine::RevokeOverridesSetBetween for the partition: every override
    // set within [set_from_ms, set_to_ms] (its set_at_ms: the clock of the
    // engine or gateway that set it).
    kRevokeOverrides = 2,
  };
  Action action = Action::kDrain;
  std::string drained_gateway;  // kDrain: 1..kMaxGatewayIdBytes bytes
  int64_t set_from_ms = 0;      // kRevokeOverrides: 0 <= from <= to
  int64_t set_to_ms = 0;
  // Filled by the publisher: the partition it is for, the gateway that
  // published it and that gateway's clock then (0 to 2^50).
  uint32_t partition = 0;
  std::string gateway;
  int64_t issued_at_ms = 0;
};
// A drain leaves alone a device heard from more than this after the drain
// was issued: read again after a failover, when the store may already hold
// what came after it, it does not disconnect a device that connected again
// since; the margin also covers a signal sent just after the drain was
// issued but put on the bus before it, which the drain does take. The
// drained gateway closes its connections that began before then.
inline constexpr int64_t kDrainHeardAfterMs = 1000;

// presence::DeviceHandle is what Engine::Connect returns: a small value that
// the host keeps beside its socket. A heartbeat on a handle costs O(1), with no
// hashing and no allocation. A handle becomes invalid when its device is
// disconnected, or is forgotten after Options::dead_retention_ms of silence;
// using it then returns NotFound. Handles are plain values: copy them freely.
struct DeviceHandle {
  uint64_t value = 0;
  bool valid() const { return value != 0; }
  friend bool operator==(DeviceHandle a, DeviceHandle b) { return a.value == b.value; }
  friend bool operator!=(DeviceHandle a, DeviceHandle b) { return a.value != b.value; }
};

// presence::DeviceSummary counts a user's live devices per platform, indexed
// by static_cast<int>(Platform) - 1.
struct DeviceSummary {
  std::array<uint16_t, kPlatformCount> live{};
  int total() const {
    int n = 0;
    for (uint16_t c : live) n += c;
    return n;
  }
  uint16_t count(Platform p) const { return live[static_cast<int>(p) - 1]; }
  friend bool operator==(const DeviceSummary& a, const DeviceSummary& b) { return a.live == b.live; }
};

// presence::ChangeEvent is one published change of a user's state (docs/design.md
// section 3). It carries two views (docs/design.md rule 8):
//   * the public view (`previous`, `state`, `last_seen_ms`, `devices`,
//     `public_version`): what everyone but the user sees. `public_version`
//     grows only when the public view changes; an event whose public_version
//     is not newer than the last one a consumer holds changed nothing public
//     (the user is invisible and only its own view moved), and a consumer
//     that serves anyone but the user must ignore its public fields;
//   * the own view (`previous_self`, `self_state`, `self_last_seen_ms`,
//     `self_devices`, `version`): what the user's own clients see. `version`
//     grows with every event of the user.
// An erasure (Engine::Erase) is published as an event with `erased` set,
// every state OFFLINE, no devices and last_seen 0: its watchers drop the user
// (the fan-out sends a removal), as if it had never existed.
// presence::OverrideInfo describes one override on a user's stack.
struct OverrideInfo {
  uint64_t id = 0;
  OverrideState state = OverrideState::kOnline;
  int64_t set_at_ms = 0;
  int64_t until_ms = 0;  // 0: until revoked
};

struct ChangeEvent {
  std::string user_id;
  State previous = State::kOffline;       // public state before
  State state = State::kOffline;          // public state now
  State previous_self = State::kOffline;  // the user's own view before
  State self_state = State::kOffline;     // the user's own view now
  bool invisible = false;                 // an INVISIBLE override is showing (own view)
  bool erased = false;                    // the user was erased
  int64_t last_seen_ms = 0;               // latest accepted signal (public view)
  int64_t self_last_seen_ms = 0;          // latest accepted signal (own view)
  uint64_t version = 0;                   // per user; grows with every event (own view)
  uint64_t public_version = 0;            // per user; grows only when the public view changes
  Cause cause = Cause::kSignal;
  DeviceSummary devices;                  // live devices (zero when invisible)
  DeviceSummary self_devices;             // live devices, own view
  uint64_t trace_id = 0;                  // of the signal that caused it
  int64_t changed_at_ms = 0;              // when the cause happened
  int64_t published_at_ms = 0;            // when this event was published
  // The override shown (docs/design.md rule 3) at publication: in the
  // public view its state and until_ms only (id and set_at_ms 0; never an
  // INVISIBLE one), in the user's own all of it; none with a view whose
  // published state is held back by its dwell (Engine::Get, which answers
  // the current view, shows it already). And the user's stack, oldest
  // first, as ListOverrides lists it (own view). A gateway answers GET
  // /presence from them.
  std::optional<OverrideInfo> shown_override;
  std::optional<OverrideInfo> self_shown_override;
  std::vector<OverrideInfo> self_overrides;
};

// presence::UserPresence answers Engine::Get for one user (docs/design.md section
// 4). Anyone but the user reads its public view (docs/design.md rule 8): an
// invisible user is OFFLINE, shows no devices and no override, its last_seen
// stays where it was when it went invisible, and its version stays where it
// was; an offline user is known only until Options::user_retention_ms past its
// public last_seen (and one never seen is not known), whatever the engine
// still holds of it. Every field of an unknown user is zero.
struct UserPresence {
  std::string user_id;
  bool known = false;              // false: nothing to show of it (as if it never existed)
  State state = State::kOffline;
  bool has_override = false;
  OverrideState override_state = OverrideState::kOnline;
  int64_t override_until_ms = 0;   // 0: no end time
  int64_t last_seen_ms = 0;        // 0: never seen
  int64_t freshness_ms = 0;        // now - last_seen_ms (0 when never seen)
  DeviceSummary devices;
  // Of the last published change of this view: the public version for
  // anyone but the user, the own-view version for the user itself.
  uint64_t version = 0;
};

}  // namespace presence

#endif  // PRESENCE_TYPES_H_
