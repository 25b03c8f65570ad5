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

  // Removes every transition of the user (right to be forgotten).
  virtual absl::Status Erase(absl::string_view user_id) = 0;

  // Removes every transition with at_ms < before_ms (retention).
  virtual absl::Status DropBefore(int64_t before_ms) = 0;
};

PRESENCE_EXPORT std::unique_ptr<HistoryStore> NewMemoryHistoryStore();

}  // namespace presence

#endif  // PRESENCE_HISTORY_H_
