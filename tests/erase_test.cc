// Erase equals "never existed" (docs/design.md section 4), as a property with no
// model: world a has a user that acts and is then erased; world b never had
// it. From the erasure on, both worlds run the same workload (the user may
// come back, anew, in both), and everything anyone can read must be the same:
// Get, GetPublished, History, TimeInStates, LastSeen and each device's
// DeviceHistory from every viewer (the user itself included), the batches of every subscriber made after the
// erasure, the views of the subscribers made before it (world a's are told to
// drop the user), the second region's merged view, and the store, which holds
// nothing of the user until it comes back.
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "presence/bus.h"
#include "presence/region.h"
#include "tests/two_worlds.h"

namespace presence::testing {
namespace {

// A world of two_worlds.h with a second region: the engine's changes are
// mirrored (region "r1") to a bus that region "r2" merges from.
struct RegionWorld : World {
  RegionWorld() {
    RegionMirrorOptions o1;
    o1.region_id = "r1";
    o1.clock = &clock;
    o1.outbound = out1.get();
    o1.inbound = {out2.get()};
    r1 = RegionMirror::Create(o1).value();
    engine->AddListener(r1.get());
    RegionMirrorOptions o2;
    o2.region_id = "r2";
    o2.clock = &clock;
    o2.outbound = out2.get();
    o2.inbound = {out1.get()};
    r2 = RegionMirror::Create(o2).value();
  }
  ~RegionWorld() { engine->RemoveListener(r1.get()); }
  std::unique_ptr<Bus> out1 = NewInProcessBus(4), out2 = NewInProcessBus(4);
  std::unique_ptr<RegionMirror> r1, r2;
};

// A subscriber's view as a client keeps it (batches applied in order).
struct View {
  std::map<std::string, std::string> list;                               // user -> entry
  std::map<std::string, std::map<std::string, std::string>> topics;      // topic -> user -> entry
  std::map<std::string, std::string> counts;                             // topic -> counts

  void Apply(const Batch& b) {
    v1::DiffBatch m;
    ASSERT_TRUE(m.ParseFromString(b.Encode()));
    if (m.snapshot()) *this = View();
    for (const v1::UserState& u : m.users()) Upsert(&list, u);
    for (const v1::TopicSection& t : m.topics()) {
      if (t.left()) {
        topics.erase(t.topic());
        counts.erase(t.topic());
        continue;
      }
      if (t.full()) {
        topics[t.topic()].clear();
        counts.erase(t.topic());
      }
      if (t.has_counts()) counts[t.topic()] = t.counts().SerializeAsString();
      for (const v1::UserState& u : t.users()) Upsert(&topics[t.topic()], u);
    }
  }
  std::string Show() const {
    std::string out;
    for (const auto& [u, e] : list) absl::StrAppend(&out, "list ", u, ":", e.size(), "\n");
    for (const auto& [t, users] : topics) {
      for (const auto& [u, e] : users) absl::StrAppend(&out, t, " ", u, ":", e.size(), "\n");
    }
    for (const auto& [t, c] : counts) absl::StrAppend(&out, t, " counts ", c.size(), "\n");
    return out;
  }
  bool operator==(const View& o) const {
    return list == o.list && topics == o.topics && counts == o.counts;
  }

 private:
  static void Upsert(std::map<std::string, std::string>* m, const v1::UserState& u) {
    if (u.removed()) {
      m->erase(u.user_id());
    } else {
      (*m)[u.user_id()] = u.SerializeAsString();
    }
  }
};

class EraseWorlds {
 public:
  EraseWorlds(uint64_t seed) : c_(seed, 1 << 30), seed_(seed) {
    users_ = {"u0", "u1", "u2", kGone};
  }

