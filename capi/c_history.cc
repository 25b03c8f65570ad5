// The C ABI's history queries (the audit trail, time in states, last
// seen; each answers the public view to anyone but the user) and the
// operator's durable-state actions: erase, drain a gateway, rebuild.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "capi/c_common.h"
#include "capi/c_internal.h"
#include "presence/c.h"
#include "presence/engine.h"
#include "presence/types.h"

using presence::capi::AskAboutUser;
using presence::capi::Guard;
using presence::capi::Invalid;
using presence::capi::ListAboutUser;
using presence::capi::NullArgument;
using presence::capi::Ok;
using presence::capi::ToBoundedView;
using presence::capi::ToC;
using presence::capi::ToView;

// ---- History and durable state --------------------------------------------------------------------

namespace {

// The viewer of a history query (convention: NULL and 0 for none, which
// reads the public view).
absl::Status ToViewer(const char* viewer, size_t viewer_len, absl::string_view* out) {
  return ToBoundedView(viewer, viewer_len, PRESENCE_MAX_USER_ID_BYTES, "viewer_user_id", out);
}

}  // namespace

int presence_engine_history_as(presence_transition_t** out_transitions, size_t* out_count,
                               presence_engine_t* engine, const char* user_id,
                               size_t user_id_len, int64_t from_ms, int64_t to_ms,
                               const char* viewer_user_id, size_t viewer_user_id_len,
                               char** errmsg) {
  return ListAboutUser(
      out_transitions, "out_transitions", out_count, engine, user_id, user_id_len, errmsg,
      [&](absl::string_view user) -> absl::StatusOr<std::vector<presence::Transition>> {
        absl::string_view viewer;
        if (auto st = ToViewer(viewer_user_id, viewer_user_id_len, &viewer); !st.ok()) return st;
        return engine->rep->History(user, from_ms, to_ms, viewer);
      },
      [](const presence::Transition& t, presence_transition_t* out) {
        out->version = t.version;
        out->at_ms = t.at_ms;
        out->last_seen_ms = t.last_seen_ms;
        out->trace_id = t.trace_id;
        out->previous = static_cast<int32_t>(t.previous);
        out->state = static_cast<int32_t>(t.state);
        out->self_state = static_cast<int32_t>(t.self_state);
        out->cause = static_cast<int32_t>(t.cause);
      });
}

int presence_engine_history(presence_transition_t** out_transitions, size_t* out_count,
                            presence_engine_t* engine, const char* user_id, size_t user_id_len,
                            int64_t from_ms, int64_t to_ms, char** errmsg) {
  return presence_engine_history_as(out_transitions, out_count, engine, user_id, user_id_len,
                                    from_ms, to_ms, nullptr, 0, errmsg);
}

static_assert(PRESENCE_DEVICE_CONNECT == static_cast<int>(presence::DeviceEvent::kConnect) &&
                  PRESENCE_DEVICE_DEAD_DRAINED ==
                      static_cast<int>(presence::DeviceEvent::kDeadDrained) &&
                  PRESENCE_DEVICE_PROBE_GIVEN_UP ==
                      static_cast<int>(presence::DeviceEvent::kProbeGivenUp),
              "device events differ");

int presence_engine_device_history(presence_device_transition_t** out_transitions,
                                   size_t* out_count, presence_engine_t* engine,
                                   const char* user_id, size_t user_id_len, const char* device_id,
                                   size_t device_id_len, int64_t from_ms, int64_t to_ms,
                                   const char* viewer_user_id, size_t viewer_user_id_len,
                                   char** errmsg) {
  return ListAboutUser(
      out_transitions, "out_transitions", out_count, engine, user_id, user_id_len, errmsg,
      [&](absl::string_view user) -> absl::StatusOr<std::vector<presence::DeviceTransition>> {
        absl::string_view device, viewer;
        if (auto st = ToView(device_id, device_id_len, "device_id", &device); !st.ok()) return st;
        if (auto st = ToViewer(viewer_user_id, viewer_user_id_len, &viewer); !st.ok()) return st;
        return engine->rep->DeviceHistory(user, device, from_ms, to_ms, viewer);
      },
      [](const presence::DeviceTransition& t, presence_device_transition_t* out) {
        out->at_ms = t.at_ms;
        out->session_id = t.session_id;
        out->event = static_cast<int32_t>(t.event);
        out->platform = static_cast<int32_t>(t.platform);
      });
}

