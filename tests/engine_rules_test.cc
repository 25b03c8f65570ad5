// One group of tests per numbered rule of docs/design.md section 2, on the manual
// clock. Each test would fail if its rule broke.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "presence/detector.h"
#include "src/core/test_hooks.h"
#include "tests/test_util.h"

namespace presence::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::SizeIs;

std::vector<State> States(const std::vector<ChangeEvent>& events) {
  std::vector<State> out;
  for (const auto& e : events) out.push_back(e.state);
  return out;
}

// ---- Rule 1: device liveness ----------------------------------------------

TEST(Rule1Liveness, LiveFromFirstSignalAndPublishedAtNextTick) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);  // Get is exact at once
  EXPECT_TRUE(t.listener.events().empty());       // published only on Tick
  t.engine->Tick();
  auto ev = t.listener.Take();
  ASSERT_THAT(ev, SizeIs(1));
  EXPECT_EQ(ev[0].previous, State::kOffline);
  EXPECT_EQ(ev[0].state, State::kOnline);
  EXPECT_EQ(ev[0].cause, Cause::kSignal);
}

TEST(Rule1Liveness, DeadAtOfflineAfterAndNotBefore) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  t.engine->Tick();
  t.listener.Take();
  t.clock.Advance(3999);
  t.engine->Tick();
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);
  EXPECT_TRUE(t.listener.events().empty());
  t.clock.Advance(1);
  EXPECT_EQ(t.StateOf("alice"), State::kOffline);
  t.engine->Tick();
  auto ev = t.listener.Take();
  ASSERT_THAT(ev, SizeIs(1));
  EXPECT_EQ(ev[0].state, State::kOffline);
  EXPECT_EQ(ev[0].cause, Cause::kTimeout);
  EXPECT_EQ(ev[0].published_at_ms, 1'000'000 + 4000);
}

TEST(Rule1Liveness, SuspectDeviceStillShowsLive) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  t.Run(2500);  // two missed 1 s intervals: SUSPECT inside, live outside
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);
  EXPECT_THAT(States(t.listener.events()), ElementsAre(State::kOnline));
}

TEST(Rule1Liveness, HeartbeatsKeepADeviceAlive) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  ASSERT_TRUE(h.ok());
  for (int i = 0; i < 60; ++i) {
    t.Run(1000);
    ASSERT_TRUE(t.engine->Beat(*h).ok());
  }
  EXPECT_THAT(States(t.listener.events()), ElementsAre(State::kOnline));
  t.Run(4000);
  EXPECT_THAT(States(t.listener.events()), ElementsAre(State::kOnline, State::kOffline));
}

TEST(Rule1Liveness, CleanDisconnectIsDeadAtOnce) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  t.engine->Tick();
  t.Run(1000);  // past min_dwell, so that the next change is not held back
  ASSERT_TRUE(t.engine->Disconnect(*h, DisconnectKind::kClean).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kOffline);
  t.engine->Tick();
  auto ev = t.listener.For("alice");
  ASSERT_THAT(ev, SizeIs(2));
  EXPECT_EQ(ev[1].state, State::kOffline);
  EXPECT_EQ(ev[1].cause, Cause::kDisconnect);
  EXPECT_EQ(ev[1].published_at_ms, 1'000'000 + 1000);
}

TEST(Rule1Liveness, AbruptDisconnectWaitsForGrace) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  t.engine->Tick();
  ASSERT_TRUE(t.engine->Disconnect(*h, DisconnectKind::kAbrupt).ok());
  t.Run(1400);
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);
  t.Run(100);  // 1500 ms: grace over
  EXPECT_EQ(t.StateOf("alice"), State::kOffline);
  auto ev = t.listener.For("alice");
  ASSERT_THAT(ev, SizeIs(2));
  EXPECT_EQ(ev[1].cause, Cause::kDisconnect);
  EXPECT_EQ(ev[1].published_at_ms, 1'000'000 + 1500);
}

TEST(Rule1Liveness, PageReloadInsideGraceShowsNothing) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web", 1));
  t.Run(2000);
  ASSERT_TRUE(t.engine->Disconnect(*h, DisconnectKind::kAbrupt).ok());
  t.Run(800);
  auto h2 = t.engine->Connect(TestEngine::Sig("alice", "web", 2));
  ASSERT_TRUE(h2.ok());
  for (int i = 0; i < 20; ++i) {
    t.Run(500);
    ASSERT_TRUE(t.engine->Beat(*h2).ok());
  }
  EXPECT_THAT(States(t.listener.events()), ElementsAre(State::kOnline));
}

