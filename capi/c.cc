// The C ABI (include/presence/c.h) over the C++ engine and fan-out.
//
// Thin on purpose: each entry point checks what C can get wrong and C++
// cannot (NULL pointers, lengths with no bytes behind them, enum values that
// do not fit the C++ enum's byte), converts, calls the C++ API, and turns
// the absl::Status into a status code and a message (ToC). Guard() keeps
// every C++ exception on this side of the boundary.
#include "presence/c.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "capi/c_internal.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/fanout.h"
#include "presence/file_store.h"
#include "presence/options.h"
#include "presence/types.h"
#include "presence/version.h"

namespace {

using presence::Activity;
using presence::DisconnectKind;
using presence::OverrideState;
using presence::Platform;
using presence::Source;

// Set while this thread runs a callback of the library, so that a tick from
// inside one answers an error instead of deadlocking on the tick lock. (Not
// error state: convention 4 holds.)
thread_local int tls_callback_depth = 0;

// ---- Status and message -----------------------------------------------------------

char* CopyString(const char* data, size_t len) noexcept {
  char* out = static_cast<char*>(std::malloc(len + 1));
  if (out == nullptr) return nullptr;
  if (len > 0) std::memcpy(out, data, len);
  out[len] = '\0';
  return out;
}

int Ok(char** errmsg) noexcept {
  if (errmsg != nullptr) *errmsg = nullptr;
  return PRESENCE_OK;
}

int Fail(char** errmsg, int code, absl::string_view message) noexcept {
  if (errmsg != nullptr) *errmsg = CopyString(message.data(), message.size());
  return code;
}

// The name of a presence_status_t (of an absl::StatusCode: the same
// numbers), or "UNKNOWN" for a number that is none.
const char* CodeName(int code) noexcept {
  switch (code) {
    case PRESENCE_OK: return "OK";
    case PRESENCE_ERR_CANCELLED: return "CANCELLED";
    case PRESENCE_ERR_UNKNOWN: return "UNKNOWN";
    case PRESENCE_ERR_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case PRESENCE_ERR_DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case PRESENCE_ERR_NOT_FOUND: return "NOT_FOUND";
    case PRESENCE_ERR_ALREADY_EXISTS: return "ALREADY_EXISTS";
    case PRESENCE_ERR_PERMISSION_DENIED: return "PERMISSION_DENIED";
    case PRESENCE_ERR_RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case PRESENCE_ERR_FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case PRESENCE_ERR_ABORTED: return "ABORTED";
    case PRESENCE_ERR_OUT_OF_RANGE: return "OUT_OF_RANGE";
    case PRESENCE_ERR_UNIMPLEMENTED: return "UNIMPLEMENTED";
    case PRESENCE_ERR_INTERNAL: return "INTERNAL";
    case PRESENCE_ERR_UNAVAILABLE: return "UNAVAILABLE";
    case PRESENCE_ERR_DATA_LOSS: return "DATA_LOSS";
    case PRESENCE_ERR_UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

// The one place where an absl::Status becomes a C status: the code (the
// presence_status_t values are absl's own numbers, every one of them: Status
// holds no other) and a malloc'd copy of the message.
int ToC(const absl::Status& st, char** errmsg) noexcept {
  if (ABSL_PREDICT_TRUE(st.ok())) return Ok(errmsg);
  const int code = static_cast<int>(st.code());
  const absl::string_view msg = st.message();
  return Fail(errmsg, code, msg.empty() ? absl::string_view(CodeName(code)) : msg);
}

// Adds a batch call's outcome to a running total.
void AddBatch(presence::BatchResult r, presence::BatchResult* total) {
  total->applied += r.applied;
  total->stale += r.stale;
  total->rejected += r.rejected;
  if (total->first_error.ok()) total->first_error = std::move(r.first_error);
}

// A batch's outcome: the status of its first failure, and the counts in
// *out (when not null).
int ToC(const presence::BatchResult& total, presence_batch_result_t* out, char** errmsg) {
  const int rc = ToC(total.first_error, errmsg);
  if (out != nullptr) *out = presence_batch_result_t{total.applied, total.stale, total.rejected, rc};
  return rc;
}

// Called from a catch (...) block: names what was thrown.
int CaughtException(char** errmsg) noexcept {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return Fail(errmsg, PRESENCE_ERR_RESOURCE_EXHAUSTED, "out of memory");
  } catch (const std::exception& e) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "unexpected C++ exception: %s", e.what());
    return Fail(errmsg, PRESENCE_ERR_INTERNAL, buf);
  } catch (...) {
    return Fail(errmsg, PRESENCE_ERR_INTERNAL, "unexpected C++ exception");
  }
}

