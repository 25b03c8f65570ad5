// Durable state through the engine (docs/design.md sections 4 and 5): write-through
// before publish, store failures, rebuild and bus replay, history, erasure,
// and draining a gateway.
#include <atomic>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "presence/bus.h"
#include "presence/history.h"
#include "presence/store.h"
#include "presence/wire.h"
#include "src/core/test_hooks.h"
#include "tests/conformance/loaded.h"
#include "tests/flaky.h"
#include "tests/test_util.h"

namespace presence::testing {
namespace {

using ::testing::HasSubstr;

struct Durable {
  FlakyStore store;
  std::unique_ptr<HistoryStore> history = NewMemoryHistoryStore();
  std::unique_ptr<Bus> bus = NewInProcessBus(4);
  Options Opts() {
    Options o;
    o.store = &store;
    o.history = history.get();
    o.bus = bus.get();
    return o;
  }
};

TEST(WriteThrough, AChangeIsInTheStoreBeforeAnyListenerHearsOfIt) {
  Durable d;
  struct Checker : ChangeListener {
    FlakyStore* store;
    int checked = 0;
    void OnChanges(absl::Span<const ChangeEvent> events) override {
      auto l = store->Contents();
      for (const auto& e : events) {
        ASSERT_TRUE(l.users.count(e.user_id)) << e.user_id;
        EXPECT_EQ(l.users.at(e.user_id).state_version, e.version);
        EXPECT_EQ(l.users.at(e.user_id).state, e.state);
        ++checked;
      }
    }
  } checker;
  checker.store = &d.store;
  TestEngine t(d.Opts());
  t.engine->AddListener(&checker);
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kDnd).ok());
  t.Run(2000);
  EXPECT_GE(checker.checked, 1);
  auto l = d.store.Contents();
  ASSERT_EQ(l.devices.size(), 1u);
  EXPECT_EQ(l.devices.begin()->second.device_id, "web");
  ASSERT_EQ(l.users.at("alice").overrides.size(), 1u);
  EXPECT_EQ(l.users.at("alice").overrides[0].state, OverrideState::kDnd);
}

TEST(WriteThrough, AFailingStorePublishesNothingAndLosesNothing) {
  Durable d;
  TestEngine t(d.Opts());
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  t.Run(1000);
  t.listener.Take();
  d.store.failing = true;
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kDnd).ok());
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "web")).ok());
  t.Run(1000);
  EXPECT_TRUE(t.listener.events().empty());  // nothing published while not durable
  EXPECT_THAT(t.engine->RenderMetrics(), ::testing::Not(HasSubstr("presence_store_errors_total 0\n")));
  d.store.failing = false;
  t.Run(200);
  // Everything comes out once the store is back, each user's changes in order.
  std::map<std::string, std::vector<State>> got;
  uint64_t last_alice = 0;
  for (const auto& e : t.listener.events()) {
    got[e.user_id].push_back(e.state);
    if (e.user_id == "alice") {
      EXPECT_GT(e.version, last_alice);
      last_alice = e.version;
    }
  }
  EXPECT_EQ(got["alice"], std::vector<State>{State::kDnd});
  EXPECT_EQ(got["bob"], std::vector<State>{State::kOnline});
  EXPECT_EQ(d.store.Contents().users.at("alice").state, State::kDnd);
}

// Publishes a keyed signal on the bus, as a gateway would.
void Publish(Bus* bus, const Signal& s) {
  ASSERT_TRUE(bus->Publish(BusRecordType::kSignal, s.user_id, EncodeSignal(s)).ok());
}