TEST(Rule1Liveness, EachSourceDecaysOnItsOwnClock) {
  TestEngine t;
  // A phone: its app heartbeat stops, its background task keeps reporting.
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "phone", 1, Source::kApp)).ok());
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "phone", 1, Source::kInferred)).ok());
  t.engine->Tick();
  t.Run(4000);
  // APP lapsed at 4 s; INFERRED keeps the device live, and alone counts AWAY.
  EXPECT_EQ(t.StateOf("bob"), State::kAway);
  t.Run(236000, 1000);
  EXPECT_EQ(t.StateOf("bob"), State::kOffline);
  auto ev = t.listener.For("bob");
  ASSERT_THAT(States(ev), ElementsAre(State::kOnline, State::kAway, State::kOffline));
  EXPECT_EQ(ev[1].cause, Cause::kTimeout);
  EXPECT_EQ(ev[2].published_at_ms, 1'000'000 + 240000);
}

TEST(Rule1Liveness, SecondDeviceKeepsUserOnline) {
  TestEngine t;
  auto a = t.engine->Connect(TestEngine::Sig("alice", "web"));
  auto b = t.engine->Connect(TestEngine::Sig("alice", "phone"));
  t.engine->Tick();
  ASSERT_TRUE(t.engine->Disconnect(*a, DisconnectKind::kClean).ok());
  t.Run(3000);
  ASSERT_TRUE(t.engine->Beat(*b).ok());
  t.Run(3000);
  EXPECT_THAT(States(t.listener.events()), ElementsAre(State::kOnline));
  EXPECT_EQ(t.engine->GetOne("alice").devices.total(), 1);
}

// ---- Rule 2: device activity ----------------------------------------------

TEST(Rule2Activity, IdleIsAwayActiveIsOnline) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  t.engine->Tick();
  ASSERT_TRUE(t.engine->Beat(*h, Activity::kIdle).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kAway);
  t.Run(1000);
  ASSERT_TRUE(t.engine->Beat(*h, Activity::kActive).ok());
  t.Run(1000);
  EXPECT_THAT(States(t.listener.events()), ElementsAre(State::kOnline, State::kAway, State::kOnline));
}

TEST(Rule2Activity, HighestPrecedenceLiveSourceDecides) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web", 1, Source::kApp)).ok());
  ASSERT_TRUE(t.engine->Signal(
      TestEngine::Sig("alice", "web", 1, Source::kManual, Activity::kIdle)).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kAway);  // MANUAL idle beats APP active
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web", 1, Source::kApp));
  for (int i = 0; i < 5; ++i) {
    t.Run(1000);
    ASSERT_TRUE(t.engine->Beat(*h).ok());
  }
  // MANUAL lapsed at 4 s; APP, still live, now decides.
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);
}

TEST(Rule2Activity, InferredOnlyIsAwayUnlessConfigured) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "phone", 1, Source::kInferred)).ok());
  EXPECT_EQ(t.StateOf("bob"), State::kAway);
  Options o;
  o.inferred_can_be_online = true;
  TestEngine t2(o);
  ASSERT_TRUE(t2.engine->Signal(TestEngine::Sig("bob", "phone", 1, Source::kInferred)).ok());
  EXPECT_EQ(t2.StateOf("bob"), State::kOnline);
}

TEST(Rule2Activity, BestDeviceWins) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(
      TestEngine::Sig("alice", "laptop", 1, Source::kApp, Activity::kIdle)).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kAway);
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "phone")).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);
}

// ---- Rule 3: the reducer ----------------------------------------------------

TEST(Rule3Reducer, DndOverrideWinsAndNeedsALiveDevice) {
  TestEngine t;
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kDnd).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kOffline);  // no device: override hidden
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  EXPECT_EQ(t.StateOf("alice"), State::kDnd);
  t.engine->Tick();
  ASSERT_TRUE(t.engine->Disconnect(*h, DisconnectKind::kClean).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kOffline);
  ASSERT_TRUE(t.engine->Connect(TestEngine::Sig("alice", "web", 2)).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kDnd);  // DND comes back with the device
}

TEST(Rule3Reducer, OverrideWithoutDeviceWhenConfigured) {
  Options o;
  o.override_requires_live_device = false;
  TestEngine t(o);
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kDnd).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kDnd);
}