// Runs an entry point's body; no exception gets past it (convention 13).
template <typename F>
inline int Guard(char** errmsg, F&& body) noexcept {
  try {
    return body();
  } catch (...) {
    return CaughtException(errmsg);
  }
}

int Invalid(char** errmsg, absl::string_view message) noexcept {
  return Fail(errmsg, PRESENCE_ERR_INVALID_ARGUMENT, message);
}

int NullArgument(char** errmsg, const char* what) noexcept {
  char buf[128];
  std::snprintf(buf, sizeof buf, "%s is NULL", what);
  return Invalid(errmsg, buf);
}

// ---- Conversions ----------------------------------------------------------------------

// Bytes from C: a NULL pointer goes only with length 0, and no length can
// be past PTRDIFF_MAX (a string_view cannot even hold it). Other lengths are
// the engine's to judge: it checks them, and counts what it rejects, before
// it reads a byte.
absl::Status ToView(const char* data, size_t len, absl::string_view what, absl::string_view* out) {
  if (data == nullptr && len != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is NULL with length ", len));
  }
  if (ABSL_PREDICT_FALSE(len > static_cast<size_t>(std::numeric_limits<ptrdiff_t>::max()))) {
    return absl::InvalidArgumentError(absl::StrCat(what, " length ", len, " is out of range"));
  }
  *out = len == 0 ? absl::string_view() : absl::string_view(data, len);
  return absl::OkStatus();
}

// As ToView, and at most max_len bytes, for ids that C++ would copy before
// it checks their length.
absl::Status ToBoundedView(const char* data, size_t len, size_t max_len, absl::string_view what,
                           absl::string_view* out) {
  if (len > max_len) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", len, " bytes; the most is ", max_len));
  }
  return ToView(data, len, what, out);
}

// A list of ids from C. The ids themselves are checked by C++ (before it
// reads them).
absl::Status ToViews(const presence_bytes_t* ids, size_t count, absl::string_view what,
                     std::vector<absl::string_view>* out) {
  out->clear();
  if (count == 0) return absl::OkStatus();
  if (ids == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is NULL with count ", count));
  }
  if (count > out->max_size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": count ", count, " is too large"));
  }
  out->reserve(count);
  for (size_t i = 0; i < count; ++i) {
    absl::string_view v;
    if (auto st = ToView(ids[i].data, ids[i].len, absl::StrCat(what, "[", i, "]"), &v); !st.ok()) {
      return st;
    }
    out->push_back(v);
  }
  return absl::OkStatus();
}

// An int from C as a C++ enum. The C++ enums are one byte wide and the
// engine checks their range (and counts what it rejects), so only what does
// not fit a byte is answered here.
template <typename E>
ABSL_ATTRIBUTE_ALWAYS_INLINE inline bool ToEnum(int v, E* out) {
  if (ABSL_PREDICT_FALSE(static_cast<unsigned>(v) > 255u)) return false;
  *out = static_cast<E>(v);
  return true;
}

absl::Status BadEnum(absl::string_view what, int v) {
  return absl::InvalidArgumentError(absl::StrCat("unknown ", what, " value ", v));
}

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
         a.file_sync_interval_ms == b.file_sync_interval_ms && a.file_sync == b.file_sync;
}

// The C header repeats the C++ defaults in its _INIT macro; this keeps them equal.
constexpr presence_engine_options_t kEngineInit = PRESENCE_ENGINE_OPTIONS_INIT;
static_assert(SameEngineOptions(kEngineInit, EngineDefaults()),
              "PRESENCE_ENGINE_OPTIONS_INIT differs from presence::Options{}");

// Bytes that each version of the struct has (index: version): up to the
// first field that the next version appended.
constexpr size_t kEngineOptionsSize[] = {
    0, offsetof(presence_engine_options_t, max_signals_per_device_per_sec),
    sizeof(presence_engine_options_t)};
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
  return ToStoreChoice(in, store);
}