// docs/design.md section 7: the store's and the bus's latency, timed on the
// engine's clock (a store and a bus that take 30 ms and 7 ms of it).
TEST(Metrics, StoreAndBusLatencyHistograms) {
  ManualClock clock{1'000'000};
  FlakyStore store;
  store.SlowDown(&clock, 30);
  FlakyBus bus(1);
  bus.SlowDown(&clock, 7);
  Options o;
  o.clock = &clock;
  o.store = &store;
  o.bus = &bus;
  auto engine = Engine::Create(o).value();
  ASSERT_TRUE(engine->Signal(TestEngine::Sig("alice", "web")).ok());
  engine->Tick();
  ASSERT_TRUE(engine->ConsumeBus(100).ok());
  const std::string m = engine->RenderMetrics();
  // One write of 30 ms: in the 50 ms bucket, not the 25 ms one.
  EXPECT_THAT(m, ::testing::HasSubstr("presence_store_latency_ms_bucket{le=\"25\"} 0\n"));
  EXPECT_THAT(m, ::testing::HasSubstr("presence_store_latency_ms_bucket{le=\"50\"} 1\n"));
  EXPECT_THAT(m, ::testing::HasSubstr("presence_store_latency_ms_sum 30\n"));
  EXPECT_THAT(m, ::testing::HasSubstr("# TYPE presence_bus_latency_ms histogram\n"));
  EXPECT_THAT(m, ::testing::HasSubstr(
                     "presence_bus_latency_ms_bucket{op=\"publish\",le=\"5\"} 0\n"));
  EXPECT_THAT(m, ::testing::HasSubstr(
                     "presence_bus_latency_ms_bucket{op=\"publish\",le=\"10\"} 1\n"));
  EXPECT_THAT(m, ::testing::HasSubstr("presence_bus_latency_ms_count{op=\"read\"} 1\n"));
  EXPECT_THAT(m, ::testing::HasSubstr("presence_bus_latency_ms_sum{op=\"read\"} 7\n"));
}

// The heartbeat backlog: records on the bus that the engine, consuming its
// partitions, has not read yet.
TEST(Metrics, SignalBacklogIsWhatTheConsumerHasNotReadYet) {
  ManualClock clock{1'000'000};
  auto bus = NewInProcessBus(2);
  Options o;
  o.clock = &clock;
  o.bus = bus.get();
  auto engine = Engine::Create(o).value();
  ASSERT_TRUE(engine->ConsumeBus(100).ok());
  EXPECT_THAT(engine->RenderMetrics(), ::testing::HasSubstr("presence_signal_backlog 0\n"));
  for (const char* user : {"alice", "bob", "carol"}) Publish(bus.get(), TestEngine::Sig(user, "web"));
  EXPECT_THAT(engine->RenderMetrics(), ::testing::HasSubstr("presence_signal_backlog 3\n"));
  ASSERT_EQ(engine->ConsumeBus(2).value(), 2u);
  EXPECT_THAT(engine->RenderMetrics(), ::testing::HasSubstr("presence_signal_backlog 1\n"));
  ASSERT_TRUE(engine->ConsumeBus(100).ok());
  EXPECT_THAT(engine->RenderMetrics(), ::testing::HasSubstr("presence_signal_backlog 0\n"));
}

TEST(Rebuild, ANewEngineLoadsTheStoreReplaysTheBusAndMatchesTheOldOne) {
  Durable d;
  ManualClock clock(1'000'000);
  Options o = d.Opts();
  o.clock = &clock;
  auto a = Engine::Create(o).value();
  std::vector<std::string> users;
  for (int i = 0; i < 20; ++i) users.push_back("user-" + std::to_string(i));
  // Phase 1: signals through the bus, consumed and written through.
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 20; ++i) {
      const std::string device = "d" + std::to_string(i % 2);  // the signal views it
      Signal s = TestEngine::Sig(users[i], device, 1, Source::kApp,
                                 (i + round) % 3 ? Activity::kActive : Activity::kIdle);
      s.timestamp_ms = clock.NowMs();
      Publish(d.bus.get(), s);
    }
    ASSERT_TRUE(a->ConsumeBus().ok());
    clock.Advance(700);
    a->Tick();
  }
  ASSERT_TRUE(a->SetOverride(users[3], OverrideState::kDnd).ok());
  ASSERT_TRUE(a->SetOverride(users[4], OverrideState::kInvisible, clock.NowMs() + 60000).ok());
  a->Tick();
  // Phase 2: more signals are on the bus, but the engine stops before
  // consuming them.
  for (int i = 0; i < 20; i += 3) {
    Signal s = TestEngine::Sig(users[i], "phone", 7, Source::kInferred);
    s.timestamp_ms = clock.NowMs();
    Publish(d.bus.get(), s);
  }
  ASSERT_TRUE(a->ConsumeBus().ok());  // A applies them but never ticks: not durable
  std::vector<absl::string_view> ids(users.begin(), users.end());
  const std::vector<UserPresence> before = a->Get(ids);
  const std::vector<UserPresence> before_self = [&] {
    std::vector<UserPresence> out;
    for (auto id : ids) out.push_back(a->GetOne(id, id));
    return out;
  }();
  a.reset();  // the engine stops

  auto b = Engine::Create(o).value();
  ASSERT_TRUE(b->ConsumeBus().ok());  // from the committed offsets
  const std::vector<UserPresence> after = b->Get(ids);
  for (size_t i = 0; i < ids.size(); ++i) {
    SCOPED_TRACE(users[i]);
    EXPECT_EQ(after[i].state, before[i].state);
    EXPECT_EQ(after[i].devices, before[i].devices);
    EXPECT_EQ(after[i].last_seen_ms, before[i].last_seen_ms);
    EXPECT_EQ(after[i].has_override, before[i].has_override);
    EXPECT_EQ(b->GetOne(ids[i], ids[i]).state, before_self[i].state);
  }
  // And its versions carry on from the published ones.
  EXPECT_EQ(b->GetPublished(ids)[3].version, before[3].version);
}

