// Many threads at once, on the real clock: devices connect, beat and drop,
// overrides come and go, subscribers poll, resume and come back, queries
// run, and a ticker ticks. Afterwards every invariant must hold: each
// user's version only grew, no subscriber ever received a user outside its
// interest set, and each subscriber's view equals what the engine published.
//
// It runs for PRESENCE_STRESS_SECONDS (default 2) and is also built under
// ThreadSanitizer by .ci/run and scripts/hardening.sh. A second test races
// what issue 21 fixed: callbacks that call back in, Close during delivery,
// RevokePartitions during keyed calls, Erase (direct and from the bus) during
// heartbeats. A third races push/pull checks and the detector (issue 17):
// lock-free heartbeats of watched devices, probes sent by ticks and answered
// from other threads, disconnects and reconnects. A fourth races lock-free
// heartbeats with the device table growing its chunk directories.
#include <atomic>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "presence/bus.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/fanout.h"
#include "presence/history.h"
#include "presence/phi_detector.h"
#include "presence/prober.h"
#include "presence/store.h"
#include "presence/wire.h"
#include "src/core/mutex.h"
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

class NullListener : public ChangeListener {
 public:
  void OnChanges(absl::Span<const ChangeEvent>) override {}
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
  // Many threads on few cores make ticks slow: no overload steps here (a
  // longer flush interval would keep the final tick from flushing), which
  // tests/overload_test.cc covers.
  o.overload_tick_budget_ms = 0;
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

// The races of issue 21 at once, for PRESENCE_STRESS_SECONDS: listeners and
// push sinks that call back into the engine and the fan-out while ticks
// run; subscribers closed (and their sinks freed) while a tick delivers to
// them; keyed calls on a partition that another thread takes and lets go;
// users erased while their devices beat. ThreadSanitizer (scripts/
// hardening.sh) reports any race; afterwards versions only grew and nothing
// of the partition let go is left.
TEST(Stress, CallbacksCloseRevokeAndEraseRaceCleanly) {
  constexpr uint32_t kPartitions = 4;
  auto store = NewMemoryStore();
  auto history = NewMemoryHistoryStore();
  auto bus = NewInProcessBus(kPartitions);
  Options o;
  o.shards = 4;
  o.min_dwell_ms = 0;
  o.max_signals_per_device_per_sec = 0;
  // Many threads on few cores make ticks slow: no overload steps here (a
  // longer flush interval would keep the final tick from flushing), which
  // tests/overload_test.cc covers.
  o.overload_tick_budget_ms = 0;
  o.store = store.get();
  o.history = history.get();
  o.bus = bus.get();
  o.owns_all_partitions = false;
  auto engine = Engine::Create(o).value();
  const uint32_t all[] = {0, 1, 2, 3};
  ASSERT_TRUE(engine->AssignPartitions(all).ok());
  VersionChecker versions;
  engine->AddListener(&versions);
  FanoutOptions fo;
  fo.flush_interval_ms = 0;
  fo.rate_per_sec = 0;
  auto fanout = Fanout::Create(engine.get(), fo).value();

  std::vector<std::string> users;
  for (int i = 0; i < kUsers; ++i) users.push_back(UserName(i));
  std::vector<std::string> moving;  // users of partition 2, which moves
  for (const std::string& u : users) {
    if (PartitionFor(u, kPartitions) == 2) moving.push_back(u);
  }
  ASSERT_FALSE(moving.empty());

  // A listener that calls back in on every tick.
  struct Reentrant : ChangeListener {
    Engine* engine;
    const std::vector<std::string>* users;
    NullListener extra;
    std::atomic<uint64_t> calls{0};
    void OnChanges(absl::Span<const ChangeEvent> events) override {
      const std::string& u = (*users)[events.size() % users->size()];
      (void)engine->RenderMetrics();
      (void)engine->GetOne(u);
      (void)engine->History(u, 0, engine->NowMs());
      engine->AddListener(&extra);
      engine->RemoveListener(&extra);
      calls.fetch_add(1, std::memory_order_relaxed);
    }
  } listener;
  listener.engine = engine.get();
  listener.users = &users;
  engine->AddListener(&listener);

  // A sink that calls back in and counts its calls (a tick and a Resume
  // may deliver at once): a Deliver after its owner closed the subscriber
  // and freed it races the free, which TSan reports.
  struct CountingSink : Sink {
    Engine* engine;
    Fanout* fanout;
    std::atomic<uint64_t> calls{0};
    void Deliver(SubscriberId sub, const Batch&) override {
      calls.fetch_add(1, std::memory_order_relaxed);
      (void)engine->RenderMetrics();
      (void)fanout->RenderMetrics();
      const absl::string_view ids[] = {"user-0"};
      (void)fanout->AddUsers(sub, ids);
    }
  };

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0};
  std::vector<std::thread> threads;
  // The ticker.
  threads.emplace_back([&] {
    while (!stop.load()) {
      engine->Tick();
      ops.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::yield();
    }
  });
  // Beaters: connect, then beat one at a time and in batches.
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(300 + t);
      std::vector<DeviceHandle> handles;
      uint64_t session = 0;
      const std::string device = "b" + std::to_string(t);  // the signals view it
      while (!stop.load()) {
        if (handles.size() < 64 || rng() % 8 == 0) {
          Signal s;
          s.user_id = users[rng() % kUsers];
          s.device_id = device;
          s.session_id = ++session;
          s.platform = Platform::kMobile;
          s.gateway = "gw-s";  // drained by the eraser's partition commands
          if (auto h = engine->Connect(s); h.ok()) handles.push_back(*h);
          if (handles.size() > 256) handles.erase(handles.begin());
        } else if (rng() % 2) {
          (void)engine->Beat(handles[rng() % handles.size()]);
        } else {
          (void)engine->BeatMany(handles);
        }
        ops.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  // The eraser: frees devices under the beats, directly and through erase
  // commands on the bus, and closes them through partition commands (a
  // drain of their gateway, a bulk revoke), which it consumes (as the
  // partitions move).
  threads.emplace_back([&] {
    std::mt19937_64 rng(400);
    while (!stop.load()) {
      const std::string& u = users[rng() % kUsers];
      const uint64_t pick = rng() % 4;
      if (pick == 0) {
        (void)engine->Erase(u);
      } else if (pick == 1) {
        EXPECT_TRUE(bus->Publish(BusRecordType::kErase, u, EncodeEraseCommand(u, "gw")).ok());
        (void)engine->ConsumeBus();
      } else {
        PartitionCommand c;
        c.action = pick == 2 ? PartitionCommand::Action::kDrain : PartitionCommand::Action::kRevokeOverrides;
        c.drained_gateway = "gw-s";
        c.set_to_ms = engine->NowMs();
        c.gateway = "gw";
        c.issued_at_ms = engine->NowMs();
        c.partition = PartitionFor(u, bus->partitions());
        EXPECT_TRUE(bus->Publish(BusRecordType::kCommand, PartitionKey(c.partition, bus->partitions()),
                                 EncodePartitionCommand(c))
                        .ok());
        (void)engine->ConsumeBus();
      }
      ops.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::yield();
    }
  });
  // Keyed calls on every user, the moving ones included.
  threads.emplace_back([&] {
    std::mt19937_64 rng(500);
    while (!stop.load()) {
      const std::string& u = rng() % 2 ? moving[rng() % moving.size()] : users[rng() % kUsers];
      Signal s;
      s.user_id = u;
      s.device_id = "k";
      s.session_id = 1;
      s.platform = Platform::kWeb;
      switch (rng() % 4) {
        case 0: (void)engine->Signal(s); break;
        case 1: (void)engine->SetOverride(u, OverrideState::kDnd); break;
        case 2: (void)engine->ClearOverrides(u); break;
        default: (void)engine->DisconnectDevice(u, "k", 0, DisconnectKind::kClean); break;
      }
      ops.fetch_add(1, std::memory_order_relaxed);
    }
  });
  // The partition mover.
  threads.emplace_back([&] {
    const uint32_t two[] = {2};
    while (!stop.load()) {
      EXPECT_TRUE(engine->RevokePartitions(two).ok());
      EXPECT_TRUE(engine->AssignPartitions(two).ok());
      ops.fetch_add(2, std::memory_order_relaxed);
    }
  });
  // Subscribers opened, then closed and their sinks freed at once.
  threads.emplace_back([&] {
    std::mt19937_64 rng(600);
    std::vector<std::pair<SubscriberId, std::unique_ptr<CountingSink>>> open;
    while (!stop.load()) {
      if (open.size() < 8) {
        auto sink = std::make_unique<CountingSink>();
        sink->engine = engine.get();
        sink->fanout = fanout.get();
        SubscriberOptions so;
        so.sink = sink.get();
        const SubscriberId id = fanout->Subscribe(so).value();
        const absl::string_view ids[] = {users[rng() % kUsers]};
        EXPECT_TRUE(fanout->AddUsers(id, ids).ok());
        if (rng() % 2) EXPECT_TRUE(fanout->Resume(id, 0).ok());
        open.emplace_back(id, std::move(sink));
      } else {
        const size_t k = rng() % open.size();
        EXPECT_TRUE(fanout->Close(open[k].first).ok());
        open.erase(open.begin() + static_cast<std::ptrdiff_t>(k));  // frees the sink
      }
      ops.fetch_add(1, std::memory_order_relaxed);
    }
    for (auto& [id, sink] : open) EXPECT_TRUE(fanout->Close(id).ok());
  });

  // The stress runs for a set time; nothing waits on another thread here.
  std::this_thread::sleep_for(std::chrono::duration<double>(StressSeconds()));
  stop = true;
  for (auto& th : threads) th.join();

  const uint32_t two[] = {2};
  ASSERT_TRUE(engine->RevokePartitions(two).ok());
  engine->Tick();
  for (const std::string& u : moving) EXPECT_FALSE(engine->GetOne(u).known) << u;
  EXPECT_EQ(versions.violations(), 0u);
  EXPECT_GT(listener.calls.load(), 0u);
  const std::string metrics = engine->RenderMetrics();
  for (const char* action : {"drain", "revoke_overrides"}) {
    EXPECT_EQ(metrics.find(absl::StrCat("presence_partition_commands_total{action=\"", action, "\"} 0\n")),
              std::string::npos)
        << "no " << action << " command was applied";
  }
  engine->RemoveListener(&listener);
  std::printf("stress (issue 21): %.1f s, %llu operations, %llu listener calls\n", StressSeconds(),
              static_cast<unsigned long long>(ops.load()),
              static_cast<unsigned long long>(listener.calls.load()));
}

TEST(Stress, WatchedHeartbeatsAndProbeAnswersRaceTicks) {
  // Probes go to a queue that answering threads drain; the clock is the
  // real one, with short intervals, so that devices go quiet, are probed
  // and die while others beat them back.
  struct QueueProber : Prober {
    void Probe(const ProbeRequest& r) override {
      internal::MutexLock lock(&mu);
      ids.push_back(r.probe_id);
    }
    bool Take(uint64_t* id) {
      internal::MutexLock lock(&mu);
      if (ids.empty()) return false;
      *id = ids.back();
      ids.pop_back();
      return true;
    }
    internal::Mutex mu;
    std::vector<uint64_t> ids;
  } prober;
  PhiAccrualDetector detector;
  Options o;
  o.app = {20, 80};
  o.manual = {20, 80};
  o.probe_margin_ms = 10;
  o.probe_retry_ms = 10;
  o.detector = &detector;
  o.detector_platforms = 1u << static_cast<int>(Platform::kWeb);  // mobile: fixed bound
  o.detector_floor_ms = 40;
  o.max_signals_per_device_per_sec = 0;
  o.prober = &prober;
  std::unique_ptr<Engine> engine = Engine::Create(o).value();
  constexpr int kDevices = 64;
  std::vector<std::atomic<uint64_t>> handles(kDevices);
  std::atomic<uint64_t> session{1};
  auto connect = [&](int i) {
    Signal s;
    const std::string user = "u" + std::to_string(i % 16), device = "d" + std::to_string(i);
    s.user_id = user;
    s.device_id = device;
    s.session_id = session.fetch_add(1);
    s.platform = i % 2 == 0 ? Platform::kWeb : Platform::kMobile;
    absl::StatusOr<DeviceHandle> h = engine->Connect(s);
    ASSERT_TRUE(h.ok()) << h.status();
    handles[i].store(h->value);
  };
  for (int i = 0; i < kDevices; ++i) connect(i);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> unexpected{0}, applied{0};
  std::vector<std::thread> threads;
  for (int b = 0; b < 2; ++b) {
    threads.emplace_back([&, b] {
      std::mt19937 rng(b);
      while (!stop.load()) {
        // Each beater has its own devices (so reconnects do not race); one
        // in four never beats: it lives on probe answers, or dies.
        const int i = static_cast<int>(rng() % (kDevices / 2)) * 2 + b;
        if (i % 4 == b) continue;
        const Source src = rng() % 2 ? Source::kApp : Source::kManual;
        absl::Status st = engine->Beat(DeviceHandle{handles[i].load()}, Activity::kActive, src);
        // NotFound: a handle of a replaced session; FailedPrecondition: a
        // beat that read the clock before another thread's beat landed.
        if (!st.ok() && !absl::IsNotFound(st) && !absl::IsFailedPrecondition(st)) ++unexpected;
        if (rng() % 4096 == 0) connect(i);  // a reconnect: probes of the old session turn late
      }
    });
  }
  for (int a = 0; a < 2; ++a) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        uint64_t id;
        if (!prober.Take(&id)) {
          std::this_thread::yield();
          continue;
        }
        if (id % 5 == 0) continue;  // lost: some devices die with their probes unanswered
        absl::Status st = engine->AnswerProbe(id);
        if (st.ok()) {
          ++applied;
        } else if (!absl::IsFailedPrecondition(st)) {
          ++unexpected;
        }
      }
    });
  }
  const auto end = std::chrono::steady_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(StressSeconds() * 1000));
  while (std::chrono::steady_clock::now() < end) engine->Tick();
  stop.store(true);
  for (std::thread& t : threads) t.join();
  engine->Tick();
  EXPECT_EQ(unexpected.load(), 0u);
  // Every answer applied was counted once, and no more answers than probes.
  const std::string m = engine->RenderMetrics();
  auto value = [&](const std::string& name) {
    const size_t at = m.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::atof(m.c_str() + at + name.size() + 2);
  };
  EXPECT_EQ(value("presence_probes_answered_total"), double(applied.load()));
  EXPECT_GT(value("presence_probes_sent_total"), 0);
  EXPECT_GT(value("presence_probes_answered_total"), 0);
  EXPECT_LE(value("presence_probes_answered_total") + value("presence_probes_late_total"),
            value("presence_probes_sent_total"));
}