constexpr presence_fanout_options_t FanoutDefaults() {
  const presence::FanoutOptions o{};
  presence_fanout_options_t c{};
  c.version = PRESENCE_FANOUT_OPTIONS_VERSION;
  c.flush_interval_ms = o.flush_interval_ms;
  c.max_batch = o.max_batch;
  c.rate_per_sec = o.rate_per_sec;
  c.burst = o.burst;
  c.max_outbox_batches = o.max_outbox_batches;
  c.resume_window = o.resume_window;
  c.resume_window_bytes = o.resume_window_bytes;
  c.interval_mode_members = o.interval_mode_members;
  c.large_topic_interval_ms = o.large_topic_interval_ms;
  c.counts_only_members = o.counts_only_members;
  c.topic_history = o.topic_history;
  c.max_subscribers = o.max_subscribers;
  c.max_list_users = o.max_list_users;
  c.max_topics_per_subscriber = o.max_topics_per_subscriber;
  c.max_topic_members = o.max_topic_members;
  return c;
}

constexpr bool SameFanoutOptions(const presence_fanout_options_t& a,
                                 const presence_fanout_options_t& b) {
  return a.version == b.version && a.flush_interval_ms == b.flush_interval_ms &&
         a.max_batch == b.max_batch && a.rate_per_sec == b.rate_per_sec && a.burst == b.burst &&
         a.max_outbox_batches == b.max_outbox_batches && a.resume_window == b.resume_window &&
         a.resume_window_bytes == b.resume_window_bytes &&
         a.interval_mode_members == b.interval_mode_members &&
         a.large_topic_interval_ms == b.large_topic_interval_ms &&
         a.counts_only_members == b.counts_only_members && a.topic_history == b.topic_history &&
         a.max_subscribers == b.max_subscribers && a.max_list_users == b.max_list_users &&
         a.max_topics_per_subscriber == b.max_topics_per_subscriber &&
         a.max_topic_members == b.max_topic_members;
}

constexpr presence_fanout_options_t kFanoutInit = PRESENCE_FANOUT_OPTIONS_INIT;
static_assert(SameFanoutOptions(kFanoutInit, FanoutDefaults()),
              "PRESENCE_FANOUT_OPTIONS_INIT differs from presence::FanoutOptions{}");
constexpr size_t kFanoutOptionsSize[] = {0, sizeof(presence_fanout_options_t)};

absl::Status ToFanoutOptions(const presence_fanout_options_t& in, presence::FanoutOptions* out) {
  if (in.version == 0 || in.version > PRESENCE_FANOUT_OPTIONS_VERSION) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fan-out options version ", in.version, " is not one this library knows (1 to ",
        PRESENCE_FANOUT_OPTIONS_VERSION,
        "): initialise them with PRESENCE_FANOUT_OPTIONS_INIT or presence_fanout_options_init"));
  }
  out->flush_interval_ms = in.flush_interval_ms;
  out->max_batch = in.max_batch;
  out->rate_per_sec = in.rate_per_sec;
  out->burst = in.burst;
  out->max_outbox_batches = in.max_outbox_batches;
  out->resume_window = in.resume_window;
  out->resume_window_bytes = in.resume_window_bytes;
  out->interval_mode_members = in.interval_mode_members;
  out->large_topic_interval_ms = in.large_topic_interval_ms;
  out->counts_only_members = in.counts_only_members;
  out->topic_history = in.topic_history;
  out->max_subscribers = in.max_subscribers;
  out->max_list_users = in.max_list_users;
  out->max_topics_per_subscriber = in.max_topics_per_subscriber;
  out->max_topic_members = in.max_topic_members;
  return absl::OkStatus();
}

constexpr presence_subscriber_options_t kSubscriberInit = PRESENCE_SUBSCRIBER_OPTIONS_INIT;
constexpr size_t kSubscriberOptionsSize[] = {0, sizeof(presence_subscriber_options_t)};

// Writes the defaults of `version` into the caller's struct, no more bytes
// than that version has.
template <typename T, size_t N>
int InitOptions(T* options, uint32_t version, const T& defaults, const size_t (&sizes)[N],
                const char* what, char** errmsg) noexcept {
  if (options == nullptr) return NullArgument(errmsg, "options");
  if (version == 0 || version >= N) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s version %u is not one this library knows (1 to %zu)", what,
                  version, N - 1);
    return Invalid(errmsg, buf);
  }
  std::memcpy(static_cast<void*>(options), &defaults, sizes[version]);
  options->version = version;
  return Ok(errmsg);
}

