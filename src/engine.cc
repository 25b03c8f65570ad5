#include "presence/engine.h"

#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "presence/clock.h"
#include "presence/listener.h"
#include "presence/version.h"
#include "src/shard.h"
#include "src/validate.h"

namespace presence {

const char* VersionString() { return PRESENCE_VERSION_STRING; }

namespace internal {

// EngineCore routes each call to the shard that owns the user, and runs the
// lock-free heartbeat and the engine-wide Tick.
class EngineCore {
 public:
  explicit EngineCore(const Options& options)
      : clock_(options.clock ? options.clock : SystemClock()),
        config_{options, LivenessPolicy(options), &next_override_id_} {
    if (options.listener != nullptr) listeners_.push_back(options.listener);
    int n = options.shards == 0 ? 16 : options.shards;
    while ((1 << shard_bits_) < n) ++shard_bits_;
    const int64_t now = clock_->NowMs();
    for (int i = 0; i < (1 << shard_bits_); ++i) {
      shards_.push_back(std::make_unique<Shard>(&config_, static_cast<uint32_t>(i), now));
    }
  }

  const Options& options() const { return config_.options; }
  int64_t Now() const { return clock_->NowMs(); }

  Shard& ShardFor(uint64_t hash) {
    return *shards_[shard_bits_ == 0 ? 0 : static_cast<size_t>(hash >> (64 - shard_bits_))];
  }

  // Validates a signal and resolves its time; counts it when invalid.
  absl::Status Accept(const Signal& s, int64_t now, AcceptedSignal* out) {
    absl::Status st = ValidateSignal(s);
    if (st.ok()) {
      int64_t ts = s.timestamp_ms == 0 ? now : s.timestamp_ms;
      if (ts > now + config_.options.max_future_skew_ms) {
        st = absl::InvalidArgumentError(
            absl::StrCat("timestamp_ms is ", ts - now, " ms ahead of the engine's clock"));
      } else if (ts < now - config_.options.max_signal_age_ms) {
        st = absl::InvalidArgumentError(
            absl::StrCat("timestamp_ms is ", now - ts, " ms behind the engine's clock"));
      }
      *out = AcceptedSignal{&s, HashUserId(s.user_id), std::min(ts, now)};
    }
    if (!st.ok()) invalid_.fetch_add(1, std::memory_order_relaxed);
    return st;
  }

  absl::Status Apply(const Signal& s, DeviceHandle* handle) {
    const int64_t now = Now();
    AcceptedSignal a;
    if (auto st = Accept(s, now, &a); !st.ok()) return st;
    return ShardFor(a.hash).Apply(a, now, handle);
  }

  BatchResult ApplyBatch(absl::Span<const Signal> signals) {
    BatchResult result;
    const int64_t now = Now();
    // Group by shard, keeping each shard's signals in order, so that each
    // shard is locked once per batch.
    thread_local std::vector<std::pair<Shard*, AcceptedSignal>> accepted;
    thread_local std::vector<AcceptedSignal> run;
    accepted.clear();
    for (const Signal& s : signals) {
      AcceptedSignal a;
      if (absl::Status st = Accept(s, now, &a); !st.ok()) {
        ++result.rejected;
        if (result.first_error.ok()) result.first_error = std::move(st);
        continue;
      }
      accepted.emplace_back(&ShardFor(a.hash), a);
    }
    std::stable_sort(accepted.begin(), accepted.end(),
                     [](const auto& x, const auto& y) { return x.first < y.first; });
    for (size_t i = 0; i < accepted.size();) {
      Shard* shard = accepted[i].first;
      run.clear();
      for (; i < accepted.size() && accepted[i].first == shard; ++i) run.push_back(accepted[i].second);
      shard->ApplyMany(run.data(), run.size(), now, &result);
    }
    return result;
  }

