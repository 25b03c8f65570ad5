// File: presence/history.h
//
// presence::HistoryStore keeps the audit trail: every published transition
// of every user, append-only (docs/design.md section 4). The engine appends each
// published change after it is durable in the Store, and answers
// Engine::History, Engine::TimeInStates and last-seen questions from it.
//
// IDEMPOTENCE: a transition is identified by (user_id, version); appending
// one already held changes nothing.
//
// THREAD SAFETY: implementations must accept calls from several threads.
#ifndef PRESENCE_HISTORY_H_
#define PRESENCE_HISTORY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "presence/export.h"
#include "presence/types.h"

namespace presence {

// presence::Transition: one published change, as the audit trail keeps it.
// Each carries both views of the change event it records (see ChangeEvent):
// the audit trail answers the user itself and operators with every field, and
// anyone else with the public view only (Engine::History).
struct Transition {
  std::string user_id;
  uint64_t version = 0;  // the event's version (own view): the key
  int64_t at_ms = 0;     // when it was published
  State previous = State::kOffline;
  State state = State::kOffline;            // public view
  State self_state = State::kOffline;       // own view (differs when invisible)
  Cause cause = Cause::kSignal;
  uint64_t trace_id = 0;
  int64_t last_seen_ms = 0;                 // own view
  uint64_t public_version = 0;              // public view
  int64_t public_last_seen_ms = 0;          // public view
};

// presence::DeviceEvent: what happened to one device (docs/design.md
// section 4: the per-device audit). The kDead* events end a session's life
// and say why.
enum class DeviceEvent : uint8_t {
  kConnect = 1,         // a session became live: a new device, a new session, or a revival
  kGrace = 2,           // an abrupt disconnect: the reconnect grace began
  kDeadTimeout = 3,     // silent past its offline_after, probes (if any) unanswered
  kDeadAfterGrace = 4,  // an abrupt disconnect, and the grace ended without a reconnect
  kDeadAbrupt = 5,      // an abrupt disconnect of a device whose sources had already lapsed
  kDeadClean = 6,       // a clean disconnect
  kDeadDrained = 7,     // the operator drained its gateway (Engine::DrainGateway)
  kDeadReplaced = 8,    // a newer session of the same device took over (live or in grace)
  kProbeAnswered = 9,   // the host answered a probe of the silent device (rule 9)
  kProbeGivenUp = 10,   // the device died for silence with its probes unanswered
};

// presence::DeviceTransition: one entry of a device's audit. Identified by
// (user_id, device_id, session_id, at_ms, event): appending one already held
// changes nothing.
struct DeviceTransition {
  std::string user_id;
  std::string device_id;
  int64_t at_ms = 0;        // the engine's clock when it happened
  uint64_t session_id = 0;  // the session it happened to
  DeviceEvent event = DeviceEvent::kConnect;
  Platform platform = Platform::kOther;  // the device's platform then
};

// Its name ("connect", "dead_timeout", ...), as the example server and the
// Go binding spell it.
PRESENCE_EXPORT absl::string_view DeviceEventName(DeviceEvent e);

class PRESENCE_EXPORT HistoryStore {
 public:
  virtual ~HistoryStore();

  // Appends transitions (in any order; each user's are kept by at_ms, then
  // version). Non-OK: some may not be stored; appending again is safe.
  virtual absl::Status Append(absl::Span<const Transition> transitions) = 0;

  // The user's transitions with at_ms in [from_ms, to_ms], oldest first. An
  // unknown user has none (an empty answer, not an error).
  virtual absl::StatusOr<std::vector<Transition>> Query(absl::string_view user_id, int64_t from_ms,
                                                        int64_t to_ms) = 0;

  // The user's latest transition with at_ms < before_ms, if any: the state
  // the user was in when a window opened.
  virtual absl::StatusOr<std::optional<Transition>> LastBefore(absl::string_view user_id,
                                                               int64_t before_ms) = 0;

  // Appends device transitions (in any order; each device's are kept by
  // at_ms, then the order they came in). Non-OK: some may not be stored;
  // appending again is safe.
  virtual absl::Status AppendDevices(absl::Span<const DeviceTransition> transitions) = 0;

  // The device's transitions with at_ms in [from_ms, to_ms], oldest first.
  // An unknown user or device has none.
  virtual absl::StatusOr<std::vector<DeviceTransition>> QueryDevice(absl::string_view user_id,
                                                                    absl::string_view device_id,
                                                                    int64_t from_ms,
                                                                    int64_t to_ms) = 0;

  // Removes every transition of the user, its devices' included (right to
  // be forgotten).
  virtual absl::Status Erase(absl::string_view user_id) = 0;

  // Removes every transition, device transitions included, with at_ms <
  // before_ms (retention).
  virtual absl::Status DropBefore(int64_t before_ms) = 0;
};

PRESENCE_EXPORT std::unique_ptr<HistoryStore> NewMemoryHistoryStore();

}  // namespace presence

#endif  // PRESENCE_HISTORY_H_