  void Run() {
    // Everyone watches everyone, in lists and in a topic, in both worlds.
    for (int i = 0; i < 3; ++i) Subscribe(&before_);
    Both([&](RegionWorld& w) { (void)w.fanout->AddMembers("team", {"u0", "u1", "u2", kGone}); });
    // Before: the user acts in world a only (or, every third seed, not at
    // all: an erasure of an unknown user); the others alike in both.
    for (int step = 0; step < 40; ++step) {
      const std::string u = users_[c_.Pick(static_cast<uint32_t>(users_.size()))];
      if (u == kGone) {
        if (seed_ % 3 != 0) Act(u, /*both=*/false);  // every third seed: it never acts
      } else if (c_.Pick(3) == 0) {
        Advance();
      } else {
        Act(u, /*both=*/true);
      }
    }
    // Every other seed, the user goes quiet and the engine forgets it
    // (Options::user_retention_ms) before the erasure, while the fan-out
    // and the history still hold what it was.
    if (seed_ % 2 == 0) Forget();
    if (seed_ % 4 == 0) {
      // Back anew in world a after the engine forgot it (its version starts
      // over there), and erased before the next tick.
      Signal s;
      s.user_id = kGone;
      s.device_id = "d0";
      s.session_id = 9;
      ASSERT_TRUE(a_.engine->Signal(s).ok());
    }
    // The erasure, in world a: the engine and the region beside it.
    ASSERT_TRUE(a_.engine->Erase(kGone).ok());
    ASSERT_TRUE(a_.r1->Erase(kGone).ok());
    // The next tick publishes it; the fan-out flushes at its interval.
    Both([&](RegionWorld& w) { w.clock.Advance(FanoutOptions().flush_interval_ms); });
    Tick();
    // Subscribers made before it: world a's were told to drop the user, so
    // their views now equal world b's.
    for (size_t i = 0; i < before_.size(); ++i) {
      ASSERT_EQ(views_a_[before_[i]].Show(), views_b_[before_[i]].Show())
          << "seed " << seed_ << ": a subscriber from before the erasure";
    }
    for (int i = 0; i < 2; ++i) Subscribe(&after_);
    // After: the same workload in both worlds; the user may come back.
    for (int step = 0; step < 60; ++step) {
      if (c_.Pick(3) == 0) {
        Advance();
      } else {
        Act(users_[c_.Pick(static_cast<uint32_t>(users_.size()))], /*both=*/true);
      }
      if (c_.Pick(4) == 0) Subscribe(&after_);
      Compare(step);
      if (::testing::Test::HasFailure()) return;
    }
  }

 private:
  static constexpr const char* kGone = "gone";

  template <typename F>
  void Both(F f) {
    f(a_);
    f(b_);
  }

  void Subscribe(std::vector<SubscriberId>* into) {
    const uint32_t k = c_.Pick(static_cast<uint32_t>(users_.size()) + 1);
    const std::string owner = k < users_.size() ? users_[k] : "";
    SubscriberId ids[2];
    int i = 0;
    Both([&](RegionWorld& w) {
      SubscriberOptions so;
      so.owner_user_id = owner;
      ids[i] = w.fanout->Subscribe(so).value();
      (void)w.fanout->AddUsers(ids[i], {"u0", "u1", "u2", kGone});
      (void)w.fanout->Join(ids[i], "team");
      ++i;
    });
    ASSERT_EQ(ids[0], ids[1]);
    into->push_back(ids[0]);
  }

  // One action of `u`: in both worlds, or in world a only.
  void Act(const std::string& u, bool both) {
    const std::string d = absl::StrCat("d", c_.Pick(2));
    Signal s;
    s.user_id = u;
    s.device_id = d;
    s.session_id = 1 + c_.Pick(3);
    s.source = static_cast<Source>(1 + c_.Pick(kSourceCount));
    s.activity = c_.Pick(3) == 0 ? Activity::kIdle : Activity::kActive;
    const uint32_t what = c_.Pick(5);
    const auto state = static_cast<OverrideState>(1 + c_.Pick(4));
    const auto kind = c_.Pick(2) ? DisconnectKind::kClean : DisconnectKind::kAbrupt;
    auto act = [&](RegionWorld& w) {
      switch (what) {
        case 0:
        case 1:
          (void)w.engine->Signal(s);
          break;
        case 2:
          (void)w.engine->DisconnectDevice(u, d, 0, kind);
          break;
        case 3:
          (void)w.engine->SetOverride(u, state);
          break;
        case 4:
          (void)w.engine->ClearOverrides(u);
          break;
      }
    };
    act(a_);
    if (both) act(b_);
  }