int presence_engine_time_in_states_as(presence_state_durations_t* out_durations,
                                      presence_engine_t* engine, const char* user_id,
                                      size_t user_id_len, int64_t from_ms, int64_t to_ms,
                                      const char* viewer_user_id, size_t viewer_user_id_len,
                                      char** errmsg) {
  return AskAboutUser(
      out_durations, engine, user_id, user_id_len, errmsg,
      [&](absl::string_view user) -> absl::StatusOr<presence_state_durations_t> {
        absl::string_view viewer;
        if (auto st = ToViewer(viewer_user_id, viewer_user_id_len, &viewer); !st.ok()) return st;
        absl::StatusOr<presence::StateDurations> d =
            engine->rep->TimeInStates(user, from_ms, to_ms, viewer);
        if (!d.ok()) return d.status();
        return presence_state_durations_t{d->online_ms, d->away_ms, d->dnd_ms, d->offline_ms};
      });
}

int presence_engine_time_in_states(presence_state_durations_t* out_durations,
                                   presence_engine_t* engine, const char* user_id,
                                   size_t user_id_len, int64_t from_ms, int64_t to_ms,
                                   char** errmsg) {
  return presence_engine_time_in_states_as(out_durations, engine, user_id, user_id_len, from_ms,
                                           to_ms, nullptr, 0, errmsg);
}

int presence_engine_last_seen_as(int64_t* out_last_seen_ms, presence_engine_t* engine,
                                 const char* user_id, size_t user_id_len,
                                 const char* viewer_user_id, size_t viewer_user_id_len,
                                 char** errmsg) {
  return AskAboutUser(out_last_seen_ms, engine, user_id, user_id_len, errmsg,
                      [&](absl::string_view user) -> absl::StatusOr<int64_t> {
                        absl::string_view viewer;
                        if (auto st = ToViewer(viewer_user_id, viewer_user_id_len, &viewer);
                            !st.ok()) {
                          return st;
                        }
                        return engine->rep->LastSeen(user, viewer);
                      });
}

int presence_engine_last_seen(int64_t* out_last_seen_ms, presence_engine_t* engine,
                              const char* user_id, size_t user_id_len, char** errmsg) {
  return presence_engine_last_seen_as(out_last_seen_ms, engine, user_id, user_id_len, nullptr, 0,
                                      errmsg);
}

int presence_engine_erase(presence_engine_t* engine, const char* user_id, size_t user_id_len,
                          char** errmsg) {
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    absl::string_view user;
    if (auto st = ToView(user_id, user_id_len, "user_id", &user); !st.ok()) return ToC(st, errmsg);
    return ToC(engine->rep->Erase(user), errmsg);
  });
}

int presence_engine_drain_gateway(size_t* out_drained, presence_engine_t* engine,
                                  const char* gateway, size_t gateway_len, size_t max_devices,
                                  char** errmsg) {
  if (out_drained != nullptr) *out_drained = 0;
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    absl::string_view g;
    if (auto st = ToView(gateway, gateway_len, "gateway", &g); !st.ok()) return ToC(st, errmsg);
    if (max_devices == 0) {
      return Invalid(errmsg, "max_devices is 0: a drain would never end");
    }
    absl::StatusOr<size_t> n = engine->rep->DrainGateway(g, max_devices);
    if (!n.ok()) return ToC(n.status(), errmsg);
    if (out_drained != nullptr) *out_drained = *n;
    return Ok(errmsg);
  });
}

int presence_engine_rebuild(presence_engine_t* engine, char** errmsg) {
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] { return ToC(engine->rep->Rebuild(), errmsg); });
}
