// The thread-safety promises of engine.h, listener.h and fanout.h (issue 21),
// each with a deterministic reproduction: a callback, a blocking sink or a
// test hook (src/core/test_hooks.h) forces the interleaving that broke it.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "presence/bus.h"
#include "presence/engine.h"
#include "presence/fanout.h"
#include "presence/history.h"
#include "presence/store.h"
#include "src/core/test_hooks.h"
#include "tests/test_util.h"

namespace presence::testing {
namespace {

using ::testing::HasSubstr;

// A flag that one thread raises and another waits for, with a deadline.
class Flag {
 public:
  void Raise() {
    std::lock_guard<std::mutex> lock(mu_);
    raised_ = true;
    cv_.notify_all();
  }
  bool WaitFor(std::chrono::seconds deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, deadline, [&] { return raised_; });
  }
  bool raised() {
    std::lock_guard<std::mutex> lock(mu_);
    return raised_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool raised_ = false;
};

// Runs `f` on its own thread. When it has not returned within the deadline
// it deadlocked: the test fails and the process ends (the stuck thread
// cannot be joined).
void FinishesWithin(std::chrono::seconds deadline, const std::function<void()>& f) {
  Flag done;
  std::thread t([&] {
    f();
    done.Raise();
  });
  if (!done.WaitFor(deadline)) {
    std::fprintf(stderr, "deadlock: the call did not return within %llds\n",
                 static_cast<long long>(deadline.count()));
    std::fflush(stderr);
    std::_Exit(1);
  }
  t.join();
}

constexpr uint32_t kPartitions = 4;

// An engine with every seam that makes a call take an engine lock: a store,
// a history and a bus of which it owns partitions 0 and 1.
struct FullEngine {
  FullEngine() {
    Options o;
    o.clock = &clock;
    o.store = store.get();
    o.history = history.get();
    o.bus = bus.get();
    o.owns_all_partitions = false;
    engine = Engine::Create(o).value();
    const uint32_t mine[] = {0, 1};
    EXPECT_TRUE(engine->AssignPartitions(mine).ok());
  }
  // A user of an owned partition.
  std::string OwnedUser(int i) const {
    for (int n = i;; ++n) {
      std::string id = "user-" + std::to_string(n);
      if (PartitionFor(id, kPartitions) <= 1) return id;
    }
  }

