// Randomized test of the fan-out tier: random subscriptions, topic
// memberships, overrides (invisible among them) and signal streams on the
// manual clock, with polls skipped at random so that throttling, lagging and
// resumes happen. It checks, as it goes, that no subscriber ever receives a
// user it did not watch, nor a state that was not published for that
// version (an invisible user is OFFLINE in every public view); and after a
// quiet period, that each subscriber's view equals the engine's true view of
// its interest set.
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "presence/fanout.h"
#include "tests/fanout_client.h"
#include "tests/test_util.h"

namespace presence::testing {
namespace {

constexpr int kUsers = 10;
constexpr int kTopics = 3;
constexpr int kSubs = 5;

std::string UserName(int i) { return "u" + std::to_string(i); }
std::string TopicName(int i) { return "t" + std::to_string(i); }

// Remembers, per (user, version), what was published, for both views.
struct PublishedLog : ChangeListener {
  void OnChanges(absl::Span<const ChangeEvent> events) override {
    for (const auto& e : events) {
      pub[{e.user_id, e.version}] = e.state;
      self[{e.user_id, e.version}] = e.self_state;
    }
  }
  std::map<std::pair<std::string, uint64_t>, State> pub, self;
};

struct Model {
  std::set<std::string> list;
  std::set<std::string> topics;  // joined
  std::string owner;
  std::set<std::string> allowed;  // interest since the last drain
};

class FanoutModel {
 public:
  explicit FanoutModel(uint64_t seed) : rng_(seed) {
    Options o;
    o.dead_retention_ms = 1 << 30;
    o.user_retention_ms = int64_t{1} << 40;
    o.min_dwell_ms = Pick(0, 1) ? 1000 : 0;
    o.clock = &clock_;
    engine_ = Engine::Create(o).value();
    engine_->AddListener(&log_);
    FanoutOptions fo;
    fo.rate_per_sec = Pick(0, 1) ? 0 : 5;
    fo.burst = 2;
    fo.max_outbox_batches = Pick(2, 8);
    fo.resume_window = Pick(1, 6);
    fo.topic_history = Pick(1, 4);
    fo.interval_mode_members = Pick(2, 6);
    fo.counts_only_members = fo.interval_mode_members + Pick(0, 4);
    fo.large_topic_interval_ms = 300;
    fo.flush_interval_ms = Pick(0, 1) ? 100 : 250;
    fanout_ = Fanout::Create(engine_.get(), fo).value();
    for (int i = 0; i < kSubs; ++i) {
      SubscriberOptions so;
      if (Pick(0, 1)) so.owner_user_id = UserName(Pick(0, kUsers - 1));
      ids_.push_back(fanout_->Subscribe(so).value());
      models_.emplace_back();
      models_.back().owner = so.owner_user_id;
      views_.emplace_back();
    }
  }

  void Run(int steps) {
    for (int i = 0; i < steps; ++i) Step();
    // Quiet period: no more changes to interest or overrides; every device
    // either beats on or has gone; tick and drain until the views settle.
    for (int i = 0; i < 80; ++i) {
      if (i % 10 == 0) {
        for (const auto& [ud, activity] : connected_) {
          Signal sig;
          sig.user_id = ud.first;
          sig.device_id = ud.second;
          sig.session_id = 1 + session_bumps_[ud.first + ud.second];
          sig.platform = Platform::kWeb;
          sig.activity = activity;
          ASSERT_TRUE(engine_->Signal(sig).ok());
        }
      }
      clock_.Advance(100);
      engine_->Tick();
      for (int s = 0; s < kSubs; ++s) DrainAndCheck(s);
    }
    for (int s = 0; s < kSubs; ++s) CheckFinalView(s);
  }

 private:
  int Pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  std::vector<absl::string_view> SomeUsers(std::vector<std::string>* store) {
    store->clear();
    const int n = Pick(0, 4);
    for (int i = 0; i < n; ++i) store->push_back(UserName(Pick(0, kUsers - 1)));
    return std::vector<absl::string_view>(store->begin(), store->end());
  }

  std::set<std::string> Interest(int s) const {
    std::set<std::string> out = models_[s].list;
    for (const auto& t : models_[s].topics) {
      auto it = members_.find(t);
      if (it != members_.end()) out.insert(it->second.begin(), it->second.end());
    }
    return out;
  }