TEST(Rule3Reducer, InvisibleIsOfflineToOthersAndTrueToSelf) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  t.engine->Tick();
  t.clock.Advance(500);
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kInvisible).ok());
  const int64_t went_invisible = t.clock.NowMs();
  t.Run(500);
  auto h = t.engine->Connect(TestEngine::Sig("alice", "phone"));
  ASSERT_TRUE(h.ok());
  UserPresence other = t.engine->GetOne("alice", "bob");
  EXPECT_EQ(other.state, State::kOffline);
  EXPECT_FALSE(other.has_override);
  EXPECT_EQ(other.devices.total(), 0);
  EXPECT_LE(other.last_seen_ms, went_invisible);  // does not leak later activity
  UserPresence self = t.engine->GetOne("alice", "alice");
  EXPECT_EQ(self.state, State::kOnline);
  EXPECT_TRUE(self.has_override);
  EXPECT_EQ(self.override_state, OverrideState::kInvisible);
  EXPECT_EQ(self.devices.total(), 2);
  t.engine->Tick();
  auto ev = t.listener.For("alice");
  ASSERT_THAT(ev, SizeIs(2));
  EXPECT_EQ(ev[1].state, State::kOffline);
  EXPECT_EQ(ev[1].self_state, State::kOnline);
  EXPECT_TRUE(ev[1].invisible);
  EXPECT_EQ(ev[1].devices.total(), 0);
  EXPECT_EQ(ev[1].cause, Cause::kOverride);
}

TEST(Rule3Reducer, TimedDndOverInvisibleEndsAndInvisibleShowsAgain) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kInvisible).ok());
  t.clock.Advance(100);
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kDnd, t.clock.NowMs() + 3000).ok());
  t.engine->Tick();
  EXPECT_EQ(t.StateOf("alice"), State::kDnd);
  for (int i = 0; i < 4; ++i) {
    t.Run(1000);
    ASSERT_TRUE(t.engine->Beat(*h).ok());
  }
  EXPECT_EQ(t.StateOf("alice"), State::kOffline);
  EXPECT_EQ(t.StateOf("alice", "alice"), State::kOnline);
  auto ev = t.listener.For("alice");
  ASSERT_THAT(States(ev), ElementsAre(State::kDnd, State::kOffline));
  EXPECT_EQ(ev[1].cause, Cause::kOverrideExpiry);
  EXPECT_EQ(ev[1].published_at_ms, 1'000'000 + 100 + 3000);
}

// A device timer that finds the device still live keeps its fast bits'
// "may beat without the lock" as they were (it does not read the user
// again): for a user whose invisible override lies under a timed one, that
// bit must stay off through every such visit, so that the first beat after
// the top one ends takes the lock, which hides the user before the beat
// counts: others keep the last_seen from before it went invisible.
TEST(Rule3Reducer, ABeatRightAfterATimedOverrideOverInvisibleEndsStaysHidden) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kInvisible).ok());
  t.clock.Advance(100);
  const int64_t ends = t.clock.NowMs() + 10000;
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kDnd, ends).ok());
  t.engine->Tick();
  // Beats for 9.5 s: the device's timer looks at it again every 3 s or so
  // (its deadline is 4 s after each beat), always finding it live.
  int64_t last_beat = 0;
  while (t.clock.NowMs() + 1000 < ends) {
    t.Run(1000);
    ASSERT_TRUE(t.engine->Beat(*h).ok());
    last_beat = t.clock.NowMs();
  }
  EXPECT_EQ(t.StateOf("alice"), State::kDnd);
  t.clock.Set(ends + 1);  // no tick: the beat is the first to see the end
  ASSERT_TRUE(t.engine->Beat(*h).ok());
  const UserPresence seen = t.engine->GetOne("alice", "bob");
  EXPECT_EQ(seen.state, State::kOffline);
  EXPECT_EQ(seen.last_seen_ms, last_beat);  // not the beat after it went hidden
}

TEST(Rule3Reducer, RevokeOneClearAllAndBulkByTime) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "web")).ok());
  auto away = t.engine->SetOverride("alice", OverrideState::kAway);
  t.clock.Advance(10);
  auto dnd = t.engine->SetOverride("alice", OverrideState::kDnd);
  ASSERT_TRUE(away.ok() && dnd.ok());
  EXPECT_EQ(t.StateOf("alice"), State::kDnd);
  ASSERT_TRUE(t.engine->RevokeOverride("alice", *dnd).ok());
  EXPECT_EQ(t.StateOf("alice"), State::kAway);
  EXPECT_TRUE(absl::IsNotFound(t.engine->RevokeOverride("alice", *dnd)));
  EXPECT_EQ(t.engine->ClearOverrides("alice").value(), 1u);
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);

  // Operator bulk revoke: only overrides set inside the window go.
  const int64_t t0 = t.clock.NowMs();
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kDnd).ok());
  t.clock.Advance(1000);
  ASSERT_TRUE(t.engine->SetOverride("bob", OverrideState::kDnd).ok());
  EXPECT_EQ(t.engine->RevokeOverridesSetBetween(t0, t0 + 500), 1u);
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);
  EXPECT_EQ(t.StateOf("bob"), State::kDnd);
}