  // The heartbeat fast path: see Engine::Beat.
  absl::Status Beat(DeviceHandle h, Activity activity, Source source) {
    const uint32_t shard = static_cast<uint32_t>(h.value >> 56);
    const uint32_t gen = static_cast<uint32_t>(h.value >> 32) & fast::kGenMask;
    const uint32_t index = static_cast<uint32_t>(h.value);
    Device* d = shard < shards_.size() ? shards_[shard]->devices().Find(index) : nullptr;
    if (d == nullptr || gen == 0) return absl::NotFoundError("not a handle of this engine");
    const uint32_t a = static_cast<uint32_t>(activity), s = static_cast<uint32_t>(source);
    if (a - 1 > 1u || s - 1 > 2u) {
      invalid_.fetch_add(1, std::memory_order_relaxed);
      return absl::InvalidArgumentError(a - 1 > 1u ? "unknown activity value" : "unknown source value");
    }
    const int i = static_cast<int>(s) - 1;
    const int64_t now = Now();
    const uint32_t word = d->gen_fast.load(std::memory_order_acquire);
    const uint32_t mask = fast::kOpen | fast::LiveBit(i) | fast::ActiveBit(i);
    const uint32_t want = fast::kOpen | fast::LiveBit(i) |
                          (activity == Activity::kActive ? fast::ActiveBit(i) : 0u);
    if (fast::Gen(word) == gen && (word & mask) == want) {
      // Live, open, and this source already live with this activity: only
      // the time moves. Lapses are found lazily by the device's timer.
      const Time32 t = ToTime32(now);
      if (Diff32(t, d->seen[i].load(std::memory_order_relaxed)) > 0) {
        d->seen[i].store(t, std::memory_order_relaxed);
      }
      shards_[shard]->fast_counters().accepted[i].fetch_add(1, std::memory_order_relaxed);
      return absl::OkStatus();
    }
    return shards_[shard]->BeatLocked(index, gen, activity, source, now);
  }

  absl::Status Disconnect(DeviceHandle h, DisconnectKind kind) {
    if (auto st = ValidateDisconnectKind(kind); !st.ok()) return st;
    const uint32_t shard = static_cast<uint32_t>(h.value >> 56);
    if (shard >= shards_.size() || !h.valid()) return absl::NotFoundError("not a handle of this engine");
    return shards_[shard]->DisconnectHandle(static_cast<uint32_t>(h.value),
                                            static_cast<uint32_t>(h.value >> 32) & fast::kGenMask,
                                            kind, Now());
  }

  size_t Tick() {
    absl::MutexLock lock(&tick_mu_);
    const int64_t now = Now();
    events_.clear();
    for (auto& shard : shards_) shard->Tick(now, &events_, &latency_);
    for (ChangeListener* l : listeners_) {
      if (!events_.empty()) l->OnChanges(events_);
      l->OnTick(now);
    }
    return events_.size();
  }

