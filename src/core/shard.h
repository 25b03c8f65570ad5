// One shard of the engine: the users whose xxHash falls in it, their devices,
// their timers and their pending changes, all behind one lock.
//
// Every method takes the shard's lock, except that DeviceTable::Find (used by
// the lock-free heartbeat in engine.cc) may be called from any thread.
#ifndef PRESENCE_SRC_CORE_SHARD_H_
#define PRESENCE_SRC_CORE_SHARD_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "src/core/mutex.h"
#include "presence/engine.h"
#include "presence/history.h"
#include "presence/options.h"
#include "presence/store.h"
#include "presence/types.h"
#include "src/core/chunked.h"
#include "src/core/device.h"
#include "src/core/device_table.h"
#include "src/core/gateway_table.h"
#include "src/core/liveness.h"
#include "src/core/metrics.h"
#include "src/core/reducer.h"
#include "src/core/timer_sweep.h"
#include "src/core/user_index.h"

namespace presence::internal {

extern const int64_t kUnscheduled;

// The key a detector knows a device record by (OfflineDetector): its shard
// and its index in the shard.
inline uint64_t DeviceKeyOf(uint32_t shard, uint32_t index) { return (uint64_t{shard} << 32) | index; }

// The hash that picks a user's shard and indexes it within the shard.
uint64_t HashUserId(absl::string_view user_id);

// A version after `current`: strictly growing, and never below the time in
// ms shifted left by 10 bits. So a version stays ahead of any that an earlier
// record or event of the same user had, even after the engine restarted, as
// long as the clock moved on (within one engine, a user it forgot and meets
// again within the millisecond starts from its old versions: Shard::forgotten_).
uint64_t NextVersion(uint64_t current, int64_t now_ms);

// The probes sent per second per gateway (Options::max_probes_per_gateway_per_sec):
// a TakeFromWindow window per GatewayTable index (0: devices that named no
// gateway). An index reused for another gateway starts from the window its
// previous gateway left, at most a second's worth of probes.
class ProbeBudget {
 public:
  // Counts one probe for `gateway` at `now_ms`; false when it passes `limit`
  // per second (0: no limit).
  bool Take(uint32_t gateway, int64_t now_ms, uint32_t limit) {
    return TakeFromWindow(window_.try_emplace(gateway, 0u).first->second, now_ms, limit);
  }

 private:
  // Nodes stay where they are: a window is an atomic.
  absl::node_hash_map<uint32_t, std::atomic<uint32_t>> window_;
};

// A probe a shard decided to send on Tick; the engine hands it to the
// Prober after the tick, with no lock held (presence/prober.h).
struct OutgoingProbe {
  std::string user_id;
  std::string device_id;
  uint64_t session_id = 0;
  uint64_t probe_id = 0;
  Source source = Source::kApp;
  std::string gateway;  // the device's, named while its index is held
  int attempt = 1;
};

// What the engine shares with all of its shards.
struct ShardConfig {
  Options options;
  LivenessPolicy policy;
  std::atomic<uint64_t>* next_override_id;
  GatewayTable* gateways;
  std::atomic<int64_t>* charged_bytes;  // against options.memory_budget_bytes
  // OK when the engine owns the partition of the user with this hash, else
  // FailedPrecondition naming it. Keyed paths and the store writes ask it
  // under the shard lock, which RevokePartitions takes after it marked the
  // partition unowned and before it drops the partition's users.
  std::function<absl::Status(uint64_t hash)> check_owned;
  const SlotEpochs* epochs;  // when freed device records may be reused
  ProbeBudget* probe_budget;  // only touched by Shard::Tick, under the engine's tick lock
};

// A signal that passed validation, with its time resolved on the engine's
// clock (never after now).
struct AcceptedSignal {
  const presence::Signal* signal;
  uint64_t hash;
  int64_t timestamp_ms;
  uint32_t gateway;  // GatewayTable index of signal->gateway (0: none)
  // Read back from the bus (catch-up, replay): the flood limit applied when
  // it came in, and is not applied again (docs/design.md section 6).
  bool replay = false;
};

// Adds one signal's outcome to a batch's counts: OK is applied,
// FailedPrecondition stale, anything else rejected; the first failure's
// status is kept.
void CountOutcome(absl::Status st, BatchResult* result);

class Shard {
 public:
  Shard(const ShardConfig* config, uint32_t index, int64_t now_ms);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  // Applies one keyed signal. When `handle` is not null, it receives a handle
  // to the device (a connect).
  absl::Status Apply(const AcceptedSignal& s, int64_t now_ms, DeviceHandle* handle);
  // Applies signals in order under one lock, adding outcomes to `result`.
  void ApplyMany(const AcceptedSignal* signals, size_t n, int64_t now_ms, BatchResult* result);

