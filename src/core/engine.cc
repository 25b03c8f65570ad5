#include "presence/engine.h"

#include <algorithm>
#include <deque>
#include <exception>
#include <limits>
#include <map>
#include <thread>
#include <atomic>
#include <utility>

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "absl/base/attributes.h"
#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "src/core/bus_batches.h"
#include "src/core/mutex.h"
#include "src/core/overload.h"
#include "src/core/prefetch.h"
#include "presence/bus.h"
#include "presence/clock.h"
#include "presence/history.h"
#include "presence/store.h"
#include "presence/wire.h"
#include "presence/listener.h"
#include "presence/prober.h"
#include "presence/version.h"
#include "src/scaleout/partition.h"
#include "src/core/shard.h"
#include "src/core/test_hooks.h"
#include "src/core/validate.h"

namespace presence {

const char* VersionString() { return PRESENCE_VERSION_STRING; }

namespace internal {

// The lock-free heartbeat's block of one thread in one engine: its counters
// and its pin. Only the owning thread writes a claimed block (a plain load
// and store, no locked instruction); readers sum the blocks. Threads past
// the engine's kClaimedBlocks share one more block, through locked RMWs.
struct alignas(64) BeatCounters {
  std::atomic<uint64_t> owner{0};  // the claiming thread's token; 0: free
  // Owned block: the epoch in which the thread's running beat began (0:
  // none). Shared block: how many beats through it are running.
  std::atomic<uint64_t> pinned{0};
  std::atomic<uint64_t> accepted[kSourceCount] = {};
  std::atomic<uint64_t> rate_limited{0};
};

// This thread's token (0 until its first beat), and its blocks for its last
// few engines.
struct ThreadCounterCache {
  struct Entry {
    uint64_t engine = 0;
    BeatCounters* counters = nullptr;
  };
  static thread_local uint64_t token;
  static thread_local Entry entries[4];
  static thread_local unsigned next;
};
thread_local uint64_t ThreadCounterCache::token = 0;
thread_local ThreadCounterCache::Entry ThreadCounterCache::entries[4];
thread_local unsigned ThreadCounterCache::next = 0;
std::atomic<uint64_t> next_thread_token{1};

class EngineCore;
std::atomic<uint64_t> next_engine_id{1};

// The engine whose listeners this thread is calling (null: none).
thread_local const EngineCore* tls_calling_listeners = nullptr;

// Asymmetric fences (the light side a compiler barrier, the heavy side the
// membarrier system call, as hazard pointers use them) when the kernel has
// private expedited membarrier; else both sides pay a full fence.
bool RegisterMembarrier() {
  return syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}
const bool kAsymmetricFences = RegisterMembarrier();

void HeavyBarrier() {
  if (syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) std::abort();
}

// EngineCore routes each call to the shard that owns the user, and runs the
// lock-free heartbeat and the engine-wide Tick.
class EngineCore {
 public:
  explicit EngineCore(const Options& options)
      : clock_(options.clock ? options.clock : SystemClock()),
        config_{options, LivenessPolicy(options), &next_override_id_, &gateways_, &charged_bytes_,
                [this](uint64_t hash) { return CheckOwned(hash); }, &epochs_, &probe_budget_} {
    if (options.listener != nullptr) listeners_.push_back(options.listener);
    int n = options.shards == 0 ? 16 : options.shards;
    while ((1 << shard_bits_) < n) ++shard_bits_;
    const int64_t now = clock_->NowMs();
    for (int i = 0; i < (1 << shard_bits_); ++i) {
      shards_.push_back(std::make_unique<Shard>(&config_, static_cast<uint32_t>(i), now));
    }
    for (uint32_t p = 0; p < partitions_; ++p) owned_[p].store(owns_all_, std::memory_order_relaxed);
  }

  const Options& options() const { return config_.options; }
  int64_t Now() const { return clock_->NowMs(); }

  uint32_t ShardIndex(uint64_t hash) const {
    return shard_bits_ == 0 ? 0 : static_cast<uint32_t>(hash >> (64 - shard_bits_));
  }
  Shard& ShardFor(uint64_t hash) { return *shards_[ShardIndex(hash)]; }

  // Validates a signal and resolves its time; counts it when invalid.
  // Called pinned (BeatPin), so that the gateway index it resolves stays
  // that gateway's until the shard applied it (GatewayTable's grace).
  absl::Status Accept(const Signal& s, int64_t now, AcceptedSignal* out) {
    absl::Status st = ValidateSignal(s);
    if (st.ok()) {
      int64_t ts = s.timestamp_ms == 0 ? now : s.timestamp_ms;
      // A timestamp is any int64; the distance to it can exceed int64 but
      // never uint64, where the subtraction wraps to exactly that distance.
      const auto distance = [](int64_t later, int64_t earlier) {
        return static_cast<uint64_t>(later) - static_cast<uint64_t>(earlier);
      };
      if (ts > now + config_.options.max_future_skew_ms) {
        st = absl::InvalidArgumentError(absl::StrCat("timestamp_ms is ", distance(ts, now),
                                                     " ms ahead of the engine's clock"));
      } else if (ts < now - config_.options.max_signal_age_ms) {
        st = absl::InvalidArgumentError(absl::StrCat("timestamp_ms is ", distance(now, ts),
                                                     " ms behind the engine's clock"));
      }
      // The caller is pinned (BeatPin) until the index is on its device.
      const uint32_t gateway = st.ok() ? gateways_.Intern(s.gateway) : 0;
      *out = AcceptedSignal{&s, HashUserId(s.user_id), std::min(ts, now), gateway};
      if (st.ok()) st = CheckOwned(out->hash);
    }
    if (!st.ok()) invalid_.fetch_add(1, std::memory_order_relaxed);
    return st;
  }

  // OK when this engine serves the user of `hash` (it owns its partition).
  absl::Status CheckOwned(uint64_t hash) const {
    if (owns_all_) return absl::OkStatus();
    const uint32_t p = PartitionOfHash(hash, partitions_);
    if (owned_[p].load(std::memory_order_acquire)) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("the user is in partition ", p, ", which this engine does not own"));
  }
  bool Owns(uint32_t partition) const {
    return partition < partitions_ && owned_[partition].load(std::memory_order_acquire);
  }

  absl::Status Apply(const Signal& s, DeviceHandle* handle) {
    const int64_t now = Now();
    BeatPin pin(this);
    AcceptedSignal a;
    if (auto st = Accept(s, now, &a); !st.ok()) return st;
    if (auto hook = test_hooks::keyed_accepted.load()) hook(a.hash);
    return ShardFor(a.hash).Apply(a, now, handle);
  }

  // `replay`: the signals were read back from the bus (see AcceptedSignal).
  BatchResult ApplyBatch(absl::Span<const Signal> signals, bool replay = false) {
    BatchResult result;
    const int64_t now = Now();
    BeatPin pin(this);
    // Group by shard, keeping each shard's signals in order, so that each
    // shard is locked once per batch: a counting sort, with no allocation
    // once this thread's buffers have grown.
    thread_local std::vector<AcceptedSignal> accepted;
    thread_local std::vector<AcceptedSignal> grouped;
    thread_local std::vector<size_t> pos;  // per shard: where its slice of `grouped` begins
    accepted.clear();
    pos.assign(shards_.size() + 1, 0);
    for (const Signal& s : signals) {
      AcceptedSignal a;
      if (absl::Status st = Accept(s, now, &a); !st.ok()) {
        ++result.rejected;
        if (result.first_error.ok()) result.first_error = std::move(st);
        continue;
      }
      a.replay = replay;
      accepted.push_back(a);
      ++pos[ShardIndex(a.hash) + 1];
    }
    for (size_t k = 1; k < pos.size(); ++k) pos[k] += pos[k - 1];
    grouped.resize(accepted.size());
    for (const AcceptedSignal& a : accepted) grouped[pos[ShardIndex(a.hash)]++] = a;
    // Filling moved each pos[k] to where shard k's slice ends.
    size_t begin = 0;
    for (size_t k = 0; k < shards_.size(); ++k) {
      if (pos[k] > begin) shards_[k]->ApplyMany(grouped.data() + begin, pos[k] - begin, now, &result);
      begin = pos[k];
    }
    return result;
  }

  // See Engine::DisconnectDevice.
  absl::Status DisconnectDevice(absl::string_view user_id, absl::string_view device_id,
                                uint64_t session_id, DisconnectKind kind) {
    if (auto st = ValidateUserId(user_id); !st.ok()) return st;
    if (auto st = ValidateDeviceId(device_id); !st.ok()) return st;
    if (auto st = ValidateDisconnectKind(kind); !st.ok()) return st;
    const uint64_t h = HashUserId(user_id);
    return ShardFor(h).DisconnectDevice(user_id, h, device_id, session_id, kind, Now());
  }

  // Engine::SetOverride and a set of Engine::ApplyOverride: `chosen_id` 0 is
  // the engine's own id (and an end not after now is refused); a chosen id
  // is set once (a second set of it, or one that has already ended,
  // changes nothing: `*added` false).
  absl::StatusOr<uint64_t> SetOverride(absl::string_view user_id, OverrideState state,
                                       int64_t until_ms, uint64_t trace_id, uint64_t chosen_id,
                                       int64_t set_at_ms, bool* added) {
    if (added != nullptr) *added = false;
    if (auto st = ValidateUserId(user_id); !st.ok()) return st;
    if (auto st = ValidateOverrideState(state); !st.ok()) return st;
    const int64_t now = Now();
    if (auto st = ValidateOverrideEnd(until_ms, now); !st.ok()) {
      if (chosen_id == 0) return st;
      return chosen_id;  // it ended before it got here (a late replay): nothing to do
    }
    const uint64_t h = HashUserId(user_id);
    if (auto hook = internal::test_hooks::keyed_accepted.load()) hook(h);
    return ShardFor(h).SetOverride(user_id, h, state, until_ms, trace_id, now, chosen_id,
                                   set_at_ms != 0 ? set_at_ms : now, added);
  }

