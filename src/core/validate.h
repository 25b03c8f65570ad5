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
absl::Status ValidateOverrideState(OverrideState s);
absl::Status ValidateDisconnectKind(DisconnectKind k);
// Ids, enums and the gateway of a signal (not its timestamp).
absl::Status ValidateSignal(const Signal& s);
absl::Status ValidateOptions(const Options& o);

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_VALIDATE_H_
