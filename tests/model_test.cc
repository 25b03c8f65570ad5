// A randomized model test: thousands of random sequences of signals, handle
// beats, disconnects, overrides, clock jumps and ticks are driven through the
// public API, and every answer is compared with a small reference model of
// docs/design.md section 2 written for this test from the rules alone (it shares no
// code with src/; it recomputes each user's state from scratch at `now`).
//
// After every step, for every user, Get (public and own view) must match the
// model exactly. Every Tick's published events are checked too: each event
// says what the model says at the tick, consecutive events of a user never
// repeat a state, versions grow, events of a user are min_dwell apart, and a
// tick that the dwell does not hold back leaves the last published state equal
// to the model's (the final state is never lost).
//
// On a failure the test prints the seed and the full trace of calls, so the
// sequence can be replayed by hand.
#include <algorithm>
#include <cstdio>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/listener.h"
#include "presence/types.h"
#include "tests/test_util.h"

namespace presence::testing {
namespace {

// ---- The reference model ----------------------------------------------------
//
// The numbers are the documented defaults (presence/options.h), restated here
// on purpose: the model must not read them from the engine.
constexpr int64_t kStartMs = 1'000'000;
constexpr int64_t kReconnectGraceMs = 1500;
constexpr int64_t kMinDwellMs = 1000;
// Nothing is forgotten mid-run (see Sim::Sim).
constexpr int64_t kUserRetentionMs = int64_t{1} << 40;
constexpr Source kByPrecedence[] = {Source::kManual, Source::kApp, Source::kInferred};

int64_t OfflineAfterMs(Source s) {
  switch (s) {
    case Source::kInferred:
      return 240000;
    case Source::kApp:
      return 4000;
    case Source::kManual:
      return 4000;
  }
  return 0;
}

int Idx(Source s) { return static_cast<int>(s) - 1; }

struct MSource {
  bool seen = false;  // signalled in the current session
  int64_t last = 0;   // time of its latest signal in the current session
  bool active = false;
};

struct MDevice {
  uint64_t session = 0;
  bool closed = false;       // the current session was disconnected
  int64_t grace_until = 0;   // closed abruptly while live: live until then
  bool grace_online = false; // ... counting ONLINE iff it did when it closed
  MSource src[3];
  Platform platform = Platform::kWeb;

  bool SourceLive(Source s, int64_t now) const {
    const MSource& x = src[Idx(s)];
    return !closed && x.seen && now < x.last + OfflineAfterMs(s);
  }
  bool Live(int64_t now) const {
    if (closed) return now < grace_until;
    for (Source s : kByPrecedence) {
      if (SourceLive(s, now)) return true;
    }
    return false;
  }
  bool Online(int64_t now) const {
    if (!Live(now)) return false;
    if (closed) return grace_online;
    for (Source s : kByPrecedence) {  // highest-precedence live source decides
      if (!SourceLive(s, now)) continue;
      if (s == Source::kInferred) return false;  // INFERRED alone: AWAY
      return src[Idx(s)].active;
    }
    return false;
  }
};

struct MOverride {
  uint64_t id = 0;
  OverrideState state = OverrideState::kOnline;
  int64_t set_at = 0;
  int64_t until = 0;  // 0: until revoked
  bool Active(int64_t now) const { return until == 0 || now < until; }
};

struct MUser {
  std::map<std::string, MDevice> devices;
  std::vector<MOverride> overrides;  // not revoked, oldest first (may have expired)
  std::vector<uint64_t> revoked;     // ids that were revoked or cleared
  int64_t last_seen = 0;             // latest accepted signal
  // Rule 8, stated as the model keeps it: while an INVISIBLE override is on
  // top, others see the last_seen the user had when it went invisible, and
  // nothing the user does after moves it. The driver notes the moment
  // (Sim::NoteHidden) before every action and after every clock move.
  bool hidden = false;
  int64_t hidden_last_seen = 0;
};

// The override on top at `now` (the most recently set unexpired one).
const MOverride* Top(const MUser& u, int64_t now) {
  for (auto it = u.overrides.rbegin(); it != u.overrides.rend(); ++it) {
    if (it->Active(now)) return &*it;
  }
  return nullptr;
}

// What the model says about one user at one time.
struct Expect {
  State state = State::kOffline;  // public
  State self = State::kOffline;   // the user's own view
  bool invisible = false;
  int live_devices = 0;
  bool shown = false;  // an override shows
  MOverride top;       // meaningful when shown
  int64_t last_seen_self = 0;
  int64_t last_seen_public = 0;
};

State FromOverride(OverrideState s) {
  switch (s) {
    case OverrideState::kOnline:
      return State::kOnline;
    case OverrideState::kAway:
      return State::kAway;
    case OverrideState::kDnd:
      return State::kDnd;
    case OverrideState::kInvisible:
      return State::kOffline;
  }
  return State::kOffline;
}

Expect Evaluate(const MUser& u, int64_t now) {
  Expect e;
  bool any_online = false;
  for (const auto& [id, d] : u.devices) {
    if (!d.Live(now)) continue;
    ++e.live_devices;
    any_online |= d.Online(now);
  }
  const State base =
      e.live_devices == 0 ? State::kOffline : any_online ? State::kOnline : State::kAway;
  e.state = e.self = base;
  e.last_seen_self = e.last_seen_public = u.last_seen;
  // The override on top shows with a live device; an INVISIBLE one always
  // (what the user does under it, connecting a first device too, is hidden).
  if (const MOverride* top = Top(u, now)) {
    e.top = *top;
    e.shown = e.live_devices > 0 || top->state == OverrideState::kInvisible;
  }
  if (!e.shown) return e;
  if (e.top.state == OverrideState::kInvisible) {
    e.invisible = true;
    e.state = State::kOffline;
    e.last_seen_public = u.hidden_last_seen;
  } else {
    e.state = e.self = FromOverride(e.top.state);
  }
  return e;
}

// What a call should answer. kAny: the model does not predict it (but it must
// still be one of ok, FailedPrecondition or NotFound).
enum class Outcome { kOk, kStale, kNotFound, kAny, kOther };

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kOk:
      return "OK";
    case Outcome::kStale:
      return "FailedPrecondition";
    case Outcome::kNotFound:
      return "NotFound";
    case Outcome::kAny:
      return "any";
    case Outcome::kOther:
      return "other";
  }
  return "?";
}

