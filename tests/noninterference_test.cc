// docs/design.md rule 8 over many random workloads: see tests/two_worlds.h. The
// same driver runs as a libFuzzer target (fuzz/noninterference_fuzz.cc), where
// the input chooses the workload.
#include <cstdint>

#include "gtest/gtest.h"
#include "tests/two_worlds.h"

namespace presence::testing {
namespace {

TEST(Noninterference, NothingAHiddenUserDoesReachesAnyoneElse) {
  // Each seed: a workload of 1000 choices (about 120 steps), in two worlds
  // that differ only in what the hidden user does; any difference that
  // others could read aborts with both answers and the workload.
  constexpr uint64_t kSeeds = 10000;
  int64_t steps = 0, hidden_actions = 0;
  for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
    SeededChooser choices(seed, 1000);
    TwoWorlds worlds(&choices, absl::StrCat("seed ", seed));
    steps += worlds.Run();
    hidden_actions += worlds.hidden_actions();
  }
  // The worlds really differed: the hidden user acted, many times per run.
  EXPECT_GT(steps, int64_t{kSeeds} * 100);
  EXPECT_GT(hidden_actions, int64_t{kSeeds} * 20);
}

// A timed override on top of an invisible one shows the user until it
// ends; from that moment the user is hidden again, and its public last_seen
// stays where it was then. Its devices' heartbeats take the lock while such
// an override is on top, so that a beat just after the end (lock-free, it
// would not settle the stack first) cannot move the frozen last_seen.
TEST(Noninterference, AnOverrideOnTopThatEndsHidesTheUserFromThatMoment) {
  for (const int64_t beat_after : {0, 1, 40}) {
    World a, b;
    Signal s;
    s.user_id = "carol";
    s.device_id = "phone";
    s.session_id = 1;
    DeviceHandle ha = a.engine->Connect(s).value();
    DeviceHandle hb = b.engine->Connect(s).value();
    for (World* w : {&a, &b}) {
      w->engine->Tick();
      w->clock.Advance(500);
      ASSERT_TRUE(w->engine->SetOverride("carol", OverrideState::kInvisible).ok());
      ASSERT_TRUE(w->engine->SetOverride("carol", OverrideState::kDnd, w->clock.NowMs() + 1000).ok());
      w->clock.Advance(300);
    }
    // Shown (DND): her beats show, in both worlds alike.
    ASSERT_TRUE(a.engine->Beat(ha).ok());
    ASSERT_TRUE(b.engine->Beat(hb).ok());
    const int64_t shown_last_seen = a.clock.NowMs();
    EXPECT_EQ(a.engine->GetOne("carol").last_seen_ms, shown_last_seen);
    // The DND ends at +1500; only in world b does she beat after that.
    for (World* w : {&a, &b}) w->clock.Advance(700 + beat_after);
    ASSERT_TRUE(b.engine->Beat(hb).ok());
    for (World* w : {&a, &b}) {
      w->clock.Advance(100);
      w->engine->Tick();
    }
    const UserPresence pa = a.engine->GetOne("carol", "dave");
    const UserPresence pb = b.engine->GetOne("carol", "dave");
    EXPECT_EQ(pa.state, State::kOffline) << beat_after;
    EXPECT_EQ(pb.state, State::kOffline) << beat_after;
    EXPECT_EQ(pa.last_seen_ms, shown_last_seen) << beat_after;
    EXPECT_EQ(pb.last_seen_ms, shown_last_seen) << beat_after;
    EXPECT_EQ(pa.version, pb.version) << beat_after;
    // She sees her own beat.
    EXPECT_EQ(b.engine->GetOne("carol", "carol").last_seen_ms,
              b.clock.NowMs() - 100) << beat_after;
  }
}

}  // namespace
}  // namespace presence::testing
