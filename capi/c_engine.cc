// The C ABI (include/presence/c.h) over the C++ engine: options, signals,
// beats, overrides, queries, ticks and metrics.
//
// Thin on purpose: each entry point checks what C can get wrong and C++
// cannot (NULL pointers, lengths with no bytes behind them, enum values that
// do not fit the C++ enum's byte), converts, calls the C++ API, and turns
// the absl::Status into a status code and a message (ToC). Guard() keeps
// every C++ exception on this side of the boundary.
//
// The other units: c_clock.cc (the manual clock), c_history.cc (history
// queries and the operator's durable-state actions), c_fanout.cc (fan-out
// and push sinks), c_common.cc and c_common.h (the helpers they share).
#include "presence/c.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "capi/c_common.h"
#include "capi/c_internal.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/file_store.h"
#include "presence/options.h"
#include "presence/types.h"

using presence::capi::AddBatch;
using presence::capi::AskAboutUser;
using presence::capi::BadEnum;
using presence::capi::Fail;
using presence::capi::Guard;
using presence::capi::InitOptions;
using presence::capi::Invalid;
using presence::capi::ListAboutUser;
using presence::capi::NullArgument;
using presence::capi::Ok;
using presence::capi::Ref;
using presence::capi::ReturnText;
using presence::capi::ToBoundedView;
using presence::capi::ToC;
using presence::capi::ToEnum;
using presence::capi::ToView;
using presence::capi::ToViews;
using presence::capi::Unref;
using presence::capi::tls_callback_depth;