// docs/design.md section 6: replay and catch-up apply every record; the flood
// limit applied when the signals came in. A backlog of one device's signals
// (a gateway flushing after a bus outage, or a new owner catching up) is not
// cut to the per-device limit.
TEST(Rebuild, ReplayFromTheBusIsNotThrottled) {
  Durable d;
  ManualClock clock(1'000'000);
  Options o = d.Opts();
  o.clock = &clock;
  o.max_signals_per_device_per_sec = 5;
  for (int i = 0; i < 50; ++i) {
    Signal s = TestEngine::Sig("alice", "web", 1, Source::kApp,
                               i == 49 ? Activity::kIdle : Activity::kActive);
    s.timestamp_ms = clock.NowMs() - 50 + i;  // one each ms, the last one idle
    Publish(d.bus.get(), s);
  }
  auto e = Engine::Create(o).value();
  ASSERT_TRUE(e->ConsumeBus().ok());
  EXPECT_THAT(e->RenderMetrics(),
              HasSubstr("presence_signals_dropped_total{reason=\"rate_limited\"} 0\n"));
  EXPECT_THAT(e->RenderMetrics(), HasSubstr("presence_signals_accepted_total{source=\"app\"} 50\n"));
  EXPECT_EQ(e->GetOne("alice").state, State::kAway);  // the last one applied
  // At intake, the limit holds.
  for (int i = 0; i < 10; ++i) (void)e->Signal(TestEngine::Sig("bob", "web"));
  EXPECT_THAT(e->RenderMetrics(),
              HasSubstr("presence_signals_dropped_total{reason=\"rate_limited\"} 5\n"));
}

// A new owner's records must win over what the store holds, even when the
// engine that wrote them had a clock ahead of this one's (a failover): the
// record versions start above everything loaded.
TEST(Rebuild, VersionsStartAboveEverythingTheStoreHolds) {
  Durable d;
  ManualClock ahead(5'000'000), behind(1'000'000);
  Options o = d.Opts();
  o.clock = &ahead;
  auto a = Engine::Create(o).value();
  ASSERT_TRUE(a->Signal(TestEngine::Sig("alice", "web")).ok());
  a->Tick();
  a.reset();
  o.clock = &behind;
  auto b = Engine::Create(o).value();
  ASSERT_TRUE(b->DisconnectDevice("alice", "web", 0, DisconnectKind::kClean).ok());
  b->Tick();
  behind.Advance(Options().min_dwell_ms);  // a dwell from the load, not from a's clock
  b->Tick();
  EXPECT_EQ(b->GetPublished(std::vector<absl::string_view>{"alice"})[0].state, State::kOffline);
  const auto stored = d.store.Contents();
  ASSERT_EQ(stored.devices.size(), 1u);
  EXPECT_TRUE(stored.devices.begin()->second.closed);  // b's write took
  ASSERT_EQ(stored.users.count("alice"), 1u);
  EXPECT_EQ(stored.users.at("alice").state, State::kOffline);
}