  ManualClock clock{1'000'000};
  std::unique_ptr<Store> store = NewMemoryStore();
  std::unique_ptr<HistoryStore> history = NewMemoryHistoryStore();
  std::unique_ptr<Bus> bus = NewInProcessBus(kPartitions);
  std::unique_ptr<Engine> engine;
};

class NullListener : public ChangeListener {
 public:
  void OnChanges(absl::Span<const ChangeEvent>) override {}
};

// Calls every method of the engine that listener.h allows from inside a
// listener (all but Tick and the destructor); a fan-out, when given, has
// every method called too, and a second fan-out is created and destroyed.
void CallEveryEngineMethod(FullEngine& f) {
  Engine& e = *f.engine;
  const std::string u = f.OwnedUser(100);
  Signal s = TestEngine::Sig(u, "inner");
  EXPECT_TRUE(e.Signal(s).ok());
  EXPECT_EQ(e.SignalBatch({s, s}).rejected, 0u);
  DeviceHandle h = e.Connect(TestEngine::Sig(u, "handle", 2)).value();
  EXPECT_TRUE(e.Beat(h).ok());
  EXPECT_EQ(e.BeatMany({h}).applied, 1u);
  EXPECT_TRUE(e.Disconnect(h, DisconnectKind::kClean).ok());
  EXPECT_TRUE(e.DisconnectDevice(u, "inner", 0, DisconnectKind::kAbrupt).ok());
  const uint64_t o = e.SetOverride(u, OverrideState::kDnd).value();
  EXPECT_EQ(e.ListOverrides(u).value().size(), 1u);
  EXPECT_TRUE(e.RevokeOverride(u, o).ok());
  EXPECT_TRUE(e.ClearOverrides(u).ok());
  (void)e.RevokeOverridesSetBetween(0, e.NowMs());
  const absl::string_view ids[] = {u};
  EXPECT_EQ(e.Get(ids).size(), 1u);
  EXPECT_EQ(e.GetPublished(ids).size(), 1u);
  EXPECT_TRUE(e.GetOne(u).known);
  EXPECT_TRUE(e.History(u, 0, e.NowMs()).ok());
  EXPECT_TRUE(e.TimeInStates(u, 0, e.NowMs()).ok());
  EXPECT_TRUE(e.LastSeen(u).ok());
  EXPECT_TRUE(e.DrainGateway("no-such-gateway").status().code() == absl::StatusCode::kNotFound);
  EXPECT_TRUE(e.ConsumeBus().ok());
  EXPECT_THAT(e.RenderMetrics(), HasSubstr("presence_users"));
  EXPECT_GE(e.GetSizes().users, 1u);
  EXPECT_EQ(e.BusPartitions(), kPartitions);
  EXPECT_EQ(e.OwnedPartitions().size(), 2u);
  EXPECT_TRUE(e.Erase(u).ok());
  const uint32_t one[] = {1};
  EXPECT_TRUE(e.RevokePartitions(one).ok());
  EXPECT_TRUE(e.AssignPartitions(one).ok());
  EXPECT_TRUE(e.Rebuild().ok());
  NullListener extra;
  e.AddListener(&extra);
  e.RemoveListener(&extra);
  (void)e.options();
  // A fan-out attaches and detaches itself as a listener.
  auto other = Fanout::Create(&e).value();
  other.reset();
}

// Calls every fan-out method on `sub`, closing it last.
void CallEveryFanoutMethod(Fanout& fo, SubscriberId sub) {
  const absl::string_view ids[] = {"someone"};
  EXPECT_TRUE(fo.AddUsers(sub, ids).ok());
  EXPECT_TRUE(fo.RemoveUsers(sub, ids).ok());
  EXPECT_TRUE(fo.ReplaceUsers(sub, ids).ok());
  EXPECT_TRUE(fo.AddMembers("team", ids).ok());
  EXPECT_TRUE(fo.ReplaceMembers("team", ids).ok());
  EXPECT_TRUE(fo.Join(sub, "team").ok());
  EXPECT_TRUE(fo.Leave(sub, "team").ok());
  EXPECT_TRUE(fo.RemoveMembers("team", ids).ok());
  EXPECT_TRUE(fo.Resume(sub, 0).ok());  // nested delivery to this same sink
  const SubscriberId pull = fo.Subscribe().value();
  Batch b;
  EXPECT_TRUE(fo.Poll(pull, &b).ok());
  EXPECT_TRUE(fo.Close(pull).ok());
  fo.SetSnapshotSource(nullptr);
  EXPECT_THAT(fo.RenderMetrics(), HasSubstr("presence_fanout_subscribers"));
  EXPECT_TRUE(fo.Close(sub).ok());  // its own subscriber, from inside Deliver
}

// Defect 2: a listener that calls back into the engine used to deadlock
// Tick, which held its lock while it called listeners.
TEST(Callbacks, AListenerMayCallEveryEngineMethodExceptTick) {
  FullEngine f;
  struct Reentrant : ChangeListener {
    FullEngine* f;
    int calls = 0;
    void OnChanges(absl::Span<const ChangeEvent>) override {
      if (calls++ == 0) CallEveryEngineMethod(*f);
    }
  } listener;
  listener.f = &f;
  f.engine->AddListener(&listener);
  ASSERT_TRUE(f.engine->Signal(TestEngine::Sig(f.OwnedUser(0), "d")).ok());
  FinishesWithin(std::chrono::seconds(20), [&] { f.engine->Tick(); });
  EXPECT_GE(listener.calls, 1);
  f.engine->RemoveListener(&listener);
}

// Defect 2, through the fan-out: a push sink that calls every method of the
// engine and of its fan-out, closing its own subscriber last.
TEST(Callbacks, ASinkMayCallEveryEngineAndFanoutMethodExceptTick) {
  FullEngine f;
  auto fo = Fanout::Create(f.engine.get()).value();
  struct Reentrant : Sink {
    FullEngine* f;
    Fanout* fo;
    int calls = 0;
    void Deliver(SubscriberId sub, const Batch&) override {
      if (calls++ > 0) return;  // Resume below delivers once more
      CallEveryEngineMethod(*f);
      CallEveryFanoutMethod(*fo, sub);
    }
  } sink;
  sink.f = &f;
  sink.fo = fo.get();
  SubscriberOptions so;
  so.sink = &sink;
  const SubscriberId sub = fo->Subscribe(so).value();
  FinishesWithin(std::chrono::seconds(20), [&] { f.engine->Tick(); });
  EXPECT_EQ(sink.calls, 2);  // the snapshot, then the Resume from inside it
  EXPECT_TRUE(absl::IsNotFound(fo->Close(sub)));
}

// Changes a listener caused from inside a callback (RevokePartitions ticks)
// still reach every listener in version order, after the callback returned.
TEST(Callbacks, ChangesOfATickInsideAListenerFollowInVersionOrder) {
  FullEngine f;
  const std::string u = f.OwnedUser(0);
  const uint32_t p = PartitionFor(u, kPartitions);
  struct Revoker : ChangeListener {
    FullEngine* f;
    uint32_t partition;
    std::vector<ChangeEvent> seen;
    bool revoked = false;
    void OnChanges(absl::Span<const ChangeEvent> events) override {
      seen.insert(seen.end(), events.begin(), events.end());
      if (revoked) return;
      revoked = true;
      // Its flush publishes the override (past the dwell); this listener
      // gets it next.
      f->clock.Advance(1000);
      ASSERT_TRUE(f->engine->Signal(TestEngine::Sig(seen.front().user_id, "d")).ok());
      ASSERT_TRUE(f->engine->SetOverride(seen.front().user_id, OverrideState::kDnd).ok());
      const uint32_t ps[] = {partition};
      ASSERT_TRUE(f->engine->RevokePartitions(ps).ok());
      EXPECT_EQ(seen.size(), 1u) << "delivered from inside the callback";
    }
  } listener;
  listener.f = &f;
  listener.partition = p;
  f.engine->AddListener(&listener);
  ASSERT_TRUE(f.engine->Signal(TestEngine::Sig(u, "d")).ok());
  FinishesWithin(std::chrono::seconds(20), [&] { f.engine->Tick(); });
  ASSERT_EQ(listener.seen.size(), 2u);
  EXPECT_EQ(listener.seen[0].state, State::kOnline);
  EXPECT_EQ(listener.seen[1].state, State::kDnd);
  EXPECT_LT(listener.seen[0].version, listener.seen[1].version);
  f.engine->RemoveListener(&listener);
}

// Defect 1: Close used to return while a Tick was still inside the
// subscriber's sink, so the host freed a sink that was running. The sink
// blocks in Deliver until another thread's Close is under way; Close must
// not return before Deliver does.
TEST(SinkLifetime, CloseWaitsForADeliveryInFlight) {
  TestEngine t;
  auto fo = Fanout::Create(t.engine.get()).value();
  struct Blocking : Sink {
    Flag entered, release;
    std::atomic<bool> running{false};
    void Deliver(SubscriberId, const Batch&) override {
      running = true;
      entered.Raise();
      EXPECT_TRUE(release.WaitFor(std::chrono::seconds(20)));
      running = false;
    }
  };
  auto sink = std::make_unique<Blocking>();
  SubscriberOptions so;
  so.sink = sink.get();
  const SubscriberId sub = fo->Subscribe(so).value();
  std::thread ticker([&] { t.engine->Tick(); });
  ASSERT_TRUE(sink->entered.WaitFor(std::chrono::seconds(20)));
  // Deliver returns only once Close either waits for it (the hook) or
  // returned: every chance to return early.
  static Flag* progressed;
  Flag flag;
  progressed = &flag;
  internal::test_hooks::close_waiting = [](uint64_t) { progressed->Raise(); };
  std::atomic<bool> running_when_closed{false};
  std::thread closer([&] {
    EXPECT_TRUE(fo->Close(sub).ok());
    running_when_closed = sink->running.load();
    progressed->Raise();
  });
  ASSERT_TRUE(flag.WaitFor(std::chrono::seconds(20)));
  internal::test_hooks::close_waiting = nullptr;
  sink->release.Raise();
  closer.join();
  ticker.join();
  EXPECT_FALSE(running_when_closed.load()) << "Close returned during Deliver";
  sink.reset();  // what a host does after Close
  t.engine->Tick();
}

// Close from inside the subscriber's own Deliver returns at once; that
// delivery is the last.
TEST(SinkLifetime, ASinkClosingItsOwnSubscriberDoesNotWaitForItself) {
  TestEngine t;
  auto fo = Fanout::Create(t.engine.get()).value();
  struct SelfClosing : Sink {
    Fanout* fo;
    int calls = 0;
    void Deliver(SubscriberId sub, const Batch&) override {
      ++calls;
      EXPECT_TRUE(fo->Close(sub).ok());
    }
  } sink;
  sink.fo = fo.get();
  SubscriberOptions so;
  so.sink = &sink;
  const SubscriberId sub = fo->Subscribe(so).value();
  const absl::string_view ids[] = {"alice"};
  ASSERT_TRUE(fo->AddUsers(sub, ids).ok());
  FinishesWithin(std::chrono::seconds(20), [&] { t.engine->Tick(); });
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "d")).ok());
  t.Run(1000);
  EXPECT_EQ(sink.calls, 1);
}