Outcome OutcomeOf(const absl::Status& st) {
  if (st.ok()) return Outcome::kOk;
  if (absl::IsFailedPrecondition(st)) return Outcome::kStale;
  if (absl::IsNotFound(st)) return Outcome::kNotFound;
  return Outcome::kOther;
}

class Model {
 public:
  std::map<std::string, MUser> users;

  // A signal from (user, dev) in `session`, at time ts (already resolved).
  Outcome Signal(const std::string& user, const std::string& dev, uint64_t session, Source source,
                 Activity activity, int64_t ts, Platform platform) {
    MUser& u = users[user];
    auto it = u.devices.find(dev);
    if (it == u.devices.end()) {
      it = u.devices.emplace(dev, MDevice()).first;
      it->second.session = session;
    }
    MDevice& d = it->second;
    if (session < d.session) return Outcome::kStale;  // older session
    if (session == d.session) {
      if (d.closed) return Outcome::kStale;  // that session was disconnected
      const MSource& x = d.src[Idx(source)];
      if (x.seen && ts < x.last) return Outcome::kStale;  // older than one applied
    } else {
      // A new session: a fresh start (the user's last_seen keeps the old one's).
      d = MDevice();
      d.session = session;
    }
    d.platform = platform;
    MSource& x = d.src[Idx(source)];
    x.last = x.seen ? std::max(x.last, ts) : ts;
    x.seen = true;
    x.active = activity == Activity::kActive;
    u.last_seen = std::max(u.last_seen, ts);
    return Outcome::kOk;
  }

  static void Close(MDevice& d, DisconnectKind kind, int64_t now) {
    const bool live = d.Live(now), online = d.Online(now);
    d.closed = true;
    d.grace_until = 0;
    if (kind == DisconnectKind::kAbrupt && live) {
      d.grace_until = now + kReconnectGraceMs;
      d.grace_online = online;
    }
  }

  Outcome DisconnectDevice(const std::string& user, const std::string& dev, uint64_t session_id,
                           DisconnectKind kind, int64_t now) {
    MUser& u = users[user];
    auto it = u.devices.find(dev);
    if (it == u.devices.end()) return Outcome::kNotFound;
    MDevice& d = it->second;
    if (session_id != 0 && session_id < d.session) return Outcome::kStale;
    if (session_id != 0 && session_id > d.session) return Outcome::kNotFound;
    if (d.closed) return Outcome::kNotFound;
    Close(d, kind, now);
    return Outcome::kOk;
  }
};

// A handle the test got from Connect, with the session it was for.
struct MHandle {
  DeviceHandle h;
  std::string user, dev;
  uint64_t session = 0;
};

// ---- The driver -------------------------------------------------------------

struct Pub {  // what was last published for a user, each view on its own
  int count = 0;         // events
  int public_count = 0;  // changes of the public view
  State state = State::kOffline;
  State self = State::kOffline;
  uint64_t version = 0;
  uint64_t public_version = 0;
  int64_t public_at = 0;  // of the last change of the public view
  int64_t self_at = 0;    // of the last change of the own view
};

// What the runs went through, so that the test can insist that it really
// exercised what it claims to.
struct Coverage {
  int64_t steps = 0, ticks = 0, events = 0, settled_checks = 0;
  int64_t ok = 0, stale = 0, not_found = 0;
  int64_t seen_state[5] = {};  // public states seen by Get, by State value
  int64_t invisible = 0, in_grace = 0;
};

class Sim {
 public:
  explicit Sim(uint64_t seed, Coverage* cov) : seed_(seed), rng_(seed), cov_(cov) {
    Options o;
    // Defaults, except that nothing is forgotten mid-run: dead devices and
    // idle users are kept, so stale sessions stay recognisable.
    o.dead_retention_ms = int64_t{1} << 30;
    o.user_retention_ms = kUserRetentionMs;
    t_ = std::make_unique<TestEngine>(o);
    const int n_users = 3 + Rand(4);
    for (int i = 0; i < n_users; ++i) {
      users_.push_back(absl::StrCat("u", i));
      std::vector<std::string> devs;
      const int n_devs = 1 + Rand(3);
      for (int j = 0; j < n_devs; ++j) devs.push_back(absl::StrCat("d", j));
      devices_.push_back(devs);
      model_.users[users_.back()];
    }
  }

  // Runs `steps` random steps; false when a check failed.
  bool Run(int steps) {
    for (step_ = 0; step_ < steps && !failed_; ++step_) {
      ++cov_->steps;
      DoStep();
      NoteHidden();
      if (!failed_) CheckGets();
    }
    return !failed_;
  }