  // See Engine::ApplyOverride.
  absl::StatusOr<size_t> ApplyOverride(const OverrideCommand& c) {
    if (auto st = ValidateOverrideCommand(c); !st.ok()) return st;
    const uint64_t h = HashUserId(c.user_id);
    switch (c.op) {
      case OverrideOp::kSet: {
        bool added = false;
        auto id = SetOverride(c.user_id, c.state, c.until_ms, c.trace_id, c.override_id, c.set_at_ms,
                              &added);
        if (!id.ok()) return id.status();
        return added ? 1 : 0;
      }
      case OverrideOp::kRevoke: {
        absl::Status st = ShardFor(h).RevokeOverride(c.user_id, h, c.override_id, Now());
        if (absl::IsNotFound(st)) return 0;  // not held (any more): a replay, or revoked twice
        if (!st.ok()) return st;
        return 1;
      }
      case OverrideOp::kClear: {
        absl::StatusOr<size_t> n = ShardFor(h).ClearOverrides(c.user_id, h, Now());
        if (absl::IsNotFound(n.status())) return 0;  // an unknown user holds none
        return n;
      }
    }
    return absl::InvalidArgumentError("unknown override op");
  }

  // The heartbeat fast path: see Engine::Beat.
  absl::Status Beat(DeviceHandle h, Activity activity, Source source) {
    BeatPin pin(this);
    return BeatAt(h, Resolve(h), activity, source, Now(), pin.counters());
  }

  // See Engine::BeatMany. Each handle's chunk entry is prefetched 2 * kAhead
  // places before it beats, then the handle is resolved and its record
  // prefetched kAhead places before, so about that many cache misses are in
  // flight at once where a loop of Beat calls waits for them one by one.
  BatchResult BeatMany(absl::Span<const DeviceHandle> handles, Activity activity, Source source) {
    constexpr size_t kAhead = 32;  // a power of two; 24 to 40 measured alike
    Device* ahead[kAhead];
    BatchResult result;
    BeatPin pin(this);  // one pin for the whole batch
    const int64_t now = Now();
    const size_t n = handles.size();
    auto prefetch_entry = [&](size_t i) {
      const uint32_t shard = static_cast<uint32_t>(handles[i].value >> 56);
      if (shard < shards_.size()) {
        shards_[shard]->devices().PrefetchEntry(static_cast<uint32_t>(handles[i].value));
      }
    };
    for (size_t i = 0; i < std::min(n, 2 * kAhead); ++i) prefetch_entry(i);
    auto resolve = [&](size_t i) {
      Device* d = Resolve(handles[i]);
      if (d != nullptr) {
        // The heartbeat's fields may straddle two cache lines.
        PrefetchForWrite(d);
        PrefetchForWrite(reinterpret_cast<char*>(d) + Device::kHotBytes - 1);
      }
      ahead[i % kAhead] = d;
    };
    for (size_t i = 0; i < std::min(n, kAhead); ++i) resolve(i);
    for (size_t i = 0; i < n; ++i) {
      Device* d = ahead[i % kAhead];
      if (i + 2 * kAhead < n) prefetch_entry(i + 2 * kAhead);
      if (i + kAhead < n) resolve(i + kAhead);
      CountOutcome(BeatAt(handles[i], d, activity, source, now, pin.counters()), &result);
    }
    return result;
  }

  // The record of a handle's slot (which may be free or reused: BeatAt checks
  // the generation); null when the handle cannot be one of this engine's.
  Device* Resolve(DeviceHandle h) const {
    const uint32_t shard = static_cast<uint32_t>(h.value >> 56);
    return shard < shards_.size() ? shards_[shard]->devices().Find(static_cast<uint32_t>(h.value))
                                  : nullptr;
  }

  // A lock-free heartbeat runs pinned: from before it reads a record's
  // generation until it wrote its last store to the record, its thread's
  // block holds the epoch it began in, so no record freed since is reused
  // under it (SlotEpochs, in src/core/device_table.h).
  class BeatPin {
   public:
    // A pin inside a pin of the same thread (a beat from a test hook) keeps
    // the outer, older one.
    explicit BeatPin(EngineCore* e) : e_(e), c_(e->ThreadCounters()) {
      if (c_ == &e_->shared_counters_) {
        c_->pinned.fetch_add(1, std::memory_order_seq_cst);
      } else if (outer_ = c_->pinned.load(std::memory_order_relaxed); outer_ == 0) {
        const uint64_t epoch = e_->epochs_.now.load(std::memory_order_seq_cst);
        if (kAsymmetricFences) {
          // The pin must be seen before the record's generation is read; the
          // tick's membarrier (AdvanceEpoch) orders it, so only the compiler
          // needs telling here: no locked instruction on the heartbeat.
          c_->pinned.store(epoch, std::memory_order_relaxed);
          std::atomic_signal_fence(std::memory_order_seq_cst);
        } else {
          c_->pinned.store(epoch, std::memory_order_seq_cst);
        }
      }
    }
    ~BeatPin() {
      if (c_ == &e_->shared_counters_) {
        c_->pinned.fetch_sub(1, std::memory_order_release);
      } else if (outer_ == 0) {
        c_->pinned.store(0, std::memory_order_release);
      }
    }
    BeatPin(const BeatPin&) = delete;
    BeatPin& operator=(const BeatPin&) = delete;
    BeatCounters* counters() const { return c_; }

   private:
    EngineCore* const e_;
    BeatCounters* const c_;
    uint64_t outer_ = 0;  // the pin this one is inside (0: none)
  };