// A store that fails the test when a record of a user whose partition the
// engine does not own is written (the engine writes under tick_mu_, which
// AssignPartitions and RevokePartitions hold while ownership changes).
class OwnershipCheckingStore : public Store {
 public:
  absl::Status Write(const StoreBatch& batch) override {
    for (const UserRecord& u : batch.users) Check(u.user_id);
    for (const DeviceRecord& d : batch.devices) Check(d.user_id);
    return inner_->Write(batch);
  }
  absl::Status Load(StoreVisitor* visitor) override { return inner_->Load(visitor); }
  void Check(const std::string& user) {
    const std::vector<uint32_t> owned = engine->OwnedPartitions();
    if (std::find(owned.begin(), owned.end(), PartitionFor(user, kPartitions)) == owned.end()) {
      ++unowned_writes;
    }
  }
  Engine* engine = nullptr;
  std::atomic<int> unowned_writes{0};

 private:
  std::unique_ptr<Store> inner_ = NewMemoryStore();
};

// Users of the partition in store, by a scan of its records.
std::set<std::string> StoredUsersOf(Store& store, uint32_t partition) {
  struct Visitor : StoreVisitor {
    uint32_t partition;
    std::set<std::string> users;
    void OnUser(const UserRecord& u) override {
      if (PartitionFor(u.user_id, kPartitions) == partition) users.insert(u.user_id);
    }
    void OnDevice(const DeviceRecord& d) override {
      if (!d.gone && PartitionFor(d.user_id, kPartitions) == partition) users.insert(d.user_id);
    }
    void OnOffset(const CommittedOffset&) override {}
  } v;
  v.partition = partition;
  EXPECT_TRUE(store.Load(&v).ok());
  return v.users;
}

