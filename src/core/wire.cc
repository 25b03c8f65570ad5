#include "presence/wire.h"

#include "absl/strings/str_cat.h"
#include "presence/v1/presence.pb.h"
#include "src/core/validate.h"
#include "src/core/wire_internal.h"

namespace presence {

namespace {

namespace pb = ::presence::v1;

void SummaryToProto(const DeviceSummary& s, pb::DeviceSummary* out) {
  out->set_web(s.count(Platform::kWeb));
  out->set_desktop(s.count(Platform::kDesktop));
  out->set_mobile(s.count(Platform::kMobile));
  out->set_console(s.count(Platform::kConsole));
  out->set_other(s.count(Platform::kOther));
}

absl::StatusOr<DeviceSummary> SummaryFromProto(const pb::DeviceSummary& s) {
  DeviceSummary out;
  const uint32_t counts[] = {s.web(), s.desktop(), s.mobile(), s.console(), s.other()};
  for (int i = 0; i < kPlatformCount; ++i) {
    if (counts[i] > 0xffff) return absl::InvalidArgumentError("device count out of range");
    out.live[i] = static_cast<uint16_t>(counts[i]);
  }
  return out;
}

absl::StatusOr<State> StateFromProto(int v, absl::string_view field) {
  if (v < 1 || v > 4) return absl::InvalidArgumentError(absl::StrCat("unknown ", field, " value ", v));
  return static_cast<State>(v);
}

// `bytes` parsed into `m`; InvalidArgument naming the message when they
// are not one.
template <typename Message>
absl::Status Parse(absl::string_view bytes, Message* m) {
  if (m->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("malformed ", Message::descriptor()->full_name()));
}

void OverrideToProto(const OverrideInfo& o, pb::Override* out) {
  out->set_id(o.id);
  out->set_state(static_cast<pb::OverrideState>(o.state));
  out->set_set_at_ms(o.set_at_ms);
  out->set_until_ms(o.until_ms);
}

absl::StatusOr<OverrideInfo> OverrideFromProto(const pb::Override& m) {
  const auto state = static_cast<OverrideState>(m.state());
  if (auto st = internal::ValidateOverrideState(state); !st.ok()) return st;
  if (m.until_ms() < 0) return absl::InvalidArgumentError("an override's until_ms must be >= 0");
  return OverrideInfo{m.id(), state, m.set_at_ms(), m.until_ms()};
}

}  // namespace

Signal DecodedSignal::signal() const {
  Signal s = fields_;
  s.user_id = user_id_;
  s.device_id = device_id_;
  s.gateway = gateway_;
  return s;
}

std::string EncodeSignal(const Signal& s) {
  pb::Signal m;
  m.set_user_id(std::string(s.user_id));
  m.set_device_id(std::string(s.device_id));
  m.set_session_id(s.session_id);
  m.set_platform(static_cast<pb::Platform>(s.platform));
  m.set_source(static_cast<pb::Source>(s.source));
  m.set_activity(static_cast<pb::Activity>(s.activity));
  m.set_timestamp_ms(s.timestamp_ms);
  m.set_trace_id(s.trace_id);
  m.set_gateway(std::string(s.gateway));
  return m.SerializeAsString();
}

std::string EncodeDisconnect(const Signal& session, DisconnectKind kind) {
  pb::Signal m;
  m.ParseFromString(EncodeSignal(session));
  m.set_disconnect(static_cast<pb::Disconnect>(kind));
  return m.SerializeAsString();
}

absl::Status DecodeSignal(absl::string_view bytes, DecodedSignal* out) {
  if (out == nullptr) return absl::InvalidArgumentError("out is null");
  pb::Signal m;
  if (auto st = Parse(bytes, &m); !st.ok()) return st;
  DecodedSignal d;
  d.user_id_ = m.user_id();
  d.device_id_ = m.device_id();
  d.gateway_ = m.gateway();
  d.fields_.session_id = m.session_id();
  d.fields_.platform = static_cast<Platform>(m.platform());
  d.fields_.source = static_cast<Source>(m.source());
  d.fields_.activity = static_cast<Activity>(m.activity());
  d.fields_.timestamp_ms = m.timestamp_ms();
  d.fields_.trace_id = m.trace_id();
  if (m.disconnect() != pb::DISCONNECT_NONE) {
    const auto kind = static_cast<DisconnectKind>(m.disconnect());
    if (auto st = internal::ValidateDisconnectKind(kind); !st.ok()) return st;
    d.disconnect_ = kind;
  }
  if (auto st = internal::ValidateSignal(d.signal()); !st.ok()) return st;
  *out = std::move(d);
  return absl::OkStatus();
}

OverrideCommand DecodedOverrideCommand::command() const {
  OverrideCommand c = fields_;
  c.user_id = user_id_;
  c.gateway = gateway_;
  return c;
}

std::string EncodeOverrideCommand(const OverrideCommand& c) {
  pb::OverrideCommand m;
  m.set_user_id(std::string(c.user_id));
  m.set_op(static_cast<pb::OverrideOp>(c.op));
  m.set_override_id(c.override_id);
  if (c.op == OverrideOp::kSet) {
    m.set_state(static_cast<pb::OverrideState>(c.state));
    m.set_until_ms(c.until_ms);
  }
  m.set_set_at_ms(c.set_at_ms);
  m.set_trace_id(c.trace_id);
  m.set_gateway(std::string(c.gateway));
  return m.SerializeAsString();
}

absl::Status DecodeOverrideCommand(absl::string_view bytes, DecodedOverrideCommand* out) {
  if (out == nullptr) return absl::InvalidArgumentError("out is null");
  pb::OverrideCommand m;
  if (auto st = Parse(bytes, &m); !st.ok()) return st;
  DecodedOverrideCommand d;
  d.user_id_ = m.user_id();
  d.gateway_ = m.gateway();
  d.fields_.op = static_cast<OverrideOp>(m.op());
  d.fields_.override_id = m.override_id();
  if (d.fields_.op == OverrideOp::kSet) d.fields_.state = static_cast<OverrideState>(m.state());
  d.fields_.set_at_ms = m.set_at_ms();
  d.fields_.until_ms = m.until_ms();
  d.fields_.trace_id = m.trace_id();
  if (auto st = internal::ValidateOverrideCommand(d.command()); !st.ok()) return st;
  *out = std::move(d);
  return absl::OkStatus();
}

std::string EncodeEraseCommand(absl::string_view user_id, absl::string_view gateway) {
  pb::EraseCommand m;
  m.set_user_id(std::string(user_id));
  m.set_gateway(std::string(gateway));
  return m.SerializeAsString();
}

absl::Status DecodeEraseCommand(absl::string_view bytes, DecodedEraseCommand* out) {
  if (out == nullptr) return absl::InvalidArgumentError("out is null");
  pb::EraseCommand m;
  if (auto st = Parse(bytes, &m); !st.ok()) return st;
  if (auto st = internal::ValidateUserId(m.user_id()); !st.ok()) return st;
  if (auto st = internal::ValidateGateway(m.gateway()); !st.ok()) return st;
  out->user_id = std::move(*m.mutable_user_id());
  out->gateway = std::move(*m.mutable_gateway());
  return absl::OkStatus();
}

std::string EncodePartitionCommand(const PartitionCommand& c) {
  pb::PartitionCommand m;
  m.set_partition(c.partition);
  m.set_gateway(c.gateway);
  m.set_issued_at_ms(c.issued_at_ms);
  switch (c.action) {
    case PartitionCommand::Action::kDrain: m.mutable_drain()->set_gateway(c.drained_gateway); break;
    case PartitionCommand::Action::kRevokeOverrides:
      m.mutable_revoke_overrides()->set_set_from_ms(c.set_from_ms);
      m.mutable_revoke_overrides()->set_set_to_ms(c.set_to_ms);
      break;
  }
  return m.SerializeAsString();
}

absl::Status DecodePartitionCommand(absl::string_view bytes, PartitionCommand* out) {
  if (out == nullptr) return absl::InvalidArgumentError("out is null");
  pb::PartitionCommand m;
  if (auto st = Parse(bytes, &m); !st.ok()) return st;
  PartitionCommand c;
  switch (m.action_case()) {
    case pb::PartitionCommand::kDrain:
      c.action = PartitionCommand::Action::kDrain;
      c.drained_gateway = std::move(*m.mutable_drain()->mutable_gateway());
      break;
    case pb::PartitionCommand::kRevokeOverrides:
      c.action = PartitionCommand::Action::kRevokeOverrides;
      c.set_from_ms = m.revoke_overrides().set_from_ms();
      c.set_to_ms = m.revoke_overrides().set_to_ms();
      break;
    default: return absl::InvalidArgumentError("a partition command without an action this version knows");
  }
  c.partition = m.partition();
  c.gateway = std::move(*m.mutable_gateway());
  c.issued_at_ms = m.issued_at_ms();
  if (auto st = internal::ValidatePartitionCommand(c); !st.ok()) return st;
  *out = std::move(c);
  return absl::OkStatus();
}

void internal::ChangeEventToProto(const ChangeEvent& e, bool include_self, pb::ChangeEvent* out) {
  pb::ChangeEvent& m = *out;
  m.set_user_id(e.user_id);
  m.set_previous(static_cast<pb::State>(e.previous));
  m.set_state(static_cast<pb::State>(e.state));
  m.set_last_seen_ms(e.last_seen_ms);
  m.set_cause(static_cast<pb::Cause>(e.cause));
  m.set_erased(e.erased);
  SummaryToProto(e.devices, m.mutable_devices());
  m.set_trace_id(e.trace_id);
  m.set_changed_at_ms(e.changed_at_ms);
  m.set_published_at_ms(e.published_at_ms);
  if (e.shown_override) OverrideToProto(*e.shown_override, m.mutable_shown_override());
  if (include_self) {
    m.set_self_state(static_cast<pb::State>(e.self_state));
    m.set_invisible(e.invisible);
    m.set_version(e.version);
    m.set_public_version(e.public_version);
    m.set_self_last_seen_ms(e.self_last_seen_ms);
    SummaryToProto(e.self_devices, m.mutable_self_devices());
    if (e.self_shown_override) OverrideToProto(*e.self_shown_override, m.mutable_self_shown_override());
    for (const OverrideInfo& o : e.self_overrides) OverrideToProto(o, m.add_self_overrides());
  } else {
    m.set_version(e.public_version);  // the own view's version is not public
  }
}

std::string EncodeChangeEvent(const ChangeEvent& e, bool include_self) {
  pb::ChangeEvent m;
  internal::ChangeEventToProto(e, include_self, &m);
  return m.SerializeAsString();
}

absl::StatusOr<ChangeEvent> internal::ChangeEventFromProto(const pb::ChangeEvent& m) {
  if (auto st = internal::ValidateUserId(m.user_id()); !st.ok()) return st;
  ChangeEvent e;
  e.user_id = m.user_id();
  auto prev = StateFromProto(m.previous(), "previous");
  auto state = StateFromProto(m.state(), "state");
  if (!prev.ok()) return prev.status();
  if (!state.ok()) return state.status();
  e.previous = e.previous_self = *prev;
  e.state = e.self_state = *state;
  if (m.self_state() != pb::STATE_UNSPECIFIED) {
    auto self = StateFromProto(m.self_state(), "self_state");
    if (!self.ok()) return self.status();
    e.self_state = *self;
  }
  if (m.cause() < 1 || m.cause() > 6) {
    return absl::InvalidArgumentError(absl::StrCat("unknown cause value ", m.cause()));
  }
  e.cause = static_cast<Cause>(m.cause());
  auto devices = SummaryFromProto(m.devices());
  if (!devices.ok()) return devices.status();
  e.devices = e.self_devices = *devices;
  e.invisible = m.invisible();
  e.last_seen_ms = e.self_last_seen_ms = m.last_seen_ms();
  e.version = m.version();
  // Without the own view, the one version is the public one.
  e.public_version = m.self_state() != pb::STATE_UNSPECIFIED ? m.public_version() : m.version();
  e.erased = m.erased();
  e.trace_id = m.trace_id();
  e.changed_at_ms = m.changed_at_ms();
  e.published_at_ms = m.published_at_ms();
  if (m.has_shown_override()) {
    auto shown = OverrideFromProto(m.shown_override());
    if (!shown.ok()) return shown.status();
    if (shown->state == OverrideState::kInvisible) {
      return absl::InvalidArgumentError("the public view shows no INVISIBLE override");
    }
    e.shown_override = e.self_shown_override = *shown;
  }
  // The rest of the own view, where it was sent (a sender that left it out
  // gave the public one, as above).
  if (m.has_self_devices()) {
    auto self_devices = SummaryFromProto(m.self_devices());
    if (!self_devices.ok()) return self_devices.status();
    e.self_devices = *self_devices;
    e.self_last_seen_ms = m.self_last_seen_ms();
  }
  if (m.self_state() != pb::STATE_UNSPECIFIED) e.self_shown_override.reset();
  if (m.has_self_shown_override()) {
    auto shown = OverrideFromProto(m.self_shown_override());
    if (!shown.ok()) return shown.status();
    e.self_shown_override = *shown;
  }
  for (const pb::Override& o : m.self_overrides()) {
    auto info = OverrideFromProto(o);
    if (!info.ok()) return info.status();
    e.self_overrides.push_back(*info);
  }
  return e;
}

absl::StatusOr<ChangeEvent> DecodeChangeEvent(absl::string_view bytes) {
  pb::ChangeEvent m;
  if (auto st = Parse(bytes, &m); !st.ok()) return st;
  return internal::ChangeEventFromProto(m);
}

}  // namespace presence
