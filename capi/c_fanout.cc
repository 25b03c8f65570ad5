// The C ABI's fan-out: options, subscribers with their push sinks, lists
// and topics, poll and resume.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "capi/c_common.h"
#include "capi/c_internal.h"
#include "presence/c.h"
#include "presence/engine.h"
#include "presence/fanout.h"

using presence::capi::Guard;
using presence::capi::InitOptions;
using presence::capi::Invalid;
using presence::capi::NullArgument;
using presence::capi::Ok;
using presence::capi::Ref;
using presence::capi::ReturnText;
using presence::capi::ToBoundedView;
using presence::capi::ToC;
using presence::capi::ToView;
using presence::capi::ToViews;
using presence::capi::Unref;
using presence::capi::tls_callback_depth;

namespace {

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

}  // namespace

struct presence_fanout_t {
  presence_engine_t* engine = nullptr;  // a reference
  SinkRouter router;                    // outlives rep, which points to it
  std::unique_ptr<presence::Fanout> rep;
};

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