// One shard takes 40,000 devices while two threads beat, without the lock,
// the handles of those already connected: the directories of record chunks
// and of the detector's answers grow from 16 entries to 128 under them
// (DeviceTable: chunks of 512), and every beat must find its record.
TEST(Stress, LockFreeHeartbeatsRaceTheDeviceTableGrowing) {
  PhiAccrualDetector detector;
  Options o;
  o.shards = 1;
  o.detector = &detector;
  o.detector_platforms = 1u << static_cast<int>(Platform::kWeb);
  o.max_signals_per_device_per_sec = 0;
  std::unique_ptr<Engine> engine = Engine::Create(o).value();
  constexpr int kDevices = 40'000;
  std::vector<std::atomic<uint64_t>> handles(kDevices);
  std::atomic<int> connected{0};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> unexpected{0}, beats{0};
  std::vector<std::thread> threads;
  for (int b = 0; b < 2; ++b) {
    threads.emplace_back([&, b] {
      std::mt19937 rng(b);
      while (!stop.load()) {
        const int n = connected.load();
        if (n == 0) continue;
        // Mostly the newest devices, whose chunks were just published.
        const int i = rng() % 2 ? n - 1 - static_cast<int>(rng() % std::min(n, 512))
                                : static_cast<int>(rng() % n);
        absl::Status st = engine->Beat(DeviceHandle{handles[i].load()}, Activity::kActive);
        // FailedPrecondition: both threads beat one device at once, and the
        // one that read the clock first landed second.
        if (!st.ok() && !absl::IsFailedPrecondition(st)) ++unexpected;
        ++beats;
      }
    });
  }
  for (int i = 0; i < kDevices; ++i) {
    Signal s;
    const std::string user = "g" + std::to_string(i);
    s.user_id = user;
    s.device_id = "d";
    s.session_id = 1;
    s.platform = i % 2 == 0 ? Platform::kWeb : Platform::kMobile;
    absl::StatusOr<DeviceHandle> h = engine->Connect(s);
    ASSERT_TRUE(h.ok()) << h.status();
    handles[i].store(h->value);
    connected.store(i + 1);
    if (i % 4096 == 0) engine->Tick();
  }
  stop.store(true);
  for (std::thread& t : threads) t.join();
  engine->Tick();
  EXPECT_EQ(unexpected.load(), 0u);
  EXPECT_GT(beats.load(), 0u);
  EXPECT_EQ(engine->GetOne("g39999").state, State::kOnline);
  std::printf("stress (device table growth): %llu beats during %d connects\n",
              static_cast<unsigned long long>(beats.load()), kDevices);
}

