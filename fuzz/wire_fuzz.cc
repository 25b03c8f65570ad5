// Fuzz target: decoding every protobuf message the library accepts from
// outside (a signal or an override command from the bus or a gateway, a
// change event from another engine). Decoding must answer a status, never crash, and what it accepts
// must be valid and survive a round trip.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "presence/wire.h"
#include "src/core/validate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  presence::DecodedSignal s;
  if (presence::DecodeSignal(bytes, &s).ok()) {
    if (!presence::internal::ValidateSignal(s.signal()).ok()) std::abort();
    presence::DecodedSignal again;
    if (!presence::DecodeSignal(presence::EncodeSignal(s.signal()), &again).ok()) std::abort();
  }
  presence::DecodedOverrideCommand c;
  if (presence::DecodeOverrideCommand(bytes, &c).ok()) {
    if (!presence::internal::ValidateOverrideCommand(c.command()).ok()) std::abort();
    presence::DecodedOverrideCommand again;
    if (!presence::DecodeOverrideCommand(presence::EncodeOverrideCommand(c.command()), &again).ok() ||
        again.command().override_id != c.command().override_id || again.command().op != c.command().op) {
      std::abort();
    }
  }
  auto e = presence::DecodeChangeEvent(bytes);
  if (e.ok()) {
    auto again = presence::DecodeChangeEvent(presence::EncodeChangeEvent(*e, true));
    if (!again.ok() || again->state != e->state || again->version != e->version) std::abort();
  }
  return 0;
}