  // Adds one to a counter of this thread's block.
  void Count(BeatCounters* c, std::atomic<uint64_t>& counter) {
    if (c == &shared_counters_) {
      counter.fetch_add(1, std::memory_order_relaxed);
    } else {
      counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
  }

  // One heartbeat on a handle whose slot `d` is Resolve(h), at `now`, under
  // a BeatPin whose block is `c`.
  ABSL_ATTRIBUTE_ALWAYS_INLINE absl::Status BeatAt(DeviceHandle h, Device* d, Activity activity,
                                                   Source source, int64_t now, BeatCounters* c) {
    const uint32_t gen = static_cast<uint32_t>(h.value >> 32) & fast::kGenMask;
    if (d == nullptr || gen == 0) return absl::NotFoundError("not a handle of this engine");
    const uint32_t a = static_cast<uint32_t>(activity), s = static_cast<uint32_t>(source);
    if (a - 1 > 1u || s - 1 > 2u) {
      invalid_.fetch_add(1, std::memory_order_relaxed);
      return absl::InvalidArgumentError(a - 1 > 1u ? "unknown activity value" : "unknown source value");
    }
    const int i = static_cast<int>(s) - 1;
    const uint32_t word = d->gen_fast.load(std::memory_order_seq_cst);  // after the pin
    const uint32_t mask = fast::kOpen | fast::LiveBit(i) | fast::ActiveBit(i);
    const uint32_t want = fast::kOpen | fast::LiveBit(i) |
                          (activity == Activity::kActive ? fast::ActiveBit(i) : 0u);
    const Time32 t = ToTime32(now);
    Time32 seen = d->seen[i].load(std::memory_order_relaxed);
    // A watched device (rule 6) stays on this path: its detector's answer is
    // in its record, and the detector is told of the beat below.
    const bool watched = word & fast::kWatched;
    // A watched device's answer (the shard made it before setting the bit).
    std::atomic<uint32_t>* learned =
        watched ? shards_[static_cast<uint32_t>(h.value >> 56)]->devices().Learned(
                      static_cast<uint32_t>(h.value))
                : nullptr;
    const int64_t lapse =
        watched ? config_.policy.OfflineAfter(learned ? learned->load(std::memory_order_relaxed) : 0,
                                              i, true)
                : lapse_ms_[i];
    // Past this source's offline_after, the source lapsed (Get already says
    // so) even if no timer noticed yet: the lock decides what its return is.
    if (fast::Gen(word) == gen && (word & mask) == want && Diff32(t, seen) < lapse) {
      // Live, open, and this source already live with this activity: only
      // the time moves. Lapses are found lazily by the device's timer.
      if (!d->TakeRate(now, rate_limit_)) {
        Count(c, c->rate_limited);
        return absl::ResourceExhaustedError("device passed its signals-per-second limit");
      }
      // The time only moves forward, also when another thread's beat (or a
      // BeatMany that read the clock earlier) races this one.
      if (auto hook = test_hooks::beat_checked.load(std::memory_order_relaxed)) hook(h);
      while (Diff32(t, seen) > 0 &&
             !d->seen[i].compare_exchange_weak(seen, t, std::memory_order_relaxed)) {
      }
      if (learned != nullptr) {
        config_.policy.Observe(*learned, DeviceKeyOf(static_cast<uint32_t>(h.value >> 56),
                                               static_cast<uint32_t>(h.value)),
                               i, now);
      }
      Count(c, c->accepted[i]);
      return absl::OkStatus();
    }
    return shards_[static_cast<uint32_t>(h.value >> 56)]->BeatLocked(
        static_cast<uint32_t>(h.value), gen, activity, source, now);
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
    const int64_t start = Now();
    size_t published;
    bool all_written = true;
    std::vector<OutgoingProbe> probes;
    {
      internal::MutexLock lock(&tick_mu_);
      published = TickLocked(&all_written);
      probes.swap(probes_);
    }
    SendProbes(probes);
    CallListeners();
    {
      // The overload ladder's verdict on this tick (Options, "Overload").
      internal::MutexLock lock(&tick_mu_);
      const Options& o = config_.options;
      const bool overloaded =
          (o.overload_tick_budget_ms > 0 && Now() - start > o.overload_tick_budget_ms) ||
          !all_written || bus_backlog_.size() > o.overload_backlog_bound ||
          history_backlog_.size() > o.overload_backlog_bound ||
          device_backlog_.size() > o.overload_backlog_bound;
      overload_level_.store(overload_.Observe(overloaded), std::memory_order_relaxed);
    }
    return published;
  }

  int OverloadLevel() const { return overload_level_.load(std::memory_order_relaxed); }

  // Hands the tick's probes to the Prober, with no lock held, so that it
  // may answer at once (docs/design.md rule 9, presence/prober.h).
  void SendProbes(const std::vector<OutgoingProbe>& probes) ABSL_LOCKS_EXCLUDED(tick_mu_) {
    Prober* prober = config_.options.prober;
    if (prober == nullptr) return;
    for (const OutgoingProbe& p : probes) {
      ProbeRequest r;
      r.user_id = p.user_id;
      r.device_id = p.device_id;
      r.session_id = p.session_id;
      r.probe_id = p.probe_id;
      r.source = p.source;
      r.gateway = p.gateway;
      r.attempt = p.attempt;
      prober->Probe(r);
    }
  }

  // See Engine::AnswerProbe. A probe id names its shard in its high 8 bits.
  absl::Status AnswerProbe(uint64_t probe_id) {
    const uint64_t shard = probe_id >> 56;
    if (probe_id == 0 || shard >= shards_.size()) {
      return absl::NotFoundError("no probe with that id was sent");
    }
    return shards_[shard]->AnswerProbe(probe_id, Now());
  }

  // A tick; *all_written (when not null) tells whether every record and the
  // offsets were written. Its changes wait in rounds_ for CallListeners,
  // which the caller runs once it released tick_mu_.
  size_t TickLocked(bool* all_written_out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_) {
    AdvanceEpoch();
    ReclaimGateways();
    const int64_t now = Now();
    events_.clear();
    // Signals consumed so far are in the records the shards write now; their
    // offsets are committed only once every shard's write succeeded, the
    // history erasures of commands read before them succeeded (a failed one
    // is tried again first), and every erasure is on the bus: a new owner
    // replays the command rather than lose its event, which nothing it
    // holds would announce again.
    std::vector<CommittedOffset> offsets;
    std::vector<std::string> erasures;
    {
      internal::MutexLock lock(&consume_mu_);
      offsets = ConsumedOffsetsLocked();
      erasures.swap(bus_erasures_);
    }
    bool all_written = EraseHistoryOf(std::move(erasures));
    for (auto& shard : shards_) {
      if (!shard->Tick(now, &events_, &observed_, &probes_, &device_backlog_).ok()) {
        all_written = false;
      }
    }
    AppendHistory(now);
    PublishToBus(events_);
    HoldBackErasedPartitions(&offsets);
    if (all_written && config_.options.store != nullptr && !offsets.empty() &&
        offsets != committed_) {
      StoreBatch batch;
      batch.offsets = offsets;
      Store* store = config_.options.store;
      if (Timed(clock_, &observed_.store, [&] { return store->Write(batch); }).ok()) {
        committed_ = std::move(offsets);
      } else {
        ++offset_errors_;
        all_written = false;
      }
    }
    if (all_written_out != nullptr) *all_written_out = all_written;
    const size_t published = events_.size();
    rounds_.push_back(Round{std::move(events_), now});
    return published;
  }

  // Calls the listeners with every tick's round of changes not yet handed
  // out, oldest first, with no lock held but publish_mu_: one thread at a
  // time calls listeners, so each listener sees each user's changes in
  // version order. A listener may call back into the engine; a call that
  // ticks from inside it (RevokePartitions) leaves its round to this loop,
  // which hands it out once the callback returned.
  void CallListeners() ABSL_LOCKS_EXCLUDED(tick_mu_, listeners_mu_) {
    if (tls_calling_listeners == this) return;
    internal::MutexLock publish(&publish_mu_);
    const EngineCore* const outer = tls_calling_listeners;
    tls_calling_listeners = this;
    for (;;) {
      Round round;
      {
        internal::MutexLock lock(&tick_mu_);
        if (rounds_.empty()) break;
        round = std::move(rounds_.front());
        rounds_.pop_front();
      }
      std::vector<ChangeListener*> listeners;
      {
        internal::MutexLock lock(&listeners_mu_);
        listeners = listeners_;
      }
      for (ChangeListener* l : listeners) {
        if (!IsListener(l)) continue;  // removed by a callback of this round
        if (!round.events.empty()) l->OnChanges(round.events);
        l->OnTick(round.now_ms);
      }
    }
    tls_calling_listeners = outer;
  }

  // ---- Durable state ----

  // The partition of a user id (0 without a bus).
  uint32_t PartitionOf(absl::string_view user_id) const {
    return PartitionOfHash(HashUserId(user_id), partitions_);
  }

  // From this many records, a load applies them on two threads.
  static constexpr size_t kLoadOnTwoThreadsFrom = size_t{1} << 16;

  // Loads the users, devices and committed offsets of the partitions for
  // which `wanted` is true (all of them without a bus). Collects everything
  // before it applies anything, so a store that fails to load changes
  // nothing; a shard that refuses a record stops it part way (below).
  absl::Status LoadFromStore(absl::FunctionRef<bool(uint32_t)> wanted)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_) {
    Store* store = config_.options.store;
    if (store == nullptr) return absl::OkStatus();
    // Collect first, then apply: the store may hold its own lock while it
    // visits, and a shard writes to the store while holding the shard's. A
    // shard that refuses a record (it holds the most users or devices it
    // can) stops the load of its half of the shards there, with what was
    // applied before it kept.
    struct Loader : StoreVisitor {
      std::vector<UserRecord> users;
      std::vector<DeviceRecord> devices;
      std::vector<CommittedOffset> offsets;
      void OnUser(const UserRecord& u) override { users.push_back(u); }
      void OnDevice(const DeviceRecord& d) override { devices.push_back(d); }
      void OnOffset(const CommittedOffset& o) override { offsets.push_back(o); }
    } loader;
    if (auto st = store->Load(&loader); !st.ok()) return st;
    const int64_t now = Now();
    // The records to apply, each with its user id's hash. A state or
    // platform out of range is not a record this engine wrote either (the
    // records keep them in a few bits).
    struct Wanted {
      uint64_t hash;
      uint32_t index;  // in loader.users or loader.devices
    };
    std::vector<Wanted> users, devices;
    for (size_t i = 0; i < loader.users.size(); ++i) {
      const UserRecord& u = loader.users[i];
      if (!ValidateUserId(u.user_id).ok() || !ValidateState(u.state).ok() ||
          !ValidateState(u.self_state).ok()) {
        continue;  // not a record this engine wrote
      }
      const uint64_t h = HashUserId(u.user_id);
      if (wanted(PartitionOfHash(h, partitions_))) users.push_back({h, static_cast<uint32_t>(i)});
    }
    for (size_t i = 0; i < loader.devices.size(); ++i) {
      const DeviceRecord& d = loader.devices[i];
      if (!ValidateUserId(d.user_id).ok() || !ValidateDeviceId(d.device_id).ok() ||
          !ValidatePlatform(d.platform).ok()) {
        continue;
      }
      const uint64_t h = HashUserId(d.user_id);
      if (wanted(PartitionOfHash(h, partitions_))) devices.push_back({h, static_cast<uint32_t>(i)});
    }
    // The shards whose index is `part` modulo `parts`: a user's records all
    // go to one shard, and shards share nothing a load writes without a
    // lock, so two halves apply at once, each in the store's order. Each
    // half adds up what it charges and charges the budget every
    // kChargeEvery records and when it ends, however it ends: the shared
    // counter written for every record by two cores cost a third of the
    // apply, and a budget charged only at the end would let keyed calls
    // racing a take-over pass it.
    auto apply = [&](uint32_t part, uint32_t parts) -> absl::Status {
      constexpr size_t kChargeEvery = 4096;
      int64_t charged = 0;
      size_t loaded = 0;
      auto charge = [&] { charged_bytes_.fetch_add(std::exchange(charged, 0), std::memory_order_relaxed); };
      auto at_end = absl::MakeCleanup(charge);
      for (const Wanted& w : users) {
        const uint32_t k = ShardIndex(w.hash);
        if (k % parts != part) continue;
        const UserRecord& u = loader.users[w.index];
        if (auto st = shards_[k]->LoadUser(u, w.hash, now, &charged); !st.ok()) return st;
        if (++loaded % kChargeEvery == 0) charge();
      }
      for (const Wanted& w : devices) {
        const uint32_t k = ShardIndex(w.hash);
        if (k % parts != part) continue;
        const DeviceRecord& d = loader.devices[w.index];
        // Under tick_mu_: no Reclaim runs before the index is on its device.
        const uint32_t g = gateways_.Intern(d.gateway);
        if (auto st = shards_[k]->LoadDevice(d, w.hash, g, now, &charged); !st.ok()) return st;
        if (++loaded % kChargeEvery == 0) charge();
      }
      return absl::OkStatus();
    };
    // A large load applies on a second thread too, which shortens what a
    // failover or a restart waits on where a second core is free. A thread
    // that cannot be made leaves the whole load to this one. An exception
    // (an allocation that fails) reaches the caller as it would from one
    // thread, once the helper has stopped.
    absl::Status helped;
    std::exception_ptr helper_threw;
    std::thread helper;
    if (shards_.size() > 1 && std::thread::hardware_concurrency() > 1 &&
        users.size() + devices.size() >= kLoadOnTwoThreadsFrom) {
      try {
        helper = std::thread([&] {
          if (auto hook = internal::test_hooks::load_helper_started.load()) hook();
          try {
            helped = apply(1, 2);
          } catch (...) {
            helper_threw = std::current_exception();
          }
        });
      } catch (const std::exception&) {
      }
    }
    absl::Status applied;
    {
      auto join = absl::MakeCleanup([&] {
        if (helper.joinable()) helper.join();
      });
      applied = helper.joinable() ? apply(0, 2) : apply(0, 1);
    }
    if (helper_threw) std::rethrow_exception(helper_threw);
    if (!applied.ok()) return applied;
    if (!helped.ok()) return helped;
    internal::MutexLock lock(&consume_mu_);
    for (auto it = consumed_.begin(); it != consumed_.end();) {
      it = wanted(it->first) ? consumed_.erase(it) : std::next(it);
    }
    for (const CommittedOffset& o : loader.offsets) {
      if (wanted(o.partition)) consumed_[o.partition] = o.offset;
    }
    committed_ = ConsumedOffsetsLocked();
    return absl::OkStatus();
  }