// A take-over of two partitions of four, 75,000 users with a device each
// (150,000 records), loads them on two threads (from 65,536 records:
// EngineCore::LoadFromStore), each taking half of the shards, while other
// threads send keyed signals to the users of the partitions already owned,
// which share those shards, and connect and beat devices for them without
// the lock. Under ThreadSanitizer (scripts/hardening.sh) that is the check
// that the two halves share nothing unlocked. Every user must be online.
TEST(Stress, ATakeOverLoadsOnTwoThreadsWhileOwnedUsersSignal) {
  constexpr uint32_t kPartitions = 4;
  constexpr int kUsers = 150'000;
  auto store = NewMemoryStore();
  auto bus = NewInProcessBus(kPartitions);
  ManualClock clock(1'000'000'000);  // still: a slow build must not see devices lapse
  std::vector<std::string> users, owned;
  StoreBatch records;
  for (int i = 0; i < kUsers; ++i) {
    users.push_back("t" + std::to_string(i));
    if (PartitionFor(users.back(), kPartitions) < 2) owned.push_back(users.back());
    UserRecord& u = records.users.emplace_back();
    u.user_id = users.back();
    u.version = u.state_version = 1;
    u.state = u.self_state = State::kOnline;
    u.last_seen_ms = u.published_at_ms = clock.NowMs();
    DeviceRecord& d = records.devices.emplace_back();
    d.user_id = users.back();
    d.device_id = "web";
    d.session_id = 1;
    d.platform = Platform::kWeb;
    d.last_signal_ms = {0, clock.NowMs(), 0};
    d.gateway = i % 2 == 0 ? "gw-a" : "gw-b";
    d.version = 1;
  }
  ASSERT_TRUE(store->Write(records).ok());
  Options o;
  o.clock = &clock;
  o.shards = 16;
  o.store = store.get();
  o.bus = bus.get();
  o.owns_all_partitions = false;
  o.max_signals_per_device_per_sec = 0;
  std::unique_ptr<Engine> engine = Engine::Create(o).value();
  const uint32_t first[] = {0, 1}, second[] = {2, 3};
  ASSERT_TRUE(engine->AssignPartitions(first).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  std::atomic<uint64_t> unexpected{0}, calls{0};
  std::thread keyed([&] {
    std::mt19937 rng(1);
    ++started;
    // Bounded: each goes onto the in-process bus, which keeps it.
    for (int n = 0; n < 200'000 && !stop.load(); ++n) {
      Signal s;
      s.user_id = owned[rng() % owned.size()];
      s.device_id = "web";
      s.session_id = 1;
      if (!engine->Signal(s).ok()) ++unexpected;
      ++calls;
    }
  });
  std::thread beats([&] {
    std::mt19937 rng(2);
    std::vector<DeviceHandle> handles;
    ++started;
    while (!stop.load()) {
      if (handles.size() < 1000) {
        Signal s;
        s.user_id = owned[rng() % owned.size()];
        s.device_id = "phone";
        s.session_id = 1;
        absl::StatusOr<DeviceHandle> h = engine->Connect(s);
        if (h.ok()) handles.push_back(*h);
        else ++unexpected;
      } else if (!engine->Beat(handles[rng() % handles.size()], Activity::kActive).ok()) {
        ++unexpected;
      }
      ++calls;
    }
  });
  while (started.load() < 2 || calls.load() == 0) std::this_thread::yield();
  EXPECT_TRUE(engine->AssignPartitions(second).ok());
  stop.store(true);
  keyed.join();
  beats.join();
  engine->Tick();
  EXPECT_EQ(unexpected.load(), 0u);
  int offline = 0;
  for (const std::string& u : users) offline += engine->GetOne(u).state == State::kOnline ? 0 : 1;
  EXPECT_EQ(offline, 0);
  std::printf("stress (take-over on two threads): %llu calls during the load of %zu users\n",
              static_cast<unsigned long long>(calls.load()), users.size() - owned.size());
}

}  // namespace
}  // namespace presence::testing