  void AddListener(ChangeListener* l) {
    absl::MutexLock lock(&tick_mu_);
    if (l != nullptr) listeners_.push_back(l);
  }
  void RemoveListener(ChangeListener* l) {
    absl::MutexLock lock(&tick_mu_);
    listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), l), listeners_.end());
  }

  UserPresence Get(absl::string_view user_id, absl::string_view viewer, bool published) {
    if (!ValidateUserId(user_id).ok()) {
      UserPresence p;
      p.user_id = std::string(user_id);
      return p;
    }
    const uint64_t h = HashUserId(user_id);
    return ShardFor(h).Get(user_id, h, viewer == user_id, published, Now());
  }

  Shard::Stats Stats() {
    Shard::Stats stats;
    const int64_t now = Now();
    for (auto& shard : shards_) shard->AddStats(now, &stats);
    return stats;
  }

  std::string RenderMetrics() {
    Shard::Stats st = Stats();
    st.counters.dropped[static_cast<int>(DropReason::kInvalid)] +=
        invalid_.load(std::memory_order_relaxed);
    std::string out;
    MetricHeader(&out, "presence_signals_accepted_total", "counter",
                 "Signals applied, by source (heartbeats on handles included).");
    for (Source s : {Source::kInferred, Source::kApp, Source::kManual}) {
      MetricSample(&out, "presence_signals_accepted_total",
                   absl::StrCat("source=\"", SourceName(s), "\""),
                   st.counters.accepted[SourceIndex(s)]);
    }
    MetricHeader(&out, "presence_signals_dropped_total", "counter",
                 "Signals not applied, by reason.");
    for (int r = 0; r < kDropReasonCount; ++r) {
      MetricSample(&out, "presence_signals_dropped_total",
                   absl::StrCat("reason=\"", DropReasonName(static_cast<DropReason>(r)), "\""),
                   st.counters.dropped[r]);
    }
    MetricHeader(&out, "presence_transitions_total", "counter",
                 "Published user state changes, by cause.");
    for (int c = 1; c <= kCauseCount; ++c) {
      MetricSample(&out, "presence_transitions_total",
                   absl::StrCat("cause=\"", CauseName(static_cast<Cause>(c)), "\""),
                   st.counters.transitions[c - 1]);
    }
    {
      absl::MutexLock lock(&tick_mu_);
      latency_.Render(&out, "presence_publish_latency_ms",
                      "Time from the signal that caused a change to its publication, in ms.");
    }
    MetricHeader(&out, "presence_false_offlines_total", "counter",
                 "Devices that died by timeout or abrupt disconnect and came back within "
                 "the false-offline window.");
    MetricSample(&out, "presence_false_offlines_total", "", st.counters.false_offlines);
    MetricHeader(&out, "presence_stale_ratio", "gauge",
                 "Share of users shown live whose freshness exceeds the APP offline threshold.");
    MetricSample(&out, "presence_stale_ratio", "",
                 st.live_users == 0 ? 0.0 : double(st.stale_users) / double(st.live_users));
    MetricHeader(&out, "presence_users", "gauge", "Users held.");
    MetricSample(&out, "presence_users", "", st.sizes.users);
    MetricHeader(&out, "presence_devices", "gauge", "Device records held, live or recently dead.");
    MetricSample(&out, "presence_devices", "", st.sizes.devices);
    MetricHeader(&out, "presence_live_devices", "gauge", "Devices that count as live.");
    MetricSample(&out, "presence_live_devices", "", st.sizes.live_devices);
    MetricHeader(&out, "presence_overrides", "gauge", "Overrides held.");
    MetricSample(&out, "presence_overrides", "", st.sizes.overrides);
    return out;
  }

  size_t RevokeBetween(int64_t from, int64_t to) {
    const int64_t now = Now();
    size_t n = 0;
    for (auto& shard : shards_) n += shard->RevokeOverridesSetBetween(from, to, now);
    return n;
  }

 private:
  Clock* const clock_;
  std::atomic<uint64_t> next_override_id_{1};
  const ShardConfig config_;
  int shard_bits_ = 0;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> invalid_{0};

  absl::Mutex tick_mu_;
  std::vector<ChangeEvent> events_ ABSL_GUARDED_BY(tick_mu_);
  std::vector<ChangeListener*> listeners_ ABSL_GUARDED_BY(tick_mu_);
  LatencyHistogram latency_ ABSL_GUARDED_BY(tick_mu_);
};

}  // namespace internal

using internal::EngineCore;
using internal::HashUserId;
using internal::ValidateUserId;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const Options& options) {
  if (auto st = internal::ValidateOptions(options); !st.ok()) return st;
  return std::unique_ptr<Engine>(new Engine(std::make_unique<EngineCore>(options)));
}

Engine::Engine(std::unique_ptr<EngineCore> core) : core_(std::move(core)) {}
Engine::~Engine() = default;

absl::Status Engine::Signal(const presence::Signal& signal) { return core_->Apply(signal, nullptr); }

BatchResult Engine::SignalBatch(absl::Span<const presence::Signal> signals) {
  return core_->ApplyBatch(signals);
}