namespace {

using presence::Activity;
using presence::DisconnectKind;
using presence::OverrideState;
using presence::Platform;
using presence::Source;

absl::Status ToSignal(const presence_signal_t& in, presence::Signal* out) {
  if (auto st = ToView(in.user_id, in.user_id_len, "user_id", &out->user_id); !st.ok()) return st;
  if (auto st = ToView(in.device_id, in.device_id_len, "device_id", &out->device_id); !st.ok()) {
    return st;
  }
  if (auto st = ToView(in.gateway, in.gateway_len, "gateway", &out->gateway); !st.ok()) return st;
  if (!ToEnum(in.platform, &out->platform)) return BadEnum("platform", in.platform);
  if (!ToEnum(in.source, &out->source)) return BadEnum("source", in.source);
  if (!ToEnum(in.activity, &out->activity)) return BadEnum("activity", in.activity);
  out->session_id = in.session_id;
  out->timestamp_ms = in.timestamp_ms;
  out->trace_id = in.trace_id;
  return absl::OkStatus();
}

// ---- Options ------------------------------------------------------------------------------

constexpr presence_engine_options_t EngineDefaults() {
  const presence::Options o{};
  presence_engine_options_t c{};
  c.version = PRESENCE_ENGINE_OPTIONS_VERSION;
  c.shards = o.shards;
  c.clock = nullptr;
  c.inferred_interval_ms = o.inferred.interval_ms;
  c.inferred_offline_after_ms = o.inferred.offline_after_ms;
  c.app_interval_ms = o.app.interval_ms;
  c.app_offline_after_ms = o.app.offline_after_ms;
  c.manual_interval_ms = o.manual.interval_ms;
  c.manual_offline_after_ms = o.manual.offline_after_ms;
  c.reconnect_grace_ms = o.reconnect_grace_ms;
  c.min_dwell_ms = o.min_dwell_ms;
  c.max_future_skew_ms = o.max_future_skew_ms;
  c.max_signal_age_ms = o.max_signal_age_ms;
  c.dead_retention_ms = o.dead_retention_ms;
  c.user_retention_ms = o.user_retention_ms;
  c.false_offline_window_ms = o.false_offline_window_ms;
  c.max_devices_per_user = o.max_devices_per_user;
  c.max_overrides_per_user = o.max_overrides_per_user;
  c.inferred_can_be_online = o.inferred_can_be_online ? 1 : 0;
  c.override_requires_live_device = o.override_requires_live_device ? 1 : 0;
  const presence::FileStoreOptions fo{};
  c.max_signals_per_device_per_sec = o.max_signals_per_device_per_sec;
  c.store = PRESENCE_STORE_MEMORY;
  c.memory_budget_bytes = o.memory_budget_bytes;
  c.file_dir = nullptr;
  c.file_dir_len = 0;
  c.file_sync_interval_ms = fo.sync_interval_ms;
  c.file_sync = static_cast<int32_t>(fo.sync);
  c.prober = nullptr;
  c.prober_payload = nullptr;
  c.probe_margin_ms = o.probe_margin_ms;
  c.probe_retry_ms = o.probe_retry_ms;
  c.max_probes = o.max_probes;
  c.max_probes_per_gateway_per_sec = o.max_probes_per_gateway_per_sec;
  return c;
}

constexpr bool SameEngineOptions(const presence_engine_options_t& a,
                                 const presence_engine_options_t& b) {
  return a.version == b.version && a.shards == b.shards && a.clock == b.clock &&
         a.inferred_interval_ms == b.inferred_interval_ms &&
         a.inferred_offline_after_ms == b.inferred_offline_after_ms &&
         a.app_interval_ms == b.app_interval_ms &&
         a.app_offline_after_ms == b.app_offline_after_ms &&
         a.manual_interval_ms == b.manual_interval_ms &&
         a.manual_offline_after_ms == b.manual_offline_after_ms &&
         a.reconnect_grace_ms == b.reconnect_grace_ms && a.min_dwell_ms == b.min_dwell_ms &&
         a.max_future_skew_ms == b.max_future_skew_ms &&
         a.max_signal_age_ms == b.max_signal_age_ms &&
         a.dead_retention_ms == b.dead_retention_ms &&
         a.user_retention_ms == b.user_retention_ms &&
         a.false_offline_window_ms == b.false_offline_window_ms &&
         a.max_devices_per_user == b.max_devices_per_user &&
         a.max_overrides_per_user == b.max_overrides_per_user &&
         a.inferred_can_be_online == b.inferred_can_be_online &&
         a.override_requires_live_device == b.override_requires_live_device &&
         a.max_signals_per_device_per_sec == b.max_signals_per_device_per_sec &&
         a.store == b.store && a.memory_budget_bytes == b.memory_budget_bytes &&
         a.file_dir == b.file_dir && a.file_dir_len == b.file_dir_len &&
         a.file_sync_interval_ms == b.file_sync_interval_ms && a.file_sync == b.file_sync &&
         a.prober == b.prober && a.prober_payload == b.prober_payload &&
         a.probe_margin_ms == b.probe_margin_ms && a.probe_retry_ms == b.probe_retry_ms &&
         a.max_probes == b.max_probes &&
         a.max_probes_per_gateway_per_sec == b.max_probes_per_gateway_per_sec;
}

// The C header repeats the C++ defaults in its _INIT macro; this keeps them equal.
constexpr presence_engine_options_t kEngineInit = PRESENCE_ENGINE_OPTIONS_INIT;
static_assert(SameEngineOptions(kEngineInit, EngineDefaults()),
              "PRESENCE_ENGINE_OPTIONS_INIT differs from presence::Options{}");

// Bytes that each version of the struct has (index: version): up to the
// first field that the next version appended.
constexpr size_t kEngineOptionsSize[] = {
    0, offsetof(presence_engine_options_t, max_signals_per_device_per_sec),
    offsetof(presence_engine_options_t, prober), sizeof(presence_engine_options_t)};
static_assert(sizeof(kEngineOptionsSize) / sizeof(size_t) == PRESENCE_ENGINE_OPTIONS_VERSION + 1,
              "one size per version");

// The store that engine options (version 2) ask for: none, or a file store
// to open before the engine.
struct StoreChoice {
  bool file = false;
  std::string dir;
  presence::FileStoreOptions options;
};

absl::Status ToStoreChoice(const presence_engine_options_t& in, StoreChoice* out) {
  absl::string_view dir;
  if (auto st = ToView(in.file_dir, in.file_dir_len, "file_dir", &dir); !st.ok()) return st;
  if (in.file_sync < PRESENCE_FILE_SYNC_EVERY_WRITE || in.file_sync > PRESENCE_FILE_SYNC_NEVER) {
    return BadEnum("file_sync", in.file_sync);
  }
  out->options.sync = static_cast<presence::SyncPolicy>(in.file_sync);
  out->options.sync_interval_ms = in.file_sync_interval_ms;
  switch (in.store) {
    case PRESENCE_STORE_MEMORY:
      if (!dir.empty()) {
        return absl::InvalidArgumentError(
            "file_dir is set, but store is PRESENCE_STORE_MEMORY: set store to "
            "PRESENCE_STORE_FILE to keep the engine's state in that folder");
      }
      return absl::OkStatus();
    case PRESENCE_STORE_FILE:
      if (dir.empty()) {
        return absl::InvalidArgumentError("store is PRESENCE_STORE_FILE, but file_dir is empty");
      }
      if (dir.find('\0') != absl::string_view::npos) {
        return absl::InvalidArgumentError("file_dir holds a NUL byte: it is no path");
      }
      out->file = true;
      out->dir = std::string(dir);
      return absl::OkStatus();
    default:
      return BadEnum("store", in.store);
  }
}

absl::Status ToOptions(const presence_engine_options_t& in, presence::Options* out,
                       StoreChoice* store) {
  if (in.version == 0 || in.version > PRESENCE_ENGINE_OPTIONS_VERSION) {
    return absl::InvalidArgumentError(absl::StrCat(
        "engine options version ", in.version, " is not one this library knows (1 to ",
        PRESENCE_ENGINE_OPTIONS_VERSION,
        "): initialise them with PRESENCE_ENGINE_OPTIONS_INIT or presence_engine_options_init"));
  }
  // Version 1.
  out->shards = in.shards;
  out->inferred = {in.inferred_interval_ms, in.inferred_offline_after_ms};
  out->app = {in.app_interval_ms, in.app_offline_after_ms};
  out->manual = {in.manual_interval_ms, in.manual_offline_after_ms};
  out->reconnect_grace_ms = in.reconnect_grace_ms;
  out->min_dwell_ms = in.min_dwell_ms;
  out->max_future_skew_ms = in.max_future_skew_ms;
  out->max_signal_age_ms = in.max_signal_age_ms;
  out->dead_retention_ms = in.dead_retention_ms;
  out->user_retention_ms = in.user_retention_ms;
  out->false_offline_window_ms = in.false_offline_window_ms;
  out->max_devices_per_user = in.max_devices_per_user;
  out->max_overrides_per_user = in.max_overrides_per_user;
  out->inferred_can_be_online = in.inferred_can_be_online != 0;
  out->override_requires_live_device = in.override_requires_live_device != 0;
  if (in.version < 2) return absl::OkStatus();
  out->max_signals_per_device_per_sec = in.max_signals_per_device_per_sec;
  out->memory_budget_bytes = in.memory_budget_bytes;
  if (auto st = ToStoreChoice(in, store); !st.ok()) return st;
  if (in.version < 3) return absl::OkStatus();
  // The prober itself is wired by presence_engine_new (it lives in the handle).
  out->probe_margin_ms = in.probe_margin_ms;
  out->probe_retry_ms = in.probe_retry_ms;
  out->max_probes = in.max_probes;
  out->max_probes_per_gateway_per_sec = in.max_probes_per_gateway_per_sec;
  return absl::OkStatus();
}

// ---- Results ----------------------------------------------------------------------------------

void FillPresence(const presence::UserPresence& p, presence_user_presence_t* out, char* id_at) {
  std::memcpy(id_at, p.user_id.data(), p.user_id.size());
  id_at[p.user_id.size()] = '\0';
  out->user_id = id_at;
  out->user_id_len = p.user_id.size();
  out->version = p.version;
  out->last_seen_ms = p.last_seen_ms;
  out->freshness_ms = p.freshness_ms;
  out->override_until_ms = p.has_override ? p.override_until_ms : 0;
  out->state = static_cast<int32_t>(p.state);
  out->override_state = p.has_override ? static_cast<int32_t>(p.override_state) : 0;
  out->live_devices = static_cast<uint32_t>(p.devices.total());
  for (int i = 0; i < PRESENCE_PLATFORM_COUNT; ++i) out->devices[i] = p.devices.live[i];
  out->known = p.known ? 1 : 0;
  out->has_override = p.has_override ? 1 : 0;
}

static_assert(PRESENCE_PLATFORM_COUNT == presence::kPlatformCount, "platforms differ");
static_assert(PRESENCE_MAX_USER_ID_BYTES == presence::kMaxUserIdBytes, "limits differ");
static_assert(PRESENCE_MAX_DEVICE_ID_BYTES == presence::kMaxDeviceIdBytes, "limits differ");
static_assert(PRESENCE_MAX_GATEWAY_BYTES == presence::kMaxGatewayIdBytes, "limits differ");
static_assert(PRESENCE_STATE_DND == static_cast<int>(presence::State::kDnd), "states differ");
static_assert(PRESENCE_OVERRIDE_INVISIBLE == static_cast<int>(OverrideState::kInvisible),
              "override states differ");
static_assert(PRESENCE_PLATFORM_OTHER == static_cast<int>(Platform::kOther), "platforms differ");
static_assert(PRESENCE_SOURCE_MANUAL == static_cast<int>(Source::kManual), "sources differ");
static_assert(PRESENCE_ACTIVITY_IDLE == static_cast<int>(Activity::kIdle), "activities differ");
static_assert(PRESENCE_DISCONNECT_ABRUPT == static_cast<int>(DisconnectKind::kAbrupt),
              "disconnect kinds differ");
static_assert(PRESENCE_CAUSE_MERGE == static_cast<int>(presence::Cause::kMerge), "causes differ");
static_assert(PRESENCE_FILE_SYNC_NEVER == static_cast<int>(presence::SyncPolicy::kNever),
              "sync policies differ");

using GetFn = std::vector<presence::UserPresence> (presence::Engine::*)(
    absl::Span<const absl::string_view>, absl::string_view);

int GetImpl(GetFn fn, presence_user_presence_t** out_users, presence_engine_t* engine,
            const presence_bytes_t* user_ids, size_t count, const char* viewer,
            size_t viewer_len, char** errmsg) {
  if (out_users == nullptr) return NullArgument(errmsg, "out_users");
  *out_users = nullptr;
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    constexpr size_t kEntry = sizeof(presence_user_presence_t);
    constexpr size_t kMaxId = PRESENCE_MAX_USER_ID_BYTES;
    if (count > std::numeric_limits<size_t>::max() / (kEntry + kMaxId + 1)) {
      return Invalid(errmsg, absl::StrCat("count ", count, " is too large"));
    }
    // An id too long to be valid is not read (its length may be all that
    // is wrong with it): it is asked as an empty id, which comes back
    // known = 0, like any id that fails validation.
    std::vector<presence_bytes_t> bounded;
    if (user_ids != nullptr) {
      bounded.assign(user_ids, user_ids + count);
      for (presence_bytes_t& id : bounded) {
        if (id.len > kMaxId) id = presence_bytes_t{"", 0};
      }
    }
    std::vector<absl::string_view> ids;
    if (auto st = ToViews(user_ids == nullptr ? nullptr : bounded.data(), count, "user_ids", &ids);
        !st.ok()) {
      return ToC(st, errmsg);
    }
    absl::string_view viewer_id;
    if (auto st = ToBoundedView(viewer, viewer_len, kMaxId, "viewer_user_id", &viewer_id);
        !st.ok()) {
      return ToC(st, errmsg);
    }
    if (count == 0) return Ok(errmsg);
    std::vector<presence::UserPresence> got = (engine->rep.get()->*fn)(ids, viewer_id);
    size_t bytes = count * kEntry;
    for (const presence::UserPresence& p : got) bytes += p.user_id.size() + 1;
    auto* users = static_cast<presence_user_presence_t*>(std::calloc(1, bytes));
    if (users == nullptr) throw std::bad_alloc();
    char* id_at = reinterpret_cast<char*>(users + count);
    for (size_t i = 0; i < count; ++i) {
      FillPresence(got[i], &users[i], id_at);
      id_at += got[i].user_id.size() + 1;
    }
    *out_users = users;
    return Ok(errmsg);
  });
}

}  // namespace