// The records keep a state in 3 bits and a platform in 3: a stored one out
// of range is no record this engine wrote, and is skipped, not cut to a
// value it never had.
TEST(Rebuild, RecordsWithAStateOrPlatformOutOfRangeAreSkipped) {
  Durable d;
  ManualClock clock(1'000'000);
  StoreBatch b;
  auto user = [&](const char* id, State state) {
    UserRecord u;
    u.user_id = id;
    u.version = 1;
    u.state = u.self_state = state;
    b.users.push_back(u);
  };
  auto device = [&](const char* user_id, Platform platform) {
    DeviceRecord r;
    r.user_id = user_id;
    r.device_id = "web";
    r.session_id = 1;
    r.platform = platform;
    r.last_signal_ms = {0, clock.NowMs(), 0};
    r.version = 1;
    b.devices.push_back(r);
  };
  user("alice", State::kOnline);
  device("alice", Platform::kWeb);
  user("bob", static_cast<State>(11));  // its low 3 bits would read as ONLINE
  device("carol", static_cast<Platform>(9));
  ASSERT_TRUE(d.store.Write(b).ok());
  Options o = d.Opts();
  o.clock = &clock;
  auto e = Engine::Create(o).value();
  EXPECT_TRUE(e->GetOne("alice").known);
  EXPECT_FALSE(e->GetOne("bob").known);
  EXPECT_FALSE(e->GetOne("carol").known);
  EXPECT_EQ(e->GetSizes().live_devices, 1u);
}

// From 65,536 records a load applies on two threads, each taking half of
// the shards (EngineCore::LoadFromStore). What an engine loads must not
// depend on it: with 16 shards (two threads) and with one (one thread), the
// views, the sizes and the bytes charged to the memory budget are those of
// the engine that wrote the records.
TEST(Rebuild, ALoadOnTwoThreadsGivesWhatTheEngineThatWroteItHeld) {
  Durable d;
  ManualClock clock(1'000'000);
  Options o = d.Opts();
  o.bus = nullptr;
  o.clock = &clock;
  o.shards = 16;
  auto a = Engine::Create(o).value();
  constexpr int kUsers = 40'000;  // 2 devices each: 120,000 records
  std::vector<std::string> users;
  for (int i = 0; i < kUsers; ++i) {
    // Some ids too long to live in the records, charged for their heap blocks.
    users.push_back(i % 7 == 0 ? "a-user-id-too-long-to-be-inline-" + std::to_string(i)
                               : "u" + std::to_string(i));
    for (const char* device : {"web", "a-device-id-on-the-heap"}) {
      Signal s = TestEngine::Sig(users.back(), device, 1, Source::kApp,
                                 i % 3 == 0 ? Activity::kIdle : Activity::kActive);
      s.gateway = i % 2 == 0 ? "gw-1" : "gw-2";
      ASSERT_TRUE(a->Connect(s).ok());
    }
    if (i % 5 == 0) {
      ASSERT_TRUE(a->DisconnectDevice(users.back(), "web", 1, DisconnectKind::kClean).ok());
    }
    if (i % 11 == 0) ASSERT_TRUE(a->SetOverride(users.back(), OverrideState::kDnd).ok());
  }
  a->Tick();
  std::vector<absl::string_view> ids(users.begin(), users.end());
  const std::vector<UserPresence> before = a->Get(ids);
  const Engine::Sizes sizes = a->GetSizes();
  const int64_t charged = Charged(*a);
  a.reset();
  static std::atomic<int> helpers{0};
  internal::test_hooks::load_helper_started.store([] { ++helpers; });
  for (int shards : {16, 1}) {
    SCOPED_TRACE(absl::StrCat(shards, " shards"));
    o.shards = shards;
    helpers.store(0);
    auto b = Engine::Create(o).value();
    // On a machine of more than one core: one with 16 shards, none with 1.
    EXPECT_EQ(helpers.load(), shards > 1 && std::thread::hardware_concurrency() > 1 ? 1 : 0);
    const std::vector<UserPresence> after = b->Get(ids);
    int wrong = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (after[i].state != before[i].state || !(after[i].devices == before[i].devices) ||
          after[i].last_seen_ms != before[i].last_seen_ms ||
          after[i].has_override != before[i].has_override) {
        if (++wrong <= 3) ADD_FAILURE() << ids[i] << " differs after the load";
      }
    }
    EXPECT_EQ(wrong, 0);
    EXPECT_EQ(b->GetSizes().users, sizes.users);
    EXPECT_EQ(b->GetSizes().devices, sizes.devices);
    EXPECT_EQ(b->GetSizes().live_devices, sizes.live_devices);
    EXPECT_EQ(b->GetSizes().overrides, sizes.overrides);
    EXPECT_EQ(Charged(*b), charged);
  }
  internal::test_hooks::load_helper_started.store(nullptr);
}