  void Step() {
    std::vector<std::string> store;
    const int s = Pick(0, kSubs - 1);
    switch (Pick(0, 11)) {
      case 0:
      case 1: {  // a device signals (maybe idle), on its own session
        Signal sig;
        std::string u = UserName(Pick(0, kUsers - 1));
        std::string d = "d" + std::to_string(Pick(0, 1));
        sig.user_id = u;
        sig.device_id = d;
        sig.session_id = 1 + session_bumps_[u + d];
        sig.platform = Platform::kWeb;
        sig.activity = Pick(0, 3) ? Activity::kActive : Activity::kIdle;
        if (engine_->Signal(sig).ok()) connected_[{u, d}] = sig.activity;
        break;
      }
      case 2: {  // a device disconnects; its next signal uses a new session
        std::string u = UserName(Pick(0, kUsers - 1));
        std::string d = "d" + std::to_string(Pick(0, 1));
        if (engine_->DisconnectDevice(u, d, 0, Pick(0, 1) ? DisconnectKind::kClean
                                                            : DisconnectKind::kAbrupt)
                .ok()) {
          ++session_bumps_[u + d];
          connected_.erase({u, d});
        }
        break;
      }
      case 3: {  // overrides, invisible among them
        std::string u = UserName(Pick(0, kUsers - 1));
        if (Pick(0, 2) == 0) {
          (void)engine_->ClearOverrides(u);
        } else {
          const auto state = static_cast<OverrideState>(Pick(1, 4));
          const int64_t until = Pick(0, 1) ? clock_.NowMs() + Pick(100, 3000) : 0;
          (void)engine_->SetOverride(u, state, until);
        }
        break;
      }
      case 4: {  // the subscriber's list
        auto users = SomeUsers(&store);
        const int op = Pick(0, 2);
        absl::Status st = op == 0   ? fanout_->AddUsers(ids_[s], users)
                          : op == 1 ? fanout_->RemoveUsers(ids_[s], users)
                                    : fanout_->ReplaceUsers(ids_[s], users);
        ASSERT_TRUE(st.ok()) << st;
        if (op == 2) models_[s].list.clear();
        for (auto u : users) {
          if (op == 1) {
            models_[s].list.erase(std::string(u));
          } else {
            models_[s].list.insert(std::string(u));
          }
        }
        break;
      }
      case 5: {  // topic membership (the host's)
        const std::string t = TopicName(Pick(0, kTopics - 1));
        auto users = SomeUsers(&store);
        const int op = Pick(0, 2);
        absl::Status st = op == 0   ? fanout_->AddMembers(t, users)
                          : op == 1 ? fanout_->RemoveMembers(t, users)
                                    : fanout_->ReplaceMembers(t, users);
        if (op == 1 && !members_.count(t)) {
          EXPECT_TRUE(absl::IsNotFound(st));
          break;
        }
        ASSERT_TRUE(st.ok()) << st;
        if (op == 2) members_[t].clear();
        for (auto u : users) {
          if (op == 1) {
            members_[t].erase(std::string(u));
          } else {
            members_[t].insert(std::string(u));
          }
        }
        // A topic with no members and no subscribers is gone.
        bool joined = false;
        for (const auto& m : models_) joined |= m.topics.count(t) > 0;
        if (members_[t].empty() && !joined) members_.erase(t);
        break;
      }
      case 6: {  // join or leave
        const std::string t = TopicName(Pick(0, kTopics - 1));
        if (Pick(0, 1)) {
          absl::Status st = fanout_->Join(ids_[s], t);
          const bool has_members = members_.count(t) && !members_[t].empty();
          EXPECT_EQ(st.ok(), has_members) << st;
          if (st.ok()) models_[s].topics.insert(t);
        } else {
          absl::Status st = fanout_->Leave(ids_[s], t);
          EXPECT_EQ(st.ok(), models_[s].topics.count(t) > 0) << st;
          models_[s].topics.erase(t);
          if (members_.count(t) && members_[t].empty()) {
            bool joined = false;
            for (const auto& m : models_) joined |= m.topics.count(t) > 0;
            if (!joined) members_.erase(t);
          }
        }
        break;
      }
      case 7: {  // the client reconnects with its cursor
        ASSERT_TRUE(fanout_->Resume(ids_[s], views_[s].last_seq).ok());
        break;
      }
      default: {  // time passes; some subscribers poll
        clock_.Advance(Pick(1, 400));
        engine_->Tick();
        for (int i = 0; i < kSubs; ++i) {
          for (const auto& u : Interest(i)) models_[i].allowed.insert(u);
          if (Pick(0, 2)) DrainAndCheck(i);
        }
        break;
      }
    }
  }