  // The moment each user goes invisible, its public last_seen freezes.
  // Called after each step and each clock move: within a step the clock
  // stands still, and a step that changes overrides applies no signal, so
  // the last_seen noted is the one of that moment.
  void NoteHidden() {
    for (auto& [id, mu] : model_.users) {
      const MOverride* top = Top(mu, Now());
      const bool hidden = top != nullptr && top->state == OverrideState::kInvisible;
      if (hidden && !mu.hidden) mu.hidden_last_seen = mu.last_seen;
      mu.hidden = hidden;
    }
  }

  // What anyone but the user may know of it: nothing (as if it never
  // existed) while its public view is OFFLINE and was never published, or
  // has not been seen for the retention.
  bool PublicKnown(const std::string& u, const Expect& x, State state) {
    return state != State::kOffline ||
           (pubs_[u].public_count > 0 && x.last_seen_public != 0 &&
            Now() - x.last_seen_public < kUserRetentionMs);
  }

  int64_t elapsed_ms() const { return Now() - kStartMs; }

 private:
  int Rand(int n) { return static_cast<int>(rng_() % static_cast<uint64_t>(n)); }
  bool Chance(int percent) { return Rand(100) < percent; }
  int64_t Now() const { return t_->clock.NowMs(); }
  Engine& engine() { return *t_->engine; }

  void Log(const std::string& line) {
    trace_.push_back(absl::StrCat("[", step_, "] t=+", Now() - kStartMs, " ", line));
  }

  void Fail(const std::string& what) {
    if (failed_) return;
    failed_ = true;
    std::string msg = absl::StrCat("seed ", seed_, ", step ", step_, ", t=+", Now() - kStartMs,
                                   " (clock ", Now(), "): ", what, "\ntrace:\n");
    for (const std::string& line : trace_) absl::StrAppend(&msg, "  ", line, "\n");
    ADD_FAILURE() << msg;
  }

  template <typename T>
  void CheckEq(const T& got, const T& want, const std::string& what) {
    if (!(got == want)) Fail(absl::StrCat(what, ": engine ", Show(got), ", model ", Show(want)));
  }
  static std::string Show(State s) { return std::string(StateName(s)); }
  static std::string Show(bool b) { return b ? "true" : "false"; }
  template <typename T>
  static std::string Show(const T& v) { return absl::StrCat(v); }
  static std::string Show(OverrideState s) { return std::string(OverrideStateName(s)); }


  void CheckOutcome(const absl::Status& st, Outcome want, const std::string& call) {
    const Outcome got = OutcomeOf(st);
    (got == Outcome::kOk ? cov_->ok : got == Outcome::kStale ? cov_->stale : cov_->not_found)++;
    Log(absl::StrCat(call, " -> ", st.ok() ? "OK" : st.ToString()));
    if (got == Outcome::kOther || (want != Outcome::kAny && got != want)) {
      Fail(absl::StrCat(call, ": engine answered ", st.ToString(), ", model expects ",
                        OutcomeName(want)));
    }
  }

  // ---- Random inputs ----

  struct Pick {
    int u, d;
  };
  Pick PickDevice() {
    const int u = Rand(static_cast<int>(users_.size()));
    return {u, Rand(static_cast<int>(devices_[u].size()))};
  }
  const MDevice* ModelDevice(int u, int d) const {
    const MUser& mu = model_.users.at(users_[u]);
    auto it = mu.devices.find(devices_[u][d]);
    return it == mu.devices.end() ? nullptr : &it->second;
  }
  static Platform PlatformOf(int d) { return static_cast<Platform>(1 + d % kPlatformCount); }
  Source RandSource() { return static_cast<Source>(1 + Rand(3)); }
  Activity RandActivity() { return Chance(60) ? Activity::kActive : Activity::kIdle; }

  // A random signal: mostly the device's current session, sometimes the next
  // or the previous one; stamped now or up to 2 s in the past.
  presence::Signal RandSignal() {
    const Pick p = PickDevice();
    presence::Signal s;
    s.user_id = users_[p.u];
    s.device_id = devices_[p.u][p.d];
    s.platform = PlatformOf(p.d);
    const MDevice* md = ModelDevice(p.u, p.d);
    if (md == nullptr) {
      s.session_id = 1 + Rand(3);
    } else {
      const int r = Rand(100);
      const int64_t delta = r < 50 ? 0 : r < 80 ? 1 : -1;
      s.session_id = static_cast<uint64_t>(std::max<int64_t>(1, int64_t(md->session) + delta));
    }
    s.source = RandSource();
    s.activity = RandActivity();
    s.timestamp_ms = Chance(50) ? 0 : Now() - Rand(2001);
    s.trace_id = rng_() | 1;
    return s;
  }

  std::string Describe(const presence::Signal& s) {
    return absl::StrCat("(", s.user_id, ",", s.device_id, ",session=", s.session_id, ",",
                        SourceName(s.source), ",", s.activity == Activity::kActive ? "ACTIVE" : "IDLE",
                        ",ts=", s.timestamp_ms == 0 ? std::string("0") :
                                                      absl::StrCat("now-", Now() - s.timestamp_ms),
                        ")");
  }

  Outcome ModelSignal(const presence::Signal& s) {
    const int64_t ts = s.timestamp_ms == 0 ? Now() : s.timestamp_ms;
    return model_.Signal(std::string(s.user_id), std::string(s.device_id), s.session_id, s.source,
                         s.activity, ts, s.platform);
  }