absl::Status Engine::DisconnectDevice(absl::string_view user_id, absl::string_view device_id,
                                      uint64_t session_id, DisconnectKind kind) {
  if (auto st = ValidateUserId(user_id); !st.ok()) return st;
  if (auto st = internal::ValidateDeviceId(device_id); !st.ok()) return st;
  if (auto st = internal::ValidateDisconnectKind(kind); !st.ok()) return st;
  const uint64_t h = HashUserId(user_id);
  return core_->ShardFor(h).DisconnectDevice(user_id, h, device_id, session_id, kind, NowMs());
}

absl::StatusOr<DeviceHandle> Engine::Connect(const presence::Signal& signal) {
  DeviceHandle h;
  if (auto st = core_->Apply(signal, &h); !st.ok()) return st;
  return h;
}

absl::Status Engine::Beat(DeviceHandle handle, Activity activity, Source source) {
  return core_->Beat(handle, activity, source);
}

absl::Status Engine::Disconnect(DeviceHandle handle, DisconnectKind kind) {
  return core_->Disconnect(handle, kind);
}

absl::StatusOr<uint64_t> Engine::SetOverride(absl::string_view user_id, OverrideState state,
                                              int64_t until_ms, uint64_t trace_id) {
  if (auto st = ValidateUserId(user_id); !st.ok()) return st;
  if (auto st = internal::ValidateOverrideState(state); !st.ok()) return st;
  const int64_t now = NowMs();
  if (until_ms != 0 && until_ms <= now) {
    return absl::InvalidArgumentError(
        absl::StrCat("override ends at ", until_ms, ", not after now (", now, ")"));
  }
  const uint64_t h = HashUserId(user_id);
  return core_->ShardFor(h).SetOverride(user_id, h, state, until_ms, trace_id, now);
}

absl::Status Engine::RevokeOverride(absl::string_view user_id, uint64_t override_id) {
  if (auto st = ValidateUserId(user_id); !st.ok()) return st;
  const uint64_t h = HashUserId(user_id);
  return core_->ShardFor(h).RevokeOverride(user_id, h, override_id, NowMs());
}

absl::StatusOr<size_t> Engine::ClearOverrides(absl::string_view user_id) {
  if (auto st = ValidateUserId(user_id); !st.ok()) return st;
  const uint64_t h = HashUserId(user_id);
  return core_->ShardFor(h).ClearOverrides(user_id, h, NowMs());
}

size_t Engine::RevokeOverridesSetBetween(int64_t from_ms, int64_t to_ms) {
  return core_->RevokeBetween(from_ms, to_ms);
}

absl::StatusOr<std::vector<OverrideInfo>> Engine::ListOverrides(absl::string_view user_id) {
  if (auto st = ValidateUserId(user_id); !st.ok()) return st;
  const uint64_t h = HashUserId(user_id);
  return core_->ShardFor(h).ListOverrides(user_id, h, NowMs());
}

UserPresence Engine::GetOne(absl::string_view user_id, absl::string_view viewer_user_id) {
  return core_->Get(user_id, viewer_user_id, /*published=*/false);
}

std::vector<UserPresence> Engine::Get(absl::Span<const absl::string_view> user_ids,
                                      absl::string_view viewer_user_id) {
  std::vector<UserPresence> out;
  out.reserve(user_ids.size());
  for (absl::string_view id : user_ids) out.push_back(core_->Get(id, viewer_user_id, false));
  return out;
}

std::vector<UserPresence> Engine::GetPublished(absl::Span<const absl::string_view> user_ids,
                                               absl::string_view viewer_user_id) {
  std::vector<UserPresence> out;
  out.reserve(user_ids.size());
  for (absl::string_view id : user_ids) out.push_back(core_->Get(id, viewer_user_id, true));
  return out;
}

void Engine::AddListener(ChangeListener* listener) { core_->AddListener(listener); }
void Engine::RemoveListener(ChangeListener* listener) { core_->RemoveListener(listener); }

size_t Engine::Tick() { return core_->Tick(); }
int64_t Engine::NowMs() const { return core_->Now(); }
std::string Engine::RenderMetrics() const { return core_->RenderMetrics(); }

Engine::Sizes Engine::GetSizes() const { return core_->Stats().sizes; }

const Options& Engine::options() const { return core_->options(); }

}  // namespace presence