// ---- Engine ------------------------------------------------------------------------------------------

int presence_engine_options_init(presence_engine_options_t* options, uint32_t version,
                                 char** errmsg) {
  return InitOptions(options, version, kEngineInit, kEngineOptionsSize, "engine options", errmsg);
}

int presence_engine_new(presence_engine_t** out_engine, const presence_engine_options_t* options,
                        char** errmsg) {
  if (out_engine == nullptr) return NullArgument(errmsg, "out_engine");
  *out_engine = nullptr;
  return Guard(errmsg, [&] {
    presence::Options cxx;
    StoreChoice store;
    presence_clock_t* clock = nullptr;
    if (options != nullptr) {
      if (auto st = ToOptions(*options, &cxx, &store); !st.ok()) return ToC(st, errmsg);
      clock = options->clock;
    }
    if (clock != nullptr) cxx.clock = &clock->clock;
    auto handle = std::make_unique<presence_engine_t>();
    if (options != nullptr && options->version >= 3 && options->prober != nullptr) {
      handle->prober = std::make_unique<CProber>(options->prober, options->prober_payload);
      cxx.prober = handle->prober.get();
    }
    if (store.file) {
      absl::StatusOr<std::unique_ptr<presence::FileStore>> fs =
          presence::FileStore::Open(store.dir, store.options);
      if (!fs.ok()) {
        return ToC(absl::Status(fs.status().code(),
                                absl::StrCat("cannot open the file store in ", store.dir, ": ",
                                             fs.status().message())),
                   errmsg);
      }
      handle->file_store = *std::move(fs);
      cxx.store = handle->file_store->store();
      cxx.history = handle->file_store->history();
    }
    absl::StatusOr<std::unique_ptr<presence::Engine>> engine = presence::Engine::Create(cxx);
    if (!engine.ok()) return ToC(engine.status(), errmsg);
    handle->rep = *std::move(engine);
    if (clock != nullptr) {
      Ref(clock);
      handle->clock = clock;
    }
    *out_engine = handle.release();
    return Ok(errmsg);
  });
}