// ---- Rule 4: last_seen and freshness ---------------------------------------

TEST(Rule4LastSeen, LastSeenIsTheLatestAcceptedSignal) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  t.clock.Advance(700);
  ASSERT_TRUE(t.engine->Beat(*h).ok());
  const int64_t beat_at = t.clock.NowMs();
  t.clock.Advance(1200);
  UserPresence p = t.engine->GetOne("alice");
  EXPECT_EQ(p.last_seen_ms, beat_at);
  EXPECT_EQ(p.freshness_ms, 1200);
  // Still known after the device is gone.
  t.Run(10000, 1000);
  p = t.engine->GetOne("alice");
  EXPECT_EQ(p.state, State::kOffline);
  EXPECT_EQ(p.last_seen_ms, beat_at);
  EXPECT_EQ(t.listener.events().back().last_seen_ms, beat_at);
}

TEST(Rule4LastSeen, SignalTimestampIsUsed) {
  TestEngine t;
  Signal s = TestEngine::Sig("alice", "web");
  s.timestamp_ms = t.clock.NowMs() - 300;
  ASSERT_TRUE(t.engine->Signal(s).ok());
  EXPECT_EQ(t.engine->GetOne("alice").last_seen_ms, s.timestamp_ms);
  EXPECT_EQ(t.engine->GetOne("alice").freshness_ms, 300);
  EXPECT_FALSE(t.engine->GetOne("nobody").known);
}

// ---- Rule 5: idempotence ----------------------------------------------------

// A batch is applied as its signals one by one would be, even when it is
// long enough for the engine to overlap its lookups: new users and devices,
// stale and replayed sessions and bad signals mixed, many per shard.
TEST(Rule5Idempotence, ALongBatchEqualsItsSignalsOneByOne) {
  TestEngine batched, single;
  std::vector<std::string> ids;
  for (int u = 0; u < 150; ++u) ids.push_back(absl::StrCat("user-", u));
  uint64_t seed = 7;
  auto rand = [&seed](uint64_t n) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return (seed >> 33) % n;
  };
  const std::string devices[] = {"web", "phone", "tablet", ""};
  for (int round = 0; round < 5; ++round) {
    std::vector<Signal> batch;
    for (int i = 0; i < 2000; ++i) {
      Signal s = TestEngine::Sig(ids[rand(ids.size())], devices[rand(4)], 1 + rand(3),
                                 static_cast<Source>(1 + rand(3)),
                                 rand(3) == 0 ? Activity::kIdle : Activity::kActive);
      s.timestamp_ms = batched.clock.NowMs() - static_cast<int64_t>(rand(3000));
      batch.push_back(s);
    }
    const BatchResult got = batched.engine->SignalBatch(batch);
    BatchResult want;
    for (const Signal& s : batch) {
      const absl::Status st = single.engine->Signal(s);
      (st.ok() ? want.applied : absl::IsFailedPrecondition(st) ? want.stale : want.rejected)++;
    }
    EXPECT_EQ(got.applied, want.applied);
    EXPECT_EQ(got.stale, want.stale);
    EXPECT_EQ(got.rejected, want.rejected);
    EXPECT_GT(want.stale, 0u);
    EXPECT_GT(want.rejected, 0u);
    batched.Run(700);
    single.Run(700);
  }
  ASSERT_EQ(batched.listener.events().size(), single.listener.events().size());
  for (size_t i = 0; i < single.listener.events().size(); ++i) {
    const ChangeEvent& a = batched.listener.events()[i];
    const ChangeEvent& b = single.listener.events()[i];
    EXPECT_EQ(a.user_id, b.user_id) << i;
    EXPECT_EQ(a.state, b.state) << i;
    EXPECT_EQ(a.version, b.version) << i;
    EXPECT_EQ(a.last_seen_ms, b.last_seen_ms) << i;
  }
  for (const std::string& id : ids) {
    const UserPresence a = batched.engine->GetOne(id, id), b = single.engine->GetOne(id, id);
    EXPECT_EQ(a.state, b.state) << id;
    EXPECT_EQ(a.version, b.version) << id;
  }
}

