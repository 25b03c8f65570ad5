// Input validation shared by the C++ API (and, through it, the C ABI). Each
// check returns InvalidArgument with a message that names what is wrong.
#ifndef PRESENCE_SRC_CORE_VALIDATE_H_
#define PRESENCE_SRC_CORE_VALIDATE_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "presence/options.h"
#include "presence/types.h"

namespace presence::internal {

absl::Status ValidateUserId(absl::string_view id);
absl::Status ValidateDeviceId(absl::string_view id);
absl::Status ValidateSource(Source s);
absl::Status ValidateActivity(Activity a);
absl::Status ValidatePlatform(Platform p);
absl::Status ValidateState(State s);
absl::Status ValidateOverrideState(OverrideState s);
absl::Status ValidateDisconnectKind(DisconnectKind k);
// A gateway id: at most kMaxGatewayIdBytes bytes (empty: none named).
absl::Status ValidateGateway(absl::string_view gateway);
// Ids, enums and the gateway of a signal (not its timestamp).
absl::Status ValidateSignal(const Signal& s);
// An override's end time, `until_ms` (0: none), against the clock of the
// process that takes it: an end not after now is refused.
absl::Status ValidateOverrideEnd(int64_t until_ms, int64_t now_ms);
// Ids, enums and the gateway of an override command (not its times against
// a clock): a set's id must be a chosen one (kFirstChosenOverrideId..
// kMaxOverrideId), a revoke's must be given.
absl::Status ValidateOverrideCommand(const OverrideCommand& c);
// Its action and the action's fields, its gateway and its time (not its
// partition, which only the bus it travels knows).
absl::Status ValidatePartitionCommand(const PartitionCommand& c);
absl::Status ValidateOptions(const Options& o);

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_VALIDATE_H_