  // The locked part of Engine::Beat: the device needs a state change, or the
  // handle is stale.
  absl::Status BeatLocked(uint32_t index, uint32_t gen, Activity activity, Source source,
                          int64_t now_ms);
  absl::Status DisconnectHandle(uint32_t index, uint32_t gen, DisconnectKind kind,
                                int64_t now_ms);
  absl::Status DisconnectDevice(absl::string_view user_id, uint64_t hash,
                                absl::string_view device_id, uint64_t session_id,
                                DisconnectKind kind, int64_t now_ms);

  // `chosen_id` 0: the engine's next id, and set now. Otherwise the
  // caller's id (Engine::ApplyOverride), set at `set_at_ms`: when the user
  // already holds it, nothing changes and `*added` (optional) is false.
  absl::StatusOr<uint64_t> SetOverride(absl::string_view user_id, uint64_t hash,
                                       OverrideState state, int64_t until_ms, uint64_t trace_id,
                                       int64_t now_ms, uint64_t chosen_id, int64_t set_at_ms,
                                       bool* added);
  absl::Status RevokeOverride(absl::string_view user_id, uint64_t hash, uint64_t id,
                              int64_t now_ms);
  absl::StatusOr<size_t> ClearOverrides(absl::string_view user_id, uint64_t hash, int64_t now_ms);
  // Of the users for which which(user_id) is true.
  size_t RevokeOverridesSetBetween(int64_t from_ms, int64_t to_ms, int64_t now_ms,
                                   absl::FunctionRef<bool(absl::string_view)> which);
  absl::StatusOr<std::vector<OverrideInfo>> ListOverrides(absl::string_view user_id,
                                                          uint64_t hash, int64_t now_ms);

  // `published`: state and version as last published, not as of now.
  UserPresence Get(absl::string_view user_id, uint64_t hash, bool self_view, bool published,
                   int64_t now_ms);

  // Fires due timers, writes what changed through to the Store (when there
  // is one) and appends the changes to publish to `out`, observing each
  // one's signal-to-publish latency and the store write's latency in
  // `observed`. A failed store write publishes nothing and returns its
  // status; the next tick retries. Probes that fell due are appended to
  // `probes` (docs/design.md rule 9), and, with a HistoryStore, the device
  // transitions since the last tick to `audit` (docs/design.md section 4),
  // both even when the write fails.
  absl::Status Tick(int64_t now_ms, std::vector<ChangeEvent>* out, TickObservations* observed,
                    std::vector<OutgoingProbe>* probes, std::vector<DeviceTransition>* audit);

  // Engine::AnswerProbe for a probe id of this shard: the answer counts as a
  // signal of the probed device and source, at now.
  absl::Status AnswerProbe(uint64_t probe_id, int64_t now_ms);