TEST(Rule5Idempotence, ReplayChangesNothing) {
  TestEngine t;
  std::vector<Signal> batch;
  Signal s = TestEngine::Sig("alice", "web");
  s.timestamp_ms = t.clock.NowMs();
  batch.push_back(s);
  s.activity = Activity::kIdle;
  batch.push_back(s);
  EXPECT_EQ(t.engine->SignalBatch(batch).applied, 2u);
  t.engine->Tick();
  const UserPresence before = t.engine->GetOne("alice");
  const size_t events = t.listener.events().size();
  BatchResult again = t.engine->SignalBatch(batch);
  // The first replays an applied timestamp; the second is the same as the
  // state already held.
  EXPECT_EQ(again.stale, 0u);
  t.engine->Tick();
  const UserPresence after = t.engine->GetOne("alice");
  EXPECT_EQ(after.state, before.state);
  EXPECT_EQ(after.version, before.version);
  EXPECT_EQ(after.last_seen_ms, before.last_seen_ms);
  EXPECT_EQ(t.listener.events().size(), events);
}

TEST(Rule5Idempotence, StaleSessionAndTimestampAreDroppedAndCounted) {
  TestEngine t;
  Signal s = TestEngine::Sig("alice", "web", 5);
  s.timestamp_ms = t.clock.NowMs();
  ASSERT_TRUE(t.engine->Signal(s).ok());
  Signal old_session = TestEngine::Sig("alice", "web", 4);
  EXPECT_TRUE(absl::IsFailedPrecondition(t.engine->Signal(old_session)));
  Signal old_time = s;
  old_time.timestamp_ms -= 10;
  old_time.activity = Activity::kIdle;
  EXPECT_TRUE(absl::IsFailedPrecondition(t.engine->Signal(old_time)));
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);  // the idle one was not applied
  const std::string m = t.engine->RenderMetrics();
  EXPECT_THAT(m, ::testing::HasSubstr("presence_signals_dropped_total{reason=\"stale_session\"} 1"));
  EXPECT_THAT(m, ::testing::HasSubstr("presence_signals_dropped_total{reason=\"stale_timestamp\"} 1"));
}

TEST(Rule5Idempotence, LateSignalOfADisconnectedSessionDoesNotRevive) {
  TestEngine t;
  Signal s = TestEngine::Sig("alice", "web", 3);
  auto h = t.engine->Connect(s);
  ASSERT_TRUE(t.engine->Disconnect(*h, DisconnectKind::kClean).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(t.engine->Signal(s)));
  EXPECT_EQ(t.StateOf("alice"), State::kOffline);
}

TEST(Rule5Idempotence, VersionOnlyGrowsEvenAfterTheUserIsForgotten) {
  Options o;
  o.user_retention_ms = 1000;
  o.dead_retention_ms = 1000;
  TestEngine t(o);
  uint64_t last = 0;
  for (int round = 0; round < 3; ++round) {
    auto h = t.engine->Connect(TestEngine::Sig("alice", "web", round + 1));
    t.Run(2000);
    ASSERT_TRUE(t.engine->Disconnect(*h, DisconnectKind::kClean).ok());
    t.Run(5000);
    EXPECT_FALSE(t.engine->GetOne("alice").known);  // forgotten in between
    for (const auto& e : t.listener.Take()) {
      EXPECT_GT(e.version, last);
      last = e.version;
    }
  }
}

// ---- Rule 6: the adaptive detector seam -------------------------------------

class FixedDetector : public OfflineDetector {
 public:
  explicit FixedDetector(int64_t answer) : answer_(answer) {}
  int64_t Observe(uint64_t, Source source, int64_t, int64_t) override {
    ++observed;
    sources.push_back(source);
    return answer_;
  }
  void Forget(uint64_t) override { ++forgotten; }
  std::atomic<int> observed{0};
  int forgotten = 0;
  std::vector<Source> sources;

 private:
  int64_t answer_;
};

// Options with `d` deciding for the devices of `platform`.
Options WithDetector(OfflineDetector* d, Platform platform) {
  Options o;
  o.detector = d;
  o.detector_platforms = 1u << static_cast<int>(platform);
  return o;
}