  // ---- Steps ----

  void DoStep() {
    const int r = Rand(100);
    if (r < 22) {
      DoSignal();
    } else if (r < 29) {
      DoConnect();
    } else if (r < 40) {
      DoBeat();
    } else if (r < 43) {
      DoBeatMany();
    } else if (r < 47) {
      DoDisconnectHandle();
    } else if (r < 51) {
      DoDisconnectDevice();
    } else if (r < 57) {
      DoSetOverride();
    } else if (r < 60) {
      DoRevoke();
    } else if (r < 62) {
      DoClear(Rand(static_cast<int>(users_.size())));
    } else if (r < 63) {
      DoRevokeBetween();
    } else if (r < 65) {
      DoBatch();
    } else if (r < 85) {
      DoAdvance();
      if (Chance(40)) DoTick();
    } else {
      DoTick();
    }
  }

  void DoSignal() {
    const presence::Signal s = RandSignal();
    const Outcome want = ModelSignal(s);
    CheckOutcome(engine().Signal(s), want, absl::StrCat("Signal", Describe(s)));
  }

  void DoConnect() {
    presence::Signal s = RandSignal();
    const Outcome want = ModelSignal(s);
    absl::StatusOr<DeviceHandle> h = engine().Connect(s);
    const std::string call = absl::StrCat("Connect", Describe(s));
    CheckOutcome(h.status(), want, call);
    if (h.ok()) {
      handles_.push_back(MHandle{*h, std::string(s.user_id), std::string(s.device_id),
                                 s.session_id});
      trace_.back() += absl::StrCat(" handle#", handles_.size() - 1);
    }
  }

  bool HandleValid(const MHandle& h) const {
    const MUser& u = model_.users.at(h.user);
    auto it = u.devices.find(h.dev);
    return it != u.devices.end() && it->second.session == h.session && !it->second.closed;
  }

  void DoBeat() {
    if (handles_.empty()) return DoSignal();
    const size_t i = static_cast<size_t>(Rand(static_cast<int>(handles_.size())));
    const MHandle& h = handles_[i];
    const Source source = Chance(70) ? Source::kApp : RandSource();
    const Activity activity = RandActivity();
    Outcome want = Outcome::kNotFound;
    if (HandleValid(h)) {
      want = model_.Signal(h.user, h.dev, h.session, source, activity, Now(),
                           model_.users[h.user].devices[h.dev].platform);
    }
    CheckOutcome(engine().Beat(h.h, activity, source), want,
                 absl::StrCat("Beat(handle#", i, " ", h.user, ",", h.dev, ",session=", h.session,
                              ",", SourceName(source), ",",
                              activity == Activity::kActive ? "ACTIVE" : "IDLE", ")"));
  }

  // BeatMany must count what Beat on each handle in turn would answer.
  void DoBeatMany() {
    if (handles_.empty()) return DoSignal();
    const Source source = Chance(70) ? Source::kApp : RandSource();
    const Activity activity = RandActivity();
    std::vector<DeviceHandle> batch;
    size_t applied = 0, stale = 0, rejected = 0;
    std::string call = absl::StrCat("BeatMany(", SourceName(source), ",",
                                    activity == Activity::kActive ? "ACTIVE" : "IDLE", ")[");
    const int n = 1 + Rand(6);
    for (int k = 0; k < n; ++k) {
      const size_t i = static_cast<size_t>(Rand(static_cast<int>(handles_.size())));
      const MHandle& h = handles_[i];
      batch.push_back(h.h);
      absl::StrAppend(&call, k ? " " : "", "handle#", i);
      if (!HandleValid(h)) {
        ++rejected;
        continue;
      }
      const Outcome want = model_.Signal(h.user, h.dev, h.session, source, activity, Now(),
                                         model_.users[h.user].devices[h.dev].platform);
      (want == Outcome::kOk ? applied : stale)++;
    }
    call += "]";
    const BatchResult r = engine().BeatMany(batch, activity, source);
    Log(absl::StrCat(call, " -> applied ", r.applied, " stale ", r.stale, " rejected ",
                     r.rejected));
    if (r.applied != applied || r.stale != stale || r.rejected != rejected) {
      Fail(absl::StrCat(call, ": engine applied ", r.applied, ", stale ", r.stale, ", rejected ",
                        r.rejected, "; model applied ", applied, ", stale ", stale,
                        ", rejected ", rejected));
    }
  }

  DisconnectKind RandKind() { return Chance(50) ? DisconnectKind::kClean : DisconnectKind::kAbrupt; }
  static const char* KindName(DisconnectKind k) {
    return k == DisconnectKind::kClean ? "clean" : "abrupt";
  }

  void DoDisconnectHandle() {
    if (handles_.empty() || Chance(3)) {
      const DisconnectKind kind = RandKind();
      CheckOutcome(engine().Disconnect(DeviceHandle{}, kind), Outcome::kNotFound,
                   "Disconnect(empty handle)");
      return;
    }
    const size_t i = static_cast<size_t>(Rand(static_cast<int>(handles_.size())));
    const MHandle& h = handles_[i];
    const DisconnectKind kind = RandKind();
    Outcome want = Outcome::kNotFound;
    if (HandleValid(h)) {
      Model::Close(model_.users[h.user].devices[h.dev], kind, Now());
      want = Outcome::kOk;
    }
    CheckOutcome(engine().Disconnect(h.h, kind), want,
                 absl::StrCat("Disconnect(handle#", i, " ", h.user, ",", h.dev,
                              ",session=", h.session, ",", KindName(kind), ")"));
  }