  absl::Status Create() {
    internal::MutexLock lock(&tick_mu_);
    return LoadFromStore([this](uint32_t p) { return partitions_ == 0 || Owns(p); });
  }

  absl::Status Rebuild() {
    internal::MutexLock lock(&tick_mu_);
    const int64_t now = Now();
    for (auto& shard : shards_) shard->Clear(now);
    return LoadFromStore([this](uint32_t p) { return partitions_ == 0 || Owns(p); });
  }

  // ---- Partition ownership ----

  absl::Status ValidatePartitions(absl::Span<const uint32_t> partitions) const {
    if (partitions_ == 0) return absl::FailedPreconditionError("the engine has no bus");
    for (uint32_t p : partitions) {
      if (p >= partitions_) {
        return absl::InvalidArgumentError(
            absl::StrCat("partition ", p, " does not exist: the bus has ", partitions_));
      }
    }
    return absl::OkStatus();
  }

  absl::Status AssignPartitions(absl::Span<const uint32_t> partitions) {
    if (auto st = ValidatePartitions(partitions); !st.ok()) return st;
    absl::flat_hash_set<uint32_t> taken;
    for (uint32_t p : partitions) {
      if (!Owns(p)) taken.insert(p);
    }
    if (taken.empty()) return absl::OkStatus();
    internal::MutexLock lock(&tick_mu_);
    if (auto st = LoadFromStore([&](uint32_t p) { return taken.contains(p); }); !st.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "could not load the partitions' records from the store (none was taken): ", st.message()));
    }
    internal::MutexLock consume(&consume_mu_);
    for (uint32_t p : taken) owned_[p].store(true, std::memory_order_release);
    // Replay: everything the bus holds past the committed offsets, every
    // partition fetched at once, applied one after the other.
    for (uint32_t p : taken) config_.options.bus->Prefetch(p, consumed_[p]);
    absl::Status replayed;
    for (uint32_t p : taken) {
      for (;;) {
        auto n = ConsumePartition(p, 4096);
        if (!n.ok()) {
          replayed = absl::Status(n.status().code(),
                                  absl::StrCat("partition ", p, " was taken, but its replay stopped (",
                                               "ConsumeBus resumes it): ", n.status().message()));
        }
        if (!n.ok() || *n == 0) break;
      }
    }
    // Announce the partitions' published states again: the previous owner
    // may have stored a change and died before publishing it. Watchers
    // ignore what they have (same version).
    std::vector<ChangeEvent> announce;
    const int64_t now = Now();
    for (auto& shard : shards_) {
      shard->AppendPublished(now, [&](absl::string_view user) { return taken.contains(PartitionOf(user)); },
                             &announce);
    }
    PublishToBus(announce);
    return replayed;
  }

  absl::Status RevokePartitions(absl::Span<const uint32_t> partitions) {
    if (auto st = ValidatePartitions(partitions); !st.ok()) return st;
    absl::Status st = LetGo(partitions);
    CallListeners();
    return st;
  }

  // RevokePartitions but for its listeners: flushes, then drops the partitions.
  absl::Status LetGo(absl::Span<const uint32_t> partitions) ABSL_LOCKS_EXCLUDED(tick_mu_) {
    internal::MutexLock lock(&tick_mu_);
    bool flushed = true;
    TickLocked(&flushed);
    internal::MutexLock consume(&consume_mu_);  // no consumption meanwhile
    absl::flat_hash_set<uint32_t> let_go;
    for (uint32_t p : partitions) {
      if (!Owns(p)) continue;
      owned_[p].store(false, std::memory_order_release);
      consumed_.erase(p);
      let_go.insert(p);
    }
    if (let_go.empty()) return absl::OkStatus();
    // An erasure not yet on the bus (its partition's offsets were held
    // back) is not flushed: the next owner replays its command.
    for (uint32_t p : PartitionsWithErasureWaiting()) flushed = flushed && !let_go.contains(p);
    // A history erasure still failing is the next owner's: no offset past
    // its command was committed, so it replays the command.
    bus_erasures_.erase(std::remove_if(bus_erasures_.begin(), bus_erasures_.end(),
                                       [&](const std::string& u) { return let_go.contains(PartitionOf(u)); }),
                        bus_erasures_.end());
    committed_.erase(std::remove_if(committed_.begin(), committed_.end(),
                                    [&](const CommittedOffset& o) { return let_go.contains(o.partition); }),
                     committed_.end());
    const int64_t now = Now();
    for (auto& shard : shards_) {
      shard->Release(now, [&](absl::string_view user) { return let_go.contains(PartitionOf(user)); });
    }
    if (!flushed) {
      return absl::UnavailableError(
          "the flush before letting go could not write everything; the partitions were let go "
          "anyway, and their next owner replays the signals from the last committed offsets");
    }
    return absl::OkStatus();
  }

  uint32_t BusPartitions() const { return partitions_; }

  std::vector<uint32_t> OwnedPartitions() const {
    std::vector<uint32_t> out;
    for (uint32_t p = 0; p < partitions_; ++p) {
      if (Owns(p)) out.push_back(p);
    }
    return out;
  }

  absl::StatusOr<size_t> ConsumeBus(size_t max) ABSL_LOCKS_EXCLUDED(tick_mu_, consume_mu_) {
    Bus* bus = config_.options.bus;
    if (bus == nullptr) return absl::FailedPreconditionError("the engine has no bus");
    size_t read = 0;
    for (uint32_t p = 0; p < partitions_ && read < max; ++p) {
      std::vector<BusRecord> rest;  // from an erase command on
      {
        internal::MutexLock lock(&consume_mu_);
        if (!Owns(p)) continue;  // under consume_mu_, which LetGo holds to let go
        auto records = ReadPartition(p, max - read);
        if (!records.ok()) return records.status();
        const size_t n = ApplyRecords(p, *records, EraseCommands::kStop);
        read += n;
        if (n < records->size()) rest.assign(records->begin() + static_cast<std::ptrdiff_t>(n), records->end());
      }
      if (rest.empty()) continue;
      // An erase command is next: applied holding tick_mu_ as Erase is (no
      // tick is between taking a user's changes and writing them to the
      // history), then the records after it, as read.
      internal::MutexLock tick(&tick_mu_);
      internal::MutexLock lock(&consume_mu_);
      // Let go, or moved, meanwhile: read again at the next call.
      if (!Owns(p) || consumed_[p] != rest.front().offset) continue;
      read += ApplyRecords(p, rest, EraseCommands::kApply);
    }
    return read;
  }

  // What ApplyRecords does at an erase command: the user's history is
  // erased holding tick_mu_, which a replay holds already (kApply), and
  // ConsumeBus first does not (kStop: it stops before the command).
  enum class EraseCommands { kApply, kStop };

  // One read of `partition` from where consumption stopped, applied
  // (kApply: tick_mu_ is held). Returns how many records it went past.
  absl::StatusOr<size_t> ConsumePartition(uint32_t p, size_t max)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_, consume_mu_) {
    auto records = ReadPartition(p, max);
    if (!records.ok()) return records.status();
    return ApplyRecords(p, *records, EraseCommands::kApply);
  }

  absl::StatusOr<std::vector<BusRecord>> ReadPartition(uint32_t p, size_t max)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(consume_mu_) {
    const uint64_t offset = consumed_[p];
    Bus* bus = config_.options.bus;
    auto records = Timed(clock_, &bus_read_latency_, [&] { return bus->Read(p, offset, max); });
    if (!records.ok()) ++bus_errors_;
    return records;
  }

  // Applies records of partition `p`, read from where consumption stopped:
  // signals, override and erase commands (at one, kStop stops). A record
  // that cannot be decoded, or whose user is not of this partition, is
  // counted and skipped: it never blocks the partition. Returns how many
  // records it went past.
  size_t ApplyRecords(uint32_t p, absl::Span<const BusRecord> records, EraseCommands erase_commands)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(consume_mu_) {
    uint64_t& offset = consumed_[p];
    // Decoded into buffers that keep their capacity, then applied as one
    // batch (in order for each user; stale or invalid signals are counted by
    // the engine). Consumption holds consume_mu_ throughout, so a Tick never
    // commits the new offset before these signals are applied.
    if (decoded_.size() < records.size()) decoded_.resize(records.size());
    consumed_signals_.clear();
    size_t passed = 0;
    for (const BusRecord& r : records) {
      if (r.type == BusRecordType::kErase && erase_commands == EraseCommands::kStop) break;
      offset = r.offset + 1;
      ++passed;
      if (r.type == BusRecordType::kOverride) {
        ConsumeOverride(r, p);
        continue;
      }
      if (r.type == BusRecordType::kErase) {
        ConsumeErase(r, p);
        continue;
      }
      if (r.type == BusRecordType::kCommand) {
        ConsumeCommand(r, p);
        continue;
      }
      if (r.type != BusRecordType::kSignal) continue;
      DecodedSignal& d = decoded_[consumed_signals_.size()];
      if (!DecodeSignal(r.payload, &d).ok()) {
        invalid_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (!ReadFromItsPartition(d.signal().user_id, p)) continue;
      if (d.disconnect()) {
        ApplyConsumed();  // in order with the signals before it: those go first
        const Signal s = d.signal();
        (void)DisconnectDevice(s.user_id, s.device_id, s.session_id, *d.disconnect());
        continue;
      }
      consumed_signals_.push_back(d.signal());
    }
    ApplyConsumed();
    return passed;
  }

  // Whether a record of `user` read from partition `p` belongs there; one
  // that does not is counted (and skipped by the caller).
  bool ReadFromItsPartition(absl::string_view user, uint32_t p) {
    if (PartitionOf(user) == p) return true;
    wrong_partition_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  // The signals ConsumePartition has decoded and not yet applied, applied.
  void ApplyConsumed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(consume_mu_) {
    if (!consumed_signals_.empty()) (void)ApplyBatch(consumed_signals_, /*replay=*/true);
    consumed_signals_.clear();
  }

  // Whether a command record decoded; one that did not is counted as
  // invalid (and skipped by the caller).
  bool Decoded(const absl::Status& decoded) {
    if (decoded.ok()) return true;
    invalid_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  // An override command read from partition `p` (ConsumePartition), in
  // order with the signals read before it, which go first.
  void ConsumeOverride(const BusRecord& r, uint32_t p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(consume_mu_) {
    ApplyConsumed();
    DecodedOverrideCommand d;
    if (!Decoded(DecodeOverrideCommand(r.payload, &d))) return;
    if (!ReadFromItsPartition(d.command().user_id, p)) return;
    // Refused (the user's most overrides, the memory budget): counted by
    // the shard as a drop, as a direct call's would be.
    (void)ApplyOverride(d.command());
  }

  // An erase command read from partition `p` (ApplyRecords, kApply: every
  // caller holds tick_mu_ then, which the analysis cannot follow), in order
  // with the signals read before it, which go first: the user is erased as
  // Erase does. A history erasure that fails is retried with each tick,
  // which commits no offset meanwhile.
  void ConsumeErase(const BusRecord& r, uint32_t p) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    ApplyConsumed();
    DecodedEraseCommand d;
    if (!Decoded(DecodeEraseCommand(r.payload, &d))) return;
    if (!ReadFromItsPartition(d.user_id, p)) return;
    const uint64_t h = HashUserId(d.user_id);
    ShardFor(h).EraseUser(d.user_id, h, Now());
    if (config_.options.history != nullptr && !EraseHistoryLocked(d.user_id).ok()) {
      bus_erasures_.push_back(std::move(d.user_id));
    }
  }

  // A partition command read from partition `p` (ApplyRecords), in order
  // with the signals read before it, which go first: applied to the users
  // of `p` as DrainGateway and RevokeBetween are to every user. One read from
  // a partition other than the one it is for is counted and skipped.
  void ConsumeCommand(const BusRecord& r, uint32_t p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(consume_mu_) {
    ApplyConsumed();
    PartitionCommand c;
    if (!Decoded(DecodePartitionCommand(r.payload, &c))) return;
    if (c.partition != p) {
      wrong_partition_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const auto of_p = [&](absl::string_view user) { return PartitionOf(user) == p; };
    const int64_t now = Now();
    size_t changed = 0;
    if (c.action == PartitionCommand::Action::kDrain) {
      // Not the devices heard from after issued_at + kDrainHeardAfterMs
      // (presence/types.h): a replay leaves a device that came back since.
      const std::vector<uint32_t> gs = gateways_.IndexesOf(c.drained_gateway);
      if (!gs.empty()) {
        for (auto& shard : shards_) {
          changed += shard->DrainGateway(gs, SIZE_MAX, now, of_p, c.issued_at_ms + kDrainHeardAfterMs);
        }
      }
    } else {
      for (auto& shard : shards_) {
        changed += shard->RevokeOverridesSetBetween(c.set_from_ms, c.set_to_ms, now, of_p);
      }
    }
    const int a = c.action == PartitionCommand::Action::kDrain ? 0 : 1;
    partition_commands_[a].fetch_add(1, std::memory_order_relaxed);
    partition_command_changes_[a].fetch_add(changed, std::memory_order_relaxed);
  }

  // The audit trail as `viewer` may read it: everything for the user itself,
  // the public view (docs/design.md rule 8) for anyone else: only the changes of
  // the public view, each with its public version and last_seen, and no
  // cause or trace id (a cause would tell an invisible user from an offline
  // one).
  absl::StatusOr<std::vector<Transition>> History(absl::string_view user, int64_t from,
                                                  int64_t to, absl::string_view viewer) {
    if (auto st = ValidateUserId(user); !st.ok()) return st;
    if (config_.options.history == nullptr) {
      return absl::FailedPreconditionError("the engine has no history store");
    }
    if (from > to) return absl::InvalidArgumentError("from_ms is after to_ms");
    auto all = config_.options.history->Query(user, from, to);
    if (!all.ok() || viewer == user) return all;
    std::vector<Transition> out;
    for (const Transition& t : *all) {
      if (t.previous != t.state) out.push_back(PublicTransition(t));
    }
    return out;
  }

  // A device's audit is the user's own (docs/design.md rule 8): anyone else
  // is refused, whether or not the user or the device exists, so that the
  // refusal tells nothing. Operators read it through the host, as the user.
  absl::StatusOr<std::vector<DeviceTransition>> DeviceHistory(absl::string_view user,
                                                              absl::string_view device,
                                                              int64_t from, int64_t to,
                                                              absl::string_view viewer) {
    if (auto st = ValidateUserId(user); !st.ok()) return st;
    if (auto st = ValidateDeviceId(device); !st.ok()) return st;
    if (from > to) return absl::InvalidArgumentError("from_ms is after to_ms");
    if (viewer != user) {
      return absl::PermissionDeniedError("a device's history is only its user's own");
    }
    if (config_.options.history == nullptr) {
      return absl::FailedPreconditionError("the engine has no history store");
    }
    return config_.options.history->QueryDevice(user, device, from, to);
  }

  static Transition PublicTransition(const Transition& t) {
    Transition p = t;
    p.version = t.public_version;
    p.self_state = t.state;
    p.cause = Cause::kWithheld;
    p.trace_id = 0;
    p.last_seen_ms = t.public_last_seen_ms;
    return p;
  }

  absl::StatusOr<StateDurations> TimeInStates(absl::string_view user, int64_t from, int64_t to,
                                              absl::string_view viewer) {
    if (from > to) return absl::InvalidArgumentError("from_ms is after to_ms");
    // Times are on the engine's clock, never before 0: a window that starts
    // earlier is the same window, and no sum below can overflow.
    from = std::max<int64_t>(from, 0);
    to = std::max<int64_t>(to, from);
    auto transitions = History(user, from, to, viewer);
    if (!transitions.ok()) return transitions.status();
    auto before = config_.options.history->LastBefore(user, from);
    if (!before.ok()) return before.status();
    const bool self = viewer == user;
    StateDurations out;
    // Every transition carries the public state as of then, so the last one
    // before the window says where the public view stood too.
    State state = !before->has_value() ? State::kOffline
                  : self               ? (*before)->self_state
                                       : (*before)->state;
    int64_t at = from;
    const int64_t end = std::min(to, Now());
    auto add = [&](State st, int64_t ms) {
      if (ms <= 0) return;
      switch (st) {
        case State::kOnline: out.online_ms += ms; break;
        case State::kAway: out.away_ms += ms; break;
        case State::kDnd: out.dnd_ms += ms; break;
        case State::kOffline: out.offline_ms += ms; break;
      }
    };
    for (const Transition& t : *transitions) {
      add(state, std::min(t.at_ms, end) - at);
      at = std::max(at, t.at_ms);
      state = t.self_state;  // the public one in a public transition
    }
    add(state, end - at);
    return out;
  }

  absl::StatusOr<int64_t> LastSeen(absl::string_view user, absl::string_view viewer) {
    if (auto st = ValidateUserId(user); !st.ok()) return st;
    const UserPresence p = Get(user, viewer, false);
    if (p.known && p.last_seen_ms != 0) return p.last_seen_ms;
    if (config_.options.history != nullptr) {
      auto last = config_.options.history->LastBefore(user, std::numeric_limits<int64_t>::max());
      if (!last.ok()) return last.status();
      if (last->has_value() && viewer == user) return (*last)->last_seen_ms;
      // Others: only what the public view ever showed.
      if (last->has_value() && (*last)->public_version != 0) return (*last)->public_last_seen_ms;
    }
    return absl::NotFoundError("the engine knows nothing of this user");
  }

  absl::Status Erase(absl::string_view user) {
    if (auto st = ValidateUserId(user); !st.ok()) return st;
    const uint64_t h = HashUserId(user);
    // Under tick_mu_ throughout: no tick runs between taking the user's
    // changes and writing them to the history, nor between the ownership
    // check and the erasure (partitions are taken and let go under it).
    internal::MutexLock lock(&tick_mu_);
    // Another engine's user: an erasure published from here would drop a
    // live user from every watcher.
    if (auto st = CheckOwned(h); !st.ok()) return st;
    ShardFor(h).EraseUser(user, h, Now());
    if (config_.options.history == nullptr) return absl::OkStatus();
    return EraseHistoryLocked(user);
  }

  // The user's transitions, written or waiting to be, are forgotten.
  absl::Status EraseHistoryLocked(absl::string_view user) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_) {
    history_backlog_.erase(std::remove_if(history_backlog_.begin(), history_backlog_.end(),
                                          [&](const Transition& t) { return t.user_id == user; }),
                           history_backlog_.end());
    device_backlog_.erase(std::remove_if(device_backlog_.begin(), device_backlog_.end(),
                                         [&](const DeviceTransition& t) { return t.user_id == user; }),
                          device_backlog_.end());
    absl::Status st = config_.options.history->Erase(user);
    if (!st.ok()) ++history_errors_;
    return st;
  }

  // The history of the users that erase commands from the bus erased
  // (ConsumeErase). Those whose erasure fails wait for the next tick, and
  // false is returned, so that no offset past their command is committed.
  bool EraseHistoryOf(std::vector<std::string> users) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_) {
    std::vector<std::string> failed;
    for (std::string& u : users) {
      if (!EraseHistoryLocked(u).ok()) failed.push_back(std::move(u));
    }
    if (failed.empty()) return true;
    internal::MutexLock lock(&consume_mu_);
    bus_erasures_.insert(bus_erasures_.begin(), std::make_move_iterator(failed.begin()),
                         std::make_move_iterator(failed.end()));
    return false;
  }

  absl::StatusOr<size_t> DrainGateway(absl::string_view gateway, size_t max) {
    if (gateway.empty() || gateway.size() > kMaxGatewayIdBytes) {
      return absl::InvalidArgumentError("gateway must be 1 to 128 bytes");
    }
    const std::vector<uint32_t> gs = gateways_.IndexesOf(gateway);
    if (gs.empty()) return absl::NotFoundError("no device carries this gateway");
    const int64_t now = Now();
    size_t n = 0;
    for (auto& shard : shards_) {
      if (n >= max) break;
      n += shard->DrainGateway(gs, max - n, now, [](absl::string_view) { return true; },
                               std::numeric_limits<int64_t>::max());
    }
    return n;
  }

  void AddListener(ChangeListener* l) {
    internal::MutexLock lock(&listeners_mu_);
    if (l != nullptr) listeners_.push_back(l);
  }
  // Returns once no call to `l` is running, except on a thread that is
  // inside a listener of this engine (which would wait for itself).
  void RemoveListener(ChangeListener* l) {
    {
      internal::MutexLock lock(&listeners_mu_);
      listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), l), listeners_.end());
    }
    if (tls_calling_listeners != this) {
      internal::MutexLock wait(&publish_mu_);  // a call running on another thread ends
    }
  }
  bool IsListener(ChangeListener* l) {
    internal::MutexLock lock(&listeners_mu_);
    return std::find(listeners_.begin(), listeners_.end(), l) != listeners_.end();
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
    auto add = [&](const BeatCounters& c) {
      for (int i = 0; i < kSourceCount; ++i) {
        stats.counters.accepted[i] += c.accepted[i].load(std::memory_order_relaxed);
      }
      stats.counters.dropped[static_cast<int>(DropReason::kRateLimited)] +=
          c.rate_limited.load(std::memory_order_relaxed);
    };
    for (const BeatCounters& c : claimed_counters_) add(c);
    add(shared_counters_);
    return stats;
  }

  // This thread's heartbeat block in this engine. A thread remembers its
  // blocks for its last few engines; engines are told apart by an id that is
  // never reused, so a stale entry never matches a new engine.
  // Inlined into the heartbeat path; a miss goes on to FindThreadCounters.
  ABSL_ATTRIBUTE_ALWAYS_INLINE BeatCounters* ThreadCounters() {
    for (const ThreadCounterCache::Entry& e : ThreadCounterCache::entries) {
      if (e.engine == id_) return e.counters;
    }
    return FindThreadCounters();
  }
  // The block this thread claimed in this engine, or the first free one it
  // claims now, or (all claimed by other threads) the shared one. No lock,
  // no allocation: a thread that rotates over more engines than its cache
  // holds pays a scan of kClaimedBlocks per miss.
  ABSL_ATTRIBUTE_NOINLINE BeatCounters* FindThreadCounters() {
    uint64_t& token = ThreadCounterCache::token;
    if (token == 0) token = next_thread_token.fetch_add(1, std::memory_order_relaxed);
    BeatCounters* found = &shared_counters_;
    for (BeatCounters& c : claimed_counters_) {
      if (c.owner.load(std::memory_order_relaxed) == token) {
        found = &c;
        break;
      }
    }
    for (BeatCounters& c : claimed_counters_) {
      if (found != &shared_counters_) break;
      uint64_t free = 0;
      if (c.owner.compare_exchange_strong(free, token, std::memory_order_relaxed)) found = &c;
    }
    ThreadCounterCache::entries[ThreadCounterCache::next++ % 4] =
        ThreadCounterCache::Entry{id_, found};
    return found;
  }

  // Opens a new epoch (each Tick) and publishes as epochs_.safe the oldest
  // epoch in which a heartbeat still running began: records freed before it
  // may be reused. While beats run through the shared block, whose pin has
  // no epoch, safe stays where it was.
  void AdvanceEpoch() ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_) {
    uint64_t safe = epochs_.now.fetch_add(1, std::memory_order_seq_cst) + 1;
    // The other half of the heartbeat's compiler-only fence (BeatPin): every
    // thread of the process passes a full barrier before this returns, so a
    // pin stored before it is seen below, and a beat that pins after it
    // reads the generations as they are now.
    if (kAsymmetricFences) HeavyBarrier();
    for (const BeatCounters& c : claimed_counters_) {
      const uint64_t pinned = c.pinned.load(std::memory_order_seq_cst);
      if (pinned != 0) safe = std::min(safe, pinned);
    }
    if (shared_counters_.pinned.load(std::memory_order_seq_cst) != 0) {
      safe = std::min(safe, epochs_.safe.load(std::memory_order_relaxed));
    }
    epochs_.safe.store(safe, std::memory_order_release);
  }

  // Lets go of the gateway ids no device carries any more (GatewayTable).
  void ReclaimGateways() ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_) {
    std::vector<uint64_t> count;
    for (auto& shard : shards_) shard->AddGatewayRefs(&count);
    gateways_.Reclaim(count);
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
      internal::MutexLock lock(&tick_mu_);
      observed_.publish.Render(
          &out, "presence_publish_latency_ms",
          "Time from the signal that caused a change to its publication, in ms.");
      observed_.store.Render(&out, "presence_store_latency_ms",
                             "Time of each Store::Write (write-through and offsets), in ms.");
      MetricHeader(&out, "presence_bus_latency_ms", "histogram",
                   "Time of each bus publish (change events) and read (signals), in ms.");
      observed_.bus_publish.RenderSamples(&out, "presence_bus_latency_ms", "op=\"publish\"");
    }
    {
      internal::MutexLock lock(&consume_mu_);
      bus_read_latency_.RenderSamples(&out, "presence_bus_latency_ms", "op=\"read\"");
      Metric(&out, "presence_signal_backlog", "gauge",
             "Records on the bus not consumed yet (signals, and the change events beside "
             "them), over the owned partitions this engine consumes: the heartbeat backlog.",
             SignalBacklogLocked());
    }
    Metric(&out, "presence_false_offlines_total", "counter",
           "Devices that died by timeout or abrupt disconnect and came back within the "
           "false-offline window.",
           st.counters.false_offlines);
    Metric(&out, "presence_probes_sent_total", "counter",
           "Probes the engine asked the host to send to silent devices (docs/design.md rule 9).",
           st.counters.probes_sent);
    Metric(&out, "presence_probes_answered_total", "counter",
           "Probe answers applied as signals.", st.counters.probes_answered);
    Metric(&out, "presence_probes_late_total", "counter",
           "Probe answers that came after the engine stopped waiting for them (the device "
           "signalled, died or disconnected first); nothing applied.",
           st.counters.probes_late);
    Metric(&out, "presence_probes_given_up_total", "counter",
           "Devices that died by timeout while their probes went unanswered.",
           st.counters.probes_given_up);
    Metric(&out, "presence_probes_throttled_total", "counter",
           "Probes not sent: their gateway passed max_probes_per_gateway_per_sec.",
           st.counters.probes_throttled);
    Metric(&out, "presence_stale_ratio", "gauge",
           "Share of users shown live of whom no device's source signalled within that "
           "source's own offline threshold.",
           st.live_users == 0 ? 0.0 : double(st.stale_users) / double(st.live_users));
    {
      internal::MutexLock lock(&tick_mu_);
      Metric(&out, "presence_store_writes_total", "counter", "Write-through batches written.",
             st.store_writes);
      Metric(&out, "presence_store_errors_total", "counter",
             "Failed store writes (each shard's batch is retried on the next tick).",
             st.store_errors + offset_errors_);
      Metric(&out, "presence_history_errors_total", "counter",
             "Failed history appends (retried) and retention runs.", history_errors_);
      Metric(&out, "presence_history_backlog", "gauge",
             "Transitions (users' and devices') waiting to be appended to the history.",
             history_backlog_.size() + device_backlog_.size());
      Metric(&out, "presence_history_dropped_total", "counter",
             "Transitions dropped because the history backlog was full.", history_dropped_);
      Metric(&out, "presence_bus_backlog", "gauge",
             "Change events waiting to be published to the bus (retried each tick).",
             bus_backlog_.size());
      Metric(&out, "presence_bus_dropped_total", "counter",
             "Change events dropped because the bus backlog was full (never an erasure).",
             bus_dropped_);
      Metric(&out, "presence_offsets_held_partitions", "gauge",
             "Owned partitions whose offsets are not committed while an erasure of one of "
             "their users waits for the bus.",
             held_partitions_);
    }
    Metric(&out, "presence_gateways", "gauge",
           "Gateway ids held: carried by a device, or in their grace period.", gateways_.size());
    Metric(&out, "presence_bus_errors_total", "counter", "Failed bus publishes and reads.",
           bus_errors_.load());
    Metric(&out, "presence_bus_wrong_partition_total", "counter",
           "Records read from a bus partition that their user (or a partition command's "
           "partition) does not map to (skipped).",
           wrong_partition_.load());
    if (partitions_ > 0) {
      static constexpr const char* kActions[] = {"drain", "revoke_overrides"};
      MetricHeader(&out, "presence_partition_commands_total", "counter",
                   "Operator commands read from the bus and applied to the users of their partition.");
      for (int a = 0; a < 2; ++a) {
        MetricSample(&out, "presence_partition_commands_total", absl::StrCat("action=\"", kActions[a], "\""),
                     partition_commands_[a].load());
      }
      MetricHeader(&out, "presence_partition_command_changes_total", "counter",
                   "What those commands changed: devices drained, overrides revoked.");
      for (int a = 0; a < 2; ++a) {
        MetricSample(&out, "presence_partition_command_changes_total",
                     absl::StrCat("action=\"", kActions[a], "\""), partition_command_changes_[a].load());
      }
    }
    {
      internal::MutexLock lock(&tick_mu_);
      Metric(&out, "presence_overload_level", "gauge",
             "Overload steps that apply: 1 longer flush interval, 2 large topics to counts, "
             "3 subscribers to polling.",
             overload_.level());
      MetricHeader(&out, "presence_overload_steps_total", "counter",
                   "Times each overload step was entered and left.");
      static constexpr const char* kStepNames[] = {"flush_interval", "topic_counts", "polling"};
      for (int i = 0; i < OverloadLadder::kSteps; ++i) {
        MetricSample(&out, "presence_overload_steps_total",
                     absl::StrCat("step=\"", kStepNames[i], "\",direction=\"enter\""),
                     overload_.entered(i));
        MetricSample(&out, "presence_overload_steps_total",
                     absl::StrCat("step=\"", kStepNames[i], "\",direction=\"leave\""),
                     overload_.left(i));
      }
    }
    Metric(&out, "presence_owned_partitions", "gauge", "Bus partitions this engine owns.",
           OwnedPartitions().size());
    Metric(&out, "presence_memory_charged_bytes", "gauge",
           "Bytes charged against the memory budget (users and devices held).",
           charged_bytes_.load());
    Metric(&out, "presence_memory_budget_bytes", "gauge", "The memory budget (0: none).",
           config_.options.memory_budget_bytes);
    Metric(&out, "presence_users", "gauge", "Users held.", st.sizes.users);
    Metric(&out, "presence_devices", "gauge", "Device records held, live or recently dead.",
           st.sizes.devices);
    Metric(&out, "presence_live_devices", "gauge", "Devices that count as live.",
           st.sizes.live_devices);
    Metric(&out, "presence_overrides", "gauge", "Overrides held.", st.sizes.overrides);
    return out;
  }

  // End offset as the bus last learned it (Bus::KnownEndOffset: no request
  // to a broker) minus the next offset to read, over the owned partitions
  // that ConsumeBus has read from. A partition whose end is not known yet
  // counts nothing; one whose end cannot be read counts as an error of the
  // bus.
  uint64_t SignalBacklogLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(consume_mu_) {
    uint64_t backlog = 0;
    for (const auto& [p, next] : consumed_) {
      if (!Owns(p)) continue;
      auto end = config_.options.bus->KnownEndOffset(p);
      if (!end.ok()) {
        if (!absl::IsNotFound(end.status())) ++bus_errors_;
        continue;
      }
      if (*end > next) backlog += *end - next;
    }
    return backlog;
  }

  std::vector<CommittedOffset> ConsumedOffsetsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(consume_mu_) {
    std::vector<CommittedOffset> out;
    for (const auto& [p, off] : consumed_) out.push_back(CommittedOffset{p, off});
    std::sort(out.begin(), out.end(),
              [](const CommittedOffset& a, const CommittedOffset& b) { return a.partition < b.partition; });
    return out;
  }

  // The audit trail: this tick's events, after any earlier ones that did not
  // make it (bounded: past the bound the oldest are dropped and counted).
  void AppendHistory(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_) {
    HistoryStore* history = config_.options.history;
    if (history == nullptr) return;
    for (const ChangeEvent& e : events_) {
      if (e.erased) continue;  // the history forgot the user already
      Transition t;
      t.user_id = e.user_id;
      t.version = e.version;
      t.public_version = e.public_version;
      t.public_last_seen_ms = e.last_seen_ms;
      t.at_ms = e.published_at_ms;
      t.previous = e.previous;
      t.state = e.state;
      t.self_state = e.self_state;
      t.cause = e.cause;
      t.trace_id = e.trace_id;
      t.last_seen_ms = e.self_last_seen_ms;
      history_backlog_.push_back(std::move(t));
    }
    Flush(&history_backlog_, [&](absl::Span<const Transition> b) { return history->Append(b); });
    Flush(&device_backlog_,
          [&](absl::Span<const DeviceTransition> b) { return history->AppendDevices(b); });
    const int64_t retention = config_.options.history_retention_ms;
    if (retention > 0 && now - last_retention_ms_ >= 60000) {
      last_retention_ms_ = now;
      if (!history->DropBefore(now - retention).ok()) ++history_errors_;
    }
  }

  // Appends a backlog to the history, keeping it when that fails (bounded:
  // past the bound the oldest are dropped and counted).
  template <typename T, typename AppendFn>
  void Flush(std::vector<T>* backlog, AppendFn append) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_) {
    constexpr size_t kMaxBacklog = 1 << 20;
    if (backlog->size() > kMaxBacklog) {
      history_dropped_ += backlog->size() - kMaxBacklog;
      backlog->erase(backlog->begin(), backlog->end() - static_cast<std::ptrdiff_t>(kMaxBacklog));
    }
    if (backlog->empty()) return;
    if (append(*backlog).ok()) {
      backlog->clear();
    } else {
      ++history_errors_;
    }
  }

  // Change events to the bus, in order, after any that failed before: a
  // failed publish waits and is tried again first on the next tick
  // (bounded: past the bound the oldest are dropped and counted).
  void PublishToBus(const std::vector<ChangeEvent>& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_) {
    Bus* bus = config_.options.change_bus != nullptr ? config_.options.change_bus : config_.options.bus;
    if (bus == nullptr) return;
    for (const ChangeEvent& e : events) {
      bus_backlog_.emplace_back(e.user_id, EncodeChangeEvent(e, true));
      backlog_erasure_.push_back(e.erased);
      backlog_erasures_ += e.erased;
    }
    // A failed batch stays in the backlog for the next tick, whole.
    size_t sent = 0;
    if (!Timed(clock_, &observed_.bus_publish, [&] {
           return PublishChanges(bus, bus_backlog_.begin(), bus_backlog_.end(), &sent);
         }).ok()) {
      ++bus_errors_;
    }
    for (size_t i = 0; i < sent; ++i) backlog_erasures_ -= backlog_erasure_[i];
    bus_backlog_.erase(bus_backlog_.begin(), bus_backlog_.begin() + static_cast<std::ptrdiff_t>(sent));
    backlog_erasure_.erase(backlog_erasure_.begin(),
                           backlog_erasure_.begin() + static_cast<std::ptrdiff_t>(sent));
    constexpr size_t kMaxBacklog = 1 << 20;
    if (bus_backlog_.size() > kMaxBacklog) {
      // The oldest go, but no erasure: one published late, after the
      // user's later changes, is below their versions, which readers keep.
      size_t drop = bus_backlog_.size() - kMaxBacklog, kept = 0;
      for (size_t i = 0; i < bus_backlog_.size(); ++i) {
        if (drop > 0 && !backlog_erasure_[i]) {
          --drop;
          ++bus_dropped_;
          continue;
        }
        bus_backlog_[kept] = std::move(bus_backlog_[i]);
        backlog_erasure_[kept] = backlog_erasure_[i];
        ++kept;
      }
      bus_backlog_.resize(kept);
      backlog_erasure_.resize(kept);
    }
  }

  // Leaves out of `offsets` the partitions with an erasure still waiting
  // for the bus: their offsets stay where they were committed, so that a
  // new owner replays the command rather than lose the event (nothing it
  // holds would announce the erasure again).
  void HoldBackErasedPartitions(std::vector<CommittedOffset>* offsets)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_) {
    const absl::flat_hash_set<uint32_t> held = PartitionsWithErasureWaiting();
    held_partitions_ = held.size();
    offsets->erase(std::remove_if(offsets->begin(), offsets->end(),
                                  [&](const CommittedOffset& o) { return held.contains(o.partition); }),
                   offsets->end());
  }

  // The partitions of the erasures in bus_backlog_.
  absl::flat_hash_set<uint32_t> PartitionsWithErasureWaiting() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_) {
    absl::flat_hash_set<uint32_t> out;
    for (size_t i = 0; backlog_erasures_ > 0 && i < bus_backlog_.size(); ++i) {
      if (backlog_erasure_[i]) out.insert(PartitionOf(bus_backlog_[i].first));
    }
    return out;
  }

  size_t RevokeBetween(int64_t from, int64_t to) {
    const int64_t now = Now();
    size_t n = 0;
    for (auto& shard : shards_) {
      n += shard->RevokeOverridesSetBetween(from, to, now, [](absl::string_view) { return true; });
    }
    return n;
  }

 private:
  Clock* const clock_;
  SlotEpochs epochs_;
  std::atomic<uint64_t> next_override_id_{1};
  GatewayTable gateways_{&epochs_};
  std::atomic<int64_t> charged_bytes_{0};
  ProbeBudget probe_budget_;
  const ShardConfig config_;
  int shard_bits_ = 0;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> invalid_{0};
  const uint64_t id_ = next_engine_id.fetch_add(1);
  const uint32_t rate_limit_ = static_cast<uint32_t>(config_.options.max_signals_per_device_per_sec);
  // Each source's offline_after: LivenessPolicy::OfflineAfter of a device
  // that no detector watches.
  const int64_t lapse_ms_[kSourceCount] = {config_.policy.offline_after_ms[0],
                                           config_.policy.offline_after_ms[1],
                                           config_.policy.offline_after_ms[2]};
  // The heartbeat's blocks: one per thread for the first kClaimedBlocks
  // threads that beat, then one that the others share.
  static constexpr size_t kClaimedBlocks = 64;
  BeatCounters claimed_counters_[kClaimedBlocks];
  BeatCounters shared_counters_;

  // Lock order: publish_mu_, then tick_mu_ or listeners_mu_.
  internal::Mutex publish_mu_;  // held by the one thread calling listeners
  internal::Mutex tick_mu_;
  std::vector<ChangeEvent> events_ ABSL_GUARDED_BY(tick_mu_);
  // Probes decided by ticks, waiting to be sent once tick_mu_ is released.
  std::vector<OutgoingProbe> probes_ ABSL_GUARDED_BY(tick_mu_);
  // One tick's changes, waiting to be handed to the listeners.
  struct Round {
    std::vector<ChangeEvent> events;
    int64_t now_ms = 0;
  };
  std::deque<Round> rounds_ ABSL_GUARDED_BY(tick_mu_);
  internal::Mutex listeners_mu_;
  std::vector<ChangeListener*> listeners_ ABSL_GUARDED_BY(listeners_mu_);
  std::vector<Transition> history_backlog_ ABSL_GUARDED_BY(tick_mu_);
  // Device transitions the shards handed out, waiting for the history.
  std::vector<DeviceTransition> device_backlog_ ABSL_GUARDED_BY(tick_mu_);
  std::vector<CommittedOffset> committed_ ABSL_GUARDED_BY(tick_mu_);
  uint64_t history_errors_ ABSL_GUARDED_BY(tick_mu_) = 0;
  uint64_t history_dropped_ ABSL_GUARDED_BY(tick_mu_) = 0;
  uint64_t offset_errors_ ABSL_GUARDED_BY(tick_mu_) = 0;
  int64_t last_retention_ms_ ABSL_GUARDED_BY(tick_mu_) = 0;
  // (user id, encoded change event) not yet on the bus, oldest first.
  std::deque<std::pair<std::string, std::string>> bus_backlog_ ABSL_GUARDED_BY(tick_mu_);
  // Which of bus_backlog_ are erasures, and how many; the partitions whose
  // offsets the last tick held back for them (HoldBackErasedPartitions).
  std::deque<bool> backlog_erasure_ ABSL_GUARDED_BY(tick_mu_);
  size_t backlog_erasures_ ABSL_GUARDED_BY(tick_mu_) = 0;
  size_t held_partitions_ ABSL_GUARDED_BY(tick_mu_) = 0;
  uint64_t bus_dropped_ ABSL_GUARDED_BY(tick_mu_) = 0;
  std::atomic<uint64_t> bus_errors_{0};
  std::atomic<uint64_t> wrong_partition_{0};
  // Partition commands applied (ConsumeCommand), and what they changed: [0]
  // drains, [1] override revokes.
  std::atomic<uint64_t> partition_commands_[2] = {};
  std::atomic<uint64_t> partition_command_changes_[2] = {};
  // Ownership: the bus's partitions (0 without a bus), and which are owned.
  const uint32_t partitions_ =
      config_.options.bus != nullptr ? config_.options.bus->partitions() : 0;
  const bool owns_all_ = partitions_ == 0 || config_.options.owns_all_partitions;
  const std::unique_ptr<std::atomic<bool>[]> owned_{new std::atomic<bool>[partitions_]};

  internal::Mutex consume_mu_;
  std::map<uint32_t, uint64_t> consumed_ ABSL_GUARDED_BY(consume_mu_);  // next offset per partition
  std::vector<DecodedSignal> decoded_ ABSL_GUARDED_BY(consume_mu_);
  std::vector<Signal> consumed_signals_ ABSL_GUARDED_BY(consume_mu_);  // views into decoded_
  // Users erased by an erase command read from the bus (ConsumeErase) whose
  // history erasure failed: the next tick tries again.
  std::vector<std::string> bus_erasures_ ABSL_GUARDED_BY(consume_mu_);
  TickObservations observed_ ABSL_GUARDED_BY(tick_mu_){clock_, {}, {}, {}};
  OverloadLadder overload_ ABSL_GUARDED_BY(tick_mu_){config_.options.overload_enter_ticks,
                                                     config_.options.overload_exit_ticks};
  std::atomic<int> overload_level_{0};
  LatencyHistogram bus_read_latency_ ABSL_GUARDED_BY(consume_mu_);
};

}  // namespace internal