TEST(Rebuild, TheOperatorsRebuildReloadsAndPublishesWhatChangedMeanwhile) {
  Durable d;
  TestEngine t(d.Opts());
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  ASSERT_TRUE(h.ok());
  t.Run(1000);
  ASSERT_TRUE(t.engine->Rebuild().ok());
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);  // the device came back from the store
  t.listener.Take();
  t.Run(5000);  // nothing beats any more: it lapses and that is published
  ASSERT_FALSE(t.listener.events().empty());
  EXPECT_EQ(t.listener.events().back().state, State::kOffline);
}

TEST(History, PublishedTransitionsFormTheAuditTrail) {
  Durable d;
  TestEngine t(d.Opts());
  const int64_t t0 = t.clock.NowMs();
  Signal s = TestEngine::Sig("alice", "web");
  s.trace_id = 42;
  auto h = t.engine->Connect(s);
  t.Run(1000);
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kDnd).ok());
  t.Run(1000);
  ASSERT_TRUE(t.engine->Disconnect(*h, DisconnectKind::kClean).ok());
  t.Run(1000);
  auto hist = t.engine->History("alice", t0, t.clock.NowMs(), "alice");  // her own audit
  ASSERT_TRUE(hist.ok()) << hist.status();
  ASSERT_EQ(hist->size(), 3u);
  EXPECT_EQ((*hist)[0].state, State::kOnline);
  EXPECT_EQ((*hist)[0].trace_id, 42u);
  EXPECT_EQ((*hist)[1].state, State::kDnd);
  EXPECT_EQ((*hist)[1].cause, Cause::kOverride);
  EXPECT_EQ((*hist)[2].state, State::kOffline);
  EXPECT_EQ((*hist)[2].cause, Cause::kDisconnect);
  // Others read the same changes, without their causes or trace ids.
  auto pub = t.engine->History("alice", t0, t.clock.NowMs(), "bob");
  ASSERT_TRUE(pub.ok()) << pub.status();
  ASSERT_EQ(pub->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*pub)[i].state, (*hist)[i].state);
    EXPECT_EQ((*pub)[i].cause, Cause::kWithheld);
    EXPECT_EQ((*pub)[i].trace_id, 0u);
  }
  auto times = t.engine->TimeInStates("alice", t0, t.clock.NowMs(), "alice");
  ASSERT_TRUE(times.ok());
  EXPECT_EQ(times->online_ms, 1000);
  EXPECT_EQ(times->dnd_ms, 1000);
  EXPECT_EQ(times->offline_ms, 100 + 900);  // before the first tick, and after the end
  // A window from the beginning of time to its end: counted from 0 to now.
  auto all = t.engine->TimeInStates("alice", std::numeric_limits<int64_t>::min(),
                                    std::numeric_limits<int64_t>::max(), "alice");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->online_ms + all->away_ms + all->dnd_ms + all->offline_ms, t.clock.NowMs());
  EXPECT_TRUE(absl::IsInvalidArgument(t.engine->History("alice", 10, 5).status()));
  EXPECT_TRUE(t.engine->History("nobody", 0, 1).value().empty());
}

TEST(History, LastSeenOutlivesTheEngineForgettingTheUser) {
  Durable d;
  Options o = d.Opts();
  o.user_retention_ms = 1000;
  o.dead_retention_ms = 1000;
  TestEngine t(o);
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  t.Run(500);
  ASSERT_TRUE(t.engine->Beat(*h).ok());
  const int64_t seen = t.clock.NowMs();
  ASSERT_TRUE(t.engine->Disconnect(*h, DisconnectKind::kClean).ok());
  t.Run(5000);
  EXPECT_FALSE(t.engine->GetOne("alice").known);
  auto last = t.engine->LastSeen("alice");
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(*last, seen);
  EXPECT_TRUE(absl::IsNotFound(t.engine->LastSeen("nobody").status()));
}