// ---- Reference counts --------------------------------------------------------------------

void Ref(presence_clock_t* c) { c->refs.fetch_add(1, std::memory_order_relaxed); }
void Unref(presence_clock_t* c) {
  if (c != nullptr && c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete c;
}
void Ref(presence_engine_t* e) { e->refs.fetch_add(1, std::memory_order_relaxed); }
void Unref(presence_engine_t* e) {
  if (e == nullptr || e->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  e->rep.reset();         // first the engine, which reads the clock and writes the store ...
  e->file_store.reset();  // ... then the store (syncs and releases the folder) ...
  Unref(e->clock);        // ... then the clock
  delete e;
}

// ---- Push sinks -----------------------------------------------------------------------------
//
// One presence::Sink per fan-out routes every push subscriber's batches to
// its C callback. The C++ fan-out delivers outside its lock, so a delivery
// may race with the subscriber's close: the router counts calls in flight
// and releases the payload only after the last one, and skips deliveries
// that arrive after the close.
class SinkRouter final : public presence::Sink {
 public:
  struct Route {
    presence_sink_cb fn = nullptr;
    void* payload = nullptr;
    presence_payload_free_cb payload_free = nullptr;
    int in_flight = 0;
    bool closed = false;
  };

  // Held across Fanout::Subscribe and Add, so that no delivery to the new
  // subscriber can look for its route before it is there.
  absl::Mutex& mu() ABSL_LOCK_RETURNED(mu_) { return mu_; }

  void AddLocked(presence::SubscriberId id, Route route) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    routes_[id] = route;
  }

  void Close(presence::SubscriberId id) {
    Route done;
    {
      absl::MutexLock lock(&mu_);
      auto it = routes_.find(id);
      if (it == routes_.end()) return;
      it->second.closed = true;
      if (it->second.in_flight > 0) return;  // the last call in flight releases it
      done = it->second;
      routes_.erase(it);
    }
    if (done.payload_free != nullptr) done.payload_free(done.payload);
  }

  // The fan-out is gone: nothing delivers any more.
  void CloseAll() {
    absl::flat_hash_map<presence::SubscriberId, Route> routes;
    {
      absl::MutexLock lock(&mu_);
      routes.swap(routes_);
    }
    for (auto& [id, r] : routes) {
      if (r.payload_free != nullptr) r.payload_free(r.payload);
    }
  }

  void Deliver(presence::SubscriberId id, const presence::Batch& batch) override {
    Route r;
    {
      absl::MutexLock lock(&mu_);
      auto it = routes_.find(id);
      if (it == routes_.end() || it->second.closed) return;
      ++it->second.in_flight;
      r = it->second;
    }
    // A batch with no shared parts is its header: no copy.
    std::string joined;
    absl::string_view bytes = batch.header;
    if (!batch.parts.empty()) {
      joined = batch.Encode();
      bytes = joined;
    }
    ++tls_callback_depth;
    r.fn(id, bytes.data(), bytes.size(), r.payload);
    --tls_callback_depth;
    Route done;
    {
      absl::MutexLock lock(&mu_);
      auto it = routes_.find(id);
      if (it == routes_.end()) return;
      if (--it->second.in_flight > 0 || !it->second.closed) return;
      done = it->second;
      routes_.erase(it);
    }
    if (done.payload_free != nullptr) done.payload_free(done.payload);
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<presence::SubscriberId, Route> routes_ ABSL_GUARDED_BY(mu_);
};

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
#define PRESENCE_SAME_CODE(c, k) \
  static_assert(PRESENCE_##c == static_cast<int>(absl::StatusCode::k), "not absl's number")
PRESENCE_SAME_CODE(OK, kOk);
PRESENCE_SAME_CODE(ERR_CANCELLED, kCancelled);
PRESENCE_SAME_CODE(ERR_UNKNOWN, kUnknown);
PRESENCE_SAME_CODE(ERR_INVALID_ARGUMENT, kInvalidArgument);
PRESENCE_SAME_CODE(ERR_DEADLINE_EXCEEDED, kDeadlineExceeded);
PRESENCE_SAME_CODE(ERR_NOT_FOUND, kNotFound);
PRESENCE_SAME_CODE(ERR_ALREADY_EXISTS, kAlreadyExists);
PRESENCE_SAME_CODE(ERR_PERMISSION_DENIED, kPermissionDenied);
PRESENCE_SAME_CODE(ERR_RESOURCE_EXHAUSTED, kResourceExhausted);
PRESENCE_SAME_CODE(ERR_FAILED_PRECONDITION, kFailedPrecondition);
PRESENCE_SAME_CODE(ERR_ABORTED, kAborted);
PRESENCE_SAME_CODE(ERR_OUT_OF_RANGE, kOutOfRange);
PRESENCE_SAME_CODE(ERR_UNIMPLEMENTED, kUnimplemented);
PRESENCE_SAME_CODE(ERR_INTERNAL, kInternal);
PRESENCE_SAME_CODE(ERR_UNAVAILABLE, kUnavailable);
PRESENCE_SAME_CODE(ERR_DATA_LOSS, kDataLoss);
PRESENCE_SAME_CODE(ERR_UNAUTHENTICATED, kUnauthenticated);
#undef PRESENCE_SAME_CODE
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

// A malloc'd, NUL-terminated copy of a text for the caller.
int ReturnText(const std::string& text, char** out_text, size_t* out_len, char** errmsg) {
  char* copy = CopyString(text.data(), text.size());
  if (copy == nullptr) throw std::bad_alloc();
  *out_text = copy;
  if (out_len != nullptr) *out_len = text.size();
  return Ok(errmsg);
}

// An entry point that asks the engine one thing about a user: `ask` turns
// the user's id into a StatusOr of the value for *out (which may be NULL,
// and is zeroed on failure).
template <typename T, typename Ask>
int AskAboutUser(T* out, presence_engine_t* engine, const char* user_id, size_t user_id_len,
                 char** errmsg, Ask ask) {
  if (out != nullptr) *out = T{};
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    absl::string_view user;
    if (auto st = ToView(user_id, user_id_len, "user_id", &user); !st.ok()) return ToC(st, errmsg);
    absl::StatusOr<T> value = ask(user);
    if (!value.ok()) return ToC(value.status(), errmsg);
    if (out != nullptr) *out = *value;
    return Ok(errmsg);
  });
}

// An entry point that asks the engine a list about a user and returns it as
// one allocation of C structs (each filled by `fill`) that the caller frees
// with presence_free: NULL and a count of 0 when the list is empty. Both
// out-parameters are required (convention 5) and zeroed first.
template <typename C, typename Ask, typename Fill>
int ListAboutUser(C** out, const char* out_name, size_t* out_count, presence_engine_t* engine,
                  const char* user_id, size_t user_id_len, char** errmsg, Ask ask, Fill fill) {
  if (out_count != nullptr) *out_count = 0;
  if (out == nullptr) return NullArgument(errmsg, out_name);
  *out = nullptr;
  if (out_count == nullptr) return NullArgument(errmsg, "out_count");
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    absl::string_view user;
    if (auto st = ToView(user_id, user_id_len, "user_id", &user); !st.ok()) return ToC(st, errmsg);
    auto list = ask(user);
    if (!list.ok()) return ToC(list.status(), errmsg);
    if (list->empty()) return Ok(errmsg);
    auto* array = static_cast<C*>(std::calloc(list->size(), sizeof(C)));
    if (array == nullptr) throw std::bad_alloc();
    for (size_t i = 0; i < list->size(); ++i) fill((*list)[i], &array[i]);
    *out = array;
    *out_count = list->size();
    return Ok(errmsg);
  });
}

}  // namespace

