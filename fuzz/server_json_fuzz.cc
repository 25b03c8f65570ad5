// Fuzz target: the example server's parsing of untrusted bytes, as a
// WebSocket message on /presence/stream and as the body of
// POST /presence/override (examples/presence_server/client_message.h), and
// the JSON reader under them. Every input must answer a value or an error,
// never crash; and what parses as a message must name at most the allowed
// number of ids.
#include <cstdint>
#include <cstdlib>

#include "client_message.h"
#include "json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  (void)presence_server::ParseJson(text);
  auto m = presence_server::ParseClientMessage(text);
  if (m.ok() && m->users.size() + m->topics.size() > presence_server::kMaxIdsPerMessage) std::abort();
  if (!m.ok()) (void)presence_server::ErrorCodeOf(m.status());
  (void)presence_server::ParseOverrideRequest(text);
  return 0;
}