int64_t OfflineAfterWith(int64_t answer, int* observed = nullptr) {
  FixedDetector d(answer);
  TestEngine t(WithDetector(&d, Platform::kWeb));
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  EXPECT_TRUE(t.engine->Beat(*h).ok());  // adaptive devices always reach the detector
  t.engine->Tick();
  int64_t waited = 0;
  while (t.StateOf("alice") != State::kOffline && waited < 10000) {
    t.clock.Advance(10);
    waited += 10;
  }
  if (observed) *observed = d.observed;
  return waited;
}

// A heartbeat on a handle of a watched device keeps the lock-free path
// (test_hooks::beat_checked is called on it only) and tells the detector,
// with its source; the answer cached in the record decides, as before.
std::atomic<int> lock_free_beats{0};

TEST(Rule6Adaptive, HeartbeatsUnderADetectorStayLockFreeAndNameTheirSource) {
  FixedDetector d(2500);
  TestEngine t(WithDetector(&d, Platform::kWeb));
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE(t.engine->Beat(*h, Activity::kActive, Source::kManual).ok());  // a new source: locked
  internal::test_hooks::beat_checked = [](DeviceHandle) { ++lock_free_beats; };
  for (int i = 0; i < 10; ++i) {
    t.Run(1000);
    ASSERT_TRUE(t.engine->Beat(*h).ok());
    ASSERT_TRUE(t.engine->Beat(*h, Activity::kActive, Source::kManual).ok());
  }
  internal::test_hooks::beat_checked = nullptr;
  EXPECT_EQ(lock_free_beats.load(), 20);
  EXPECT_EQ(d.observed.load(), 22);
  EXPECT_EQ(std::count(d.sources.begin(), d.sources.end(), Source::kManual), 11);
  EXPECT_EQ(std::count(d.sources.begin(), d.sources.end(), Source::kInferred), 0);
  // Silent: dead at the detector's 2.5 s, not at the fixed 4 s.
  t.Run(2400);
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);
  t.Run(200);
  EXPECT_EQ(t.StateOf("alice"), State::kOffline);
}

TEST(Rule6Adaptive, DetectorCanOnlyDetectSoonerAndNotBelowTheFloor) {
  int observed = 0;
  EXPECT_EQ(OfflineAfterWith(2500, &observed), 2500);
  EXPECT_EQ(observed, 2);
  EXPECT_EQ(OfflineAfterWith(100), 2000);     // floor
  EXPECT_EQ(OfflineAfterWith(60000), 4000);   // bounded by offline_after
}

TEST(Rule6Adaptive, InferredSignalsKeepTheirOwnClockUnderADetector) {
  FixedDetector d(2500);
  TestEngine t(WithDetector(&d, Platform::kMobile));
  Signal s = TestEngine::Sig("ann", "phone", 1, Source::kInferred);
  s.platform = Platform::kMobile;
  ASSERT_TRUE(t.engine->Signal(s).ok());
  t.Run(59000, 1000);  // INFERRED: offline after 240 s, whatever the detector says
  EXPECT_EQ(t.StateOf("ann", "ann"), State::kAway);
  EXPECT_EQ(d.observed, 0);  // and it learns nothing from them
}

// ---- Rule 7: hysteresis and flap damping ------------------------------------

TEST(Rule7Hysteresis, OfflineThenOnlineInsideAFlushPublishesNothing) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web", 1));
  t.engine->Tick();
  ASSERT_TRUE(t.engine->Disconnect(*h, DisconnectKind::kClean).ok());
  ASSERT_TRUE(t.engine->Connect(TestEngine::Sig("alice", "web", 2)).ok());
  t.engine->Tick();
  EXPECT_THAT(States(t.listener.events()), ElementsAre(State::kOnline));
}

TEST(Rule7Hysteresis, MinDwellCoalescesAndAlwaysPublishesTheLastState) {
  Options o;
  o.min_dwell_ms = 1000;
  TestEngine t(o);
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  t.engine->Tick();  // ONLINE published at t0
  // Flap between active and idle every 100 ms for 2.5 s, ending idle.
  for (int i = 0; i < 25; ++i) {
    ASSERT_TRUE(t.engine->Beat(*h, i % 2 == 0 ? Activity::kIdle : Activity::kActive).ok());
    t.Run(100);
  }
  ASSERT_TRUE(t.engine->Beat(*h, Activity::kIdle).ok());
  t.Run(2000);
  const auto ev = t.listener.events();
  for (size_t i = 1; i < ev.size(); ++i) {
    EXPECT_GE(ev[i].published_at_ms - ev[i - 1].published_at_ms, 1000);
    EXPECT_NE(ev[i].state, ev[i - 1].state);
  }
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back().state, State::kAway);
  EXPECT_LE(ev.size(), 4u);
}