// Defect 3: a keyed call that passed the ownership check before
// RevokePartitions let the partition go used to recreate its user after
// the release; the next Tick wrote it to the shared store and published it.
// The hook revokes the partition exactly between the two.
TEST(Ownership, AKeyedCallRacingRevokeNeverBringsTheUserBack) {
  OwnershipCheckingStore store;
  ManualClock clock{1'000'000};
  auto bus = NewInProcessBus(kPartitions);
  RecordingListener listener;
  Options o;
  o.clock = &clock;
  o.store = &store;
  o.bus = bus.get();
  o.owns_all_partitions = false;
  o.listener = &listener;
  auto engine = Engine::Create(o).value();
  store.engine = engine.get();
  const uint32_t all[] = {0, 1, 2, 3};
  ASSERT_TRUE(engine->AssignPartitions(all).ok());
  std::string user = "racer";
  while (PartitionFor(user, kPartitions) != 2) user += "+";

  static Engine* revoking;
  revoking = engine.get();
  auto revoke_once = [](uint64_t) {
    internal::test_hooks::keyed_accepted = nullptr;
    const uint32_t two[] = {2};
    EXPECT_TRUE(revoking->RevokePartitions(two).ok());
  };
  internal::test_hooks::keyed_accepted = revoke_once;
  EXPECT_TRUE(absl::IsFailedPrecondition(engine->Signal(TestEngine::Sig(user, "d"))));
  ASSERT_TRUE(engine->AssignPartitions(std::vector<uint32_t>{2}).ok());
  internal::test_hooks::keyed_accepted = revoke_once;
  EXPECT_TRUE(absl::IsFailedPrecondition(engine->SetOverride(user, OverrideState::kDnd).status()));
  engine->Tick();

  EXPECT_FALSE(engine->GetOne(user).known);
  EXPECT_EQ(engine->GetSizes().users, 0u);
  EXPECT_TRUE(listener.For(user).empty());
  EXPECT_TRUE(StoredUsersOf(store, 2).empty());
  EXPECT_EQ(store.unowned_writes.load(), 0);
}