  void DoDisconnectDevice() {
    const Pick p = PickDevice();
    const MDevice* md = ModelDevice(p.u, p.d);
    const uint64_t cur = md ? md->session : 1;
    const int r = Rand(100);
    const uint64_t sid = r < 50 ? 0 : r < 70 ? cur : r < 85 ? cur - 1 : cur + 1;
    const DisconnectKind kind = RandKind();
    const std::string& u = users_[p.u];
    const std::string& d = devices_[p.u][p.d];
    const Outcome want = model_.DisconnectDevice(u, d, sid, kind, Now());
    CheckOutcome(engine().DisconnectDevice(u, d, sid, kind), want,
                 absl::StrCat("DisconnectDevice(", u, ",", d, ",session=", sid, ",",
                              KindName(kind), ")"));
  }

  void DoSetOverride() {
    const int ui = Rand(static_cast<int>(users_.size()));
    MUser& mu = model_.users[users_[ui]];
    // Stay clear of max_overrides_per_user (16, expired ones included until a
    // tick removes them).
    if (mu.overrides.size() >= 10) return DoClear(ui);
    const OverrideState state = static_cast<OverrideState>(1 + Rand(4));
    const int64_t until = Chance(50) ? 0 : Now() + 1 + Rand(8000);
    absl::StatusOr<uint64_t> id = engine().SetOverride(users_[ui], state, until);
    const std::string call =
        absl::StrCat("SetOverride(", users_[ui], ",", OverrideStateName(state), ",until=",
                     until == 0 ? std::string("0") : absl::StrCat("now+", until - Now()), ")");
    CheckOutcome(id.status(), Outcome::kOk, call);
    if (!id.ok()) return;
    trace_.back() += absl::StrCat(" id=", *id);
    mu.overrides.push_back(MOverride{*id, state, Now(), until});
  }

  void DoRevoke() {
    const int ui = Rand(static_cast<int>(users_.size()));
    MUser& mu = model_.users[users_[ui]];
    const int r = Rand(100);
    uint64_t id;
    Outcome want;
    if (r < 60 && !mu.overrides.empty()) {
      const size_t k = static_cast<size_t>(Rand(static_cast<int>(mu.overrides.size())));
      id = mu.overrides[k].id;
      // An expired override may or may not have been removed by a tick yet.
      want = mu.overrides[k].Active(Now()) ? Outcome::kOk : Outcome::kAny;
      mu.overrides.erase(mu.overrides.begin() + static_cast<long>(k));
      mu.revoked.push_back(id);
    } else if (r < 85 && !mu.revoked.empty()) {
      id = mu.revoked[static_cast<size_t>(Rand(static_cast<int>(mu.revoked.size())))];
      want = Outcome::kNotFound;
    } else {
      id = 1'000'000'000 + rng_() % 1000;  // never handed out
      want = Outcome::kNotFound;
    }
    CheckOutcome(engine().RevokeOverride(users_[ui], id), want,
                 absl::StrCat("RevokeOverride(", users_[ui], ",id=", id, ")"));
  }

  void DoClear(int ui) {
    MUser& mu = model_.users[users_[ui]];
    size_t active = 0;
    for (const MOverride& o : mu.overrides) active += o.Active(Now()) ? 1 : 0;
    const size_t all = mu.overrides.size();
    // The user is surely held while it has a device record or an override.
    const bool held = !mu.devices.empty() || active > 0;
    absl::StatusOr<size_t> n = engine().ClearOverrides(users_[ui]);
    const std::string call = absl::StrCat("ClearOverrides(", users_[ui], ")");
    CheckOutcome(n.status(), held ? Outcome::kOk : Outcome::kAny, call);
    if (n.ok()) {
      trace_.back() += absl::StrCat(" n=", *n);
      if (*n < active || *n > all) {
        Fail(absl::StrCat(call, " removed ", *n, "; the model holds ", active, " active and ",
                          all, " in all"));
      }
    } else if (absl::IsNotFound(n.status()) && all > 0 && active > 0) {
      Fail(absl::StrCat(call, ": NotFound while the user has overrides"));
    }
    for (const MOverride& o : mu.overrides) mu.revoked.push_back(o.id);
    mu.overrides.clear();
  }

  void DoRevokeBetween() {
    const int64_t from = Now() - Rand(10000);
    const int64_t to = from + Rand(5000);
    size_t active = 0, all = 0;
    for (auto& [id, mu] : model_.users) {
      std::vector<MOverride> keep;
      for (const MOverride& o : mu.overrides) {
        if (o.set_at >= from && o.set_at <= to) {
          ++all;
          active += o.Active(Now()) ? 1 : 0;
          mu.revoked.push_back(o.id);
        } else {
          keep.push_back(o);
        }
      }
      mu.overrides = keep;
    }
    const size_t n = engine().RevokeOverridesSetBetween(from, to);
    Log(absl::StrCat("RevokeOverridesSetBetween(now-", Now() - from, ",now-", Now() - to,
                     ") -> ", n));
    if (n < active || n > all) {
      Fail(absl::StrCat("RevokeOverridesSetBetween removed ", n, "; the model expects ", active,
                        " active and ", all, " in all"));
    }
  }