  void DrainAndCheck(int s) {
    for (const auto& u : Interest(s)) models_[s].allowed.insert(u);
    Batch b;
    while (fanout_->Poll(ids_[s], &b).value()) {
      if (b.snapshot) views_[s].last_seq = b.sequence - 1;  // lagging: a fresh start
      const v1::DiffBatch m = views_[s].Apply(b);
      CheckEntries(s, m.users(), /*list=*/true);
      for (const auto& sec : m.topics()) CheckEntries(s, sec.users(), /*list=*/false);
    }
    models_[s].allowed = Interest(s);
  }

  template <typename Users>
  void CheckEntries(int s, const Users& users, bool list) {
    for (const v1::UserState& u : users) {
      if (u.removed()) continue;
      ASSERT_TRUE(models_[s].allowed.count(u.user_id()))
          << "subscriber " << s << " received " << u.user_id() << " it does not watch";
      const bool self = list && u.user_id() == models_[s].owner;
      const auto& log = self ? log_.self : log_.pub;
      const auto it = log.find({u.user_id(), u.version()});
      const State published = it == log.end() ? State::kOffline : it->second;
      ASSERT_EQ(static_cast<State>(u.state()), published)
          << "subscriber " << s << " got " << u.user_id() << " v" << u.version()
          << " in a state that was not published for that view (list=" << list << ")";
    }
  }

  void CheckFinalView(int s) {
    const ClientView& v = views_[s];
    // A watched user the engine has nothing to show of (never published in
    // that view) is not in the client's view at all.
    auto known = [&](const std::string& u, const std::string& viewer) {
      return engine_->GetOne(u, viewer).known;
    };
    std::set<std::string> list_keys, shown_list;
    for (const auto& [u, st] : v.list) list_keys.insert(u);
    for (const auto& u : models_[s].list) {
      if (known(u, u == models_[s].owner ? u : "")) shown_list.insert(u);
    }
    EXPECT_EQ(list_keys, shown_list) << "subscriber " << s;
    for (const auto& u : shown_list) {
      const std::string viewer = u == models_[s].owner ? u : "";
      EXPECT_EQ(static_cast<State>(v.list.at(u).state()), engine_->GetOne(u, viewer).state)
          << "subscriber " << s << " user " << u;
    }
    std::set<std::string> topic_keys;
    for (const auto& [t, view] : v.topics) topic_keys.insert(t);
    for (const auto& [t, c] : v.counts) topic_keys.insert(t);
    EXPECT_EQ(topic_keys, models_[s].topics) << "subscriber " << s;
    for (const auto& t : models_[s].topics) {
      const auto& members = members_[t];
      if (v.counts.count(t)) {
        uint32_t online = 0, total = 0;
        for (const auto& u : members) {
          online += engine_->GetOne(u).state == State::kOnline;
          ++total;
        }
        const auto& c = v.counts.at(t);
        EXPECT_EQ(c.online(), online) << "topic " << t;
        EXPECT_EQ(c.online() + c.away() + c.dnd() + c.offline(), total) << "topic " << t;
        continue;
      }
      std::set<std::string> keys, shown;
      for (const auto& [u, st] : v.topics.at(t)) keys.insert(u);
      for (const auto& u : members) {
        if (known(u, "")) shown.insert(u);
      }
      EXPECT_EQ(keys, shown) << "subscriber " << s << " topic " << t;
      for (const auto& [u, st] : v.topics.at(t)) {
        EXPECT_EQ(static_cast<State>(st.state()), engine_->GetOne(u).state)
            << "subscriber " << s << " topic " << t << " user " << u;
      }
    }
  }

  std::mt19937_64 rng_;
  ManualClock clock_{1'000'000};
  PublishedLog log_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Fanout> fanout_;
  std::vector<SubscriberId> ids_;
  std::vector<Model> models_;
  std::vector<ClientView> views_;
  std::map<std::string, std::set<std::string>> members_;
  std::map<std::string, int> session_bumps_;
  std::map<std::pair<std::string, std::string>, Activity> connected_;  // kept alive at the end
};

TEST(FanoutModel, RandomStreamsKeepEverySubscribersViewRightAndPrivate) {
  for (uint64_t seed = 1; seed <= 400; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    FanoutModel m(seed);
    m.Run(250);
    if (::testing::Test::HasFailure()) break;
  }
}

}  // namespace
}  // namespace presence::testing