using internal::EngineCore;
using internal::HashUserId;
using internal::ValidateUserId;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const Options& options) {
  if (auto st = internal::ValidateOptions(options); !st.ok()) return st;
  auto core = std::make_unique<EngineCore>(options);
  if (auto st = core->Create(); !st.ok()) return st;
  return std::unique_ptr<Engine>(new Engine(std::move(core)));
}

absl::StatusOr<std::vector<DeviceTransition>> Engine::DeviceHistory(
    absl::string_view user_id, absl::string_view device_id, int64_t from_ms, int64_t to_ms,
    absl::string_view viewer_user_id) {
  return core_->DeviceHistory(user_id, device_id, from_ms, to_ms, viewer_user_id);
}

absl::StatusOr<std::vector<Transition>> Engine::History(absl::string_view user_id, int64_t from_ms,
                                                        int64_t to_ms, absl::string_view viewer) {
  return core_->History(user_id, from_ms, to_ms, viewer);
}
absl::StatusOr<StateDurations> Engine::TimeInStates(absl::string_view user_id, int64_t from_ms,
                                                    int64_t to_ms, absl::string_view viewer) {
  return core_->TimeInStates(user_id, from_ms, to_ms, viewer);
}
absl::StatusOr<int64_t> Engine::LastSeen(absl::string_view user_id, absl::string_view viewer) {
  return core_->LastSeen(user_id, viewer);
}
absl::Status Engine::Erase(absl::string_view user_id) { return core_->Erase(user_id); }
absl::StatusOr<size_t> Engine::DrainGateway(absl::string_view gateway, size_t max_devices) {
  return core_->DrainGateway(gateway, max_devices);
}
absl::StatusOr<size_t> Engine::ConsumeBus(size_t max_records) {
  return core_->ConsumeBus(max_records);
}
absl::Status Engine::Rebuild() { return core_->Rebuild(); }
absl::Status Engine::AssignPartitions(absl::Span<const uint32_t> partitions) {
  return core_->AssignPartitions(partitions);
}
absl::Status Engine::RevokePartitions(absl::Span<const uint32_t> partitions) {
  return core_->RevokePartitions(partitions);
}
std::vector<uint32_t> Engine::OwnedPartitions() const { return core_->OwnedPartitions(); }
uint32_t Engine::BusPartitions() const { return core_->BusPartitions(); }

