#include "src/core/validate.h"

#include "absl/strings/str_cat.h"
#include "presence/bus.h"

namespace presence::internal {

namespace {

absl::Status ValidateId(absl::string_view what, absl::string_view id, size_t max) {
  if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (id.size() > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", id.size(), " bytes; the most is ", max));
  }
  return absl::OkStatus();
}

template <typename E>
absl::Status ValidateEnum(absl::string_view what, E value, int lo, int hi) {
  const int v = static_cast<int>(value);
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(absl::StrCat("unknown ", what, " value ", v));
  }
  return absl::OkStatus();
}

absl::Status ValidatePolicy(absl::string_view name, const SourcePolicy& p) {
  if (p.interval_ms <= 0 || p.offline_after_ms < p.interval_ms) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": interval_ms must be > 0 and offline_after_ms at least interval_ms"));
  }
  if (p.offline_after_ms > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": offline_after_ms is too large"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateGateway(absl::string_view gateway) {
  if (gateway.size() > kMaxGatewayIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("gateway is ", gateway.size(), " bytes; the most is ", kMaxGatewayIdBytes));
  }
  return absl::OkStatus();
}

absl::Status ValidateUserId(absl::string_view id) { return ValidateId("user_id", id, kMaxUserIdBytes); }
absl::Status ValidateDeviceId(absl::string_view id) {
  return ValidateId("device_id", id, kMaxDeviceIdBytes);
}
absl::Status ValidateSource(Source s) { return ValidateEnum("source", s, 1, 3); }
absl::Status ValidateActivity(Activity a) { return ValidateEnum("activity", a, 1, 2); }
absl::Status ValidatePlatform(Platform p) { return ValidateEnum("platform", p, 1, 5); }
absl::Status ValidateState(State s) { return ValidateEnum("state", s, 1, 4); }
absl::Status ValidateOverrideState(OverrideState s) { return ValidateEnum("override state", s, 1, 4); }
absl::Status ValidateDisconnectKind(DisconnectKind k) {
  return ValidateEnum("disconnect kind", k, 1, 2);
}

absl::Status ValidateSignal(const Signal& s) {
  if (auto st = ValidateUserId(s.user_id); !st.ok()) return st;
  if (auto st = ValidateDeviceId(s.device_id); !st.ok()) return st;
  if (s.session_id == 0) return absl::InvalidArgumentError("session_id must be > 0");
  if (auto st = ValidatePlatform(s.platform); !st.ok()) return st;
  if (auto st = ValidateSource(s.source); !st.ok()) return st;
  if (auto st = ValidateActivity(s.activity); !st.ok()) return st;
  return ValidateGateway(s.gateway);
}

