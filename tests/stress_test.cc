// Many threads at once, on the real clock: devices connect, beat and drop,
// overrides come and go, subscribers poll, resume and come back, queries
// run, and a ticker ticks. Afterwards every invariant must hold: each
// user's version only grew, no subscriber ever received a user outside its
// interest set, and each subscriber's view equals what the engine published.
//
// It runs for PRESENCE_STRESS_SECONDS (default 2) and is also built under
// ThreadSanitizer by .ci/run.
#include <atomic>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "presence/engine.h"
#include "presence/fanout.h"
#include "src/mutex.h"
#include "tests/fanout_client.h"

namespace presence::testing {
namespace {

constexpr int kUsers = 48;
std::string UserName(int i) { return "user-" + std::to_string(i); }

// Checks, as events arrive, that every user's version only grows.
class VersionChecker : public ChangeListener {
 public:
  void OnChanges(absl::Span<const ChangeEvent> events) override {
    internal::MutexLock lock(&mu_);
    for (const ChangeEvent& e : events) {
      uint64_t& last = last_[e.user_id];
      if (e.version <= last) ++violations_;
      last = e.version;
      ++events_;
    }
  }
  uint64_t violations() {
    internal::MutexLock lock(&mu_);
    return violations_;
  }
  uint64_t events() {
    internal::MutexLock lock(&mu_);
    return events_;
  }

