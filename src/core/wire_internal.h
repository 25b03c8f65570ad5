// The ChangeEvent <-> presence.v1.ChangeEvent conversion behind
// EncodeChangeEvent and DecodeChangeEvent (presence/wire.h), for messages of
// the core that embed a ChangeEvent (presence.v1.MirroredChange, region.cc).
#ifndef PRESENCE_SRC_CORE_WIRE_INTERNAL_H_
#define PRESENCE_SRC_CORE_WIRE_INTERNAL_H_

#include "absl/status/statusor.h"
#include "presence/types.h"
#include "presence/v1/presence.pb.h"

namespace presence::internal {

// See EncodeChangeEvent for what include_self adds.
void ChangeEventToProto(const ChangeEvent& event, bool include_self, v1::ChangeEvent* out);
// Validates like DecodeChangeEvent: InvalidArgument for a bad id or enum.
absl::StatusOr<ChangeEvent> ChangeEventFromProto(const v1::ChangeEvent& m);

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_WIRE_INTERNAL_H_