absl::Status ValidateOverrideEnd(int64_t until_ms, int64_t now_ms) {
  if (until_ms != 0 && until_ms <= now_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("override ends at ", until_ms, ", not after now (", now_ms, ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateOverrideCommand(const OverrideCommand& c) {
  if (auto st = ValidateUserId(c.user_id); !st.ok()) return st;
  if (auto st = ValidateEnum("override op", c.op, 1, 3); !st.ok()) return st;
  if (c.op == OverrideOp::kSet) {
    if (auto st = ValidateOverrideState(c.state); !st.ok()) return st;
    if (c.override_id < kFirstChosenOverrideId || c.override_id > kMaxOverrideId) {
      return absl::InvalidArgumentError(absl::StrCat("the override id of a set must be in [",
                                                     kFirstChosenOverrideId, ", ", kMaxOverrideId,
                                                     "], not ", c.override_id));
    }
    if (c.until_ms < 0) return absl::InvalidArgumentError("until_ms must be >= 0");
  }
  if (c.op == OverrideOp::kRevoke && c.override_id == 0) {
    return absl::InvalidArgumentError("a revoke needs the override id");
  }
  if (c.set_at_ms < 0) return absl::InvalidArgumentError("set_at_ms must be >= 0");
  return ValidateGateway(c.gateway);
}

absl::Status ValidatePartitionCommand(const PartitionCommand& c) {
  switch (c.action) {
    case PartitionCommand::Action::kDrain:
      if (c.drained_gateway.empty()) return absl::InvalidArgumentError("a drain needs the gateway it drains");
      if (auto st = ValidateGateway(c.drained_gateway); !st.ok()) return st;
      break;
    case PartitionCommand::Action::kRevokeOverrides:
      if (c.set_from_ms < 0 || c.set_to_ms < 0) {
        return absl::InvalidArgumentError("set_from_ms and set_to_ms must be >= 0");
      }
      if (c.set_from_ms > c.set_to_ms) return absl::InvalidArgumentError("set_from_ms is after set_to_ms");
      break;
    default: return absl::InvalidArgumentError("unknown partition command action");
  }
  // Bounded, so that the owner's arithmetic on it cannot overflow.
  if (c.issued_at_ms < 0 || c.issued_at_ms > (int64_t{1} << 50)) {
    return absl::InvalidArgumentError("issued_at_ms must be in [0, 2^50]");
  }
  return ValidateGateway(c.gateway);
}

absl::Status ValidateOptions(const Options& o) {
  if (o.shards < 0 || o.shards > 256) {
    return absl::InvalidArgumentError("shards must be in [0, 256]");
  }
  if (!o.owns_all_partitions && o.bus == nullptr) {
    return absl::InvalidArgumentError("owns_all_partitions is false, but there is no bus to partition");
  }
  if (o.change_bus != nullptr && o.bus != nullptr && o.change_bus->partitions() != o.bus->partitions()) {
    return absl::InvalidArgumentError(absl::StrCat("change_bus has ", o.change_bus->partitions(),
                                                   " partitions and bus ", o.bus->partitions(),
                                                   ": a user's changes go to its partition of both"));
  }
  if (auto st = ValidatePolicy("inferred", o.inferred); !st.ok()) return st;
  if (auto st = ValidatePolicy("app", o.app); !st.ok()) return st;
  if (auto st = ValidatePolicy("manual", o.manual); !st.ok()) return st;
  const int64_t longest =
      std::max({o.inferred.offline_after_ms, o.app.offline_after_ms, o.manual.offline_after_ms});
  if (o.reconnect_grace_ms < 0 || o.reconnect_grace_ms > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("reconnect_grace_ms must be in [0, 2^30]");
  }
  // A user record keeps its views' last changes as 32-bit ages (49.7 days).
  if (o.min_dwell_ms < 0 || o.min_dwell_ms > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("min_dwell_ms must be in [0, 2^30]");
  }
  if (o.max_future_skew_ms < 0 || o.max_future_skew_ms > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("max_future_skew_ms must be in [0, 2^30]");
  }
  if (o.max_signal_age_ms < longest) {
    return absl::InvalidArgumentError(
        "max_signal_age_ms must be at least the largest offline_after_ms");
  }
  // Device records hold 32-bit wrapping times (24.8 days).
  if (o.dead_retention_ms < 0 || o.dead_retention_ms > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("dead_retention_ms must be in [0, 2^30]");
  }
  if (o.max_signal_age_ms > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("max_signal_age_ms must be at most 2^30");
  }
  if (o.user_retention_ms < 0) return absl::InvalidArgumentError("user_retention_ms must be >= 0");
  if (o.overload_tick_budget_ms < 0) {
    return absl::InvalidArgumentError("overload_tick_budget_ms must be >= 0");
  }
  if (o.overload_enter_ticks < 1 || o.overload_exit_ticks < 1) {
    return absl::InvalidArgumentError("overload_enter_ticks and overload_exit_ticks must be >= 1");
  }
  if (o.false_offline_window_ms < 0) {
    return absl::InvalidArgumentError("false_offline_window_ms must be >= 0");
  }
  if (o.max_devices_per_user < 1 || o.max_devices_per_user > 65535) {
    return absl::InvalidArgumentError("max_devices_per_user must be in [1, 65535]");
  }
  if (o.max_overrides_per_user < 1) {
    return absl::InvalidArgumentError("max_overrides_per_user must be >= 1");
  }
  if (o.max_signals_per_device_per_sec < 0 || o.max_signals_per_device_per_sec > 65535) {
    return absl::InvalidArgumentError("max_signals_per_device_per_sec must be in [0, 65535]");
  }
  if (o.memory_budget_bytes < 0) return absl::InvalidArgumentError("memory_budget_bytes must be >= 0");
  if (o.detector_floor_ms < 0) return absl::InvalidArgumentError("detector_floor_ms must be >= 0");
  if (o.probe_margin_ms < 0 || o.probe_margin_ms > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("probe_margin_ms must be in [0, 2^30]");
  }
  if (o.probe_retry_ms <= 0 || o.probe_retry_ms > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("probe_retry_ms must be in [1, 2^30]");
  }
  if (o.max_probes < 1 || o.max_probes > kMaxProbes) {
    return absl::InvalidArgumentError(absl::StrCat("max_probes must be in [1, ", kMaxProbes, "]"));
  }
  if (o.max_probes_per_gateway_per_sec < 0 || o.max_probes_per_gateway_per_sec > 65535) {
    return absl::InvalidArgumentError("max_probes_per_gateway_per_sec must be in [0, 65535]");
  }
  return absl::OkStatus();
}

}  // namespace presence::internal
