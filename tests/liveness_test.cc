// Unit tests of the pure pieces: wrapping time, the timing wheel, the device
// liveness rule and the reducer.
#include <limits>
#include <map>
#include <vector>

#include "gtest/gtest.h"
#include "presence/prober.h"
#include "src/core/liveness.h"
#include "src/core/reducer.h"
#include "src/core/time32.h"
#include "src/core/timer_wheel.h"

namespace presence::internal {
namespace {

TEST(Time32, WrapsAroundAndExpands) {
  const int64_t now = (int64_t{1} << 32) + 5;  // just past a wrap
  const Time32 before_wrap = ToTime32(now - 10);
  EXPECT_EQ(Diff32(ToTime32(now), before_wrap), 10);
  EXPECT_EQ(Expand32(before_wrap, now), now - 10);
  EXPECT_EQ(Expand32(ToTime32(now + 7), now), now + 7);
}

TEST(TimerWheel, FiresEachEntryAtItsTimeIncludingBeyondTheHorizon) {
  TimerWheel w(1000);
  std::map<uint32_t, Time32> due = {{1, 1001}, {2, 1500}, {3, 1000 + TimerWheel::kSlots + 20},
                                    {4, 1000 + 3 * TimerWheel::kSlots}};
  for (auto [i, t] : due) w.Insert(i, t);
  std::map<uint32_t, Time32> fired;
  auto fire = [&](uint32_t i, Time32 slot, Time32 now) {
    if (Diff32(due[i], now) > 0) return TimerWheel::Verdict::kKeep;
    fired[i] = slot;
    return TimerWheel::Verdict::kDone;
  };
  for (Time32 t = 1000; t < 1000 + 4 * TimerWheel::kSlots; t += 7) w.Advance(t, fire);
  ASSERT_EQ(fired.size(), 4u);
  for (auto [i, t] : due) EXPECT_EQ(fired[i] & (TimerWheel::kSlots - 1), t & (TimerWheel::kSlots - 1));
  EXPECT_EQ(w.size(), 0u);
}

TEST(TimerWheel, LongJumpSeesEveryDueEntryOnce) {
  TimerWheel w(0);
  for (uint32_t i = 0; i < 100; ++i) w.Insert(i, 1 + i * 97);
  int fired = 0;
  w.Advance(100000, [&](uint32_t, Time32, Time32) {
    ++fired;
    return TimerWheel::Verdict::kDone;
  });
  EXPECT_EQ(fired, 100);
}

Options DefaultOptions() { return Options(); }

TEST(EvaluateDevice, LiveUntilOfflineAfterThenNot) {
  const LivenessPolicy p(DefaultOptions());
  Device d;
  d.phase = Phase::kLive;
  d.flags = dflag::kSeen0 << SourceIndex(Source::kApp);
  d.seen[SourceIndex(Source::kApp)] = ToTime32(10000);
  d.set_bits(fast::ActiveBit(SourceIndex(Source::kApp)));
  DeviceView v = EvaluateDevice(d, 10500, p);
  EXPECT_TRUE(v.live);
  EXPECT_TRUE(v.online);
  EXPECT_FALSE(v.suspect);
  EXPECT_EQ(v.deadline_ms, 14000);
  EXPECT_TRUE(EvaluateDevice(d, 11500, p).suspect);
  EXPECT_TRUE(EvaluateDevice(d, 13999, p).live);
  EXPECT_FALSE(EvaluateDevice(d, 14000, p).live);
}

TEST(EvaluateDevice, QuietWhenEveryLiveSourceIsPastItsIntervalPlusTheMargin) {
  Options o;
  EXPECT_EQ(EvaluateDevice(Device(), 0, LivenessPolicy(o)).quiet_at_ms,
            std::numeric_limits<int64_t>::max());
  struct NoProber : Prober {
    void Probe(const ProbeRequest&) override {}
  } prober;
  o.prober = &prober;
  o.probe_margin_ms = 500;
  const LivenessPolicy p(o);
  Device d;
  d.phase = Phase::kLive;
  d.flags = (dflag::kSeen0 << SourceIndex(Source::kApp)) |
            (dflag::kSeen0 << SourceIndex(Source::kInferred));
  d.seen[SourceIndex(Source::kApp)] = ToTime32(10000);
  d.seen[SourceIndex(Source::kInferred)] = ToTime32(9000);
  DeviceView v = EvaluateDevice(d, 10100, p);
  // INFERRED (60 s interval) is the last to turn quiet; APP outranks it.
  EXPECT_EQ(v.quiet_at_ms, 9000 + 60000 + 500);
  EXPECT_EQ(v.probe_source, SourceIndex(Source::kApp));
  // Once APP lapsed, only INFERRED keeps it: probes name INFERRED.
  v = EvaluateDevice(d, 14000, p);
  EXPECT_EQ(v.probe_source, SourceIndex(Source::kInferred));
  EXPECT_EQ(v.quiet_at_ms, 9000 + 60000 + 500);
  d.flags = dflag::kSeen0 << SourceIndex(Source::kApp);
  EXPECT_EQ(EvaluateDevice(d, 10100, p).quiet_at_ms, 10000 + 1000 + 500);
}

TEST(EvaluateDevice, GraceKeepsTheActivityItHad) {
  const LivenessPolicy p(DefaultOptions());
  Device d;
  d.phase = Phase::kGrace;
  d.flags = dflag::kGraceOnline;
  d.due = ToTime32(5000);
  EXPECT_TRUE(EvaluateDevice(d, 4999, p).online);
  EXPECT_FALSE(EvaluateDevice(d, 5000, p).live);
}

TEST(Reducer, PrecedenceOfOverrideOverDevices) {
  Override dnd{1, 0, 0, OverrideState::kDnd};
  Override inv{2, 0, 0, OverrideState::kInvisible};
  EXPECT_EQ(Reduce(false, false, nullptr, true).state, State::kOffline);
  EXPECT_EQ(Reduce(true, false, nullptr, true).state, State::kAway);
  EXPECT_EQ(Reduce(true, true, nullptr, true).state, State::kOnline);
  EXPECT_EQ(Reduce(true, true, &dnd, true).state, State::kDnd);
  EXPECT_EQ(Reduce(false, false, &dnd, true).state, State::kOffline);
  EXPECT_EQ(Reduce(false, false, &dnd, false).state, State::kDnd);
  Reduced r = Reduce(true, false, &inv, true);
  EXPECT_EQ(r.state, State::kOffline);
  EXPECT_EQ(r.self_state, State::kAway);
  EXPECT_TRUE(r.invisible);
}

TEST(Reducer, TopOverrideIsTheLatestUnexpired) {
  std::vector<Override> stack = {{1, 0, 0, OverrideState::kInvisible},
                                 {2, 10, 100, OverrideState::kDnd}};
  EXPECT_EQ(TopOverride(&stack, 50)->id, 2u);
  EXPECT_EQ(TopOverride(&stack, 100)->id, 1u);
  EXPECT_EQ(TopOverride(nullptr, 100), nullptr);
}

}  // namespace
}  // namespace presence::internal