TEST(Rule7Hysteresis, OnlinePublishedWithinOneFlush) {
  TestEngine t;
  t.Run(50, 50);
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  t.Run(100);
  auto ev = t.listener.Take();
  ASSERT_THAT(ev, SizeIs(1));
  EXPECT_LE(ev[0].published_at_ms - ev[0].changed_at_ms, 100);
  EXPECT_THAT(t.engine->RenderMetrics(),
              ::testing::HasSubstr("presence_publish_latency_ms_bucket{le=\"100\"} 1"));
}

TEST(Rule7Hysteresis, FalseOfflineIsCounted) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  t.Run(5000);  // timed out
  EXPECT_EQ(t.StateOf("alice"), State::kOffline);
  ASSERT_TRUE(t.engine->Beat(*h).ok());  // the same device returns
  EXPECT_EQ(t.StateOf("alice"), State::kOnline);
  EXPECT_THAT(t.engine->RenderMetrics(),
              ::testing::HasSubstr("presence_false_offlines_total 1"));
}

// A signal that finds its device past the deadline, before any tick noticed:
// Get had already answered OFFLINE, so the device died then, and its return
// is a false offline (its user's published state never moved: no diff).
TEST(Rule7Hysteresis, ASignalAfterTheDeadlineBeforeTheTimerIsAFalseOffline) {
  for (const bool keyed : {false, true}) {
    TestEngine t;
    auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
    t.engine->Tick();
    t.listener.Take();
    t.clock.Advance(4500);  // past offline_after (4 s); no tick yet
    EXPECT_EQ(t.StateOf("alice"), State::kOffline);
    if (keyed) {
      ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
    } else {
      ASSERT_TRUE(t.engine->Beat(*h).ok());
    }
    EXPECT_EQ(t.StateOf("alice"), State::kOnline);
    t.engine->Tick();
    EXPECT_TRUE(t.listener.Take().empty()) << keyed;  // online all along, as published
    EXPECT_THAT(t.engine->RenderMetrics(),
                ::testing::HasSubstr("presence_false_offlines_total 1"))
        << keyed;
  }
}

// ---- Handles ------------------------------------------------------------------

TEST(Handles, ClosedHandlesAnswerNotFound) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web", 1));
  ASSERT_TRUE(t.engine->Disconnect(*h, DisconnectKind::kClean).ok());
  EXPECT_TRUE(absl::IsNotFound(t.engine->Disconnect(*h, DisconnectKind::kClean)));
  EXPECT_TRUE(absl::IsNotFound(t.engine->Beat(*h)));
  EXPECT_TRUE(absl::IsNotFound(t.engine->Beat(DeviceHandle{})));
  EXPECT_TRUE(absl::IsNotFound(t.engine->Beat(DeviceHandle{~0ull})));
}

TEST(Handles, NewSessionInvalidatesTheOldHandle) {
  TestEngine t;
  auto h1 = t.engine->Connect(TestEngine::Sig("alice", "web", 1));
  auto h2 = t.engine->Connect(TestEngine::Sig("alice", "web", 2));
  ASSERT_TRUE(h1.ok() && h2.ok());
  EXPECT_NE(*h1, *h2);
  EXPECT_TRUE(absl::IsNotFound(t.engine->Beat(*h1)));
  EXPECT_TRUE(t.engine->Beat(*h2).ok());
  // Connecting the same session again is idempotent.
  auto h3 = t.engine->Connect(TestEngine::Sig("alice", "web", 2));
  EXPECT_EQ(*h2, *h3);
}

TEST(Handles, DeadDeviceIsFreedAfterRetention) {
  Options o;
  o.dead_retention_ms = 10000;
  TestEngine t(o);
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  t.Run(4000 + 9000, 1000);
  EXPECT_TRUE(t.engine->Beat(*h).ok());  // still held: revives
  t.Run(4000 + 10000, 1000);
  EXPECT_EQ(t.engine->GetSizes().devices, 0u);
  EXPECT_TRUE(absl::IsNotFound(t.engine->Beat(*h)));
  EXPECT_TRUE(t.engine->GetOne("alice").known);  // the user keeps its last_seen
}