  void DoBatch() {
    std::vector<presence::Signal> batch;
    const int n = 1 + Rand(4);
    size_t applied = 0, stale = 0;
    std::string call = "SignalBatch[";
    for (int i = 0; i < n; ++i) batch.push_back(RandSignal());
    for (int i = 0; i < n; ++i) {
      absl::StrAppend(&call, i ? " " : "", Describe(batch[static_cast<size_t>(i)]));
      (ModelSignal(batch[static_cast<size_t>(i)]) == Outcome::kOk ? applied : stale)++;
    }
    call += "]";
    const BatchResult r = engine().SignalBatch(batch);
    Log(absl::StrCat(call, " -> applied ", r.applied, " stale ", r.stale, " rejected ",
                     r.rejected));
    if (r.applied != applied || r.stale != stale || r.rejected != 0) {
      Fail(absl::StrCat(call, ": engine applied ", r.applied, ", stale ", r.stale, ", rejected ",
                        r.rejected, "; model applied ", applied, ", stale ", stale));
    }
  }

  // Every future time at which the model's answer may change, so that the
  // clock can be moved to it exactly (or 1 ms either side).
  std::vector<int64_t> Deadlines() const {
    std::vector<int64_t> out;
    const int64_t now = Now();
    for (const auto& [uid, mu] : model_.users) {
      for (const auto& [did, d] : mu.devices) {
        if (d.closed) {
          if (d.grace_until > now) out.push_back(d.grace_until);
          continue;
        }
        for (Source s : kByPrecedence) {
          const MSource& x = d.src[Idx(s)];
          if (x.seen && x.last + OfflineAfterMs(s) > now) out.push_back(x.last + OfflineAfterMs(s));
        }
      }
      for (const MOverride& o : mu.overrides) {
        if (o.until > now) out.push_back(o.until);
      }
    }
    for (const auto& [uid, p] : pubs_) {
      if (p.public_count > 0 && p.public_at + kMinDwellMs > now) {
        out.push_back(p.public_at + kMinDwellMs);
      }
      if (p.count > 0 && p.self_at + kMinDwellMs > now) out.push_back(p.self_at + kMinDwellMs);
    }
    return out;
  }

  void DoAdvance() {
    const int r = Rand(100);
    int64_t delta;
    if (r < 30) {
      delta = 1 + Rand(100);
    } else if (r < 60) {
      delta = 1 + Rand(2000);
    } else if (r < 80) {
      delta = 1 + Rand(6000);
    } else if (r < 95) {
      const std::vector<int64_t> d = Deadlines();
      delta = d.empty() ? 1 + Rand(6000)
                        : std::max<int64_t>(1, d[static_cast<size_t>(Rand(static_cast<int>(
                                                   d.size())))] - Now() + Rand(3) - 1);
    } else {
      delta = 300000;
    }
    t_->clock.Advance(delta);
    Log(absl::StrCat("clock.Advance(", delta, ")"));
    NoteHidden();
  }

  // ---- Checks ----

  void DoTick() {
    const int64_t now = Now();
    const size_t before = t_->listener.events().size();
    const size_t n = engine().Tick();
    last_tick_ms_ = now;
    ++cov_->ticks;
    cov_->events += static_cast<int64_t>(n);
    const std::vector<ChangeEvent>& ev = t_->listener.events();
    Log(absl::StrCat("Tick() -> ", n, " events"));
    if (ev.size() - before != n) {
      return Fail(absl::StrCat("Tick returned ", n, " but delivered ", ev.size() - before));
    }
    std::set<std::string> published, public_now, self_now;
    for (size_t i = before; i < ev.size() && !failed_; ++i) {
      const ChangeEvent& e = ev[i];
      trace_.back() += absl::StrCat(" [", e.user_id, " ", StateName(e.previous), "/",
                                    StateName(e.previous_self), "->", StateName(e.state), "/",
                                    StateName(e.self_state), " v", e.version, "]");
      auto mu = model_.users.find(e.user_id);
      if (mu == model_.users.end()) return Fail("event for a user the test never used");
      if (!published.insert(e.user_id).second) return Fail("two events for one user in one tick");
      Pub& p = pubs_[e.user_id];
      const Expect x = Evaluate(mu->second, now);
      const std::string who = absl::StrCat("event for ", e.user_id);
      // Each view changes on its own: a view whose change is still held by
      // its dwell says what it said last.
      const bool public_change = e.state != p.state;
      const bool self_change = e.self_state != p.self;
      CheckEq(e.state, public_change ? x.state : p.state, who + ": state");
      CheckEq(e.self_state, self_change ? x.self : p.self, who + ": self_state");
      CheckEq(e.invisible, x.invisible, who + ": invisible");
      CheckEq(e.self_devices.total(), x.live_devices, who + ": self_devices");
      const bool known = PublicKnown(e.user_id, x, x.state);
      CheckEq(e.devices.total(), x.invisible || !known ? 0 : x.live_devices, who + ": devices");
      CheckEq(e.self_last_seen_ms, x.last_seen_self, who + ": self_last_seen_ms");
      CheckEq(e.last_seen_ms, known ? x.last_seen_public : 0, who + ": last_seen_ms");
      CheckEq(e.previous, p.state, who + ": previous (the last published state)");
      CheckEq(e.previous_self, p.self, who + ": previous_self (the last published self_state)");
      CheckEq(e.published_at_ms, now, who + ": published_at_ms");
      if (!public_change && !self_change) {
        Fail(who + ": repeats the last published (state, self_state)");
      }
      if (e.version <= p.version) {
        Fail(absl::StrCat(who, ": version ", e.version, " not above ", p.version));
      }
      // The public version moves with the public view, and only with it.
      if (public_change ? e.public_version <= p.public_version
                        : e.public_version != p.public_version) {
        Fail(absl::StrCat(who, ": public_version ", e.public_version, " after ",
                          p.public_version, public_change ? " on a public change" : " unchanged"));
      }
      if (public_change && p.public_count > 0 && now - p.public_at < kMinDwellMs) {
        Fail(absl::StrCat(who, ": public change ", now - p.public_at,
                          " ms after the previous one, under min_dwell"));
      }
      if (self_change && p.count > 0 && now - p.self_at < kMinDwellMs) {
        Fail(absl::StrCat(who, ": own change ", now - p.self_at,
                          " ms after the previous one, under min_dwell"));
      }
      if (e.changed_at_ms > now) Fail(who + ": changed_at_ms after published_at_ms");
      p.count++;
      p.state = e.state;
      p.self = e.self_state;
      p.version = e.version;
      p.public_version = e.public_version;
      if (public_change) {
        p.public_count++;
        p.public_at = now;
        public_now.insert(e.user_id);
      }
      if (self_change) {
        p.self_at = now;
        self_now.insert(e.user_id);
      }
    }
    // The final state is never lost: once the dwell does not hold a user
    // back, a tick leaves its last published state equal to the model's.
    for (const std::string& u : users_) {
      if (failed_) return;
      const Pub& p = pubs_[u];
      const Expect x = Evaluate(model_.users[u], now);
      // A view changed at this tick is not held; one changed less than
      // min_dwell ago may be.
      const bool public_held = public_now.count(u) == 0 && p.public_count > 0 &&
                               now < p.public_at + kMinDwellMs;
      const bool self_held =
          self_now.count(u) == 0 && p.count > 0 && now < p.self_at + kMinDwellMs;
      ++cov_->settled_checks;
      if ((p.state != x.state && !public_held) || (p.self != x.self && !self_held)) {
        Fail(absl::StrCat("after Tick, last published for ", u, " is ", StateName(p.state), "/",
                          StateName(p.self), " (", p.count, " events, public at t=+",
                          p.public_at - kStartMs, ", own at t=+", p.self_at - kStartMs,
                          "); model says ", StateName(x.state), "/", StateName(x.self)));
      }
    }
  }