// The same race on many threads: keyed calls of every kind on users of
// partition 2 while another thread takes it and lets it go. Nothing of a
// partition not owned is written, and once it is let go nothing of it
// remains.
TEST(Ownership, KeyedCallsRacingAssignAndRevokeLeaveNothingBehind) {
  OwnershipCheckingStore store;
  auto bus = NewInProcessBus(kPartitions);
  Options o;
  o.store = &store;
  o.bus = bus.get();
  o.owns_all_partitions = false;
  auto engine = Engine::Create(o).value();
  store.engine = engine.get();
  const uint32_t mine[] = {0, 1, 3};
  ASSERT_TRUE(engine->AssignPartitions(mine).ok());
  std::vector<std::string> users;
  for (int i = 0; users.size() < 16; ++i) {
    std::string id = "u" + std::to_string(i);
    if (PartitionFor(id, kPartitions) == 2) users.push_back(id);
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t) {
    callers.emplace_back([&, t] {
      const std::string device = "d" + std::to_string(t);  // the signals view it
      for (uint64_t i = 0; !stop.load(); ++i) {
        const std::string& u = users[(i + t) % users.size()];
        Signal s = TestEngine::Sig(u, device, 1);
        switch (i % 6) {
          case 0: (void)engine->Signal(s); break;
          case 1: (void)engine->SignalBatch({s}); break;
          case 2: (void)engine->Connect(s); break;
          case 3: (void)engine->SetOverride(u, OverrideState::kAway); break;
          case 4: (void)engine->ClearOverrides(u); break;
          case 5: (void)engine->DisconnectDevice(u, s.device_id, 0, DisconnectKind::kAbrupt); break;
        }
      }
    });
  }
  const uint32_t two[] = {2};
  for (int round = 0; round < 200; ++round) {
    ASSERT_TRUE(engine->AssignPartitions(two).ok());
    engine->Tick();
    ASSERT_TRUE(engine->RevokePartitions(two).ok());
  }
  // Let go for good while the callers still run, then stop them.
  for (int i = 0; i < 20; ++i) engine->Tick();
  stop = true;
  for (auto& c : callers) c.join();
  engine->Tick();
  for (const std::string& u : users) EXPECT_FALSE(engine->GetOne(u).known) << u;
  EXPECT_EQ(engine->GetSizes().users, 0u);
  EXPECT_EQ(store.unowned_writes.load(), 0);
}