  // The user ends its sessions and overrides (world a) and long enough
  // passes (both worlds) for the engine to forget it.
  void Forget() {
    (void)a_.engine->ClearOverrides(kGone);
    for (const char* d : {"d0", "d1"}) {
      (void)a_.engine->DisconnectDevice(kGone, d, 0, DisconnectKind::kClean);
    }
    const Options o;
    for (int64_t ms : {o.dead_retention_ms + 1, o.user_retention_ms + 1}) {
      Both([&](RegionWorld& w) { w.clock.Advance(ms); });
      Tick();
    }
    ASSERT_FALSE(a_.engine->GetOne(kGone, kGone).known) << "seed " << seed_ << ": not forgotten";
  }

  void Advance() {
    const int64_t ms = 1 + c_.Pick(c_.Pick(4) == 0 ? 5000 : 300);
    Both([&](RegionWorld& w) { w.clock.Advance(ms); });
    Tick();
  }

  void Tick() {
    Both([&](RegionWorld& w) {
      w.engine->Tick();
      (void)w.r2->Poll();
    });
    for (SubscriberId s : before_) Drain(s);
    for (SubscriberId s : after_) Drain(s);
  }

  void Drain(SubscriberId s) {
    Batch b;
    while (a_.fanout->Poll(s, &b).value_or(false)) {
      views_a_[s].Apply(b);
      if (is_after(s)) batches_a_[s].push_back(Canon(b));
    }
    while (b_.fanout->Poll(s, &b).value_or(false)) {
      views_b_[s].Apply(b);
      if (is_after(s)) batches_b_[s].push_back(Canon(b));
    }
  }
  bool is_after(SubscriberId s) const {
    for (SubscriberId x : after_) {
      if (x == s) return true;
    }
    return false;
  }
  // A batch with each list and section in user order (see two_worlds.h).
  static std::string Canon(const Batch& b) {
    v1::DiffBatch m;
    m.ParseFromString(b.Encode());
    auto sort_users = [](google::protobuf::RepeatedPtrField<v1::UserState>* users) {
      std::sort(users->begin(), users->end(), [](const v1::UserState& x, const v1::UserState& y) {
        return x.user_id() < y.user_id();
      });
    };
    sort_users(m.mutable_users());
    for (v1::TopicSection& sec : *m.mutable_topics()) sort_users(sec.mutable_users());
    return m.ShortDebugString();
  }

  static std::string Show(const UserPresence& p) {
    return absl::StrCat(p.known, " ", static_cast<int>(p.state), " ", p.has_override, " ",
                        p.last_seen_ms, " ", p.freshness_ms, " ", p.devices.total(), " ", p.version);
  }
  static std::string ShowHistory(const absl::StatusOr<std::vector<Transition>>& h) {
    if (!h.ok()) return h.status().ToString();
    std::string out;
    for (const Transition& t : *h) {
      absl::StrAppend(&out, "[", t.version, " ", t.at_ms, " ", static_cast<int>(t.state), " ",
                      static_cast<int>(t.self_state), " ", static_cast<int>(t.cause), " ",
                      t.last_seen_ms, "]");
    }
    return out;
  }

  static std::string ShowDeviceHistory(const absl::StatusOr<std::vector<DeviceTransition>>& h) {
    if (!h.ok()) return h.status().ToString();
    std::string out;
    for (const DeviceTransition& t : *h) {
      absl::StrAppend(&out, "[", t.at_ms, " ", static_cast<int>(t.event), " ", t.session_id, " ",
                      static_cast<int>(t.platform), "]");
    }
    return out;
  }

