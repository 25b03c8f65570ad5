// Noninterference (docs/design.md rule 8), as a property that needs no model of
// the engine: two worlds run the same workload, except that in the second
// one a hidden (INVISIBLE) user also does things of its own: connects
// devices, beats, goes idle, sends late keyed signals, disconnects, revokes
// overrides stacked under the invisible one. Everything anyone but that
// user can read must be identical in both: the batches of every subscriber
// it does not own (lists and topics), and Get, GetPublished, History,
// TimeInStates and LastSeen for other viewers, at every step.
//
// The workload comes from a Chooser: a seeded generator (the unit test runs
// thousands of seeds) or a fuzzer's bytes (fuzz/noninterference_fuzz.cc).
// A difference aborts with both answers, so that a fuzzer keeps the input.
#ifndef PRESENCE_TESTS_TWO_WORLDS_H_
#define PRESENCE_TESTS_TWO_WORLDS_H_

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/fanout.h"
#include "presence/history.h"
#include "presence/store.h"
#include "presence/v1/presence.pb.h"

namespace presence::testing {

// Where the workload's choices come from.
class Chooser {
 public:
  virtual ~Chooser() = default;
  // A number in [0, n), n > 0.
  virtual uint32_t Pick(uint32_t n) = 0;
  // False once a finite source is used up.
  virtual bool More() const = 0;
};

class SeededChooser : public Chooser {
 public:
  SeededChooser(uint64_t seed, int steps) : rng_(seed), left_(steps) {}
  uint32_t Pick(uint32_t n) override {
    --left_;
    return static_cast<uint32_t>(rng_() % n);
  }
  bool More() const override { return left_ > 0; }