// Defect 4: a heartbeat that passed the generation check before Erase freed
// its device used to write the time into the record of whatever device
// took the slot next (the free list hands out the last freed first). The
// hook erases the user, ticks and connects another device exactly there.
TEST(DeviceRecords, AFreedRecordNeverTakesAHeartbeatThatWasInFlight) {
  Options o;
  o.shards = 1;  // both users in one shard, so the slot would be reused
  TestEngine t(o);
  const DeviceHandle h = t.engine->Connect(TestEngine::Sig("alice", "laptop")).value();
  t.Run(500);
  const int64_t bob_time = t.clock.NowMs() - 400;  // bob's signal is older than the beat

  static TestEngine* te;
  static DeviceHandle bob;
  static int64_t bob_ts;
  te = &t;
  bob_ts = bob_time;
  internal::test_hooks::beat_checked = [](DeviceHandle) {
    internal::test_hooks::beat_checked = nullptr;
    ASSERT_TRUE(te->engine->Erase("alice").ok());
    te->engine->Tick();  // a new epoch: the running beat still holds the record
    Signal s = TestEngine::Sig("bob", "phone");
    s.timestamp_ms = bob_ts;
    bob = te->engine->Connect(s).value();
  };
  EXPECT_TRUE(t.engine->Beat(h).ok());  // it passed the check before the free
  ASSERT_EQ(internal::test_hooks::beat_checked.load(), nullptr);
  EXPECT_EQ(t.engine->GetOne("bob").last_seen_ms, bob_time) << "alice's beat landed on bob";
  EXPECT_FALSE(t.engine->GetOne("alice").known);
  EXPECT_TRUE(absl::IsNotFound(t.engine->Beat(h)));
  // Once the beat is over, later ticks may reuse alice's record.
  t.Run(200);
  EXPECT_TRUE(t.engine->Beat(bob).ok());
}

// Gateway ids are reclaimed, but never under a signal in flight: a signal
// that looked its gateway's index up keeps that index its gateway's until it
// is applied, even when every device let go of the gateway and ticks ran
// meanwhile (GatewayTable's grace period). The hook lands all that between
// the lookup and the apply.
TEST(GatewayIds, AReclaimedIdIsNeverReusedUnderASignalInFlight) {
  TestEngine t;
  Signal alice = TestEngine::Sig("alice", "web");
  alice.gateway = "gw-old";
  ASSERT_TRUE(t.engine->Signal(alice).ok());
  static TestEngine* te;
  te = &t;
  internal::test_hooks::keyed_accepted = [](uint64_t) {
    internal::test_hooks::keyed_accepted = nullptr;
    ASSERT_TRUE(te->engine->Erase("alice").ok());  // nothing carries gw-old now
    for (int i = 0; i < 4; ++i) te->engine->Tick();
    Signal carol = TestEngine::Sig("carol", "web");
    carol.gateway = "gw-new";  // would take gw-old's index, were it free
    ASSERT_TRUE(te->engine->Signal(carol).ok());
  };
  Signal bob = TestEngine::Sig("bob", "web");
  bob.gateway = "gw-old";
  ASSERT_TRUE(t.engine->Signal(bob).ok());
  ASSERT_EQ(internal::test_hooks::keyed_accepted.load(), nullptr);
  for (int i = 0; i < 4; ++i) t.engine->Tick();
  EXPECT_EQ(t.engine->DrainGateway("gw-new").value(), 1u);
  EXPECT_EQ(t.StateOf("bob"), State::kOnline);
  EXPECT_EQ(t.engine->DrainGateway("gw-old").value(), 1u);
  EXPECT_EQ(t.StateOf("bob"), State::kOffline);
}

