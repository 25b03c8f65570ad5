// Gateway ids interned to one byte per device, so that an operator can drain
// every device a gateway carried (docs/design.md section 7) without a string per
// device. Only the slow path (a signal that names a new gateway) writes.
#ifndef PRESENCE_SRC_CORE_GATEWAY_TABLE_H_
#define PRESENCE_SRC_CORE_GATEWAY_TABLE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "src/core/mutex.h"

namespace presence::internal {

class GatewayTable {
 public:
  static constexpr size_t kMaxGateways = 255;

  // 0 for an empty id; otherwise the id's index (1..255), interned on first
  // use. ResourceExhausted past 255 distinct gateways.
  absl::StatusOr<uint8_t> Intern(absl::string_view gateway) {
    if (gateway.empty()) return uint8_t{0};
    if (uint8_t g = Find(gateway); g != 0) return g;
    internal::MutexLock lock(&mu_);
    for (size_t i = 0; i < names_.size(); ++i) {
      if (names_[i] == gateway) return static_cast<uint8_t>(i + 1);
    }
    if (names_.size() >= kMaxGateways) {
      return absl::ResourceExhaustedError("the engine already knows 255 gateways");
    }
    names_.emplace_back(gateway);
    return static_cast<uint8_t>(names_.size());
  }
  // 0 when unknown.
  uint8_t Find(absl::string_view gateway) const {
    internal::MutexLock lock(&mu_);
    for (size_t i = 0; i < names_.size(); ++i) {
      if (names_[i] == gateway) return static_cast<uint8_t>(i + 1);
    }
    return 0;
  }
  std::string Name(uint8_t g) const {
    internal::MutexLock lock(&mu_);
    return g == 0 || g > names_.size() ? std::string() : names_[g - 1];
  }

 private:
  mutable internal::Mutex mu_;
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_);
};

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_GATEWAY_TABLE_H_
