// The shard's side of durable state: the records it writes through to the
// Store, loading them back (rebuild), erasure, and draining a gateway.
#include <algorithm>

#include "absl/container/flat_hash_set.h"

#include "src/core/shard.h"

namespace presence::internal {

UserRecord Shard::UserRecordOf(uint32_t u, const Decision* d, int64_t now_ms) {
  const User& user = users_[u];
  const bool publish = d != nullptr && d->what == Decision::kPublish;
  UserRecord r;
  r.user_id = std::string(user.id.view());
  r.version = NextRecordVersion(now_ms);
  r.state_version = publish ? d->version : user.version;
  r.public_version = publish ? d->public_version : user.public_version;
  r.state = publish ? d->pub_state : user.pub_state;
  r.self_state = publish ? d->self_state : user.pub_self;
  r.last_seen_ms = d != nullptr ? d->view.last_seen_ms : user.last_seen_ms;
  r.published_at_ms = publish && d->public_change ? now_ms : TimesOf(u).published_at_ms;
  r.hidden_last_seen_ms = user.hidden ? StackOf(user)->hidden_last_seen_ms : 0;
  if (user.has_overrides) {
    for (const Override& o : *StackOf(user)) {
      if (o.active(now_ms)) r.overrides.push_back({o.id, o.state, o.set_at_ms, o.until_ms});
    }
  }
  return r;
}

DeviceRecord Shard::DeviceRecordOf(uint32_t di, int64_t now_ms) {
  const Device& d = devices_.at(di);
  DeviceRecord r;
  r.user_id = std::string(users_[d.user()].id.view());
  r.device_id = std::string(d.id.view());
  r.session_id = d.session;
  r.platform = d.platform;
  const uint32_t bits = d.bits();
  for (int i = 0; i < kSourceCount; ++i) {
    if (d.has_seen(i)) r.last_signal_ms[i] = Expand32(d.seen[i].load(std::memory_order_relaxed), now_ms);
    r.activity[i] = (bits & fast::ActiveBit(i)) ? Activity::kActive : Activity::kIdle;
  }
  r.closed = d.flags & dflag::kClosed;
  r.gateway = config_->gateways->Name(GatewayOf(di));
  r.version = NextRecordVersion(now_ms);
  return r;
}

void Shard::BuildStoreBatch(int64_t now_ms, StoreBatch* batch) {
  // Whoever owns a partition writes its users: never one this engine let go.
  auto owned = [&](absl::string_view user_id) {
    return config_->check_owned(HashUserId(user_id)).ok();
  };
  batch->erasures = erasures_;
  for (size_t i = 0; i < pending_.size(); ++i) {
    if (decisions_[i].what == Decision::kHoldUnchanged) continue;  // written when first held
    if (!owned(users_[pending_[i].user].id.view())) continue;
    batch->users.push_back(UserRecordOf(pending_[i].user, &decisions_[i], now_ms));
  }
  for (uint32_t di : store_dirty_) {
    const Device& d = devices_.at(di);
    if ((d.flags & dflag::kStoreDirty) && d.phase != Phase::kFree &&
        owned(users_[d.user()].id.view())) {
      batch->devices.push_back(DeviceRecordOf(di, now_ms));
    }
  }
  for (const DeviceRecord& g : gone_) {
    if (!owned(g.user_id)) continue;
    batch->devices.push_back(g);
    batch->devices.back().version = NextRecordVersion(now_ms);
  }
}

absl::Status Shard::LoadUser(const UserRecord& r, uint64_t hash, int64_t now_ms,
                             int64_t* charged) {
  internal::MutexLock lock(&mu_);
  uint32_t u = FindUser(r.user_id, hash);
  if (u == kNone) {
    if (!UserRoom()) return absl::ResourceExhaustedError(kNoUserRoom);
    *charged += UserCharge(r.user_id);
    u = AddUser(r.user_id, hash);
  }
  // The records this shard writes next must win over what the store holds,
  // even when another engine whose clock ran ahead wrote it (a failover).
  record_clock_ = std::max(record_clock_, r.version);
  User& user = users_[u];
  UserTimes times = TimesOf(u);
  // Not after now: a record from an engine whose clock ran ahead must not
  // hold the next change back by more than one dwell.
  times.published_at_ms = std::min(r.published_at_ms, now_ms);
  SetVersions(u, std::max(user.version, r.state_version),
              std::max(user.public_version, r.public_version), times);
  user.pub_state = r.state;
  user.pub_self = r.self_state;
  user.last_seen_ms = std::max(user.last_seen_ms, r.last_seen_ms);
  for (const OverrideInfo& o : r.overrides) {
    if (o.until_ms != 0 && o.until_ms <= now_ms) continue;
    MakeStack(u);
    StackOf(user)->push_back(Override{o.id, o.set_at_ms, o.until_ms, o.state});
    ++override_count_;
    if (o.until_ms != 0) user_timers_.insert({o.until_ms, u});
    // Ids stay unique after a rebuild (the engine's own, below the ids
    // callers choose: those never move its counter).
    uint64_t next = config_->next_override_id->load(std::memory_order_relaxed);
    while (o.id < kFirstChosenOverrideId && next <= o.id &&
           !config_->next_override_id->compare_exchange_weak(next, o.id + 1)) {
    }
  }
  if (user.has_overrides) {
    // Stack order: by when each was set, and among those set in the same
    // millisecond by id, which grows with each one set.
    std::sort(StackOf(user)->begin(), StackOf(user)->end(), [](const Override& a, const Override& b) {
      return a.set_at_ms != b.set_at_ms ? a.set_at_ms < b.set_at_ms : a.id < b.id;
    });
  }
  // Hidden as it was when written: its public last_seen stays frozen where it
  // was (a user that went invisible while the engine was down freezes at its
  // last recorded one). Devices load after this and must not move it.
  const Override* top = TopOverride(StackOf(user), now_ms);
  user.hidden = top != nullptr && top->state == OverrideState::kInvisible;
  if (user.hidden) {
    StackOf(user)->hidden_last_seen_ms =
        r.hidden_last_seen_ms != 0 ? r.hidden_last_seen_ms : r.last_seen_ms;
  }
  UpdateHidden(u, now_ms);
  // The next tick compares what the records say was published with what
  // holds now (devices may have lapsed while the engine was down).
  MarkDirty(u, Cause::kMerge, 0, now_ms);
  return absl::OkStatus();
}

absl::Status Shard::LoadDevice(const DeviceRecord& r, uint64_t hash, uint32_t gateway,
                               int64_t now_ms, int64_t* charged) {
  internal::MutexLock lock(&mu_);
  uint32_t u = FindUser(r.user_id, hash);
  if (u == kNone) {
    if (!UserRoom()) return absl::ResourceExhaustedError(kNoUserRoom);
    *charged += UserCharge(r.user_id);
    u = AddUser(r.user_id, hash);
  }
  record_clock_ = std::max(record_clock_, r.version);  // as in LoadUser
  uint32_t di = FindDevice(users_[u], r.device_id);
  if (di != kNone) return absl::OkStatus();  // a Load visits each device once
  di = devices_.Allocate(*config_->epochs);
  if (di == kNone) return absl::ResourceExhaustedError("shard holds the most devices it can");
  *charged += DeviceCharge(r.device_id);
  User& user = users_[u];
  Device& d = devices_.at(di);
  d.flags = 0;
  d.id = ShortId(r.device_id);
  d.set_user(u);
  d.set_next(user.first_device());
  user.set_first_device(di);
  d.session = r.session_id;
  d.platform = r.platform;
  SetGateway(di, gateway);
  uint32_t bits = 0;
  for (int i = 0; i < kSourceCount; ++i) {
    if (r.last_signal_ms[i] != 0 && now_ms - r.last_signal_ms[i] < (int64_t{1} << 30)) {
      d.seen[i].store(ToTime32(r.last_signal_ms[i]), std::memory_order_relaxed);
      d.flags |= dflag::kSeen0 << i;
    }
    if (r.activity[i] == Activity::kActive) bits |= fast::ActiveBit(i);
  }
  d.set_bits(bits);
  WatchIfAdaptive(di, r.platform);
  if (r.closed) {
    d.flags |= dflag::kClosed;
    d.phase = Phase::kDead;
    Schedule(di, now_ms + config_->options.dead_retention_ms, now_ms);
  } else {
    d.phase = Phase::kLive;
    ++live_devices_;
    d.due = ToTime32(now_ms + kUnscheduled);
    Refresh(di, DeviceView{}, Cause::kMerge, 0, now_ms);  // schedules its timer
  }
  MarkDirty(u, Cause::kMerge, 0, now_ms);
  return absl::OkStatus();
}

void Shard::Unpend(uint32_t u) {
  const uint32_t i = users_[u].pending();
  if (i == kNone) return;
  pending_[i] = pending_.back();
  users_[pending_[i].user].set_pending(i);
  pending_.pop_back();
  users_[u].set_pending(kNone);
}

void Shard::EraseUser(absl::string_view user_id, uint64_t hash, int64_t now_ms) {
  internal::MutexLock lock(&mu_);
  erasures_.push_back({std::string(user_id), NextRecordVersion(now_ms)});
  // Its device transitions not yet handed out are forgotten too.
  audit_.erase(std::remove_if(audit_.begin(), audit_.end(),
                              [&](const DeviceTransition& t) { return t.user_id == user_id; }),
               audit_.end());
  // Its watchers are told with the next tick (after the erasure is
  // written), with versions above every one it had, each view's from that
  // view's own; whether or not it is held or was published here. One not
  // held may have been forgotten (Options::user_retention_ms) or another
  // owner's; one held may be back anew after being forgotten, while
  // watchers still hold its earlier life. Where nobody was told of the
  // user, the erasure changes nothing.
  const uint32_t u = FindUser(user_id, hash);
  Floors floors;
  ChangeEvent& e = erased_.emplace_back();
  e.user_id = std::string(user_id);
  e.erased = true;
  e.cause = Cause::kMerge;
  e.changed_at_ms = now_ms;
  if (u != kNone) {
    floors = Floors{users_[u].version, users_[u].public_version};
    e.previous = users_[u].pub_state;
    e.previous_self = users_[u].pub_self;
  } else if (auto it = forgotten_.find(user_id); it != forgotten_.end()) {
    floors = it->second;
  }
  e.version = NextVersion(floors.version, now_ms);
  e.public_version = NextVersion(floors.public_version, now_ms);
  if (u == kNone) {
    // Kept as a forgotten user's are: a later erasure, or the user back
    // anew, goes on above these versions.
    forgotten_[std::string(user_id)] = Floors{e.version, e.public_version};
    return;
  }
  User& user = users_[u];
  SetVersions(u, e.version, e.public_version, TimesOf(u));
  Unpend(u);
  if (user.has_overrides) {
    override_count_ -= StackOf(user)->size();
    DropStack(u);
    user.hidden = false;  // its frozen last_seen went with the stack
  }
  user.last_seen_ms = 0;
  while (user.first_device() != kNone) {
    const uint32_t di = user.first_device();
    if (devices_.at(di).phase != Phase::kDead) {
      devices_.at(di).phase = Phase::kDead;
      --live_devices_;
    }
    devices_.at(di).flags &= ~dflag::kStoreDirty;
    FreeDevice(di, now_ms);  // forgets the user with its last device
  }
  gone_.erase(std::remove_if(gone_.begin(), gone_.end(),
                             [&](const DeviceRecord& g) { return g.user_id == user_id; }),
              gone_.end());
  if (users_[u].in_use && users_[u].id.view() == user_id) ForgetUser(u, now_ms);
}

void Shard::SetGateway(uint32_t di, uint32_t g) {
  if (di >= device_gateway_.size()) {
    if (g == 0) return;
    device_gateway_.GrowTo(di + 1);
  }
  uint32_t& cur = device_gateway_[di];
  if (cur == g) return;
  if (cur != 0) --gateway_refs_[cur];
  if (g != 0) {
    if (g >= gateway_refs_.size()) gateway_refs_.resize(g + 1, 0);
    ++gateway_refs_[g];
  }
  cur = g;
}

void Shard::AddGatewayRefs(std::vector<uint64_t>* count) const {
  internal::MutexLock lock(&mu_);
  if (count->size() < gateway_refs_.size()) count->resize(gateway_refs_.size(), 0);
  for (size_t g = 0; g < gateway_refs_.size(); ++g) (*count)[g] += gateway_refs_[g];
}

size_t Shard::DrainGateway(const std::vector<uint32_t>& gs, size_t budget, int64_t now_ms,
                           absl::FunctionRef<bool(absl::string_view)> which, int64_t heard_until_ms) {
  const auto heard_after = [&](const Device& d) {
    for (int i = 0; i < kSourceCount; ++i) {
      if (d.has_seen(i) && Expand32(d.seen[i].load(std::memory_order_relaxed), now_ms) > heard_until_ms) {
        return true;
      }
    }
    return false;
  };
  internal::MutexLock lock(&mu_);
  size_t n = 0;
  for (uint32_t u = 0; u < users_.size() && n < budget; ++u) {
    if (!users_[u].in_use || !which(users_[u].id.view())) continue;
    for (uint32_t di = users_[u].first_device(); di != kNone && n < budget;
         di = devices_.at(di).next()) {
      const Device& d = devices_.at(di);
      if ((d.flags & dflag::kClosed) || std::find(gs.begin(), gs.end(), GatewayOf(di)) == gs.end() ||
          heard_after(d)) {
        continue;
      }
      (void)CloseSession(di, DisconnectKind::kClean, now_ms, DeviceEvent::kDeadDrained);
      ++n;
    }
  }
  return n;
}

size_t Shard::Release(int64_t now_ms, absl::FunctionRef<bool(absl::string_view)> drop) {
  internal::MutexLock lock(&mu_);
  absl::flat_hash_set<uint32_t> dropped;
  for (uint32_t u = 0; u < users_.size(); ++u) {
    if (!users_[u].in_use || !drop(users_[u].id.view())) continue;
    Unpend(u);
    User& user = users_[u];
    if (user.has_overrides) {
      override_count_ -= StackOf(user)->size();
      DropStack(u);
      user.hidden = false;  // its frozen last_seen went with the stack
    }
    user.last_seen_ms = 0;
    // Whoever takes the user over holds its records now: nothing of it is
    // written from here (FreeDevice queues a deletion per device).
    const size_t gone_before = gone_.size();
    while (user.first_device() != kNone) {
      const uint32_t di = user.first_device();
      Device& d = devices_.at(di);
      if (d.phase != Phase::kDead) {
        d.phase = Phase::kDead;
        --live_devices_;
      }
      d.flags &= ~dflag::kStoreDirty;
      FreeDevice(di, now_ms);
    }
    gone_.resize(gone_before);
    if (users_[u].in_use) ForgetUser(u, now_ms);
    dropped.insert(u);
  }
  if (!dropped.empty()) {
    for (auto it = user_timers_.begin(); it != user_timers_.end();) {
      it = dropped.contains(it->second) ? user_timers_.erase(it) : std::next(it);
    }
  }
  return dropped.size();
}

void Shard::Clear(int64_t now_ms) {
  Release(now_ms, [](absl::string_view) { return true; });
  internal::MutexLock lock(&mu_);
  // A rebuild writes nothing of what it dropped.
  gone_.clear();
  store_dirty_.clear();
  user_timers_.clear();
}

}  // namespace presence::internal
