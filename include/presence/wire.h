// File: presence/wire.h
//
// Encoding to and from the wire schema, proto/presence/v1/presence.proto.
// Other languages read the same bytes with their own protobuf runtime.
//
//   std::string bytes = presence::EncodeSignal(signal);
//   presence::DecodedSignal in;
//   absl::Status st = presence::DecodeSignal(bytes, &in);
//   if (st.ok()) engine->Signal(in.signal());
//
// Decoding never trusts its input: malformed bytes, a missing or unknown enum
// value, or an id out of bounds answer InvalidArgument.
#ifndef PRESENCE_WIRE_H_
#define PRESENCE_WIRE_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "presence/export.h"
#include "presence/types.h"

namespace presence {

// presence::DecodedSignal owns the bytes that its signal() points into; keep
// it alive while the signal is in use.
class PRESENCE_EXPORT DecodedSignal {
 public:
  Signal signal() const;
  // Set when the record is a disconnect of the signal's session (see
  // EncodeDisconnect), not a sign of life.
  std::optional<DisconnectKind> disconnect() const { return disconnect_; }

 private:
  friend PRESENCE_EXPORT absl::Status DecodeSignal(absl::string_view, DecodedSignal*);
  std::string user_id_, device_id_, gateway_;
  Signal fields_;  // every field but the views
  std::optional<DisconnectKind> disconnect_;
};

// A presence.v1.Signal.
PRESENCE_EXPORT std::string EncodeSignal(const Signal& signal);
// A presence.v1.Signal that ends the session of `session` (its user, device,
// session id, time, trace id and gateway): a disconnect, as it travels the
// bus.
PRESENCE_EXPORT std::string EncodeDisconnect(const Signal& session, DisconnectKind kind);
PRESENCE_EXPORT absl::Status DecodeSignal(absl::string_view bytes, DecodedSignal* out);

// presence::DecodedOverrideCommand owns the bytes that its command() points
// into; keep it alive while the command is in use.
class PRESENCE_EXPORT DecodedOverrideCommand {
 public:
  OverrideCommand command() const;

 private:
  friend PRESENCE_EXPORT absl::Status DecodeOverrideCommand(absl::string_view,
                                                            DecodedOverrideCommand*);
  std::string user_id_, gateway_;
  OverrideCommand fields_;  // every field but the views
};

// A presence.v1.OverrideCommand (bus record type kOverride). Decoding checks
// what the engine requires of a command (a set's id among the chosen ones,
// a revoke's id given, the state and op known).
PRESENCE_EXPORT std::string EncodeOverrideCommand(const OverrideCommand& command);
PRESENCE_EXPORT absl::Status DecodeOverrideCommand(absl::string_view bytes,
                                                   DecodedOverrideCommand* out);

// A presence.v1.EraseCommand (bus record type kErase): the erasure of
// `user_id` that `gateway` published. Decoding checks both.
struct DecodedEraseCommand {
  std::string user_id;
  std::string gateway;
};
PRESENCE_EXPORT std::string EncodeEraseCommand(absl::string_view user_id, absl::string_view gateway);
PRESENCE_EXPORT absl::Status DecodeEraseCommand(absl::string_view bytes, DecodedEraseCommand* out);

// A presence.v1.PartitionCommand (bus record type kCommand). Decoding checks
// the action and its fields, the gateway and the time.
PRESENCE_EXPORT std::string EncodePartitionCommand(const PartitionCommand& command);
PRESENCE_EXPORT absl::Status DecodePartitionCommand(absl::string_view bytes, PartitionCommand* out);

// A presence.v1.ChangeEvent. Its state, previous, last_seen, devices and
// shown override are always the public view. With include_self, the user's
// own view comes too (self_state, invisible, its last_seen, devices, shown
// override and override stack): for the user's own clients and for other
// engines, never for anyone else.
PRESENCE_EXPORT std::string EncodeChangeEvent(const ChangeEvent& event, bool include_self = false);
PRESENCE_EXPORT absl::StatusOr<ChangeEvent> DecodeChangeEvent(absl::string_view bytes);

}  // namespace presence

#endif  // PRESENCE_WIRE_H_
