#include "src/core/shard.h"

#include <algorithm>
#include <limits>

#include "src/core/mutex.h"
#include "absl/strings/str_cat.h"
#include "xxhash.h"

namespace presence::internal {

uint64_t HashUserId(absl::string_view user_id) {
  return XXH3_64bits(user_id.data(), user_id.size());
}

namespace {

// The charges (engine.h) cover at least the records they stand for.
static_assert(kDeviceChargeBytes >= sizeof(Device), "the device record, its timer inside");

constexpr uint32_t kSeenMask = dflag::kSeen0 | (dflag::kSeen0 << 1) | (dflag::kSeen0 << 2);

OverrideInfo InfoOf(const Override& o) { return OverrideInfo{o.id, o.state, o.set_at_ms, o.until_ms}; }

}  // namespace

// A due time further than any real one, for a device about to get its first
// timer: whatever it schedules is sooner.
const int64_t kUnscheduled = (int64_t{1} << 30) + 1000;

uint64_t NextVersion(uint64_t current, int64_t now_ms) {
  const uint64_t floor = static_cast<uint64_t>(std::max<int64_t>(now_ms, 0)) << 10;
  return std::max(current + 1, floor);
}

Shard::Shard(const ShardConfig* config, uint32_t index, int64_t now_ms)
    : config_(config),
      index_(index),
      devices_(config->policy.detector != nullptr),
      timers_(ToTime32(now_ms), DeviceTable::kChunkBits) {}

Shard::~Shard() = default;

// ---- Users -----------------------------------------------------------------

uint32_t Shard::FindUser(absl::string_view id, uint64_t hash) const {
  const uint32_t u = index_by_id_.Find(hash, [&](uint32_t v) { return users_[v].id.view() == id; });
  return u == UserIndex::kNotFound ? kNone : u;
}

const char Shard::kNoUserRoom[] = "shard holds the most users it can";

bool Shard::UserRoom() const { return !free_users_.empty() || users_.size() < Device::kMaxUsers; }

uint32_t Shard::AddUser(absl::string_view id, uint64_t hash) {
  uint32_t u;
  if (!free_users_.empty()) {
    u = free_users_.back();
    free_users_.pop_back();
  } else {
    u = users_.size();
    users_.emplace_back();
  }
  User& user = users_[u];
  user.id = InlineId(id);
  user.in_use = true;
  index_by_id_.Insert(u, hash, [this](uint32_t v) { return HashOf(v); });
  if (!forgotten_.empty()) {
    // Whatever this thread's clock says: the tick that publishes the user
    // may have read an earlier one.
    auto it = forgotten_.find(id);
    if (it != forgotten_.end()) {
      SetVersions(u, it->second.version, it->second.public_version, UserTimes{});
      forgotten_.erase(it);
    }
  }
  return u;
}

Shard::UserTimes Shard::TimesOf(uint32_t u) const {
  const User& user = users_[u];
  UserTimes t;
  if (user.published_age != kAgeFar) {
    t.published_at_ms = static_cast<int64_t>((user.public_version >> 10) - user.published_age);
  } else {
    t.published_at_ms = far_published_.find(u)->second;
  }
  if (user.self_published_age != kAgeFar) {
    t.self_published_at_ms = static_cast<int64_t>((user.version >> 10) - user.self_published_age);
  }
  return t;
}

void Shard::SetVersions(uint32_t u, uint64_t version, uint64_t public_version, UserTimes times) {
  User& user = users_[u];
  user.version = version;
  user.public_version = public_version;
  // Ages in uint64, where a version's time less any int64 time fits.
  const uint64_t public_age = (public_version >> 10) - static_cast<uint64_t>(times.published_at_ms);
  if (static_cast<int64_t>(public_version >> 10) >= times.published_at_ms && public_age < kAgeFar) {
    if (user.published_age == kAgeFar) far_published_.erase(u);
    user.published_age = static_cast<uint32_t>(public_age);
  } else {
    user.published_age = kAgeFar;
    far_published_[u] = times.published_at_ms;
  }
  const uint64_t self_age = (version >> 10) - static_cast<uint64_t>(times.self_published_at_ms);
  user.self_published_age =
      times.self_published_at_ms != 0 &&
              static_cast<int64_t>(version >> 10) >= times.self_published_at_ms && self_age < kAgeFar
          ? static_cast<uint32_t>(self_age)
          : kAgeFar;
}

Shard::OverrideStack* Shard::StackOf(const User& user) const {
  return user.has_overrides ? overrides_.find(&user)->second.get() : nullptr;
}

Shard::OverrideStack& Shard::MakeStack(uint32_t u) {
  User& user = users_[u];
  if (!user.has_overrides) {
    auto stack = std::make_unique<OverrideStack>();
    stack->user = u;
    overrides_.emplace(&user, std::move(stack));
    user.has_overrides = true;
  }
  return *overrides_.find(&user)->second;
}

void Shard::DropStack(uint32_t u) {
  User& user = users_[u];
  overrides_.erase(&user);
  user.has_overrides = false;
}

void Shard::ForgetUserIfEmpty(uint32_t u, int64_t now_ms) {
  User& user = users_[u];
  if (!user.in_use || user.first_device() != kNone || user.has_overrides || user.pending() != kNone) {
    return;
  }
  const int64_t forget_at = user.last_seen_ms + config_->options.user_retention_ms;
  if (user.last_seen_ms != 0 && now_ms < forget_at) {
    user_timers_.insert({forget_at, u});
    return;
  }
  ForgetUser(u, now_ms);
}

bool Shard::Charge(int64_t bytes) {
  const int64_t budget = config_->options.memory_budget_bytes;
  const int64_t was = config_->charged_bytes->fetch_add(bytes, std::memory_order_relaxed);
  if (budget == 0 || was + bytes <= budget) return true;
  config_->charged_bytes->fetch_sub(bytes, std::memory_order_relaxed);
  return false;
}

void Shard::Uncharge(int64_t bytes) {
  config_->charged_bytes->fetch_sub(bytes, std::memory_order_relaxed);
}

void Shard::ForgetUser(uint32_t u, int64_t now_ms) {
  const User& user = users_[u];
  // Kept until a tick's clock passes it (see Tick). Only recent versions
  // can meet a later one (clocks of threads differ by far less than the
  // margin); a rebuild, which forgets everyone, keeps only those.
  constexpr int64_t kMarginMs = 1000;
  if (std::max(user.version, user.public_version) >=
      static_cast<uint64_t>(std::max<int64_t>(now_ms - kMarginMs, 0)) << 10) {
    forgotten_[std::string(user.id.view())] = Floors{user.version, user.public_version};
  }
  Uncharge(UserCharge(user.id.view()));
  index_by_id_.Erase(u, HashOf(u), [this](uint32_t v) { return HashOf(v); });
  if (user.published_age == kAgeFar) far_published_.erase(u);
  users_[u] = User();
  free_users_.push_back(u);
}

uint64_t Shard::NextRecordVersion(int64_t now_ms) {
  record_clock_ = NextVersion(record_clock_, now_ms);
  return record_clock_;
}

uint32_t Shard::FindDevice(const User& user, absl::string_view device_id, uint32_t* walked) {
  uint32_t n = 0;
  for (uint32_t di = user.first_device(); di != kNone; di = devices_.at(di).next(), ++n) {
    if (devices_.at(di).id.view() == device_id) return di;
  }
  if (walked != nullptr) *walked = n;
  return kNone;
}

DeviceHandle Shard::HandleOf(uint32_t di) {
  return DeviceHandle{(uint64_t{index_} << 56) | (uint64_t{devices_.at(di).gen()} << 32) | di};
}

void Shard::MarkDirty(uint32_t u, Cause cause, uint64_t trace_id, int64_t now_ms) {
  User& user = users_[u];
  if (user.pending() == kNone) {
    user.set_pending(static_cast<uint32_t>(pending_.size()));
    pending_.push_back(Pending{u, cause, trace_id, now_ms, 0, firing_ != nullptr,
                               firing_ != nullptr ? *firing_ : 0});
    return;
  }
  Pending& p = pending_[user.pending()];
  // The cause is the latest news'. Timers fire in memory order, not in time
  // order, so among timers the one due latest names it (a tie goes to the
  // higher cause): where the user's records lie, which other users' churn
  // decides, must not show in its events (docs/design.md rule 8).
  if (firing_ != nullptr && p.timer_cause &&
      (Diff32(*firing_, p.cause_due) < 0 ||
       (*firing_ == p.cause_due && cause < p.cause))) {
    cause = p.cause;
  }
  p.cause = cause;
  p.timer_cause = firing_ != nullptr;
  if (firing_ != nullptr) p.cause_due = *firing_;
  p.hold_until_ms = 0;  // news: look again at the next tick, even in a dwell
  if (trace_id != 0) p.trace_id = trace_id;
}

int64_t Shard::TrueLastSeen(const User& user, int64_t now_ms) {
  int64_t last_seen = user.last_seen_ms;
  for (uint32_t di = user.first_device(); di != kNone; di = devices_.at(di).next()) {
    last_seen = std::max(last_seen, Evaluate(di, now_ms).last_signal_ms);
  }
  return last_seen;
}

Shard::PublicView Shard::PublicOf(const User& user, const UserView& v, State state,
                                  int64_t now_ms) const {
  PublicView p;
  if (v.reduced.invisible) {
    // Hidden: OFFLINE, no devices, no override, and a last_seen that stays
    // where it was when the user went invisible. While the stack is not yet
    // settled past the moment it went invisible, nothing was applied since
    // (User::guarded), so the current last_seen is still that one.
    p.last_seen_ms = user.hidden ? StackOf(user)->hidden_last_seen_ms : v.last_seen_ms;
  } else {
    p.last_seen_ms = v.last_seen_ms;
    p.devices = v.devices;
    p.shown = v.reduced.shown;
  }
  p.state = state;
  // Shown OFFLINE and never published, or unseen for the retention: others
  // learn nothing of it, as if it never existed, or as if the engine had
  // forgotten it (as it does with a user that holds no override).
  p.known = state != State::kOffline ||
            (user.public_version != 0 && p.last_seen_ms != 0 &&
             now_ms - p.last_seen_ms < config_->options.user_retention_ms);
  if (!p.known) p = PublicView();
  return p;
}

Shard::UserView Shard::ViewUser(const User& user, int64_t now_ms) {
  UserView v;
  v.last_seen_ms = user.last_seen_ms;
  bool any_live = false, any_online = false;
  for (uint32_t di = user.first_device(); di != kNone; di = devices_.at(di).next()) {
    const Device& d = devices_.at(di);
    const DeviceView dv = Evaluate(di, now_ms);
    v.last_seen_ms = std::max(v.last_seen_ms, dv.last_signal_ms);
    if (!dv.live) continue;
    any_live = true;
    any_online |= dv.online;
    ++v.devices.live[static_cast<int>(d.platform) - 1];
  }
  v.reduced = Reduce(any_live, any_online, TopOverride(StackOf(user), now_ms),
                     config_->options.override_requires_live_device);
  return v;
}

// ---- Devices ---------------------------------------------------------------

DeviceView Shard::Evaluate(uint32_t di, int64_t now_ms) {
  const Device& d = devices_.at(di);
  return EvaluateDevice(d, now_ms, config_->policy,
                        (d.flags & dflag::kAdaptive) ? devices_.LearnedValue(di) : 0);
}

DeviceView Shard::LastEvaluated(uint32_t di) const {
  const Device& d = devices_.at(di);
  DeviceView v;
  const uint32_t bits = d.bits();
  switch (d.phase) {
    case Phase::kLive:
      v.live = (bits & fast::kAllLive) != 0;
      v.online = CountsOnline(bits & fast::kAllLive, bits, config_->policy);
      break;
    case Phase::kGrace:
      v.live = true;
      v.online = d.flags & dflag::kGraceOnline;
      break;
    case Phase::kDead:
    case Phase::kFree:
      break;
  }
  return v;
}

void Shard::MarkStoreDirty(uint32_t di) {
  Device& d = devices_.at(di);
  if (config_->options.store == nullptr || (d.flags & dflag::kStoreDirty)) return;
  d.flags |= dflag::kStoreDirty;
  store_dirty_.push_back(di);
}

Time32 Shard::DueTime(int64_t due_ms, int64_t now_ms) const {
  // Never at or before the sweep's last tick: it fires at the next one.
  const Time32 due = ToTime32(std::min(due_ms, now_ms + (int64_t{1} << 30)));
  return Diff32(due, timers_.now()) <= 0 ? timers_.now() + 1 : due;
}

void Shard::Schedule(uint32_t di, int64_t due_ms, int64_t now_ms) {
  Device& d = devices_.at(di);
  d.due = DueTime(due_ms, now_ms);
  timers_.Note(di, d.due);
}

void Shard::Refresh(uint32_t di, const DeviceView& before, Cause cause, uint64_t trace_id,
                    int64_t now_ms, bool stayed_live) {
  Device& d = devices_.at(di);
  const DeviceView after = Evaluate(di, now_ms);
  const uint32_t old_bits = d.bits();
  uint32_t bits = old_bits & ~(fast::kAllLive | fast::kOpen | fast::kWatched);
  if (d.phase == Phase::kLive) {
    bits |= after.live_bits;
    // A device that stayed in the live phase has the kOpen its user allows
    // (UpdateHidden keeps it so): its timer need not read the user record.
    if (stayed_live ? (old_bits & fast::kOpen) != 0 : MayBeatUnlocked(d)) bits |= fast::kOpen;
    if (d.flags & dflag::kAdaptive) bits |= fast::kWatched;
  }
  d.set_bits(bits);
  // A live-phase device must have its timer by its next deadline; one whose
  // every source already lapsed is looked at on the next tick.
  // With probing (rule 9), also by when it turns quiet enough to be probed;
  // once it is, its timer follows its probes (ProbeStep).
  if (d.phase == Phase::kLive) {
    int64_t due = after.live ? after.deadline_ms : now_ms;
    if (after.live && after.quiet_at_ms > now_ms) due = std::min(due, after.quiet_at_ms);
    due = Recheck(due, now_ms);
    if (Diff32(ToTime32(due), d.due) < 0) Schedule(di, due, now_ms);
  }
  if (before.live != after.live || (after.live && before.online != after.online)) {
    MarkDirty(d.user(), cause, trace_id, now_ms);
  }
}

void Shard::Audit(uint32_t di, DeviceEvent event, int64_t now_ms) {
  if (config_->options.history == nullptr) return;
  const Device& d = devices_.at(di);
  DeviceTransition& t = audit_.emplace_back();
  t.user_id = std::string(users_[d.user()].id.view());
  t.device_id = std::string(d.id.view());
  t.at_ms = now_ms;
  t.session_id = d.session;
  t.event = event;
  t.platform = d.platform;
}

void Shard::MarkDead(uint32_t di, DeviceEvent why, int64_t now_ms) {
  const bool timeout = why == DeviceEvent::kDeadTimeout;
  const bool unclean = why != DeviceEvent::kDeadClean && why != DeviceEvent::kDeadDrained;
  const Cause cause = timeout ? Cause::kTimeout : Cause::kDisconnect;
  if (EndProbing(di, /*gave_up=*/timeout)) Audit(di, DeviceEvent::kProbeGivenUp, now_ms);
  Audit(di, why, now_ms);
  Device& d = devices_.at(di);
  // Always dirty: the timer that would have noticed the lapse is superseded.
  MarkDirty(d.user(), cause, 0, now_ms);
  d.phase = Phase::kDead;
  d.flags = (d.flags & ~dflag::kDiedUnclean) | (unclean ? dflag::kDiedUnclean : 0);
  MarkStoreDirty(di);
  d.set_bits(d.bits() & ~(fast::kAllLive | fast::kOpen));
  --live_devices_;
  Schedule(di, now_ms + config_->options.dead_retention_ms, now_ms);
}

void Shard::FreeDevice(uint32_t di, int64_t now_ms) {
  Device& d = devices_.at(di);
  const uint32_t u = d.user();
  User& user = users_[u];
  user.last_seen_ms = std::max(user.last_seen_ms, Evaluate(di, now_ms).last_signal_ms);
  if (user.first_device() == di) {
    user.set_first_device(d.next());
  } else {
    uint32_t p = user.first_device();
    while (devices_.at(p).next() != di) p = devices_.at(p).next();
    devices_.at(p).set_next(d.next());
  }
  EndProbing(di, /*gave_up=*/false);
  if (config_->policy.detector != nullptr && (d.flags & dflag::kAdaptive)) {
    config_->policy.detector->Forget(DeviceKey(di));
  }
  if (d.phase != Phase::kDead) --live_devices_;
  if (config_->options.store != nullptr) {
    DeviceRecord gone;
    gone.user_id = std::string(user.id.view());
    gone.device_id = std::string(d.id.view());
    gone.gone = true;
    gone_.push_back(std::move(gone));  // versioned when written
  }
  Uncharge(DeviceCharge(d.id.view()));
  d.id.reset();
  SetGateway(di, 0);
  d.session = 0;
  d.set_user(kNone);
  d.phase = Phase::kFree;
  d.flags = 0;
  d.bump_gen(0);
  devices_.Release(di, *config_->epochs);  // seen and rate are reset at reuse
  ForgetUserIfEmpty(u, now_ms);
}

absl::Status Shard::Drop(DropReason reason, absl::string_view message) {
  ++counters_.dropped[static_cast<int>(reason)];
  switch (reason) {
    case DropReason::kClosedHandle:
      return absl::NotFoundError(message);
    case DropReason::kLimit:
    case DropReason::kRateLimited:
      return absl::ResourceExhaustedError(message);
    case DropReason::kInvalid:
      return absl::InvalidArgumentError(message);
    case DropReason::kStaleSession:
    case DropReason::kStaleTimestamp:
      break;
  }
  return absl::FailedPreconditionError(message);
}

absl::Status Shard::ApplyToDevice(uint32_t di, uint64_t session, Platform platform, Source source,
                                  Activity activity, int64_t ts_ms, uint64_t trace_id,
                                  int64_t now_ms, bool limit, bool probe_answer) {
  Device& d = devices_.at(di);
  const int si = SourceIndex(source);
  if (session < d.session) return Drop(DropReason::kStaleSession, "stale signal: older session");
  const bool new_session = session > d.session;
  if (!new_session) {
    if (d.flags & dflag::kClosed) {
      return Drop(DropReason::kStaleSession, "stale signal: session was disconnected");
    }
    if (d.has_seen(si) && ts_ms < Expand32(d.seen[si].load(std::memory_order_relaxed), now_ms)) {
      return Drop(DropReason::kStaleTimestamp, "stale signal: older than one already applied");
    }
  }
  if (limit && !probe_answer &&
      !d.TakeRate(now_ms, static_cast<uint32_t>(config_->options.max_signals_per_device_per_sec))) {
    return Drop(DropReason::kRateLimited, "device passed its signals-per-second limit");
  }
  Settle(d.user(), now_ms);
  // Its timer is due by its next deadline, so before that it cannot have
  // lapsed, and no evaluation is needed.
  if (d.phase == Phase::kLive && Diff32(ToTime32(now_ms), d.due) >= 0 &&
      !Evaluate(di, now_ms).live) {
    // Past its deadline, and no timer noticed yet: Get already answered it
    // dead, so it dies now, as the timer would have, and the revival below
    // counts as a false offline (or is published, if the user's state moved).
    MarkDead(di, DeviceEvent::kDeadTimeout, now_ms);
  }
  // Compared with what the timers and the publisher last saw of the device,
  // so that a lapse that happened since (and that no tick noticed yet) is
  // published too.
  const DeviceView before = LastEvaluated(di);
  uint32_t bits = d.bits();
  User& user = users_[d.user()];
  // A new session, or a device that was not live, connects; a live (or
  // grace) session that a newer one replaces ends first.
  const bool connects = new_session || d.phase != Phase::kLive;
  if (new_session && d.phase != Phase::kDead) Audit(di, DeviceEvent::kDeadReplaced, now_ms);
  d.platform = platform;  // the entries above are about the device as it was
  if (new_session) {
    // The old session's signals stay in the user's last_seen.
    user.last_seen_ms = std::max(user.last_seen_ms, Evaluate(di, now_ms).last_signal_ms);
    EndProbing(di, /*gave_up=*/false);  // answers about the old session are late
    d.session = session;
    d.flags &= ~(kSeenMask | dflag::kClosed);
    bits = 0;
    d.bump_gen(0);  // handles to the old session stop working
  }
  if (d.phase != Phase::kLive) {
    if (d.phase == Phase::kDead) {
      ++live_devices_;
      // A device that died without a clean goodbye and comes back soon was a
      // false offline (docs/design.md section 7).
      const int64_t died_at = Expand32(d.due, now_ms) - config_->options.dead_retention_ms;
      if ((d.flags & dflag::kDiedUnclean) &&
          now_ms - died_at <= config_->options.false_offline_window_ms) {
        ++counters_.false_offlines;
      }
    }
    d.phase = Phase::kLive;
    d.flags &= ~dflag::kDiedUnclean;
  }
  if (connects) Audit(di, DeviceEvent::kConnect, now_ms);
  if (d.has_seen(si)) {
    const int64_t prev = Expand32(d.seen[si].load(std::memory_order_relaxed), now_ms);
    ts_ms = std::max(ts_ms, prev);
  }
  d.seen[si].store(ToTime32(ts_ms), std::memory_order_relaxed);
  d.flags |= dflag::kSeen0 << si;
  bits = activity == Activity::kActive ? (bits | fast::ActiveBit(si)) : (bits & ~fast::ActiveBit(si));
  d.set_bits(bits);
  if ((d.flags & dflag::kAdaptive) && !probe_answer) {
    config_->policy.Observe(*devices_.Learned(di), DeviceKey(di), si, ts_ms);
  }
  user.last_seen_ms = std::max(user.last_seen_ms, ts_ms);
  ++counters_.accepted[si];
  MarkStoreDirty(di);
  Refresh(di, before, Cause::kSignal, trace_id, now_ms);
  return absl::OkStatus();
}

absl::Status Shard::ApplyLocked(const AcceptedSignal& a, int64_t now_ms, DeviceHandle* handle,
                                uint32_t user_hint) {
  if (auto st = config_->check_owned(a.hash); !st.ok()) return st;
  const presence::Signal& s = *a.signal;
  // A hint is checked: the user may have been forgotten since (a device
  // created and freed again on a failed apply) and its slot reused. A user
  // created since the hint was taken (kNone) is looked up.
  uint32_t u = user_hint != kNone && users_[user_hint].in_use && users_[user_hint].id.view() == s.user_id
                   ? user_hint
                   : FindUser(s.user_id, a.hash);
  uint32_t n = 0;  // the user's devices, when none is this one
  uint32_t di = u == kNone ? kNone : FindDevice(users_[u], s.device_id, &n);
  bool created = false;
  if (di == kNone) {
    if (n >= static_cast<uint32_t>(config_->options.max_devices_per_user)) {
      return Drop(DropReason::kLimit, absl::StrCat("user has ", n, " devices, the most allowed"));
    }
    if (u == kNone && !UserRoom()) return Drop(DropReason::kLimit, kNoUserRoom);
    const int64_t charge = DeviceCharge(s.device_id) + (u == kNone ? UserCharge(s.user_id) : 0);
    if (!Charge(charge)) {
      return Drop(DropReason::kLimit, "memory budget reached: no new devices or users");
    }
    di = devices_.Allocate(*config_->epochs);
    if (di == kNone) {
      Uncharge(charge);
      return Drop(DropReason::kLimit, "shard holds the most devices it can");
    }
    devices_.at(di).flags = 0;
    if (u == kNone) u = AddUser(s.user_id, a.hash);
    User& user = users_[u];
    Device& d = devices_.at(di);
    d.id = ShortId(s.device_id);
    d.set_user(u);
    d.set_next(user.first_device());
    user.set_first_device(di);
    d.session = s.session_id;
    d.phase = Phase::kDead;  // ApplyToDevice revives it
    WatchIfAdaptive(di, s.platform);
    // No timer entry yet: the signal below schedules the only one.
    d.due = ToTime32(now_ms + kUnscheduled);
    created = true;
  }
  Device& d = devices_.at(di);
  const Platform old_platform = d.platform;
  const uint32_t old_gateway = GatewayOf(di);
  if (a.gateway != 0) SetGateway(di, a.gateway);
  absl::Status st = ApplyToDevice(di, s.session_id, s.platform, s.source, s.activity,
                                  a.timestamp_ms, s.trace_id, now_ms, /*limit=*/!a.replay);
  if (!st.ok()) {
    SetGateway(di, old_gateway);
    if (created) FreeDevice(di, now_ms);  // cannot happen today; never leave it unscheduled
    return st;
  }
  if (old_platform != s.platform && Evaluate(di, now_ms).live) {
    MarkDirty(d.user(), Cause::kSignal, s.trace_id, now_ms);
  }
  if (handle != nullptr) *handle = HandleOf(di);
  return absl::OkStatus();
}

absl::Status Shard::Apply(const AcceptedSignal& s, int64_t now_ms, DeviceHandle* handle) {
  internal::MutexLock lock(&mu_);
  return ApplyLocked(s, now_ms, handle);
}

void Shard::ApplyMany(const AcceptedSignal* signals, size_t n, int64_t now_ms,
                      BatchResult* result) {
  // Group prefetching: for each group of up to kGroup signals, each stage of
  // dependent loads is started for the whole group before the next stage
  // reads the first signal's, so the cache misses of a group overlap where
  // one Apply after another waits for each in turn. The stages: the index
  // group of the user id and the signal itself; the user record and the id
  // bytes; the user's first device; its second. A batch of 256 over 16
  // shards gives each shard about 16 signals, too few to fill a software
  // pipeline (one tried here ran its stages back to back). Prefetches only
  // read: every signal is applied, in order, exactly as Apply would, with
  // the user found at the third stage as a hint.
  constexpr size_t kGroup = 32;
  uint32_t found[kGroup];  // the user of each signal of the group, from the third stage
  internal::MutexLock lock(&mu_);
  for (size_t begin = 0; begin < n; begin += kGroup) {
    const AcceptedSignal* g = signals + begin;
    const size_t m = std::min(kGroup, n - begin);
    for (size_t j = 0; j < m; ++j) PrefetchIndex(g[j]);
    for (size_t j = 0; j < m; ++j) PrefetchUser(g[j]);
    for (size_t j = 0; j < m; ++j) found[j] = PrefetchDevice(g[j]);
    for (size_t j = 0; j < m; ++j) PrefetchNextDevice(g[j], found[j]);
    for (size_t j = 0; j < m; ++j) {
      CountOutcome(ApplyLocked(g[j], now_ms, nullptr, found[j]), result);
    }
  }
}

void Shard::PrefetchIndex(const AcceptedSignal& a) const {
  index_by_id_.Prefetch(a.hash);
  Prefetch(a.signal);
  Prefetch(reinterpret_cast<const char*>(a.signal + 1) - 1);
}

void Shard::PrefetchUser(const AcceptedSignal& a) const {
  // The first slot whose hash bits match: almost always the user sought.
  (void)index_by_id_.Find(a.hash, [this](uint32_t u) {
    Prefetch(&users_[u]);
    return true;
  });
  Prefetch(a.signal->user_id.data());
  Prefetch(a.signal->device_id.data());
}

namespace {
void PrefetchRecord(const Device& d) {
  const char* p = reinterpret_cast<const char*>(&d);
  Prefetch(p);
  Prefetch(p + sizeof(Device) - 1);  // a record may straddle two cache lines
}
}  // namespace

uint32_t Shard::PrefetchDevice(const AcceptedSignal& a) const {
  const uint32_t u = FindUser(a.signal->user_id, a.hash);
  const uint32_t first = u == kNone ? kNone : users_[u].first_device();
  if (first != kNone) PrefetchRecord(devices_.at(first));
  return u;
}

void Shard::PrefetchNextDevice(const AcceptedSignal& a, uint32_t u) {
  if (u == kNone || !users_[u].in_use) return;
  const uint32_t first = users_[u].first_device();
  if (first == kNone) return;
  const Device& d = devices_.at(first);
  if (d.next() != kNone && d.id.view() != a.signal->device_id) PrefetchRecord(devices_.at(d.next()));
}

void CountOutcome(absl::Status st, BatchResult* result) {
  if (st.ok()) {
    ++result->applied;
    return;
  }
  if (absl::IsFailedPrecondition(st)) {
    ++result->stale;
  } else {
    ++result->rejected;
  }
  if (result->first_error.ok()) result->first_error = std::move(st);
}

absl::Status Shard::BeatLocked(uint32_t index, uint32_t gen, Activity activity, Source source,
                               int64_t now_ms) {
  internal::MutexLock lock(&mu_);
  Device& d = devices_.at(index);
  if (d.phase == Phase::kFree || d.gen() != gen || (d.flags & dflag::kClosed)) {
    return Drop(DropReason::kClosedHandle, "handle is closed or expired");
  }
  return ApplyToDevice(index, d.session, d.platform, source, activity, now_ms, 0, now_ms);
}

absl::Status Shard::CloseSession(uint32_t di, DisconnectKind kind, int64_t now_ms,
                                 DeviceEvent clean_end) {
  Device& d = devices_.at(di);
  const DeviceView before = Evaluate(di, now_ms);
  EndProbing(di, /*gave_up=*/false);  // the session is over: answers are late
  d.flags |= dflag::kClosed;
  MarkStoreDirty(di);
  if (d.phase == Phase::kDead) {  // already not counted
    d.bump_gen(d.bits());
    return absl::OkStatus();
  }
  if (kind == DisconnectKind::kAbrupt && before.live) {
    d.bump_gen(d.bits() & ~(fast::kAllLive | fast::kOpen));
    d.phase = Phase::kGrace;
    d.flags = before.online ? (d.flags | dflag::kGraceOnline) : (d.flags & ~dflag::kGraceOnline);
    Schedule(di, now_ms + config_->options.reconnect_grace_ms, now_ms);
    Audit(di, DeviceEvent::kGrace, now_ms);
    // What it shows during the grace may differ from what was last published
    // (a source lapsed since the last tick).
    MarkDirty(d.user(), Cause::kDisconnect, 0, now_ms);
    return absl::OkStatus();
  }
  d.bump_gen(d.bits() & ~(fast::kAllLive | fast::kOpen));
  MarkDead(di, kind == DisconnectKind::kAbrupt ? DeviceEvent::kDeadAbrupt : clean_end, now_ms);
  return absl::OkStatus();
}

absl::Status Shard::DisconnectHandle(uint32_t index, uint32_t gen, DisconnectKind kind,
                                     int64_t now_ms) {
  internal::MutexLock lock(&mu_);
  Device* d = devices_.Find(index);
  if (d == nullptr || d->phase == Phase::kFree || d->gen() != gen || (d->flags & dflag::kClosed)) {
    return Drop(DropReason::kClosedHandle, "handle is closed or expired");
  }
  return CloseSession(index, kind, now_ms);
}

absl::Status Shard::DisconnectDevice(absl::string_view user_id, uint64_t hash,
                                     absl::string_view device_id, uint64_t session_id,
                                     DisconnectKind kind, int64_t now_ms) {
  internal::MutexLock lock(&mu_);
  if (auto st = config_->check_owned(hash); !st.ok()) return st;
  const uint32_t u = FindUser(user_id, hash);
  const uint32_t di = u == kNone ? kNone : FindDevice(users_[u], device_id);
  if (di == kNone) return absl::NotFoundError("unknown device");
  const Device& d = devices_.at(di);
  if (session_id != 0 && session_id < d.session) {
    return Drop(DropReason::kStaleSession, "stale disconnect: older session");
  }
  if (session_id != 0 && session_id > d.session) {
    return absl::NotFoundError("no such session");
  }
  if (d.flags & dflag::kClosed) return absl::NotFoundError("device is already disconnected");
  return CloseSession(di, kind, now_ms);
}

// ---- Overrides --------------------------------------------------------------

absl::StatusOr<uint64_t> Shard::SetOverride(absl::string_view user_id, uint64_t hash,
                                            OverrideState state, int64_t until_ms,
                                            uint64_t trace_id, int64_t now_ms, uint64_t chosen_id,
                                            int64_t set_at_ms, bool* added) {
  internal::MutexLock lock(&mu_);
  if (added != nullptr) *added = false;
  if (auto st = config_->check_owned(hash); !st.ok()) return st;
  uint32_t u = FindUser(user_id, hash);
  if (chosen_id != 0 && u != kNone && users_[u].has_overrides) {
    for (const Override& o : *StackOf(users_[u])) {
      if (o.id == chosen_id) return chosen_id;  // held already: a replay or a retry
    }
  }
  if (u != kNone && users_[u].has_overrides &&
      StackOf(users_[u])->size() >= static_cast<size_t>(config_->options.max_overrides_per_user)) {
    return Drop(DropReason::kLimit, "user has the most overrides allowed");
  }
  if (u == kNone) {
    if (!UserRoom()) return Drop(DropReason::kLimit, kNoUserRoom);
    if (!Charge(UserCharge(user_id))) {
      return Drop(DropReason::kLimit, "memory budget reached: no new users");
    }
    u = AddUser(user_id, hash);
  }
  Settle(u, now_ms);
  User& user = users_[u];
  MakeStack(u);
  const uint64_t id =
      chosen_id != 0 ? chosen_id : config_->next_override_id->fetch_add(1, std::memory_order_relaxed);
  StackOf(user)->push_back(Override{id, chosen_id != 0 ? set_at_ms : now_ms, until_ms, state});
  ++override_count_;
  if (added != nullptr) *added = true;
  if (until_ms != 0) user_timers_.insert({until_ms, u});
  UpdateHidden(u, now_ms);
  MarkDirty(u, Cause::kOverride, trace_id, now_ms);
  return id;
}

void Shard::Settle(uint32_t u, int64_t now_ms) {
  if (!users_[u].has_overrides) return;
  RemoveOverrides(
      u, now_ms, Cause::kOverrideExpiry,
      [](const Override& o, const void* arg) {
        return !o.active(*static_cast<const int64_t*>(arg));
      },
      &now_ms);
}

void Shard::UpdateHidden(uint32_t u, int64_t now_ms) {
  User& user = users_[u];
  const Override* top = TopOverride(StackOf(user), now_ms);
  const bool hidden = top != nullptr && top->state == OverrideState::kInvisible;
  if (hidden && !user.hidden) StackOf(user)->hidden_last_seen_ms = TrueLastSeen(user, now_ms);
  user.hidden = hidden;
  bool guarded = false;
  if (!hidden && user.has_overrides) {
    for (const Override& o : *StackOf(user)) {
      guarded |= o.state == OverrideState::kInvisible && o.active(now_ms);
    }
  }
  if (guarded == user.guarded) return;
  user.guarded = guarded;
  for (uint32_t di = user.first_device(); di != kNone; di = devices_.at(di).next()) {
    Device& d = devices_.at(di);
    if (d.phase != Phase::kLive) continue;
    d.set_bits(MayBeatUnlocked(d) ? (d.bits() | fast::kOpen) : (d.bits() & ~fast::kOpen));
  }
}

bool Shard::MayBeatUnlocked(const Device& d) const { return !users_[d.user()].guarded; }

void Shard::WatchIfAdaptive(uint32_t di, Platform platform) {
  if (config_->policy.detector == nullptr ||
      !(config_->options.detector_platforms & (1u << static_cast<int>(platform)))) {
    return;
  }
  devices_.at(di).flags |= dflag::kAdaptive;
  devices_.Watch(di);
  config_->policy.detector->Forget(DeviceKey(di));
}

size_t Shard::RemoveOverrides(uint32_t u, int64_t now_ms, Cause cause,
                              bool (*pred)(const Override&, const void*), const void* arg) {
  User& user = users_[u];
  if (!user.has_overrides) return 0;
  auto& v = *StackOf(user);
  const size_t before = v.size();
  v.erase(std::remove_if(v.begin(), v.end(), [&](const Override& o) { return pred(o, arg); }),
          v.end());
  const size_t removed = before - v.size();
  override_count_ -= removed;
  if (removed == 0) return 0;
  MarkDirty(u, cause, 0, now_ms);
  if (v.empty()) {
    DropStack(u);
  }
  UpdateHidden(u, now_ms);
  return removed;
}

absl::StatusOr<size_t> Shard::RevokeWhere(absl::string_view user_id, uint64_t hash,
                                          int64_t now_ms,
                                          bool (*pred)(const Override&, const void*),
                                          const void* arg) {
  internal::MutexLock lock(&mu_);
  if (auto st = config_->check_owned(hash); !st.ok()) return st;
  const uint32_t u = FindUser(user_id, hash);
  if (u == kNone) return absl::NotFoundError("unknown user");
  Settle(u, now_ms);
  const size_t removed = RemoveOverrides(u, now_ms, Cause::kOverride, pred, arg);
  ForgetUserIfEmpty(u, now_ms);
  return removed;
}

absl::Status Shard::RevokeOverride(absl::string_view user_id, uint64_t hash, uint64_t id,
                                   int64_t now_ms) {
  absl::StatusOr<size_t> removed = RevokeWhere(
      user_id, hash, now_ms,
      [](const Override& o, const void* arg) { return o.id == *static_cast<const uint64_t*>(arg); },
      &id);
  if (!removed.ok()) return removed.status();
  if (*removed == 0) return absl::NotFoundError("user has no override with that id");
  return absl::OkStatus();
}

absl::StatusOr<size_t> Shard::ClearOverrides(absl::string_view user_id, uint64_t hash,
                                             int64_t now_ms) {
  return RevokeWhere(user_id, hash, now_ms, [](const Override&, const void*) { return true; },
                     nullptr);
}

size_t Shard::RevokeOverridesSetBetween(int64_t from_ms, int64_t to_ms, int64_t now_ms,
                                        absl::FunctionRef<bool(absl::string_view)> which) {
  internal::MutexLock lock(&mu_);
  const std::pair<int64_t, int64_t> window{from_ms, to_ms};
  std::vector<uint32_t> users;
  users.reserve(overrides_.size());
  for (const auto& [user, stack] : overrides_) {
    if (which(user->id.view())) users.push_back(stack->user);
  }
  size_t removed = 0;
  for (uint32_t u : users) {
    Settle(u, now_ms);
    removed += RemoveOverrides(
        u, now_ms, Cause::kOverride,
        [](const Override& o, const void* arg) {
          const auto* w = static_cast<const std::pair<int64_t, int64_t>*>(arg);
          return o.set_at_ms >= w->first && o.set_at_ms <= w->second;
        },
        &window);
    ForgetUserIfEmpty(u, now_ms);
  }
  return removed;
}

absl::StatusOr<std::vector<OverrideInfo>> Shard::ListOverrides(absl::string_view user_id,
                                                               uint64_t hash, int64_t now_ms) {
  internal::MutexLock lock(&mu_);
  const uint32_t u = FindUser(user_id, hash);
  if (u == kNone) return absl::NotFoundError("unknown user");
  std::vector<OverrideInfo> out;
  if (users_[u].has_overrides) {
    for (const Override& o : *StackOf(users_[u])) {
      if (o.active(now_ms)) out.push_back(InfoOf(o));
    }
  }
  return out;
}

// ---- Queries ----------------------------------------------------------------

UserPresence Shard::Get(absl::string_view user_id, uint64_t hash, bool self_view,
                        bool published, int64_t now_ms) {
  internal::MutexLock lock(&mu_);
  UserPresence p;
  p.user_id = std::string(user_id);
  const uint32_t u = FindUser(user_id, hash);
  if (u == kNone) return p;
  const User& user = users_[u];
  const UserView v = ViewUser(user, now_ms);
  const Override* shown;
  if (self_view) {
    p.known = true;
    p.state = published ? user.pub_self : v.reduced.self_state;
    p.version = user.version;
    p.last_seen_ms = v.last_seen_ms;
    p.devices = v.devices;
    shown = v.reduced.shown;
  } else {
    const PublicView pub =
        PublicOf(user, v, published ? user.pub_state : v.reduced.state, now_ms);
    if (!pub.known) return p;
    p.known = true;
    p.state = pub.state;
    p.version = user.public_version;
    p.last_seen_ms = pub.last_seen_ms;
    p.devices = pub.devices;
    shown = pub.shown;
  }
  if (shown != nullptr) {
    p.has_override = true;
    p.override_state = shown->state;
    p.override_until_ms = shown->until_ms;
  }
  p.freshness_ms = p.last_seen_ms == 0 ? 0 : std::max<int64_t>(0, now_ms - p.last_seen_ms);
  return p;
}

// ---- Time -------------------------------------------------------------------

void Shard::FireDevice(uint32_t di, int64_t now_ms) {
  Device& d = devices_.at(di);
  if (Diff32(d.due, ToTime32(now_ms)) > 0) return;  // not yet
  switch (d.phase) {
    case Phase::kFree:
      break;
    case Phase::kDead:
      FreeDevice(di, now_ms);
      break;
    case Phase::kGrace:
      MarkDead(di, DeviceEvent::kDeadAfterGrace, now_ms);
      break;
    case Phase::kLive: {
      const DeviceView now_view = Evaluate(di, now_ms);
      if (!now_view.live) {
        MarkDead(di, DeviceEvent::kDeadTimeout, now_ms);
        break;
      }
      // Still live (it signalled since this timer was set, or another source
      // keeps it), but a source may have lapsed, which can change its activity.
      const uint32_t bits = d.bits();
      DeviceView before;
      before.live = (bits & fast::kAllLive) != 0;
      before.online = CountsOnline(bits & fast::kAllLive, bits, config_->policy);
      int64_t due = now_view.deadline_ms;
      if (config_->policy.probing) due = std::min(due, ProbeStep(di, now_view, now_ms));
      Schedule(di, Recheck(due, now_ms), now_ms);
      Refresh(di, before, Cause::kTimeout, 0, now_ms, /*stayed_live=*/true);
      // It signalled since its timer was set, maybe only through the
      // lock-free beat, which writes nothing: once per deadline, its record
      // goes to the Store, so that last_seen never moves back on a restart.
      MarkStoreDirty(di);
      break;
    }
  }
}

int64_t Shard::Recheck(int64_t due_ms, int64_t now_ms) {
  const int64_t coarse = due_ms & ~(kRecheckGridMs - 1);
  return coarse > now_ms ? coarse : due_ms;
}

Time32 Shard::SweepBlock(uint32_t first, uint32_t end, int64_t now_ms) {
  // A timer that fires may set itself again at or before now (a probe
  // catching up after a long tick, a retention of 0): it fires again, as
  // often as that, within this tick.
  constexpr int kMaxFiresPerTick = 16;
  const Time32 now = ToTime32(now_ms);
  Time32 least = now + TimerSweep::kIdleMs;
  for (uint32_t di = first; di < end; ++di) {
    const Device* d = devices_.Find(di);
    if (d == nullptr) break;  // past the last chunk
    if (d->phase == Phase::kFree) continue;
    if (Diff32(d->due, now) <= 0) {
      for (int k = 0; k < kMaxFiresPerTick; ++k) {
        const Time32 due = d->due;
        firing_ = &due;
        FireDevice(di, now_ms);
        firing_ = nullptr;
        if (d->phase == Phase::kFree || Diff32(d->due, now) > 0) break;
      }
    }
    if (d->phase != Phase::kFree && Diff32(d->due, least) < 0) least = d->due;
  }
  return least;
}

int64_t Shard::ProbeStep(uint32_t di, const DeviceView& v, int64_t now_ms) {
  constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
  if (v.quiet_at_ms > now_ms) {  // it signalled since it went quiet, or never did
    EndProbing(di, /*gave_up=*/false);
    return v.quiet_at_ms;
  }
  const Device& d = devices_.at(di);
  const Options& o = config_->options;
  Probing& p = probing_[di];
  if (p.session != d.session || p.silent_since_ms != v.last_signal_ms) {
    // A new silence (or the first): the probes of an earlier one are over.
    for (int k = 0; k < p.sent; ++k) awaited_.erase(p.ids[k]);
    p = Probing{};
    p.session = d.session;
    p.silent_since_ms = v.last_signal_ms;
  }
  if (p.tries >= o.max_probes) return kNever;  // its deadline decides
  // Probes are anchored to the moment it went quiet, not to the tick that
  // noticed: at quiet_at, quiet_at + retry, ...
  const int64_t due = v.quiet_at_ms + p.tries * o.probe_retry_ms;
  if (now_ms < due) return due;
  ++p.tries;
  const int64_t next = p.tries < o.max_probes ? v.quiet_at_ms + p.tries * o.probe_retry_ms : kNever;
  if (!config_->probe_budget->Take(GatewayOf(di), now_ms,
                                   static_cast<uint32_t>(o.max_probes_per_gateway_per_sec))) {
    ++counters_.probes_throttled;
    return next;
  }
  const uint64_t id = (uint64_t{index_} << 56) | ++probe_seq_;
  const Source source = static_cast<Source>(v.probe_source + 1);
  p.ids[p.sent++] = id;
  awaited_[id] = Awaited{di, source};
  ++counters_.probes_sent;
  OutgoingProbe& out = outgoing_.emplace_back();
  out.user_id = std::string(users_[d.user()].id.view());
  out.device_id = std::string(d.id.view());
  out.session_id = d.session;
  out.probe_id = id;
  out.source = source;
  out.gateway = config_->gateways->Name(GatewayOf(di));
  out.attempt = p.tries;
  return next;
}

bool Shard::EndProbing(uint32_t di, bool gave_up) {
  if (probing_.empty()) return false;
  auto it = probing_.find(di);
  if (it == probing_.end()) return false;
  const Probing& p = it->second;
  gave_up = gave_up && p.sent > 0;
  if (gave_up) ++counters_.probes_given_up;
  for (int k = 0; k < p.sent; ++k) awaited_.erase(p.ids[k]);
  probing_.erase(it);
  return gave_up;
}

absl::Status Shard::AnswerProbe(uint64_t probe_id, int64_t now_ms) {
  internal::MutexLock lock(&mu_);
  auto it = awaited_.find(probe_id);
  if (it == awaited_.end()) {
    const uint64_t seq = probe_id & ((uint64_t{1} << 56) - 1);
    if (seq == 0 || seq > probe_seq_) return absl::NotFoundError("no probe with that id was sent");
    ++counters_.probes_late;
    return absl::FailedPreconditionError(
        "late probe answer: the device signalled, died or disconnected since; nothing applied");
  }
  const uint32_t di = it->second.device;
  const Source source = it->second.source;
  // offline_after is the upper bound (rule 9): past its deadline the device
  // died, whether or not a timer noticed yet.
  if (!Evaluate(di, now_ms).live) {
    MarkDead(di, DeviceEvent::kDeadTimeout, now_ms);
    ++counters_.probes_late;
    return absl::FailedPreconditionError(
        "late probe answer: the device's offline_after passed first; nothing applied");
  }
  EndProbing(di, /*gave_up=*/false);
  ++counters_.probes_answered;
  Audit(di, DeviceEvent::kProbeAnswered, now_ms);
  Device& d = devices_.at(di);
  // The answer says the device is there, not what its user does: the
  // source keeps the activity it last had.
  const Activity activity =
      (d.bits() & fast::ActiveBit(SourceIndex(source))) ? Activity::kActive : Activity::kIdle;
  return ApplyToDevice(di, d.session, d.platform, source, activity, now_ms, 0, now_ms,
                       /*limit=*/false, /*probe_answer=*/true);
}

void Shard::FireUser(uint32_t u, int64_t now_ms) {
  if (!users_[u].in_use) return;
  Settle(u, now_ms);
  ForgetUserIfEmpty(u, now_ms);
}

absl::Status Shard::Tick(int64_t now_ms, std::vector<ChangeEvent>* out,
                        TickObservations* observed, std::vector<OutgoingProbe>* probes,
                        std::vector<DeviceTransition>* audit) {
  internal::MutexLock lock(&mu_);
  if (!forgotten_.empty()) {
    const uint64_t floor = static_cast<uint64_t>(now_ms) << 10;
    absl::erase_if(forgotten_, [&](const auto& e) {
      return std::max(e.second.version, e.second.public_version) < floor;
    });
  }
  timers_.Advance(ToTime32(now_ms), [&](uint32_t first, uint32_t end) {
    return SweepBlock(first, end, now_ms);
  });
  // The probes the timers sent go out even when the store write below
  // fails: they change no record.
  for (OutgoingProbe& p : outgoing_) probes->push_back(std::move(p));
  outgoing_.clear();
  for (DeviceTransition& t : audit_) audit->push_back(std::move(t));
  audit_.clear();
  while (!user_timers_.empty() && user_timers_.begin()->first <= now_ms) {
    const uint32_t u = user_timers_.begin()->second;
    user_timers_.erase(user_timers_.begin());
    FireUser(u, now_ms);
  }

  // Decide, for every user with news, whether to publish, hold (dwell) or
  // settle (back where it was last published).
  const int64_t dwell = config_->options.min_dwell_ms;
  decisions_.clear();
  for (Pending& pending : pending_) {
    User& user = users_[pending.user];
    Decision d;
    if (now_ms < pending.hold_until_ms) {
      // Held by the dwell, and nothing new since it was looked at: no need
      // to evaluate (or write) it again before the dwell ends.
      d.what = Decision::kHoldUnchanged;
      decisions_.push_back(d);
      continue;
    }
    d.view = ViewUser(user, now_ms);
    d.pub = PublicOf(user, d.view, d.view.reduced.state, now_ms);
    // Each view has its own dwell, so that a change only the user sees
    // never delays one that others see (rule 8).
    auto dwell_end = [&](int64_t published_at) {
      return dwell > 0 && published_at != 0 && now_ms < published_at + dwell ? published_at + dwell
                                                                              : 0;
    };
    const bool public_moved = d.pub.state != user.pub_state;
    const bool self_moved = d.view.reduced.self_state != user.pub_self;
    const UserTimes times = TimesOf(pending.user);
    const int64_t public_hold = public_moved ? dwell_end(times.published_at_ms) : 0;
    const int64_t self_hold = self_moved ? dwell_end(times.self_published_at_ms) : 0;
    d.public_change = public_moved && public_hold == 0;
    d.self_change = self_moved && self_hold == 0;
    // Looked at again when the first held view's dwell ends: one view's
    // dwell must not hold the other back.
    const int64_t next_look = public_hold == 0  ? self_hold
                              : self_hold == 0 ? public_hold
                                               : std::min(public_hold, self_hold);
    if (!public_moved && !self_moved) {
      d.what = Decision::kSettle;
    } else if (!d.public_change && !d.self_change) {
      d.what = Decision::kHold;
      pending.hold_until_ms = next_look;
    } else {
      d.what = Decision::kPublish;
      d.pub_state = d.public_change ? d.pub.state : user.pub_state;
      d.self_state = d.self_change ? d.view.reduced.self_state : user.pub_self;
      d.version = NextVersion(user.version, now_ms);
      d.public_version =
          d.public_change ? NextVersion(user.public_version, now_ms) : user.public_version;
      // A part held by its dwell stays pending.
      pending.hold_until_ms = d.public_change ? self_hold : public_hold;
    }
    decisions_.push_back(d);
  }

  // Write-through: what is about to be published is durable first. A failed
  // write publishes nothing of this shard; everything stays pending, and the
  // next tick writes the then-current records.
  if (Store* store = config_->options.store) {
    StoreBatch batch;
    BuildStoreBatch(now_ms, &batch);
    if (!batch.empty()) {
      absl::Status st =
          Timed(observed->clock, &observed->store, [&] { return store->Write(batch); });
      ++store_writes_;
      if (!st.ok()) {
        ++store_errors_;
        return st;
      }
      erasures_.clear();
      gone_.clear();
      for (uint32_t di : store_dirty_) devices_.at(di).flags &= ~dflag::kStoreDirty;
      store_dirty_.clear();
    }
  }

  // Erasures first: a user erased and back within one tick is published
  // anew after its erasure.
  for (ChangeEvent& e : erased_) {
    e.published_at_ms = now_ms;
    out->push_back(std::move(e));
  }
  erased_.clear();
  size_t kept = 0;
  for (size_t i = 0; i < pending_.size(); ++i) {
    Pending pending = pending_[i];
    const Decision& d = decisions_[i];
    User& user = users_[pending.user];
    if (d.what == Decision::kPublish) {
      ChangeEvent& e = out->emplace_back();
      e.user_id = std::string(user.id.view());
      e.previous = user.pub_state;
      e.previous_self = user.pub_self;
      FillView(user, d.view, d.pub, d.pub_state, d.self_state, now_ms, &e);
      UserTimes times = TimesOf(pending.user);
      if (d.public_change) times.published_at_ms = now_ms;
      if (d.self_change) times.self_published_at_ms = now_ms;
      SetVersions(pending.user, d.version, d.public_version, times);
      e.version = d.version;
      e.public_version = d.public_version;
      e.cause = pending.cause;
      e.trace_id = pending.trace_id;
      e.changed_at_ms = pending.since_ms;
      e.published_at_ms = now_ms;
      user.pub_state = d.pub_state;
      user.pub_self = d.self_state;
      ++counters_.transitions[static_cast<int>(pending.cause) - 1];
      observed->publish.Observe(now_ms - pending.since_ms);
    }
    if (d.what == Decision::kHold || d.what == Decision::kHoldUnchanged ||
        (d.what == Decision::kPublish && pending.hold_until_ms > now_ms)) {
      // Published (the rest of it) when its dwell ends.
      user.set_pending(static_cast<uint32_t>(kept));
      pending_[kept++] = pending;
      continue;
    }
    user.set_pending(kNone);
    ForgetUserIfEmpty(pending.user, now_ms);
  }
  pending_.resize(kept);
  decisions_.clear();
  ReleaseBurst(pending_);
  ReleaseBurst(decisions_);
  return absl::OkStatus();
}

void Shard::FillView(const User& user, const UserView& v, const PublicView& pub, State pub_state,
                     State self_state, int64_t now_ms, ChangeEvent* e) {
  e->state = pub_state;
  e->self_state = self_state;
  e->invisible = v.reduced.invisible;
  e->last_seen_ms = pub.last_seen_ms;
  e->self_last_seen_ms = v.last_seen_ms;
  e->devices = pub.devices;
  e->self_devices = v.devices;
  // A view held back by its dwell shows its published state, which the
  // override now on top may not have made: none is shown with it.
  // Others learn its state and end, as Get shows them, not its id or when
  // it was set: ids count every override set, invisible ones too (rule 8).
  if (pub.shown != nullptr && pub.state == pub_state) {
    e->shown_override = OverrideInfo{0, pub.shown->state, 0, pub.shown->until_ms};
  }
  if (v.reduced.shown != nullptr && v.reduced.self_state == self_state) {
    e->self_shown_override = InfoOf(*v.reduced.shown);
  }
  if (user.has_overrides) {
    for (const Override& o : *StackOf(user)) {
      if (o.active(now_ms)) e->self_overrides.push_back(InfoOf(o));
    }
  }
}

void Shard::AppendPublished(int64_t now_ms, absl::FunctionRef<bool(absl::string_view)> which,
                            std::vector<ChangeEvent>* out) {
  internal::MutexLock lock(&mu_);
  for (uint32_t u = 0; u < users_.size(); ++u) {
    const User& user = users_[u];
    if (!user.in_use || user.version == 0 || !which(user.id.view())) continue;
    ChangeEvent& e = out->emplace_back();
    e.user_id = std::string(user.id.view());
    const UserView v = ViewUser(user, now_ms);
    // The state as published, not as it may be about to change.
    FillView(user, v, PublicOf(user, v, user.pub_state, now_ms), user.pub_state, user.pub_self,
             now_ms, &e);
    e.previous = user.pub_state;
    e.previous_self = user.pub_self;
    e.version = user.version;
    e.public_version = user.public_version;
    e.cause = Cause::kMerge;
    e.changed_at_ms = e.published_at_ms = TimesOf(u).published_at_ms;
  }
}

void Shard::AddStats(int64_t now_ms, Stats* stats) {
  internal::MutexLock lock(&mu_);
  stats->counters.Add(counters_);
  stats->sizes.users += index_by_id_.size();
  stats->sizes.devices += devices_.used();
  stats->sizes.live_devices += live_devices_;
  stats->sizes.overrides += override_count_;
  stats->store_writes += store_writes_;
  stats->store_errors += store_errors_;
  for (uint32_t u = 0; u < users_.size(); ++u) {
    const User& user = users_[u];
    if (!user.in_use || user.pub_state == State::kOffline) continue;
    ++stats->live_users;
    if (Stale(user, now_ms)) ++stats->stale_users;
  }
}

// Stale: no source of any of the user's devices signalled within that
// source's own offline_after, so an INFERRED-only device that reports once a
// minute is fresh for as long as INFERRED's threshold says.
bool Shard::Stale(const User& user, int64_t now_ms) const {
  for (uint32_t di = user.first_device(); di != kNone; di = devices_.at(di).next()) {
    const Device& d = devices_.at(di);
    for (int i = 0; i < kSourceCount; ++i) {
      if (!d.has_seen(i)) continue;
      const int64_t last = Expand32(d.seen[i].load(std::memory_order_relaxed), now_ms);
      if (now_ms - last <= config_->policy.offline_after_ms[i]) return false;
    }
  }
  return true;
}

}  // namespace presence::internal