void presence_engine_destroy(presence_engine_t* engine) { Unref(engine); }

void CProber::Probe(const presence::ProbeRequest& r) {
  presence_probe_t p;
  p.user_id = r.user_id.data();
  p.user_id_len = r.user_id.size();
  p.device_id = r.device_id.data();
  p.device_id_len = r.device_id.size();
  p.session_id = r.session_id;
  p.probe_id = r.probe_id;
  p.source = static_cast<int32_t>(r.source);
  p.attempt = r.attempt;
  p.gateway = r.gateway.empty() ? "" : r.gateway.data();
  p.gateway_len = r.gateway.size();
  ++tls_callback_depth;
  fn_(&p, payload_);
  --tls_callback_depth;
}

int presence_engine_answer_probe(presence_engine_t* engine, uint64_t probe_id, char** errmsg) {
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] { return ToC(engine->rep->AnswerProbe(probe_id), errmsg); });
}

int presence_engine_signal(presence_engine_t* engine, const presence_signal_t* signal,
                           char** errmsg) {
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  if (signal == nullptr) return NullArgument(errmsg, "signal");
  return Guard(errmsg, [&] {
    presence::Signal s;
    if (auto st = ToSignal(*signal, &s); !st.ok()) return ToC(st, errmsg);
    return ToC(engine->rep->Signal(s), errmsg);
  });
}