  // ---- Durable state (src/core/shard_durable.cc) ----
  // Rebuild: records loaded from the Store, in any order; `hash`: the
  // record's user id's. Adds what the records take to `*charged`, which the
  // caller charges to the memory budget in batches (past the budget: what
  // the store holds must load). ResourceExhausted when the shard holds the
  // most users it can.
  absl::Status LoadUser(const UserRecord& record, uint64_t hash, int64_t now_ms,
                        int64_t* charged);
  absl::Status LoadDevice(const DeviceRecord& record, uint64_t hash, uint32_t gateway,
                          int64_t now_ms, int64_t* charged);
  // Forgets everything about the user, queues its erasure in the Store with
  // the next write, and its erasure event with the next tick.
  void EraseUser(absl::string_view user_id, uint64_t hash, int64_t now_ms);
  // Disconnects, cleanly, up to `budget` open devices that carry one of the
  // gateway indexes `gs` (a gateway's and its aliases'), of the users for
  // which which(user_id) is true, and that had no signal after
  // `heard_until_ms`; returns how many.
  size_t DrainGateway(const std::vector<uint32_t>& gs, size_t budget, int64_t now_ms,
                      absl::FunctionRef<bool(absl::string_view)> which, int64_t heard_until_ms);
  // Adds to (*count)[g] the devices of this shard that carry gateway index g
  // (grows *count as needed), for GatewayTable::Reclaim.
  void AddGatewayRefs(std::vector<uint64_t>* count) const;
  // Drops the users for which drop(user_id) is true, with their devices and
  // overrides, writing nothing of them to the Store: another engine holds
  // them now (a partition moved). Returns how many users it dropped.
  size_t Release(int64_t now_ms, absl::FunctionRef<bool(absl::string_view)> drop);
  // Appends, for each user for which which(user_id) is true and that was
  // ever published, its published state as a change event of its current
  // version (cause kMerge): what a new owner announces again, in case the
  // previous owner stored a change but died before publishing it.
  void AppendPublished(int64_t now_ms, absl::FunctionRef<bool(absl::string_view)> which,
                       std::vector<ChangeEvent>* out);
  // Drops every user and device (a rebuild starts from nothing).
  void Clear(int64_t now_ms);

  struct Stats {
    ShardCounters counters;
    Engine::Sizes sizes;
    uint64_t live_users = 0;   // users whose published state is not OFFLINE
    uint64_t stale_users = 0;  // of those, Stale ones
    uint64_t store_writes = 0;
    uint64_t store_errors = 0;
  };
  void AddStats(int64_t now_ms, Stats* stats);

  DeviceTable& devices() { return devices_; }
  uint64_t DeviceKey(uint32_t index) const { return DeviceKeyOf(index_, index); }

 private:
  // A user's overrides, oldest first, and what only a user with overrides
  // needs (a user is hidden only by an override): kept out of the user
  // record, which most users have no use for.
  struct OverrideStack : std::vector<Override> {
    uint32_t user = kNone;  // its user's index
    // While hidden: the public last_seen, where it stood when the user went
    // invisible (rule 8).
    int64_t hidden_last_seen_ms = 0;
  };
  // 56 bytes: the indexes share their words with the states and flags (a
  // device index is below 2^25, a pending index below the most users,
  // Device::kMaxUsers), and the times of the last changes are kept as
  // distances below their versions' times (see TimesOf).
  struct User {
    InlineId id;
    uint64_t version = 0;         // of the last published event (own view)
    uint64_t public_version = 0;  // of the last change of the public view
    int64_t last_seen_ms = 0;     // latest signal applied through the lock
    uint32_t published_age = 0;       // through TimesOf and SetVersions
    uint32_t self_published_age = 0;  // through TimesOf and SetVersions
    uint32_t first_device_ : 26;  // through first_device() and set_first_device()
    State pub_state : 3;
    State pub_self : 3;
    uint32_t pending_ : 24;  // through pending() and set_pending()
    bool in_use : 1;
    // An INVISIBLE override showed when the stack was last settled.
    bool hidden : 1;
    // An active INVISIBLE override lies under the one on top, so that the top
    // one's expiry hides the user: its devices' beats take the lock, which
    // settles the stack first, so the freeze sees no beat made after it.
    bool guarded : 1;
    bool has_overrides : 1;  // its stack is in Shard::overrides_

    User()
        : first_device_(kFirstNone),
          pub_state(State::kOffline),
          pub_self(State::kOffline),
          pending_(kPendingNone),
          in_use(false),
          hidden(false),
          guarded(false),
          has_overrides(false) {}
    // Its first device (kNone: none); the others follow Device::next().
    uint32_t first_device() const { return first_device_ == kFirstNone ? kNone : first_device_; }
    void set_first_device(uint32_t di) { first_device_ = di == kNone ? kFirstNone : di; }
    // Its index in pending_ while it has unpublished news (kNone: none).
    uint32_t pending() const { return pending_ == kPendingNone ? kNone : pending_; }
    void set_pending(uint32_t i) { pending_ = i == kNone ? kPendingNone : i; }