Engine::Engine(std::unique_ptr<EngineCore> core) : core_(std::move(core)) {}
Engine::~Engine() = default;

absl::Status Engine::Signal(const presence::Signal& signal) { return core_->Apply(signal, nullptr); }

BatchResult Engine::SignalBatch(absl::Span<const presence::Signal> signals) {
  return core_->ApplyBatch(signals);
}

absl::Status Engine::DisconnectDevice(absl::string_view user_id, absl::string_view device_id,
                                      uint64_t session_id, DisconnectKind kind) {
  return core_->DisconnectDevice(user_id, device_id, session_id, kind);
}

absl::StatusOr<DeviceHandle> Engine::Connect(const presence::Signal& signal) {
  DeviceHandle h;
  if (auto st = core_->Apply(signal, &h); !st.ok()) return st;
  return h;
}

absl::Status Engine::Beat(DeviceHandle handle, Activity activity, Source source) {
  return core_->Beat(handle, activity, source);
}

BatchResult Engine::BeatMany(absl::Span<const DeviceHandle> handles, Activity activity,
                             Source source) {
  return core_->BeatMany(handles, activity, source);
}

absl::Status Engine::Disconnect(DeviceHandle handle, DisconnectKind kind) {
  return core_->Disconnect(handle, kind);
}

absl::StatusOr<uint64_t> Engine::SetOverride(absl::string_view user_id, OverrideState state,
                                              int64_t until_ms, uint64_t trace_id) {
  return core_->SetOverride(user_id, state, until_ms, trace_id, /*chosen_id=*/0, /*set_at_ms=*/0,
                            nullptr);
}

absl::StatusOr<size_t> Engine::ApplyOverride(const OverrideCommand& command) {
  return core_->ApplyOverride(command);
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

absl::Status Engine::AnswerProbe(uint64_t probe_id) { return core_->AnswerProbe(probe_id); }
int64_t Engine::NowMs() const { return core_->Now(); }
std::string Engine::RenderMetrics() const { return core_->RenderMetrics(); }
int Engine::OverloadLevel() const { return core_->OverloadLevel(); }

Engine::Sizes Engine::GetSizes() const { return core_->Stats().sizes; }

const Options& Engine::options() const { return core_->options(); }

}  // namespace presence