int presence_engine_signal_batch(presence_batch_result_t* out_result, presence_engine_t* engine,
                                 const presence_signal_t* signals, size_t count, char** errmsg) {
  if (out_result != nullptr) *out_result = presence_batch_result_t{0, 0, 0, PRESENCE_OK};
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  if (signals == nullptr && count > 0) {
    return Invalid(errmsg, absl::StrCat("signals is NULL with count ", count));
  }
  return Guard(errmsg, [&] {
    // Signals that C++ cannot even hold (a NULL pointer with a length, an
    // enum value past a byte) are rejected here; the runs between them go
    // to the engine as batches, in order, so "first error" stays the first.
    presence::BatchResult total;
    std::vector<presence::Signal> run;
    run.reserve(std::min<size_t>(count, 4096));
    auto flush = [&] {
      if (run.empty()) return;
      AddBatch(engine->rep->SignalBatch(run), &total);
      run.clear();
    };
    for (size_t i = 0; i < count; ++i) {
      presence::Signal s;
      if (absl::Status st = ToSignal(signals[i], &s); !st.ok()) {
        flush();
        ++total.rejected;
        if (total.first_error.ok()) {
          total.first_error = absl::InvalidArgumentError(absl::StrCat("signals[", i, "]: ", st.message()));
        }
        continue;
      }
      run.push_back(s);
    }
    flush();
    return ToC(total, out_result, errmsg);
  });
}