    static constexpr uint32_t kFirstNone = (1u << 26) - 1;
    static constexpr uint32_t kPendingNone = (1u << 24) - 1;
  };
  static_assert(sizeof(User) == 56 && kUserChargeBytes >= 56,
                "kUserChargeBytes (engine.h) counts a 56-byte user record");
  // When each view of a user last changed (0: never).
  struct UserTimes {
    int64_t published_at_ms = 0;       // the public view's: exact
    int64_t self_published_at_ms = 0;  // the own view's: for its dwell only
  };
  // A version's time (NextVersion keeps it at or after the change the
  // version numbers) less the age kept in the record. The public view's age
  // is exact: one that does not fit (an erasure or a merged record moved the
  // version on, or the view was never published under a version) is kept in
  // far_published_. The own view's is only its dwell's (rule 7): one that
  // does not fit (49.7 days) reads as never, since every dwell (at most
  // 2^30 ms, 12 days) has passed by then, unless the versions were numbered
  // by a clock 37 days ahead.
  UserTimes TimesOf(uint32_t u) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets user u's versions, keeping `times` against them.
  void SetVersions(uint32_t u, uint64_t version, uint64_t public_version, UserTimes times)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static constexpr uint32_t kAgeFar = 0xffffffffu;
  static_assert(Device::kMaxUsers <= User::kPendingNone, "a pending index fits beside its none");
  // Users in chunks of 256 (14 KiB): little slack beyond the last one.
  using UserArray = Chunked<User, 8>;
  struct Pending {
    uint32_t user;
    Cause cause;
    uint64_t trace_id;
    int64_t since_ms;
    int64_t hold_until_ms;  // held by min_dwell until then, unless news comes
    bool timer_cause;       // `cause` came from a device timer, due at cause_due
    Time32 cause_due;
  };
  struct UserView {
    Reduced reduced;
    DeviceSummary devices;
    int64_t last_seen_ms = 0;
  };
  // What anyone but the user reads of it (docs/design.md rule 8); see PublicOf.
  struct PublicView {
    bool known = false;
    State state = State::kOffline;
    int64_t last_seen_ms = 0;
    DeviceSummary devices;
    const Override* shown = nullptr;  // never an INVISIBLE one
  };
  struct Decision {
    // kHoldUnchanged: still in its dwell with no news; not evaluated.
    enum What { kPublish, kHold, kHoldUnchanged, kSettle } what = kSettle;
    UserView view;
    PublicView pub;
    // What it publishes: the states after the event (a view whose change is
    // held by its dwell keeps its published state), and the versions.
    State pub_state = State::kOffline;
    State self_state = State::kOffline;
    bool public_change = false;
    bool self_change = false;
    uint64_t version = 0;
    uint64_t public_version = 0;
  };
  void BuildStoreBatch(int64_t now_ms, StoreBatch* batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  UserRecord UserRecordOf(uint32_t u, const Decision* d, int64_t now_ms)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  DeviceRecord DeviceRecordOf(uint32_t di, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t GatewayOf(uint32_t di) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return di < device_gateway_.size() ? device_gateway_[di] : 0;
  }
  // Sets device di's gateway index, keeping gateway_refs_.
  void SetGateway(uint32_t di, uint32_t g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The version of the next record this shard writes: grows by at least one
  // per record and never falls below the clock in ms shifted left by 10.
  uint64_t NextRecordVersion(int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A user's hash, from its record.
  uint64_t HashOf(uint32_t u) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return HashUserId(users_[u].id.view());
  }
  // The dependent loads between a keyed signal and its device, each started
  // ahead of need by ApplyMany, in four stages: the index group of the user
  // id and the signal itself; the user record (the index is in cache by then)
  // and the id bytes; the user's first device (PrefetchDevice answers the
  // user found, or kNone); the second, when the first is not the one sought.
  void PrefetchIndex(const AcceptedSignal& a) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PrefetchUser(const AcceptedSignal& a) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t PrefetchDevice(const AcceptedSignal& a) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PrefetchNextDevice(const AcceptedSignal& a, uint32_t u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // `user_hint`: where the user was found a few signals before (kNone: look
  // it up); checked before it is used.
  absl::Status ApplyLocked(const AcceptedSignal& s, int64_t now_ms, DeviceHandle* handle,
                           uint32_t user_hint = kNone) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `limit`: counts against the device's signals-per-second limit (not a
  // replay).
  // `probe_answer`: the answer to a probe (not counted against the limit,
  // not a heartbeat the detector learns from).
  // `platform`: the signal's; the device takes it after its old session's
  // entries are audited.
  absl::Status ApplyToDevice(uint32_t di, uint64_t session, Platform platform, Source source,
                             Activity activity, int64_t ts_ms, uint64_t trace_id, int64_t now_ms,
                             bool limit = true, bool probe_answer = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Drop(DropReason reason, absl::string_view message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `clean_end` says, for the audit, why a clean disconnect came
  // (kDeadClean, or kDeadDrained for the operator's drain).
  absl::Status CloseSession(uint32_t di, DisconnectKind kind, int64_t now_ms,
                            DeviceEvent clean_end = DeviceEvent::kDeadClean)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  uint32_t FindUser(absl::string_view id, uint64_t hash) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The user's override stack (null: none), one made for it, or none left.
  OverrideStack* StackOf(const User& user) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  OverrideStack& MakeStack(uint32_t u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropStack(uint32_t u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether AddUser has room: a user index must fit Device::user_
  // (Device::kMaxUsers); what refuses a user past it says kNoUserRoom.
  bool UserRoom() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static const char kNoUserRoom[];
  uint32_t AddUser(absl::string_view id, uint64_t hash) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ForgetUserIfEmpty(uint32_t u, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ForgetUser(uint32_t u, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reserves `bytes` of the memory budget; false (nothing reserved) when it
  // would pass it. (Loads charge through LoadUser's and LoadDevice's caller.)
  bool Charge(int64_t bytes);
  // What a user or a device record is charged: the fixed part (engine.h)
  // and its id's heap block, if the id is too long to live in the record;
  // for a device in an engine with a detector, the 4 bytes its answer may
  // take beside the records (DeviceTable::Learned).
  static int64_t UserCharge(absl::string_view user_id) {
    return kUserChargeBytes + static_cast<int64_t>(InlineId::HeapBytes(user_id));
  }
  int64_t DeviceCharge(absl::string_view device_id) const {
    return kDeviceChargeBytes + static_cast<int64_t>(ShortId::HeapBytes(device_id)) +
           (config_->policy.detector != nullptr ? int64_t{sizeof(uint32_t)} : 0);
  }
  void Uncharge(int64_t bytes);
  void Unpend(uint32_t u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The user's device `device_id` (kNone: none). `walked`, when given, gets
  // how many of the user's devices the search passed: all of them when none
  // matched, which is what a new device's per-user limit is checked against.
  uint32_t FindDevice(const User& user, absl::string_view device_id, uint32_t* walked = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  DeviceHandle HandleOf(uint32_t di) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Re-derives a device's fast bits from its liveness, keeps its timer no
  // later than its next deadline, and marks its user dirty when what the
  // device contributes (live, online) changed. `stayed_live`: the device was
  // in the live phase before and still is (its timer found it live).
  void Refresh(uint32_t di, const DeviceView& before, Cause cause, uint64_t trace_id,
               int64_t now_ms, bool stayed_live = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The device dies; `why` (a kDead* event) is what the audit records, and
  // decides the cause it publishes (timeout or disconnect) and whether it
  // died uncleanly (all but a clean disconnect or drain).
  void MarkDead(uint32_t di, DeviceEvent why, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a transition of the device for the audit (only with a
  // HistoryStore); handed to the engine on Tick.
  void Audit(uint32_t di, DeviceEvent event, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeDevice(uint32_t di, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Schedule(uint32_t di, int64_t due_ms, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The due time Schedule sets for `due_ms`.
  Time32 DueTime(int64_t due_ms, int64_t now_ms) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The timer of device `di` fires, if its due time came: what its phase
  // asks.
  void FireDevice(uint32_t di, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // When a live device, whose view next changes at `due_ms`, is looked at
  // again: the kRecheckGridMs boundary before it, if that is still ahead,
  // else `due_ms` itself. A live device may be looked at before its view
  // changes (it is evaluated at the time, and nothing it shows changed), so
  // the devices of a block, which fall due at scattered times, are looked at
  // together in a few scans instead of one scan each; and when a device is
  // looked at depends only on its own signals, not on its neighbours in
  // memory (their records, Store writes included, never show in its own).
  static constexpr int64_t kRecheckGridMs = 256;
  static int64_t Recheck(int64_t due_ms, int64_t now_ms);
  // The sweep's scan of records [first, end): fires what is due and returns
  // the earliest due time left.
  Time32 SweepBlock(uint32_t first, uint32_t end, int64_t now_ms)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FireUser(uint32_t u, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Push/pull checks (docs/design.md rule 9), for a live device whose timer
  // fired with view `v`: sends the probe that is due, if any, and returns
  // when its timer must look at it again for probing (the far future when it
  // has nothing more to send this silence). A device that signalled since it
  // went quiet ends its probing.
  int64_t ProbeStep(uint32_t di, const DeviceView& v, int64_t now_ms)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The device's probing ends (it signalled, died, disconnected or is
  // freed): answers to its probes are late from now on. `gave_up`: it died
  // by timeout, so probes it was sent went unanswered. Returns whether it
  // gave up on probes that were sent.
  bool EndProbing(uint32_t di, bool gave_up) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void MarkDirty(uint32_t u, Cause cause, uint64_t trace_id, int64_t now_ms)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  UserView ViewUser(const User& user, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // For the stale ratio (docs/design.md section 7): whether no source of
  // the user's devices signalled within that source's own offline_after.
  bool Stale(const User& user, int64_t now_ms) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The user's latest accepted signal: the locked part and every device's.
  int64_t TrueLastSeen(const User& user, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The public view (docs/design.md rule 8), computed here and nowhere else: every
  // path that answers anyone but the user (Get, GetPublished, change events,
  // records, re-announcements) reads it. `state` is the state it is judged
  // by (the current one, or the published one).
  PublicView PublicOf(const User& user, const UserView& v, State state, int64_t now_ms) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the user's expired overrides (each a change of cause
  // kOverrideExpiry), then notes whether it is hidden. Called before
  // anything the user does is applied, so that the freeze of its public
  // last_seen sees nothing done after it went invisible.
  void Settle(uint32_t u, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After the override stack changed: whether the user is hidden now (on
  // becoming so, its public last_seen freezes) and whether its beats must
  // take the lock (User::guarded).
  void UpdateHidden(uint32_t u, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rule 6: a detector decides for the device when its platform is watched
  // (dflag::kAdaptive); it forgets what it learned of an earlier device in
  // the same record (a heartbeat racing that device's end may have told it).
  void WatchIfAdaptive(uint32_t di, Platform platform) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a live device's beats may skip the lock (fast::kOpen).
  bool MayBeatUnlocked(const Device& d) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The views of an event of `user`, public and own: the states it
  // publishes (`pub_state`, `self_state`: those of `pub` and `v`, or the
  // last published ones while a dwell holds a view back), the last_seen,
  // devices and overrides.
  void FillView(const User& user, const UserView& v, const PublicView& pub, State pub_state,
                State self_state, int64_t now_ms, ChangeEvent* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The user's overrides for which pred is true, removed (cause kOverride).
  // NotFound for an unknown user.
  absl::StatusOr<size_t> RevokeWhere(absl::string_view user_id, uint64_t hash, int64_t now_ms,
                                     bool (*pred)(const Override&, const void*), const void* arg)
      ABSL_LOCKS_EXCLUDED(mu_);
  size_t RemoveOverrides(uint32_t u, int64_t now_ms, Cause cause,
                         bool (*pred)(const Override&, const void*), const void* arg)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  DeviceView Evaluate(uint32_t di, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What the device counted as when last evaluated (its fast bits and phase):
  // what the timers and the publisher have been told.
  DeviceView LastEvaluated(uint32_t di) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkStoreDirty(uint32_t di) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ShardConfig* const config_;
  const uint32_t index_;

  mutable internal::Mutex mu_;
  UserArray users_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> free_users_ ABSL_GUARDED_BY(mu_);
  UserIndex index_by_id_ ABSL_GUARDED_BY(mu_);
  DeviceTable devices_;  // slots guarded by mu_, except the fast-path fields
  TimerSweep timers_ ABSL_GUARDED_BY(mu_);
  // While a device timer fires: its due time (see MarkDirty).
  const Time32* firing_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::btree_set<std::pair<int64_t, uint32_t>> user_timers_ ABSL_GUARDED_BY(mu_);
  std::vector<Pending> pending_ ABSL_GUARDED_BY(mu_);  // users to look at on Tick
  // The override stacks, by user record (which never moves): most users
  // have none, so the record holds only User::has_overrides.
  absl::flat_hash_map<const User*, std::unique_ptr<OverrideStack>> overrides_ ABSL_GUARDED_BY(mu_);
  // The public view's last change of each user whose age (TimesOf) does not
  // fit its record.
  absl::flat_hash_map<uint32_t, int64_t> far_published_ ABSL_GUARDED_BY(mu_);
  ShardCounters counters_ ABSL_GUARDED_BY(mu_);
  std::vector<Decision> decisions_ ABSL_GUARDED_BY(mu_);  // Tick's scratch, parallel to pending_
  // Durable state waiting for the next write.
  std::vector<uint32_t> store_dirty_ ABSL_GUARDED_BY(mu_);
  std::vector<DeviceRecord> gone_ ABSL_GUARDED_BY(mu_);
  std::vector<StoreBatch::Erasure> erasures_ ABSL_GUARDED_BY(mu_);
  uint64_t record_clock_ ABSL_GUARDED_BY(mu_) = 0;
  // The versions of users this shard forgot (erased, released or past
  // retention) since the last tick: a user met again before a tick's clock
  // passed them starts from them, so a watcher never sees a version repeat,
  // even within the millisecond of an erasure. Per user, so that no user's
  // versions depend on what another did (rule 8). A tick drops those its
  // clock passed (NextVersion is above them from then on).
  struct Floors {
    uint64_t version = 0;
    uint64_t public_version = 0;
  };
  absl::flat_hash_map<std::string, Floors> forgotten_ ABSL_GUARDED_BY(mu_);
  // Erasures to publish with the next tick (ChangeEvent::erased).
  std::vector<ChangeEvent> erased_ ABSL_GUARDED_BY(mu_);
  uint64_t store_writes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t store_errors_ ABSL_GUARDED_BY(mu_) = 0;
  // Push/pull checks (docs/design.md rule 9). A device being probed, keyed
  // by device index: the silence it is probed for and its probes so far.
  struct Probing {
    uint64_t session = 0;
    int64_t silent_since_ms = 0;  // the latest signal this silence follows
    uint8_t tries = 0;            // probes due so far (sent or throttled)
    uint8_t sent = 0;
    uint64_t ids[kMaxProbes] = {};  // the probes sent, still awaited
  };
  absl::flat_hash_map<uint32_t, Probing> probing_ ABSL_GUARDED_BY(mu_);
  struct Awaited {
    uint32_t device;
    Source source;
  };
  absl::flat_hash_map<uint64_t, Awaited> awaited_ ABSL_GUARDED_BY(mu_);  // by probe id
  // The last probe sequence number given out; a probe id is the shard's
  // index in its high 8 bits and the sequence number below.
  uint64_t probe_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<OutgoingProbe> outgoing_ ABSL_GUARDED_BY(mu_);
  // Device transitions since the last tick (docs/design.md section 4).
  std::vector<DeviceTransition> audit_ ABSL_GUARDED_BY(mu_);
  size_t live_devices_ ABSL_GUARDED_BY(mu_) = 0;
  size_t override_count_ ABSL_GUARDED_BY(mu_) = 0;
  // The gateway index of each device record (0: none), beside the records
  // (whose words are full), in chunks as the records are (no doubling
  // slack), and how many devices carry each index.
  Chunked<uint32_t, DeviceTable::kChunkBits> device_gateway_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> gateway_refs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_SHARD_H_