struct presence_fanout_t {
  presence_engine_t* engine = nullptr;  // a reference
  SinkRouter router;                    // outlives rep, which points to it
  std::unique_ptr<presence::Fanout> rep;
};

// ---- Version and memory -------------------------------------------------------------------------

const char* presence_status_name(int status) { return CodeName(status); }

int presence_version_number(void) { return PRESENCE_VERSION_NUMBER; }
const char* presence_version_string(void) { return PRESENCE_VERSION_STRING; }
void presence_free(void* ptr) { std::free(ptr); }

// ---- Clock ----------------------------------------------------------------------------------------

int presence_clock_manual_new(presence_clock_t** out_clock, int64_t start_ms, char** errmsg) {
  if (out_clock == nullptr) return NullArgument(errmsg, "out_clock");
  *out_clock = nullptr;
  return Guard(errmsg, [&] {
    *out_clock = new presence_clock_t(start_ms);
    return Ok(errmsg);
  });
}

void presence_clock_destroy(presence_clock_t* clock) { Unref(clock); }

int presence_clock_advance(presence_clock_t* clock, int64_t delta_ms, char** errmsg) {
  if (clock == nullptr) return NullArgument(errmsg, "clock");
  return Guard(errmsg, [&] {
    if (delta_ms < 0) {
      return Invalid(errmsg, absl::StrCat("delta_ms is ", delta_ms, "; a clock never goes back"));
    }
    clock->clock.Advance(delta_ms);
    return Ok(errmsg);
  });
}