TEST(History, WithoutAHistoryStoreQueriesSaySo) {
  TestEngine t;
  EXPECT_TRUE(absl::IsFailedPrecondition(t.engine->History("alice", 0, 1).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(t.engine->ConsumeBus().status()));
}

TEST(Erase, TheUserIsGoneEverywhereAndNeverComesBack) {
  Durable d;
  TestEngine t(d.Opts());
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "web")).ok());
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kDnd).ok());
  t.Run(1000);
  const StoreBatch old_records = [&] {
    StoreBatch b;
    auto l = d.store.Contents();
    for (auto& [id, u] : l.users) b.users.push_back(u);
    for (auto& [k, dev] : l.devices) b.devices.push_back(dev);
    return b;
  }();
  ASSERT_TRUE(t.engine->Erase("alice").ok());
  EXPECT_FALSE(t.engine->GetOne("alice").known);
  t.Run(200);
  auto l = d.store.Contents();
  EXPECT_EQ(l.users.count("alice"), 0u);
  EXPECT_EQ(l.users.count("bob"), 1u);
  for (auto& [k, dev] : l.devices) EXPECT_NE(dev.user_id, "alice");
  EXPECT_TRUE(t.engine->History("alice", 0, t.clock.NowMs()).value().empty());
  EXPECT_FALSE(t.engine->History("bob", 0, t.clock.NowMs()).value().empty());
  // Its devices' audit is gone too; bob's is not.
  EXPECT_TRUE(t.engine->DeviceHistory("alice", "web", 0, t.clock.NowMs(), "alice").value().empty());
  EXPECT_FALSE(t.engine->DeviceHistory("bob", "web", 0, t.clock.NowMs(), "bob").value().empty());
  // A late replay of the old records does not bring it back, nor a rebuild.
  ASSERT_TRUE(d.store.Write(old_records).ok());
  EXPECT_EQ(d.store.Contents().users.count("alice"), 0u);
  ASSERT_TRUE(t.engine->Rebuild().ok());
  EXPECT_FALSE(t.engine->GetOne("alice").known);
  EXPECT_EQ(t.StateOf("bob"), State::kOnline);
  // A new signal starts the user anew.
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web", 9)).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);
  EXPECT_FALSE(t.engine->GetOne("alice").has_override);
}

// Heartbeats on handles take no lock and write nothing, but a live device's
// record goes to the store once per deadline (its timer), so a restart
// finds last_seen at most one offline_after behind, never back at connect.
TEST(Rebuild, LastSeenOfLockFreeHeartbeatsSurvivesARestart) {
  Durable d;
  TestEngine t(d.Opts());
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  const int64_t connected = t.clock.NowMs();
  for (int i = 0; i < 10; ++i) {
    t.Run(1000);
    ASSERT_TRUE(t.engine->Beat(*h).ok());
  }
  const int64_t last = t.engine->GetOne("alice", "alice").last_seen_ms;
  ASSERT_EQ(last, connected + 10000);
  ASSERT_TRUE(t.engine->Rebuild().ok());  // the store is all it has now
  const int64_t after = t.engine->GetOne("alice", "alice").last_seen_ms;
  EXPECT_GT(after, connected);
  EXPECT_GE(after, last - Options().app.offline_after_ms);
  EXPECT_LE(after, last);
}

// Overrides set in the same millisecond stack in the order they were set,
// after a reload too (ids break the tie).
TEST(Rebuild, OverridesOfOneMillisecondKeepTheirOrder) {
  Durable d;
  Options o = d.Opts();
  o.max_overrides_per_user = 40;
  TestEngine t(o);
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  std::vector<uint64_t> ids;
  for (int i = 0; i < 40; ++i) {
    const auto state = i % 2 ? OverrideState::kInvisible : OverrideState::kDnd;
    ids.push_back(t.engine->SetOverride("alice", state).value());
  }
  t.engine->Tick();
  ASSERT_TRUE(t.engine->Rebuild().ok());
  auto list = t.engine->ListOverrides("alice");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ((*list)[i].id, ids[i]) << i;
  EXPECT_EQ(t.engine->GetOne("alice", "alice").override_state, OverrideState::kInvisible);
}

// Found by the engine fuzzer: a user erased and back within the same
// millisecond published its new state at the version of its last one, which
// a watcher that keeps the highest version it saw would have dropped.
TEST(Erase, AUserBackWithinTheMillisecondPublishesAboveItsLastVersion) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  t.engine->Tick();
  ASSERT_TRUE(t.engine->Erase("alice").ok());
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web", 2)).ok());
  t.engine->Tick();
  const auto events = t.listener.For("alice");
  ASSERT_EQ(events.size(), 3u);  // online, the erasure, online again
  EXPECT_TRUE(events[1].erased);
  EXPECT_EQ(events[2].state, State::kOnline);
  EXPECT_GT(events[1].version, events[0].version);
  EXPECT_GT(events[2].version, events[1].version);
  EXPECT_GT(events[1].public_version, events[0].public_version);
  EXPECT_GT(events[2].public_version, events[1].public_version);
}