 private:
  internal::Mutex mu_;
  std::map<std::string, uint64_t> last_ ABSL_GUARDED_BY(mu_);
  uint64_t violations_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t events_ ABSL_GUARDED_BY(mu_) = 0;
};

struct Watcher {
  SubscriberId id = 0;
  std::string owner;
  std::set<std::string> list;
  std::string topic;
  std::set<std::string> interest;  // list plus the topic's members (fixed)
  ClientView view;
};

double StressSeconds() {
  const char* env = std::getenv("PRESENCE_STRESS_SECONDS");
  return env != nullptr ? std::atof(env) : 2.0;
}

TEST(Stress, ManyThreadsAtOnceKeepEveryInvariant) {
  Options o;
  o.shards = 8;
  o.min_dwell_ms = 50;
  o.max_signals_per_device_per_sec = 0;
  auto engine = Engine::Create(o).value();
  VersionChecker versions;
  engine->AddListener(&versions);
  FanoutOptions fo;
  fo.flush_interval_ms = 0;  // every tick, so that the final tick delivers everything
  fo.rate_per_sec = 0;
  fo.max_outbox_batches = 8;  // some watchers fall behind and get snapshots
  fo.resume_window = 4;
  auto fanout = Fanout::Create(engine.get(), fo).value();

  std::vector<std::string> users;
  for (int i = 0; i < kUsers; ++i) users.push_back(UserName(i));
  std::map<std::string, std::set<std::string>> topics;
  for (int t = 0; t < 3; ++t) {
    const std::string name = "team-" + std::to_string(t);
    std::vector<absl::string_view> members;
    for (int i = t * 12; i < t * 12 + 20; ++i) {
      members.push_back(users[i % kUsers]);
      topics[name].insert(users[i % kUsers]);
    }
    ASSERT_TRUE(fanout->AddMembers(name, members).ok());
  }

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> outside{0};  // entries for users outside the interest set
  std::vector<std::thread> threads;

  // Devices: each thread owns 12 users' devices.
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      std::map<std::string, DeviceHandle> handles;
      std::map<std::string, uint64_t> sessions;
      while (!stop.load()) {
        const std::string& user = users[t * 12 + rng() % 12];
        const std::string device = "d" + std::to_string(rng() % 2);
        const std::string key = user + "/" + device;
        Signal s;
        s.user_id = user;
        s.device_id = device;
        s.platform = Platform::kWeb;
        s.activity = rng() % 4 ? Activity::kActive : Activity::kIdle;
        switch (rng() % 6) {
          case 0:
            s.session_id = ++sessions[key];
            if (auto h = engine->Connect(s); h.ok()) handles[key] = *h;
            break;
          case 1:
          case 2:
            if (handles.count(key)) (void)engine->Beat(handles[key], s.activity);
            break;
          case 3:
            if (handles.count(key)) {
              (void)engine->Disconnect(handles[key], rng() % 2 ? DisconnectKind::kClean
                                                                : DisconnectKind::kAbrupt);
              handles.erase(key);
            }
            break;
          default:
            s.session_id = sessions[key] == 0 ? (sessions[key] = 1) : sessions[key];
            (void)engine->Signal(s);
            break;
        }
        ops.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  // Overrides.
  threads.emplace_back([&] {
    std::mt19937_64 rng(7);
    while (!stop.load()) {
      const std::string& user = users[rng() % kUsers];
      if (rng() % 3 == 0) {
        (void)engine->ClearOverrides(user);
      } else {
        (void)engine->SetOverride(user, static_cast<OverrideState>(1 + rng() % 4),
                                  rng() % 2 ? engine->NowMs() + 50 + rng() % 200 : 0);
      }
      ops.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::yield();
    }
  });
  // Queries.
  threads.emplace_back([&] {
    std::vector<absl::string_view> ids(users.begin(), users.end());
    while (!stop.load()) {
      (void)engine->Get(ids, users[0]);
      (void)engine->GetPublished(ids);
      (void)engine->RenderMetrics();
      ops.fetch_add(3, std::memory_order_relaxed);
    }
  });
  // Watchers: two threads, four each; they poll, resume, and come back.
  std::vector<Watcher> watchers(8);
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(200 + t);
      auto open = [&](Watcher& w) {
        SubscriberOptions so;
        so.owner_user_id = w.owner;
        w.id = fanout->Subscribe(so).value();
        std::vector<absl::string_view> ids(w.list.begin(), w.list.end());
        EXPECT_TRUE(fanout->AddUsers(w.id, ids).ok());
        if (!w.topic.empty()) EXPECT_TRUE(fanout->Join(w.id, w.topic).ok());
        w.view = ClientView();
      };
      for (int k = 0; k < 4; ++k) {
        Watcher& w = watchers[t * 4 + k];
        for (int j = 0; j < 6; ++j) w.list.insert(users[rng() % kUsers]);
        if (k % 2 == 0) w.owner = *w.list.begin();
        if (k != 3) w.topic = "team-" + std::to_string(k % 3);
        w.interest = w.list;
        if (!w.topic.empty()) w.interest.insert(topics[w.topic].begin(), topics[w.topic].end());
        open(w);
      }
      while (!stop.load()) {
        Watcher& w = watchers[t * 4 + rng() % 4];
        const int r = rng() % 10;
        if (r == 0) {
          EXPECT_TRUE(fanout->Resume(w.id, w.view.last_seq).ok());
        } else if (r == 1) {
          EXPECT_TRUE(fanout->Close(w.id).ok());
          open(w);
        } else if (r < 8) {
          Batch b;
          while (fanout->Poll(w.id, &b).value()) {
            if (b.snapshot) w.view.last_seq = b.sequence - 1;
            const v1::DiffBatch m = w.view.Apply(b);
            for (const auto& u : m.users()) outside += !u.removed() && !w.interest.count(u.user_id());
            for (const auto& sec : m.topics()) {
              for (const auto& u : sec.users()) outside += !u.removed() && !w.interest.count(u.user_id());
            }
          }
        }
        ops.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  // The ticker.
  threads.emplace_back([&] {
    while (!stop.load()) {
      engine->Tick();
      ops.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });

  std::this_thread::sleep_for(std::chrono::duration<double>(StressSeconds()));
  stop = true;
  for (auto& th : threads) th.join();

  // Quiesce: one more tick publishes and flushes; then every view must equal
  // what the engine published.
  engine->Tick();
  for (Watcher& w : watchers) {
    Batch b;
    while (fanout->Poll(w.id, &b).value()) {
      if (b.snapshot) w.view.last_seq = b.sequence - 1;
      w.view.Apply(b);
    }
    for (const std::string& u : w.list) {
      const absl::string_view ids[] = {u};
      const State want = engine->GetPublished(ids, u == w.owner ? u : "")[0].state;
      ASSERT_TRUE(w.view.list.count(u)) << u;
      EXPECT_EQ(static_cast<State>(w.view.list.at(u).state()), want) << u;
    }
    if (!w.topic.empty()) {
      for (const std::string& u : topics[w.topic]) {
        const absl::string_view ids[] = {u};
        ASSERT_TRUE(w.view.topics[w.topic].count(u)) << u;
        EXPECT_EQ(static_cast<State>(w.view.topics[w.topic].at(u).state()),
                  engine->GetPublished(ids)[0].state)
            << u;
      }
    }
  }
  EXPECT_EQ(versions.violations(), 0u);
  EXPECT_EQ(outside.load(), 0u);
  EXPECT_GT(versions.events(), 0u);  // how many depends on the machine's load
  std::printf("stress: %.1f s, %llu operations, %llu published changes\n", StressSeconds(),
              static_cast<unsigned long long>(ops.load()),
              static_cast<unsigned long long>(versions.events()));
}

}  // namespace
}  // namespace presence::testing