int presence_clock_set(presence_clock_t* clock, int64_t now_ms, char** errmsg) {
  if (clock == nullptr) return NullArgument(errmsg, "clock");
  return Guard(errmsg, [&] {
    const int64_t now = clock->clock.NowMs();
    if (now_ms < now) {
      return Invalid(errmsg, absl::StrCat("now_ms ", now_ms, " is before the clock's time ", now,
                                          "; a clock never goes back"));
    }
    clock->clock.Set(now_ms);
    return Ok(errmsg);
  });
}

int presence_clock_now(int64_t* out_now_ms, const presence_clock_t* clock, char** errmsg) {
  if (out_now_ms != nullptr) *out_now_ms = 0;
  if (clock == nullptr) return NullArgument(errmsg, "clock");
  if (out_now_ms != nullptr) *out_now_ms = clock->clock.NowMs();
  return Ok(errmsg);
}

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

// ---- Fan-out ----------------------------------------------------------------------------------------

int presence_fanout_options_init(presence_fanout_options_t* options, uint32_t version,
                                 char** errmsg) {
  return InitOptions(options, version, kFanoutInit, kFanoutOptionsSize, "fan-out options", errmsg);
}

int presence_subscriber_options_init(presence_subscriber_options_t* options, uint32_t version,
                                     char** errmsg) {
  return InitOptions(options, version, kSubscriberInit, kSubscriberOptionsSize,
                     "subscriber options", errmsg);
}

int presence_fanout_new(presence_fanout_t** out_fanout, presence_engine_t* engine,
                        const presence_fanout_options_t* options, char** errmsg) {
  if (out_fanout == nullptr) return NullArgument(errmsg, "out_fanout");
  *out_fanout = nullptr;
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    presence::FanoutOptions cxx;
    if (options != nullptr) {
      if (auto st = ToFanoutOptions(*options, &cxx); !st.ok()) return ToC(st, errmsg);
    }
    auto handle = std::make_unique<presence_fanout_t>();
    absl::StatusOr<std::unique_ptr<presence::Fanout>> f =
        presence::Fanout::Create(engine->rep.get(), cxx);
    if (!f.ok()) return ToC(f.status(), errmsg);
    handle->rep = *std::move(f);
    Ref(engine);
    handle->engine = engine;
    *out_fanout = handle.release();
    return Ok(errmsg);
  });
}

void presence_fanout_destroy(presence_fanout_t* fanout) {
  if (fanout == nullptr) return;
  fanout->rep.reset();         // detaches from the engine, after a tick in progress
  fanout->router.CloseAll();   // then the payloads
  presence_engine_t* engine = fanout->engine;
  delete fanout;
  Unref(engine);
}