// Gateway ids have no fixed limit: an engine carries as many gateways at
// once as its devices name (it stopped at 255 before).
TEST(Drain, GatewaysHaveNoFixedLimit) {
  TestEngine t;
  for (int i = 0; i < 1000; ++i) {
    const std::string user = "u" + std::to_string(i), gateway = "gw-" + std::to_string(i);
    Signal s = TestEngine::Sig(user, "web");
    s.gateway = gateway;
    ASSERT_TRUE(t.engine->Signal(s).ok()) << i;
  }
  t.engine->Tick();
  EXPECT_THAT(t.engine->RenderMetrics(), HasSubstr("presence_gateways 1000\n"));
  EXPECT_EQ(t.engine->DrainGateway("gw-700").value(), 1u);
  EXPECT_EQ(t.StateOf("u700"), State::kOffline);
  EXPECT_EQ(t.StateOf("u701"), State::kOnline);
}

// Gateway pods come and go for the life of an engine: a gateway that no
// device carries any more is forgotten and its id reused, and a reused id
// never lends a device another gateway's name (in the store, or to a drain).
TEST(Drain, GatewaysNoDeviceCarriesAreForgottenAndTheirIdsReused) {
  Durable d;
  ManualClock clock(1'000'000);
  Options o = d.Opts();
  o.clock = &clock;
  auto e = Engine::Create(o).value();
  Signal stay = TestEngine::Sig("bob", "web");
  stay.gateway = "gw-stay";
  ASSERT_TRUE(e->Signal(stay).ok());
  for (int i = 0; i < 600; ++i) {
    // alice's one device moves to a new gateway pod each round: the
    // previous pod is carried by nothing.
    const std::string gateway = "pod-" + std::to_string(i);
    Signal s = TestEngine::Sig("alice", "web");
    s.gateway = gateway;
    ASSERT_TRUE(e->Signal(s).ok()) << i;
    e->Tick();
    const auto stored = d.store.Contents();
    for (const auto& [key, device] : stored.devices) {
      ASSERT_EQ(device.gateway, device.user_id == "alice" ? gateway : "gw-stay") << i;
    }
    clock.Advance(100);  // within the flood limit
    ASSERT_TRUE(e->Signal(stay).ok());
  }
  e->Tick();
  e->Tick();
  // bob's gateway, alice's current one, and at most the pods in their grace.
  const std::string metrics = e->RenderMetrics();
  const std::string gauge = "\npresence_gateways ";
  const size_t at = metrics.find(gauge);
  ASSERT_NE(at, std::string::npos);
  EXPECT_LE(std::stoi(metrics.substr(at + gauge.size())), 4);
  EXPECT_TRUE(absl::IsNotFound(e->DrainGateway("pod-3").status()));
  EXPECT_EQ(e->DrainGateway("pod-599").value(), 1u);
  EXPECT_EQ(e->GetOne("alice").state, State::kOffline);
  EXPECT_EQ(e->GetOne("bob").state, State::kOnline);
  EXPECT_EQ(e->DrainGateway("gw-stay").value(), 1u);
}

TEST(Drain, EveryDeviceOfTheGatewayDisconnectsInBoundedBatches) {
  TestEngine t;
  for (int i = 0; i < 25; ++i) {
    const std::string user = "u" + std::to_string(i);  // the signal views it
    Signal s = TestEngine::Sig(user, "web");
    s.gateway = i < 20 ? "gw-a" : "gw-b";
    ASSERT_TRUE(t.engine->Signal(s).ok());
  }
  t.engine->Tick();
  EXPECT_EQ(t.engine->DrainGateway("gw-a", 8).value(), 8u);
  EXPECT_EQ(t.engine->DrainGateway("gw-a", 8).value(), 8u);
  EXPECT_EQ(t.engine->DrainGateway("gw-a", 8).value(), 4u);
  EXPECT_EQ(t.engine->DrainGateway("gw-a", 8).value(), 0u);
  EXPECT_EQ(t.StateOf("u0"), State::kOffline);
  EXPECT_EQ(t.StateOf("u19"), State::kOffline);
  EXPECT_EQ(t.StateOf("u20"), State::kOnline);
  EXPECT_TRUE(absl::IsNotFound(t.engine->DrainGateway("gw-z").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(t.engine->DrainGateway("").status()));
  t.Run(1000);
  EXPECT_THAT(t.engine->RenderMetrics(), HasSubstr("presence_transitions_total{cause=\"disconnect\"} 20"));
}

}  // namespace
}  // namespace presence::testing