  void Compare(int step) {
    const std::string where = absl::StrCat("seed ", seed_, " step ", step, " after the erasure");
    for (SubscriberId s : after_) {
      ASSERT_EQ(batches_a_[s], batches_b_[s]) << where << ": subscriber " << s;
    }
    for (SubscriberId s : before_) {
      ASSERT_EQ(views_a_[s].Show(), views_b_[s].Show()) << where << ": subscriber " << s;
    }
    const int64_t now = a_.clock.NowMs();
    for (const std::string& u : users_) {
      for (const std::string& viewer : {std::string(), std::string("u0"), std::string(kGone)}) {
        const std::string what = absl::StrCat(where, ": ", u, " seen by '", viewer, "'");
        ASSERT_EQ(Show(a_.engine->GetOne(u, viewer)), Show(b_.engine->GetOne(u, viewer))) << what;
        const absl::string_view ids[] = {u};
        ASSERT_EQ(Show(a_.engine->GetPublished(ids, viewer)[0]),
                  Show(b_.engine->GetPublished(ids, viewer)[0]))
            << what;
        ASSERT_EQ(ShowHistory(a_.engine->History(u, 0, now, viewer)),
                  ShowHistory(b_.engine->History(u, 0, now, viewer)))
            << what;
        for (const char* d : {"d0", "d1"}) {
          ASSERT_EQ(ShowDeviceHistory(a_.engine->DeviceHistory(u, d, 0, now, viewer)),
                    ShowDeviceHistory(b_.engine->DeviceHistory(u, d, 0, now, viewer)))
              << what << ", device " << d;
        }
        auto ta = a_.engine->TimeInStates(u, now - 10000, now, viewer);
        auto tb = b_.engine->TimeInStates(u, now - 10000, now, viewer);
        ASSERT_EQ(ta.ok(), tb.ok()) << what;
        if (ta.ok()) {
          ASSERT_EQ(absl::StrCat(ta->online_ms, "/", ta->away_ms, "/", ta->dnd_ms, "/", ta->offline_ms),
                    absl::StrCat(tb->online_ms, "/", tb->away_ms, "/", tb->dnd_ms, "/", tb->offline_ms))
              << what;
        }
        auto la = a_.engine->LastSeen(u, viewer);
        auto lb = b_.engine->LastSeen(u, viewer);
        ASSERT_EQ(la.ok() ? absl::StrCat(*la) : la.status().ToString(),
                  lb.ok() ? absl::StrCat(*lb) : lb.status().ToString())
            << what;
      }
      // The second region: the same users, each in the same public state.
      const std::optional<RegionRecord> ra = a_.r2->Get(u), rb = b_.r2->Get(u);
      ASSERT_EQ(ra.has_value(), rb.has_value()) << where << ": region r2 of " << u;
      if (ra) {
        ASSERT_EQ(absl::StrCat(static_cast<int>(ra->event.state), " ", ra->event.last_seen_ms, " ",
                               ra->event.devices.total()),
                  absl::StrCat(static_cast<int>(rb->event.state), " ", rb->event.last_seen_ms, " ",
                               rb->event.devices.total()))
            << where << ": region r2 of " << u;
      }
    }
    // The store: nothing of the user, in either world, unless it came back.
    ASSERT_EQ(StoredOf(a_, kGone), StoredOf(b_, kGone)) << where << ": the store";
  }

  // What the world's store holds of `user`: its record's states and devices.
  static std::string StoredOf(RegionWorld& w, const std::string& user) {
    struct Collect : StoreVisitor {
      const std::string& user;
      std::set<std::string> out;
      explicit Collect(const std::string& u) : user(u) {}
      void OnUser(const UserRecord& r) override {
        if (r.user_id == user) out.insert(absl::StrCat("user ", static_cast<int>(r.state)));
      }
      void OnDevice(const DeviceRecord& r) override {
        if (r.user_id == user) out.insert(absl::StrCat("device ", r.device_id, " ", r.closed));
      }
      void OnOffset(const CommittedOffset&) override {}
    } c(user);
    EXPECT_TRUE(w.store->Load(&c).ok());
    std::string s;
    for (const std::string& x : c.out) absl::StrAppend(&s, x, ";");
    return s;
  }

  SeededChooser c_;
  const uint64_t seed_;
  RegionWorld a_, b_;
  std::vector<std::string> users_;
  std::vector<SubscriberId> before_, after_;
  std::map<SubscriberId, View> views_a_, views_b_;
  std::map<SubscriberId, std::vector<std::string>> batches_a_, batches_b_;
};

TEST(Erase, IsTheSameAsNeverHavingExisted) {
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    EraseWorlds(seed).Run();
    if (HasFailure()) break;
  }
}

}  // namespace
}  // namespace presence::testing