// Threads sign devices in and out through gateways that come and go while
// ticks reclaim the ids (for TSan, and for the names: each device ends on
// the gateway it last named, and a drain of that gateway finds it).
TEST(GatewayIds, ChurningGatewaysRacingTicksKeepEveryDevicesName) {
  TestEngine t;
  constexpr int kThreads = 4, kRounds = 300;
  std::atomic<bool> done{false};
  std::thread ticker([&] {
    while (!done.load()) t.engine->Tick();
  });
  std::vector<std::thread> threads;
  for (int k = 0; k < kThreads; ++k) {
    threads.emplace_back([&, k] {
      for (int r = 0; r < kRounds; ++r) {
        const std::string user = "u" + std::to_string(k) + "-" + std::to_string(r % 7);
        Signal s = TestEngine::Sig(user, "web");
        const std::string gateway = "pod-" + std::to_string(k) + "-" + std::to_string(r);
        s.gateway = gateway;
        s.timestamp_ms = t.clock.NowMs();
        ASSERT_TRUE(t.engine->Signal(s).ok());
        if (r % 5 == 0) ASSERT_TRUE(t.engine->Erase(user).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  done = true;
  ticker.join();
  for (int k = 0; k < kThreads; ++k) {
    for (int r = kRounds - 7; r < kRounds; ++r) {
      if (r % 5 == 0) continue;  // erased right after
      const std::string gateway = "pod-" + std::to_string(k) + "-" + std::to_string(r);
      EXPECT_EQ(t.engine->DrainGateway(gateway).value(), 1u) << gateway;
    }
  }
}

// Defect 4: seen was a load, compare and store, so a beat that read the
// clock earlier (a BeatMany reads it once per batch) could move it back.
// The hook lands a later beat between the read and the write.
TEST(DeviceRecords, TheLastSignalTimeNeverMovesBackwards) {
  TestEngine t;
  const DeviceHandle h = t.engine->Connect(TestEngine::Sig("alice", "laptop")).value();
  t.Run(500);
  static TestEngine* te;
  te = &t;
  internal::test_hooks::beat_checked = [](DeviceHandle handle) {
    internal::test_hooks::beat_checked = nullptr;
    te->clock.Advance(300);
    ASSERT_TRUE(te->engine->Beat(handle).ok());
  };
  const int64_t earlier = t.clock.NowMs();
  ASSERT_TRUE(t.engine->BeatMany({h}).applied == 1);
  EXPECT_EQ(t.engine->GetOne("alice").last_seen_ms, earlier + 300);
}

uint64_t AcceptedApp(Engine& e) {
  const std::string m = e.RenderMetrics();
  const std::string key = "presence_signals_accepted_total{source=\"app\"} ";
  const size_t at = m.find(key);
  EXPECT_NE(at, std::string::npos);
  return std::stoull(m.substr(at + key.size()));
}

// The per-thread counter blocks: a thread that rotates over more engines
// than its cache holds, and more threads than an engine has blocks, still
// count every beat (the blocks are claimed without a lock and never grow).
TEST(DeviceRecords, HeartbeatCountersStayExactPastTheirCaches) {
  constexpr int kEngines = 9;
  std::vector<std::unique_ptr<TestEngine>> engines;
  std::vector<DeviceHandle> handles;
  std::vector<uint64_t> before;
  for (int i = 0; i < kEngines; ++i) {
    Options o;
    o.max_signals_per_device_per_sec = 0;
    engines.push_back(std::make_unique<TestEngine>(o));
    handles.push_back(engines.back()->engine->Connect(TestEngine::Sig("alice", "d")).value());
    before.push_back(AcceptedApp(*engines.back()->engine));
  }
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < kEngines; ++i) ASSERT_TRUE(engines[i]->engine->Beat(handles[i]).ok());
  }
  for (int i = 0; i < kEngines; ++i) EXPECT_EQ(AcceptedApp(*engines[i]->engine) - before[i], 50u);

  // 80 threads on one engine: 64 claim blocks, the rest share one.
  Engine& e = *engines[0]->engine;
  const uint64_t start = AcceptedApp(e);
  std::vector<std::thread> threads;
  for (int t = 0; t < 80; ++t) {
    threads.emplace_back([&] {
      for (int k = 0; k < 100; ++k) ASSERT_TRUE(e.Beat(handles[0]).ok());
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(AcceptedApp(e) - start, 8000u);
}

}  // namespace
}  // namespace presence::testing