  void CheckGets() {
    const int64_t now = Now();
    for (const std::string& u : users_) {
      if (failed_) return;
      const MUser& mu = model_.users[u];
      const Expect x = Evaluate(mu, now);
      const UserPresence pub = engine().GetOne(u);
      ++cov_->seen_state[static_cast<int>(x.state)];
      cov_->invisible += x.invisible;
      for (const auto& [id, d] : mu.devices) cov_->in_grace += d.closed && d.Live(now);
      const UserPresence self = engine().GetOne(u, u);
      const std::string who = absl::StrCat("GetOne(", u, ")");
      const std::string me = absl::StrCat("GetOne(", u, ",", u, ")");
      const bool known = PublicKnown(u, x, x.state);
      CheckEq(pub.known, known, who + ".known");
      CheckEq(pub.state, x.state, who + ".state");
      CheckEq(self.state, x.self, me + ".state");
      if (!mu.devices.empty()) CheckEq(self.known, true, me + ".known");
      CheckEq(self.devices.total(), x.live_devices, me + ".devices");
      CheckEq(pub.devices.total(), x.invisible || !known ? 0 : x.live_devices, who + ".devices");
      CheckEq(self.has_override, x.shown, me + ".has_override");
      CheckEq(pub.has_override, x.shown && !x.invisible && known, who + ".has_override");
      if (x.shown) {
        CheckEq(self.override_state, x.top.state, me + ".override_state");
        CheckEq(self.override_until_ms, x.top.until, me + ".override_until_ms");
      }
      CheckEq(pub.last_seen_ms, known ? x.last_seen_public : 0, who + ".last_seen_ms");
      CheckEq(pub.freshness_ms, pub.last_seen_ms == 0 ? 0 : now - pub.last_seen_ms,
              who + ".freshness_ms");
      CheckEq(pub.version, known ? pubs_[u].public_version : 0,
              who + ".version (of the last change of the public view)");
      if (self.known) {
        CheckEq(self.last_seen_ms, x.last_seen_self, me + ".last_seen_ms");
        CheckEq(self.version, pubs_[u].version, me + ".version (of the last published change)");
      }
      // GetPublished answers with what listeners were told.
      const absl::string_view id = u;
      const UserPresence pp = engine().GetPublished(absl::MakeConstSpan(&id, 1))[0];
      const UserPresence ps = engine().GetPublished(absl::MakeConstSpan(&id, 1), u)[0];
      CheckEq(pp.state, pubs_[u].state, "GetPublished(" + u + ").state");
      CheckEq(pp.known, PublicKnown(u, x, pubs_[u].state), "GetPublished(" + u + ").known");
      if (pp.known) {
        CheckEq(pp.version, pubs_[u].public_version, "GetPublished(" + u + ").version");
      }
      CheckEq(ps.state, pubs_[u].self, "GetPublished(" + u + "," + u + ").state");
      if (ps.known) CheckEq(ps.version, pubs_[u].version, "GetPublished(" + u + "," + u + ").version");
    }
  }

  const uint64_t seed_;
  std::mt19937_64 rng_;
  Coverage* const cov_;
  std::unique_ptr<TestEngine> t_;
  std::vector<std::string> users_;
  std::vector<std::vector<std::string>> devices_;  // per user
  Model model_;
  std::vector<MHandle> handles_;
  std::map<std::string, Pub> pubs_;
  std::vector<std::string> trace_;
  int64_t last_tick_ms_ = kStartMs;
  int step_ = 0;
  bool failed_ = false;
};