int presence_engine_disconnect_device(presence_engine_t* engine, const char* user_id,
                                      size_t user_id_len, const char* device_id,
                                      size_t device_id_len, uint64_t session_id, int kind,
                                      char** errmsg) {
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    absl::string_view user, device;
    if (auto st = ToView(user_id, user_id_len, "user_id", &user); !st.ok()) return ToC(st, errmsg);
    if (auto st = ToView(device_id, device_id_len, "device_id", &device); !st.ok()) {
      return ToC(st, errmsg);
    }
    DisconnectKind k;
    if (!ToEnum(kind, &k)) return ToC(BadEnum("disconnect kind", kind), errmsg);
    return ToC(engine->rep->DisconnectDevice(user, device, session_id, k), errmsg);
  });
}

int presence_engine_connect(uint64_t* out_handle, presence_engine_t* engine,
                            const presence_signal_t* signal, char** errmsg) {
  if (out_handle != nullptr) *out_handle = 0;
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  if (signal == nullptr) return NullArgument(errmsg, "signal");
  return Guard(errmsg, [&] {
    presence::Signal s;
    if (auto st = ToSignal(*signal, &s); !st.ok()) return ToC(st, errmsg);
    absl::StatusOr<presence::DeviceHandle> h = engine->rep->Connect(s);
    if (!h.ok()) return ToC(h.status(), errmsg);
    if (out_handle != nullptr) *out_handle = h->value;
    return Ok(errmsg);
  });
}

// The hot path: every check is a compare, and an OK status costs nothing.
int presence_engine_beat(presence_engine_t* engine, uint64_t handle, int activity, int source,
                         char** errmsg) {
  if (ABSL_PREDICT_FALSE(engine == nullptr)) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    Activity a;
    Source s;
    if (ABSL_PREDICT_FALSE(!ToEnum(activity, &a))) return ToC(BadEnum("activity", activity), errmsg);
    if (ABSL_PREDICT_FALSE(!ToEnum(source, &s))) return ToC(BadEnum("source", source), errmsg);
    return ToC(engine->rep->Beat(presence::DeviceHandle{handle}, a, s), errmsg);
  });
}

int presence_engine_beat_many(presence_batch_result_t* out_result, presence_engine_t* engine,
                              const uint64_t* handles, size_t count, int activity, int source,
                              char** errmsg) {
  if (out_result != nullptr) *out_result = presence_batch_result_t{0, 0, 0, PRESENCE_OK};
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  if (handles == nullptr && count > 0) {
    return Invalid(errmsg, absl::StrCat("handles is NULL with count ", count));
  }
  return Guard(errmsg, [&] {
    Activity a;
    Source s;
    if (!ToEnum(activity, &a)) return ToC(BadEnum("activity", activity), errmsg);
    if (!ToEnum(source, &s)) return ToC(BadEnum("source", source), errmsg);
    // Copied into typed handles a chunk at a time, on the stack.
    constexpr size_t kChunk = 512;
    presence::DeviceHandle chunk[kChunk];
    presence::BatchResult total;
    for (size_t i = 0; i < count; i += kChunk) {
      const size_t m = std::min(kChunk, count - i);
      for (size_t k = 0; k < m; ++k) chunk[k] = presence::DeviceHandle{handles[i + k]};
      AddBatch(engine->rep->BeatMany(absl::MakeConstSpan(chunk, m), a, s), &total);
    }
    return ToC(total, out_result, errmsg);
  });
}

int presence_engine_disconnect(presence_engine_t* engine, uint64_t handle, int kind,
                               char** errmsg) {
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    DisconnectKind k;
    if (!ToEnum(kind, &k)) return ToC(BadEnum("disconnect kind", kind), errmsg);
    return ToC(engine->rep->Disconnect(presence::DeviceHandle{handle}, k), errmsg);
  });
}

// ---- Overrides --------------------------------------------------------------------------------------

int presence_engine_set_override(uint64_t* out_override_id, presence_engine_t* engine,
                                 const char* user_id, size_t user_id_len, int state,
                                 int64_t until_ms, uint64_t trace_id, char** errmsg) {
  if (out_override_id != nullptr) *out_override_id = 0;
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    absl::string_view user;
    if (auto st = ToView(user_id, user_id_len, "user_id", &user); !st.ok()) return ToC(st, errmsg);
    OverrideState os;
    if (!ToEnum(state, &os)) return ToC(BadEnum("override state", state), errmsg);
    absl::StatusOr<uint64_t> id = engine->rep->SetOverride(user, os, until_ms, trace_id);
    if (!id.ok()) return ToC(id.status(), errmsg);
    if (out_override_id != nullptr) *out_override_id = *id;
    return Ok(errmsg);
  });
}

