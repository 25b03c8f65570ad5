// File: examples/presence_server/client_message.h
//
// What clients send the example server, parsed and checked, with no server
// state: ParseClientMessage for WebSocket messages on /presence/stream, and
// ParseOverrideRequest for the body of POST /presence/override. Both take
// untrusted bytes and answer a value or an error; neither allocates without
// bound (see kMaxIdsPerMessage and JsonLimits), so a fuzzer can target them
// directly.
//
// Messages (JSON objects, "type" first by convention, unknown fields are
// rejected so that typos are caught):
//   {"type":"heartbeat"}                                 also "activity", "source"
//   {"type":"activity","activity":"idle"}                "active" | "idle"; "source"
//   {"type":"subscribe","users":["bob"],"topics":["team"]}
//   {"type":"unsubscribe","users":["bob"],"topics":["team"]}
//   {"type":"bye"}                                       a clean disconnect (logout)
//   {"type":"auth","token":"..."}                        the first message of a client that
//                                                        sent no Authorization header
// Every message may carry "id" (a string or an integer), echoed in the answer
// to it ("subscribed", "unsubscribed", "error").
#ifndef PRESENCE_EXAMPLES_SERVER_CLIENT_MESSAGE_H_
#define PRESENCE_EXAMPLES_SERVER_CLIENT_MESSAGE_H_

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "presence/types.h"

namespace presence_server {

// Most user ids plus topics one message may name.
inline constexpr size_t kMaxIdsPerMessage = 1000;
// Largest message ParseClientMessage looks at; the server enforces its own
// (smaller, configurable) limit before calling it.
inline constexpr size_t kMaxClientMessageBytes = 1 << 20;

enum class ClientMessageType { kHeartbeat, kActivity, kSubscribe, kUnsubscribe, kBye, kAuth };

struct ClientMessage {
  ClientMessageType type = ClientMessageType::kHeartbeat;
  // heartbeat: unset keeps the device's current activity; activity: always set.
  std::optional<presence::Activity> activity;
  presence::Source source = presence::Source::kApp;
  std::vector<std::string> users;   // subscribe, unsubscribe
  std::vector<std::string> topics;  // subscribe, unsubscribe
  std::string token;                // auth
  // The request id, as JSON text ("7" or "\"abc\""), empty when absent.
  std::string id_json;
};

absl::StatusOr<ClientMessage> ParseClientMessage(absl::string_view text);

// The body of POST /presence/override:
//   {"state":"dnd", "until_ms":1767225600000}    an absolute time on the server clock
//   {"state":"invisible", "duration_ms":600000}  or a duration; neither: until revoked
//   "user_id" is optional and must be the caller's own (the server checks).
struct OverrideRequest {
  std::string user_id;  // empty: the caller
  presence::OverrideState state = presence::OverrideState::kDnd;
  int64_t until_ms = 0;
  int64_t duration_ms = 0;
};
absl::StatusOr<OverrideRequest> ParseOverrideRequest(absl::string_view text);

// The error code for a status that the parsers above returned:
// "malformed_json" when the bytes are not JSON, "bad_message" when the JSON
// does not describe a valid message.
std::string ErrorCodeOf(const absl::Status& status);

// Names on the wire, and their inverses (nullopt for an unknown name).
std::optional<presence::Activity> ActivityFromName(absl::string_view name);
std::optional<presence::Source> SourceFromName(absl::string_view name);
std::optional<presence::OverrideState> OverrideStateFromName(absl::string_view name);
std::optional<presence::Platform> PlatformFromName(absl::string_view name);

}  // namespace presence_server

#endif  // PRESENCE_EXAMPLES_SERVER_CLIENT_MESSAGE_H_