int presence_fanout_subscribe(uint64_t* out_subscriber, presence_fanout_t* fanout,
                              const presence_subscriber_options_t* options, char** errmsg) {
  if (out_subscriber != nullptr) *out_subscriber = 0;
  if (fanout == nullptr) return NullArgument(errmsg, "fanout");
  return Guard(errmsg, [&] {
    presence::SubscriberOptions so;
    SinkRouter::Route route;
    if (options != nullptr) {
      if (options->version == 0 || options->version > PRESENCE_SUBSCRIBER_OPTIONS_VERSION) {
        return Invalid(errmsg, absl::StrCat(
            "subscriber options version ", options->version,
            " is not one this library knows (1 to ", PRESENCE_SUBSCRIBER_OPTIONS_VERSION,
            "): initialise them with PRESENCE_SUBSCRIBER_OPTIONS_INIT or "
            "presence_subscriber_options_init"));
      }
      absl::string_view owner;
      if (auto st = ToBoundedView(options->owner_user_id, options->owner_user_id_len,
                                  PRESENCE_MAX_USER_ID_BYTES, "owner_user_id", &owner);
          !st.ok()) {
        return ToC(st, errmsg);
      }
      so.owner_user_id = std::string(owner);
      if (options->sink != nullptr) {
        route.fn = options->sink;
        route.payload = options->sink_payload;
        route.payload_free = options->sink_payload_free;
        so.sink = &fanout->router;
      }
    }
    absl::StatusOr<presence::SubscriberId> id;
    if (so.sink == nullptr) {
      id = fanout->rep->Subscribe(so);
    } else {
      absl::MutexLock lock(&fanout->router.mu());
      id = fanout->rep->Subscribe(so);
      if (id.ok()) fanout->router.AddLocked(*id, route);
    }
    if (!id.ok()) return ToC(id.status(), errmsg);
    if (out_subscriber != nullptr) *out_subscriber = *id;
    return Ok(errmsg);
  });
}

int presence_fanout_unsubscribe(presence_fanout_t* fanout, uint64_t subscriber, char** errmsg) {
  if (fanout == nullptr) return NullArgument(errmsg, "fanout");
  return Guard(errmsg, [&] {
    if (absl::Status st = fanout->rep->Close(subscriber); !st.ok()) return ToC(st, errmsg);
    fanout->router.Close(subscriber);
    return Ok(errmsg);
  });
}

namespace {

using ListFn = absl::Status (presence::Fanout::*)(presence::SubscriberId,
                                                  absl::Span<const absl::string_view>);
using MembersFn = absl::Status (presence::Fanout::*)(absl::string_view,
                                                     absl::Span<const absl::string_view>);
using TopicFn = absl::Status (presence::Fanout::*)(presence::SubscriberId, absl::string_view);

int ListImpl(ListFn fn, presence_fanout_t* fanout, uint64_t subscriber,
             const presence_bytes_t* user_ids, size_t count, char** errmsg) {
  if (fanout == nullptr) return NullArgument(errmsg, "fanout");
  return Guard(errmsg, [&] {
    std::vector<absl::string_view> ids;
    if (auto st = ToViews(user_ids, count, "user_ids", &ids); !st.ok()) return ToC(st, errmsg);
    return ToC((fanout->rep.get()->*fn)(subscriber, ids), errmsg);
  });
}

int MembersImpl(MembersFn fn, presence_fanout_t* fanout, const char* topic, size_t topic_len,
                const presence_bytes_t* user_ids, size_t count, char** errmsg) {
  if (fanout == nullptr) return NullArgument(errmsg, "fanout");
  return Guard(errmsg, [&] {
    absl::string_view t;
    if (auto st = ToView(topic, topic_len, "topic", &t); !st.ok()) return ToC(st, errmsg);
    std::vector<absl::string_view> ids;
    if (auto st = ToViews(user_ids, count, "user_ids", &ids); !st.ok()) return ToC(st, errmsg);
    return ToC((fanout->rep.get()->*fn)(t, ids), errmsg);
  });
}

int TopicImpl(TopicFn fn, presence_fanout_t* fanout, uint64_t subscriber, const char* topic,
              size_t topic_len, char** errmsg) {
  if (fanout == nullptr) return NullArgument(errmsg, "fanout");
  return Guard(errmsg, [&] {
    absl::string_view t;
    if (auto st = ToView(topic, topic_len, "topic", &t); !st.ok()) return ToC(st, errmsg);
    return ToC((fanout->rep.get()->*fn)(subscriber, t), errmsg);
  });
}

}  // namespace