 private:
  std::mt19937_64 rng_;
  int left_;
};

class BytesChooser : public Chooser {
 public:
  BytesChooser(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  uint32_t Pick(uint32_t n) override {
    uint32_t v = 0;
    for (int i = 0; i < 2 && p_ < end_; ++i) v = (v << 8) | *p_++;
    return v % n;
  }
  bool More() const override { return p_ < end_; }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

// One world: an engine with a store and a history, its fan-out, and the
// handles the workload holds. Both worlds are built and driven alike.
struct World {
  World() {
    Options o;
    o.clock = &clock;
    o.shards = 1;  // every user in one shard: the most sharing there can be
    o.store = store.get();
    o.history = history.get();
    engine = Engine::Create(o).value();
    FanoutOptions fo;
    fo.rate_per_sec = 0;
    fo.interval_mode_members = 4;  // topics of every mode
    fo.counts_only_members = 6;
    fanout = Fanout::Create(engine.get(), fo).value();
  }
  ManualClock clock{1'000'000};
  std::unique_ptr<Store> store = NewMemoryStore();
  std::unique_ptr<HistoryStore> history = NewMemoryHistoryStore();
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Fanout> fanout;
  std::vector<DeviceHandle> handles;         // of the visible users' devices
  std::vector<DeviceHandle> hidden_handles;  // of the hidden user's (world b only)
};

class TwoWorlds {
 public:
  // The hidden user (a member: signals view its bytes).
  const std::string kHidden = "hidden";

  // `label` names the workload in a report (a seed, say).
  explicit TwoWorlds(Chooser* c, std::string label = "") : c_(c), label_(std::move(label)) {
    for (int i = 0; i < 5; ++i) users_.push_back(absl::StrCat("u", i));
    all_ = users_;
    all_.push_back(kHidden);
  }

  // How much the hidden user really did in world b: actions applied.
  int hidden_actions() const { return hidden_actions_; }

  // Runs the workload; returns the number of steps. Aborts on a difference.
  int Run() {
    Setup();
    int steps = 0;
    while (c_->More()) {
      Step();
      ++steps;
    }
    Tick();
    Compare("the end");
    return steps;
  }

 private:
  // ---- Both worlds alike ----

  template <typename F>
  void Both(F f) {
    f(a_);
    f(b_);
  }

  static std::string Describe(const Signal& s) {
    return absl::StrCat(s.user_id, "/", s.device_id, " session ", s.session_id, " ",
                        SourceName(s.source), s.activity == Activity::kIdle ? " idle" : " active",
                        " ", PlatformName(s.platform),
                        s.timestamp_ms == 0 ? "" : absl::StrCat(" ts ", s.timestamp_ms - 1'000'000));
  }

  // The signal's views point into `user` and `device`: both must outlive it.
  Signal Sig(const std::string& user, const std::string& device, uint64_t session) {
    Signal s;
    s.user_id = user;
    s.device_id = device;
    s.session_id = session;
    s.platform = static_cast<Platform>(1 + c_->Pick(kPlatformCount));
    s.source = static_cast<Source>(1 + c_->Pick(kSourceCount));
    s.activity = c_->Pick(3) == 0 ? Activity::kIdle : Activity::kActive;
    return s;
  }

  // The hidden user is seen, stacks overrides, goes invisible (untimed, so
  // it stays hidden to the end), and everyone starts watching it.
  void Setup() {
    const std::string d0 = "d0";
    for (const std::string& u : users_) {
      const Signal s = Sig(u, d0, 1);  // chosen once, for both worlds
      Log("Connect " + Describe(s));
      Both([&](World& w) { (void)w.engine->Connect(s); });
    }
    const std::string h0 = "h0";
    const Signal first = Sig(kHidden, h0, 1);
    Log("Connect " + Describe(first));
    Both([&](World& w) { w.hidden_handles.push_back(w.engine->Connect(first).value()); });
    Tick();
    // Overrides under the invisible one (the hidden user may revoke them
    // in world b); some timed, which expire alike in both.
    const uint32_t under = c_->Pick(3);
    for (uint32_t i = 0; i < under; ++i) {
      const auto state = static_cast<OverrideState>(1 + c_->Pick(3));
      const int64_t until = c_->Pick(2) ? 0 : a_.clock.NowMs() + 1 + c_->Pick(20000);
      Log(absl::StrCat("SetOverride hidden ", OverrideStateName(state), " until ", until));
      const uint64_t id = a_.engine->SetOverride(kHidden, state, until).value();
      if (b_.engine->SetOverride(kHidden, state, until).value() != id) Fail("override ids differ");
      under_.push_back(id);
    }
    Advance(c_->Pick(1500));
    Tick();
    Log("SetOverride hidden invisible");
    Both([&](World& w) { (void)w.engine->SetOverride(kHidden, OverrideState::kInvisible); });
    // Subscribers: the hidden user's own (not compared), and others'.
    Both([&](World& w) {
      SubscriberOptions own;
      own.owner_user_id = kHidden;
      const SubscriberId s = w.fanout->Subscribe(own).value();
      (void)w.fanout->AddUsers(s, {kHidden, "u0"});
    });
    own_subs_.push_back(1);
    for (int i = 0; i < 3; ++i) AddSubscriber();
    Both([&](World& w) {
      (void)w.fanout->AddMembers("team", {kHidden, "u1", "u2"});
      (void)w.fanout->AddMembers("guild", {kHidden, "u0", "u1", "u2", "u3", "u4"});
    });
    Tick();
    Compare("setup");
  }

  void AddSubscriber() {
    // Owned by a visible user or by nobody; watching the hidden user too.
    const uint32_t k = c_->Pick(static_cast<uint32_t>(users_.size()) + 1);
    const std::string owner = k < users_.size() ? users_[k] : "";
    const std::string other = users_[c_->Pick(static_cast<uint32_t>(users_.size()))];
    const bool team = c_->Pick(2) == 0;
    Log(absl::StrCat("Subscribe owner '", owner, "' users hidden,", other, " topic ",
                     team ? "team" : "guild"));
    Both([&](World& w) {
      SubscriberOptions so;
      so.owner_user_id = owner;
      const SubscriberId s = w.fanout->Subscribe(so).value();
      (void)w.fanout->AddUsers(s, {kHidden, other});
      (void)w.fanout->Join(s, team ? "team" : "guild");
    });
    subs_.push_back(static_cast<SubscriberId>(subs_.size() + own_subs_.size() + 1));
  }

  void Advance(int64_t ms) {
    Log(absl::StrCat("Advance ", ms));
    Both([&](World& w) { w.clock.Advance(ms); });
  }

  void Tick() {
    Log("Tick");
    Both([&](World& w) { w.engine->Tick(); });
    PollAndCompare();
  }

  void Step() {
    const uint32_t r = c_->Pick(100);
    if (r < 35) {
      Hidden();  // world b only
    } else if (r < 55) {
      Visible();
    } else if (r < 80) {
      Advance(1 + c_->Pick(c_->Pick(4) == 0 ? 6000 : 400));
      if (c_->Pick(3) != 0) Tick();
    } else if (r < 85) {
      Tick();
      Rebuild();
    } else if (r < 88) {
      AddSubscriber();
    } else if (r < 90) {
      const std::string u = users_[c_->Pick(static_cast<uint32_t>(users_.size()))];
      Log("Erase " + u);
      Both([&](World& w) { (void)w.engine->Erase(u); });
    } else {
      Compare("a query");
    }
  }

  void Rebuild() {
    Log("Rebuild");
    Both([&](World& w) {
      if (!w.engine->Rebuild().ok()) Fail("Rebuild failed");
      // Handles survive a rebuild only by luck; start over.
      w.handles.clear();
      w.hidden_handles.clear();
    });
    Compare("a rebuild");
  }

  // A visible user's action, in both worlds.
  void Visible() {
    const std::string u = users_[c_->Pick(static_cast<uint32_t>(users_.size()))];
    const std::string d = absl::StrCat("d", c_->Pick(3));
    const uint64_t session = 1 + c_->Pick(4);
    switch (c_->Pick(6)) {
      case 0: {
        const Signal s = Sig(u, d, session);
        Log("Connect " + Describe(s));
        Both([&](World& w) {
          absl::StatusOr<DeviceHandle> h = w.engine->Connect(s);
          if (h.ok()) w.handles.push_back(*h);
        });
        break;
      }
      case 1: {
        const Signal s = Sig(u, d, session);
        Log("Signal " + Describe(s));
        Both([&](World& w) { (void)w.engine->Signal(s); });
        break;
      }
      case 2: {
        if (a_.handles.empty()) break;
        const size_t i = c_->Pick(static_cast<uint32_t>(a_.handles.size()));
        const Activity act = c_->Pick(3) == 0 ? Activity::kIdle : Activity::kActive;
        Log(absl::StrCat("Beat handle ", i, act == Activity::kIdle ? " idle" : " active"));
        Both([&](World& w) { (void)w.engine->Beat(w.handles[i], act); });
        break;
      }
      case 3: {
        const auto kind = c_->Pick(2) ? DisconnectKind::kClean : DisconnectKind::kAbrupt;
        Log(absl::StrCat("DisconnectDevice ", u, "/", d,
                         kind == DisconnectKind::kClean ? " clean" : " abrupt"));
        Both([&](World& w) { (void)w.engine->DisconnectDevice(u, d, 0, kind); });
        break;
      }
      case 4: {
        const auto state = static_cast<OverrideState>(1 + c_->Pick(4));
        const int64_t until = c_->Pick(2) ? 0 : a_.clock.NowMs() + 1 + c_->Pick(5000);
        Log(absl::StrCat("SetOverride ", u, " ", OverrideStateName(state), " until ", until));
        Both([&](World& w) { (void)w.engine->SetOverride(u, state, until); });
        break;
      }
      case 5:
        Log("ClearOverrides " + u);
        Both([&](World& w) { (void)w.engine->ClearOverrides(u); });
        break;
    }
  }

  // ---- The hidden user's private actions: world b only ----

  void Hidden() {
    World& w = b_;
    const std::string d = absl::StrCat("h", c_->Pick(3));
    switch (c_->Pick(7)) {
      case 0: {
        const Signal s = Sig(kHidden, d, ++hidden_session_);
        absl::StatusOr<DeviceHandle> h = w.engine->Connect(s);
        Log(absl::StrCat("(b only) Connect ", Describe(s), " -> ", h.status().ToString()));
        if (h.ok()) w.hidden_handles.push_back(*h);
        hidden_actions_ += h.ok();
        break;
      }
      case 1:
      case 2: {
        if (w.hidden_handles.empty()) break;
        const Activity act = c_->Pick(3) == 0 ? Activity::kIdle : Activity::kActive;
        const auto source = static_cast<Source>(1 + c_->Pick(kSourceCount));
        const absl::Status st = w.engine->Beat(
            w.hidden_handles[c_->Pick(static_cast<uint32_t>(w.hidden_handles.size()))], act, source);
        Log(absl::StrCat("(b only) Beat ", SourceName(source),
                         act == Activity::kIdle ? " idle -> " : " active -> ", st.ToString()));
        hidden_actions_ += st.ok();
        break;
      }
      case 3: {
        // A keyed signal, maybe late (its time in the past).
        Signal s = Sig(kHidden, d, hidden_session_ == 0 ? 1 : hidden_session_);
        s.timestamp_ms = w.clock.NowMs() - c_->Pick(3000);
        const absl::Status st = w.engine->Signal(s);
        Log(absl::StrCat("(b only) Signal ", Describe(s), " -> ", st.ToString()));
        hidden_actions_ += st.ok();
        break;
      }
      case 4: {
        if (w.hidden_handles.empty()) break;
        const auto kind = c_->Pick(2) ? DisconnectKind::kClean : DisconnectKind::kAbrupt;
        const absl::Status st = w.engine->Disconnect(
            w.hidden_handles[c_->Pick(static_cast<uint32_t>(w.hidden_handles.size()))], kind);
        Log(absl::StrCat("(b only) Disconnect ", kind == DisconnectKind::kClean ? "clean" : "abrupt",
                         " -> ", st.ToString()));
        hidden_actions_ += st.ok();
        break;
      }
      case 5:
        if (!under_.empty()) {
          const uint64_t id = under_[c_->Pick(static_cast<uint32_t>(under_.size()))];
          const absl::Status st = w.engine->RevokeOverride(kHidden, id);
          Log(absl::StrCat("(b only) RevokeOverride hidden ", id, " -> ", st.ToString()));
          hidden_actions_ += st.ok();
        }
        break;
      case 6:
      {
        const size_t applied = w.engine->BeatMany(w.hidden_handles).applied;
        Log(absl::StrCat("(b only) BeatMany applied ", applied));
        hidden_actions_ += applied > 0;
      }
        break;
    }
  }

  // ---- What others read ----

  // A batch with its entries in a canonical order: the order of users in a
  // batch carries nothing (the fan-out keeps them in hash sets whose order
  // follows heap addresses, which differ between any two processes), so
  // each list and section is sorted by user id before comparing bytes.
  static std::string Canonical(const Batch& b) {
    v1::DiffBatch m;
    if (!m.ParseFromString(b.Encode())) return "undecodable";
    auto sort_users = [](google::protobuf::RepeatedPtrField<v1::UserState>* users) {
      std::sort(users->begin(), users->end(), [](const v1::UserState& x, const v1::UserState& y) {
        return x.user_id() < y.user_id();
      });
    };
    sort_users(m.mutable_users());
    for (v1::TopicSection& sec : *m.mutable_topics()) sort_users(sec.mutable_users());
    std::string out;
    m.SerializeToString(&out);
    return out;
  }

  void PollAndCompare() {
    for (SubscriberId s : subs_) {
      for (;;) {
        Batch ba, bb;
        const bool ga = a_.fanout->Poll(s, &ba).value_or(false);
        const bool gb = b_.fanout->Poll(s, &bb).value_or(false);
        if (ga != gb) {
          v1::DiffBatch m;
          m.ParseFromString((ga ? ba : bb).Encode());
          Fail(absl::StrCat("subscriber ", s, ": a batch in world ", ga ? "a" : "b", " only: ",
                            m.ShortDebugString()));
        }
        if (!ga) break;
        Expect(Canonical(ba), Canonical(bb), absl::StrCat("subscriber ", s, " batch ", ba.sequence));
      }
    }
    // The hidden user's own subscriber: drained, never compared.
    Both([&](World& w) {
      Batch b;
      for (SubscriberId s : own_subs_) {
        while (w.fanout->Poll(s, &b).value_or(false)) {
        }
      }
    });
  }

  static std::string Show(const UserPresence& p) {
    return absl::StrCat(p.user_id, " known=", p.known, " state=", static_cast<int>(p.state),
                        " override=", p.has_override, "/", static_cast<int>(p.override_state), "/",
                        p.override_until_ms, " last_seen=", p.last_seen_ms,
                        " freshness=", p.freshness_ms, " devices=", p.devices.live[0], ",",
                        p.devices.live[1], ",", p.devices.live[2], ",", p.devices.live[3], ",",
                        p.devices.live[4], " version=", p.version);
  }

  template <typename T>
  static std::string ShowStatusOr(const absl::StatusOr<T>& v, std::string (*show)(const T&)) {
    return v.ok() ? show(*v) : v.status().ToString();
  }

  static std::string ShowHistory(const std::vector<Transition>& h) {
    std::string out;
    for (const Transition& t : h) {
      absl::StrAppend(&out, "[v", t.version, " at ", t.at_ms, " ", static_cast<int>(t.previous),
                      "->", static_cast<int>(t.state), " self ", static_cast<int>(t.self_state),
                      " cause ", static_cast<int>(t.cause), " trace ", t.trace_id, " seen ",
                      t.last_seen_ms, " pv ", t.public_version, " ps ", t.public_last_seen_ms,
                      "]");
    }
    return out;
  }
  static std::string ShowDurations(const StateDurations& d) {
    return absl::StrCat(d.online_ms, "/", d.away_ms, "/", d.dnd_ms, "/", d.offline_ms);
  }
  static std::string ShowInt(const int64_t& v) { return absl::StrCat(v); }

  void Compare(const std::string& when) {
    const std::vector<absl::string_view> ids(all_.begin(), all_.end());
    for (const std::string viewer : {std::string(), std::string("u0"), std::string("u3")}) {
      const std::vector<UserPresence> ga = a_.engine->Get(ids, viewer);
      const std::vector<UserPresence> gb = b_.engine->Get(ids, viewer);
      const std::vector<UserPresence> pa = a_.engine->GetPublished(ids, viewer);
      const std::vector<UserPresence> pb = b_.engine->GetPublished(ids, viewer);
      for (size_t i = 0; i < ids.size(); ++i) {
        const std::string what = absl::StrCat(when, ": viewer '", viewer, "' of ", ids[i]);
        Expect(Show(ga[i]), Show(gb[i]), what + ": Get");
        Expect(Show(pa[i]), Show(pb[i]), what + ": GetPublished");
        const int64_t now = a_.clock.NowMs();
        const int64_t from = now - static_cast<int64_t>(c_->Pick(20000));
        Expect(ShowStatusOr(a_.engine->History(ids[i], 0, now, viewer), &ShowHistory),
               ShowStatusOr(b_.engine->History(ids[i], 0, now, viewer), &ShowHistory),
               what + ": History");
        Expect(ShowStatusOr(a_.engine->TimeInStates(ids[i], from, now, viewer), &ShowDurations),
               ShowStatusOr(b_.engine->TimeInStates(ids[i], from, now, viewer), &ShowDurations),
               what + ": TimeInStates");
        Expect(ShowStatusOr(a_.engine->LastSeen(ids[i], viewer), &ShowInt),
               ShowStatusOr(b_.engine->LastSeen(ids[i], viewer), &ShowInt), what + ": LastSeen");
      }
    }
  }

  void Expect(const std::string& a, const std::string& b, const std::string& what) {
    if (a != b) Fail(absl::StrCat(what, " differs\n  without the hidden user's actions: ", a,
                                  "\n  with them:                          ", b));
  }

  // What the workload did, for the report of a difference.
  void Log(const std::string& what) {
    trace_.push_back(absl::StrCat("t=+", a_.clock.NowMs() - 1'000'000, " ", what));
  }

  [[noreturn]] void Fail(const std::string& what) {
    std::fprintf(stderr, "noninterference broken (%s): %s\nworkload:\n", label_.c_str(),
                 what.c_str());
    for (const std::string& line : trace_) std::fprintf(stderr, "  %s\n", line.c_str());
    std::abort();
  }

  Chooser* const c_;
  const std::string label_;
  World a_, b_;
  std::vector<std::string> users_;  // the visible users
  std::vector<std::string> all_;    // and the hidden one
  std::vector<uint64_t> under_;     // override ids under the invisible one
  std::vector<SubscriberId> subs_;      // compared
  std::vector<SubscriberId> own_subs_;  // the hidden user's own
  uint64_t hidden_session_ = 1;
  std::vector<std::string> trace_;
  int hidden_actions_ = 0;
};

}  // namespace presence::testing

#endif  // PRESENCE_TESTS_TWO_WORLDS_H_