int presence_engine_revoke_override(presence_engine_t* engine, const char* user_id,
                                    size_t user_id_len, uint64_t override_id, char** errmsg) {
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    absl::string_view user;
    if (auto st = ToView(user_id, user_id_len, "user_id", &user); !st.ok()) return ToC(st, errmsg);
    return ToC(engine->rep->RevokeOverride(user, override_id), errmsg);
  });
}

int presence_engine_clear_overrides(size_t* out_removed, presence_engine_t* engine,
                                    const char* user_id, size_t user_id_len, char** errmsg) {
  return AskAboutUser(out_removed, engine, user_id, user_id_len, errmsg,
                      [&](absl::string_view user) { return engine->rep->ClearOverrides(user); });
}

int presence_engine_revoke_overrides_set_between(size_t* out_removed, presence_engine_t* engine,
                                                 int64_t from_ms, int64_t to_ms, char** errmsg) {
  if (out_removed != nullptr) *out_removed = 0;
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    const size_t n = engine->rep->RevokeOverridesSetBetween(from_ms, to_ms);
    if (out_removed != nullptr) *out_removed = n;
    return Ok(errmsg);
  });
}

int presence_engine_list_overrides(presence_override_t** out_overrides, size_t* out_count,
                                   presence_engine_t* engine, const char* user_id,
                                   size_t user_id_len, char** errmsg) {
  return ListAboutUser(
      out_overrides, "out_overrides", out_count, engine, user_id, user_id_len, errmsg,
      [&](absl::string_view user) { return engine->rep->ListOverrides(user); },
      [](const presence::OverrideInfo& o, presence_override_t* out) {
        out->id = o.id;
        out->set_at_ms = o.set_at_ms;
        out->until_ms = o.until_ms;
        out->state = static_cast<int32_t>(o.state);
      });
}

// ---- Queries, time, metrics ----------------------------------------------------------------------

int presence_engine_get(presence_user_presence_t** out_users, presence_engine_t* engine,
                        const presence_bytes_t* user_ids, size_t count, const char* viewer_user_id,
                        size_t viewer_user_id_len, char** errmsg) {
  return GetImpl(&presence::Engine::Get, out_users, engine, user_ids, count, viewer_user_id,
                 viewer_user_id_len, errmsg);
}

int presence_engine_get_published(presence_user_presence_t** out_users, presence_engine_t* engine,
                                  const presence_bytes_t* user_ids, size_t count,
                                  const char* viewer_user_id, size_t viewer_user_id_len,
                                  char** errmsg) {
  return GetImpl(&presence::Engine::GetPublished, out_users, engine, user_ids, count,
                 viewer_user_id, viewer_user_id_len, errmsg);
}

// ---- Time -------------------------------------------------------------------------------------------

int presence_engine_tick(size_t* out_published, presence_engine_t* engine, char** errmsg) {
  if (out_published != nullptr) *out_published = 0;
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  if (tls_callback_depth > 0) {
    return Fail(errmsg, PRESENCE_ERR_FAILED_PRECONDITION,
                "presence_engine_tick called from inside a callback of the library");
  }
  return Guard(errmsg, [&] {
    const size_t n = engine->rep->Tick();
    if (out_published != nullptr) *out_published = n;
    return Ok(errmsg);
  });
}

int presence_engine_now(int64_t* out_now_ms, const presence_engine_t* engine, char** errmsg) {
  if (out_now_ms != nullptr) *out_now_ms = 0;
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    if (out_now_ms != nullptr) *out_now_ms = engine->rep->NowMs();
    return Ok(errmsg);
  });
}

int presence_engine_render_metrics(char** out_text, size_t* out_len,
                                   const presence_engine_t* engine, char** errmsg) {
  if (out_len != nullptr) *out_len = 0;
  if (out_text == nullptr) return NullArgument(errmsg, "out_text");
  *out_text = nullptr;
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    std::string text = engine->rep->RenderMetrics();
    if (engine->file_store != nullptr) text += engine->file_store->RenderMetrics();
    return ReturnText(text, out_text, out_len, errmsg);
  });
}