int presence_fanout_add_users(presence_fanout_t* fanout, uint64_t subscriber,
                              const presence_bytes_t* user_ids, size_t count, char** errmsg) {
  return ListImpl(&presence::Fanout::AddUsers, fanout, subscriber, user_ids, count, errmsg);
}
int presence_fanout_remove_users(presence_fanout_t* fanout, uint64_t subscriber,
                                 const presence_bytes_t* user_ids, size_t count, char** errmsg) {
  return ListImpl(&presence::Fanout::RemoveUsers, fanout, subscriber, user_ids, count, errmsg);
}
int presence_fanout_replace_users(presence_fanout_t* fanout, uint64_t subscriber,
                                  const presence_bytes_t* user_ids, size_t count, char** errmsg) {
  return ListImpl(&presence::Fanout::ReplaceUsers, fanout, subscriber, user_ids, count, errmsg);
}

int presence_fanout_join(presence_fanout_t* fanout, uint64_t subscriber, const char* topic,
                         size_t topic_len, char** errmsg) {
  return TopicImpl(&presence::Fanout::Join, fanout, subscriber, topic, topic_len, errmsg);
}
int presence_fanout_leave(presence_fanout_t* fanout, uint64_t subscriber, const char* topic,
                          size_t topic_len, char** errmsg) {
  return TopicImpl(&presence::Fanout::Leave, fanout, subscriber, topic, topic_len, errmsg);
}

int presence_fanout_add_members(presence_fanout_t* fanout, const char* topic, size_t topic_len,
                                const presence_bytes_t* user_ids, size_t count, char** errmsg) {
  return MembersImpl(&presence::Fanout::AddMembers, fanout, topic, topic_len, user_ids, count,
                     errmsg);
}
int presence_fanout_remove_members(presence_fanout_t* fanout, const char* topic, size_t topic_len,
                                   const presence_bytes_t* user_ids, size_t count,
                                   char** errmsg) {
  return MembersImpl(&presence::Fanout::RemoveMembers, fanout, topic, topic_len, user_ids, count,
                     errmsg);
}
int presence_fanout_replace_members(presence_fanout_t* fanout, const char* topic,
                                    size_t topic_len, const presence_bytes_t* user_ids,
                                    size_t count, char** errmsg) {
  return MembersImpl(&presence::Fanout::ReplaceMembers, fanout, topic, topic_len, user_ids, count,
                     errmsg);
}

int presence_fanout_poll(uint8_t* out_has_batch, char** out_batch, size_t* out_len,
                         presence_fanout_t* fanout, uint64_t subscriber, char** errmsg) {
  if (out_has_batch != nullptr) *out_has_batch = 0;
  if (out_len != nullptr) *out_len = 0;
  if (out_batch == nullptr) return NullArgument(errmsg, "out_batch");
  *out_batch = nullptr;
  if (out_len == nullptr) return NullArgument(errmsg, "out_len");
  if (fanout == nullptr) return NullArgument(errmsg, "fanout");
  return Guard(errmsg, [&] {
    presence::Batch batch;
    absl::StatusOr<bool> got = fanout->rep->Poll(subscriber, &batch);
    if (!got.ok()) return ToC(got.status(), errmsg);
    if (!*got) return Ok(errmsg);
    const size_t n = batch.ByteSize();
    char* buf = static_cast<char*>(std::malloc(n == 0 ? 1 : n));
    if (buf == nullptr) throw std::bad_alloc();
    char* at = buf;
    std::memcpy(at, batch.header.data(), batch.header.size());
    at += batch.header.size();
    for (const auto& part : batch.parts) {
      std::memcpy(at, part->data(), part->size());
      at += part->size();
    }
    *out_batch = buf;
    *out_len = n;
    if (out_has_batch != nullptr) *out_has_batch = 1;
    return Ok(errmsg);
  });
}

int presence_fanout_resume(presence_fanout_t* fanout, uint64_t subscriber, uint64_t cursor,
                           char** errmsg) {
  if (fanout == nullptr) return NullArgument(errmsg, "fanout");
  return Guard(errmsg, [&] { return ToC(fanout->rep->Resume(subscriber, cursor), errmsg); });
}

int presence_fanout_render_metrics(char** out_text, size_t* out_len,
                                   const presence_fanout_t* fanout, char** errmsg) {
  if (out_len != nullptr) *out_len = 0;
  if (out_text == nullptr) return NullArgument(errmsg, "out_text");
  *out_text = nullptr;
  if (fanout == nullptr) return NullArgument(errmsg, "fanout");
  return Guard(errmsg, [&] {
    return ReturnText(fanout->rep->RenderMetrics(), out_text, out_len, errmsg);
  });
}