TEST(Handles, KeyedDisconnect) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web", 3)).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(
      t.engine->DisconnectDevice("alice", "web", 2, DisconnectKind::kClean)));
  EXPECT_TRUE(absl::IsNotFound(t.engine->DisconnectDevice("alice", "tv", 0, DisconnectKind::kClean)));
  EXPECT_TRUE(t.engine->DisconnectDevice("alice", "web", 0, DisconnectKind::kClean).ok());
  EXPECT_TRUE(absl::IsNotFound(t.engine->DisconnectDevice("alice", "web", 0, DisconnectKind::kClean)));
  EXPECT_EQ(t.StateOf("alice"), State::kOffline);
}

TEST(Metrics, RendersPrometheusTextWithHelpAndType) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  ASSERT_TRUE(t.engine->Beat(*h).ok());
  t.engine->Tick();
  const std::string m = t.engine->RenderMetrics();
  for (const char* name :
       {"presence_signals_accepted_total", "presence_signals_dropped_total",
        "presence_transitions_total", "presence_publish_latency_ms", "presence_stale_ratio",
        "presence_false_offlines_total", "presence_users", "presence_devices"}) {
    EXPECT_THAT(m, ::testing::HasSubstr(std::string("# HELP ") + name + " "));
    EXPECT_THAT(m, ::testing::HasSubstr(std::string("# TYPE ") + name + " "));
  }
  EXPECT_THAT(m, ::testing::HasSubstr("presence_signals_accepted_total{source=\"app\"} 2"));
  EXPECT_THAT(m, ::testing::HasSubstr("presence_transitions_total{cause=\"signal\"} 1"));
  EXPECT_THAT(m, ::testing::HasSubstr("presence_live_devices 1"));
}

// docs/design.md section 7: stale is judged against each source's own
// offline threshold, so a user kept live by INFERRED signals (every minute
// or so) is not stale four seconds after its last one.
TEST(Metrics, StaleRatioJudgesEachSourceByItsOwnThreshold) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "phone", 1, Source::kInferred)).ok());
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  t.engine->Tick();
  EXPECT_THAT(t.engine->RenderMetrics(), ::testing::HasSubstr("presence_stale_ratio 0\n"));
  // Past APP's 4 s, before a tick published alice offline: alice is shown
  // live with no signal behind it; bob is within INFERRED's 240 s.
  t.clock.Advance(5000);
  EXPECT_THAT(t.engine->RenderMetrics(), ::testing::HasSubstr("presence_stale_ratio 0.5\n"));
  t.engine->Tick();  // alice published offline: only bob is live, and fresh
  EXPECT_THAT(t.engine->RenderMetrics(), ::testing::HasSubstr("presence_stale_ratio 0\n"));
  t.clock.Advance(240000);  // past INFERRED's threshold, before a tick
  EXPECT_THAT(t.engine->RenderMetrics(), ::testing::HasSubstr("presence_stale_ratio 1\n"));
}


}  // namespace
}  // namespace presence::testing

namespace presence::testing {
namespace {

TEST(Listeners, GetPublishedLagsUntilTheChangeIsPublished) {
  TestEngine t;
  auto h = t.engine->Connect(TestEngine::Sig("alice", "web"));
  const absl::string_view ids[] = {"alice"};
  EXPECT_EQ(t.engine->GetPublished(ids)[0].state, State::kOffline);  // not yet told
  t.engine->Tick();
  const UserPresence p = t.engine->GetPublished(ids)[0];
  EXPECT_EQ(p.state, State::kOnline);
  EXPECT_EQ(p.version, t.listener.events().back().version);
  t.Run(1000);
  ASSERT_TRUE(t.engine->Beat(*h, Activity::kIdle).ok());
  EXPECT_EQ(t.engine->Get(ids)[0].state, State::kAway);
  EXPECT_EQ(t.engine->GetPublished(ids)[0].state, State::kOnline);
}

TEST(Listeners, AddedListenersGetChangesAndEveryTick) {
  struct Counting : ChangeListener {
    void OnChanges(absl::Span<const ChangeEvent> e) override { changes += e.size(); }
    void OnTick(int64_t now) override {
      ++ticks;
      last_tick = now;
    }
    size_t changes = 0, ticks = 0;
    int64_t last_tick = 0;
  } extra;
  TestEngine t;
  t.engine->AddListener(&extra);
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  t.Run(300);
  EXPECT_EQ(extra.changes, 1u);
  EXPECT_EQ(extra.ticks, 3u);
  EXPECT_EQ(extra.last_tick, t.clock.NowMs());
  EXPECT_EQ(t.listener.events().size(), 1u);  // Options::listener still called
  t.engine->RemoveListener(&extra);
  t.Run(100);
  EXPECT_EQ(extra.ticks, 3u);
}

}  // namespace
}  // namespace presence::testing