constexpr int kSeeds = 300;
constexpr int kSteps = 300;

TEST(ModelTest, RandomSequencesMatchTheReferenceModel) {
  int failures = 0;
  int64_t simulated_ms = 0;
  Coverage cov;
  for (uint64_t seed = 1; seed <= kSeeds && failures < 3; ++seed) {
    Sim sim(seed, &cov);
    if (!sim.Run(kSteps)) ++failures;
    simulated_ms += sim.elapsed_ms();
  }
  EXPECT_EQ(failures, 0);
  printf("model test: %d sequences, %lld steps, %lld simulated s; %lld ticks, %lld events, %lld settled "
         "checks; calls: %lld ok, %lld stale, %lld not found; Get saw %lld offline, %lld away, "
         "%lld online, %lld dnd, %lld invisible, %lld devices in grace\n",
         kSeeds, static_cast<long long>(cov.steps), static_cast<long long>(simulated_ms / 1000),
         static_cast<long long>(cov.ticks),
         static_cast<long long>(cov.events), static_cast<long long>(cov.settled_checks),
         static_cast<long long>(cov.ok), static_cast<long long>(cov.stale),
         static_cast<long long>(cov.not_found),
         static_cast<long long>(cov.seen_state[static_cast<int>(State::kOffline)]),
         static_cast<long long>(cov.seen_state[static_cast<int>(State::kAway)]),
         static_cast<long long>(cov.seen_state[static_cast<int>(State::kOnline)]),
         static_cast<long long>(cov.seen_state[static_cast<int>(State::kDnd)]),
         static_cast<long long>(cov.invisible), static_cast<long long>(cov.in_grace));
  // The runs must really have gone through what the test claims to check.
  EXPECT_GT(simulated_ms, int64_t{kSeeds} * 240000);  // the long INFERRED timeout
  EXPECT_GT(cov.events, 10000);
  EXPECT_GT(cov.stale, 5000);
  EXPECT_GT(cov.not_found, 2000);
  for (State s : {State::kOffline, State::kAway, State::kOnline, State::kDnd}) {
    EXPECT_GT(cov.seen_state[static_cast<int>(s)], 5000) << StateName(s);
  }
  EXPECT_GT(cov.invisible, 2000);
  EXPECT_GT(cov.in_grace, 1000);
}

// ---- Engine bugs this test found, kept as regression tests --------------------
//
// A source that lapses between two ticks was never reported when something
// else re-evaluated the device before the next tick: a signal from another
// source, or an abrupt disconnect. The shard now compares with what it last
// told the publisher (the device's fast bits), not with a fresh evaluation.

Signal Sig(Source source, Activity activity) {
  return TestEngine::Sig("alice", "web", 1, source, activity);
}

TEST(ModelRegression, LapseBeforeASignalFromAnotherSourceIsPublished) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(Sig(Source::kApp, Activity::kActive)).ok());
  ASSERT_TRUE(t.engine->Signal(Sig(Source::kInferred, Activity::kIdle)).ok());
  t.engine->Tick();  // ONLINE published
  t.clock.Advance(4000);  // APP lapses; INFERRED alone keeps the device: AWAY
  ASSERT_TRUE(t.engine->Signal(Sig(Source::kInferred, Activity::kIdle)).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kAway);
  t.Run(2000);
  EXPECT_EQ(t.StateOf("alice"), State::kAway);
  ASSERT_FALSE(t.listener.events().empty());
  EXPECT_EQ(t.listener.events().back().state, State::kAway);
}

TEST(ModelRegression, LapseBeforeAnAbruptDisconnectIsPublished) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(Sig(Source::kApp, Activity::kActive)).ok());
  ASSERT_TRUE(t.engine->Signal(Sig(Source::kInferred, Activity::kIdle)).ok());
  t.engine->Tick();  // ONLINE published
  t.clock.Advance(4000);  // APP lapses: AWAY
  ASSERT_TRUE(t.engine->DisconnectDevice("alice", "web", 0, DisconnectKind::kAbrupt).ok());
  t.Run(1400);  // inside the grace: the device stays live, and AWAY
  EXPECT_EQ(t.StateOf("alice"), State::kAway);
  ASSERT_FALSE(t.listener.events().empty());
  EXPECT_EQ(t.listener.events().back().state, State::kAway);
}


// Rule 4: last_seen is the time of the user's latest accepted signal. A
// heartbeat on the handle fast path only moves the device's per-source time,
// and a new session of the device used to reset those times and lose it.
TEST(ModelRegression, NewSessionWithAnOlderTimestampKeepsLastSeen) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web", 1));
  ASSERT_TRUE(h.ok());
  t.clock.Advance(1000);
  ASSERT_TRUE(t.engine->Beat(*h).ok());  // fast path: live, active, unchanged
  const int64_t beat_at = t.clock.NowMs();
  EXPECT_EQ(t.engine->GetOne("alice").last_seen_ms, beat_at);
  Signal s = TestEngine::Sig("alice", "web", 2);
  s.timestamp_ms = beat_at - 500;  // the new session's first signal, stamped earlier
  ASSERT_TRUE(t.engine->Signal(s).ok());
  EXPECT_EQ(t.engine->GetOne("alice").last_seen_ms, beat_at);
}

}  // namespace
}  // namespace presence::testing
