// Unit tests of the pure pieces: wrapping time, the timer sweep, the device
// liveness rule, the reducer and the user index.
#include <functional>
#include <limits>
#include <random>
#include <map>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "presence/prober.h"
#include "src/core/liveness.h"
#include "src/core/reducer.h"
#include "src/core/time32.h"
#include "src/core/timer_sweep.h"
#include "src/core/user_index.h"

namespace presence::internal {
namespace {

TEST(Time32, WrapsAroundAndExpands) {
  const int64_t now = (int64_t{1} << 32) + 5;  // just past a wrap
  const Time32 before_wrap = ToTime32(now - 10);
  EXPECT_EQ(Diff32(ToTime32(now), before_wrap), 10);
  EXPECT_EQ(Expand32(before_wrap, now), now - 10);
  EXPECT_EQ(Expand32(ToTime32(now + 7), now), now + 7);
}

// A table of records with due times (0: no timer) under a TimerSweep with
// chunks of 256 records; the scan fires what is due and records when.
struct SweptTable {
  static constexpr uint32_t kChunkBits = 8;
  explicit SweptTable(Time32 now, uint32_t n) : sweep(now, kChunkBits), due(n, 0), fired(n) {}
  void Set(uint32_t i, Time32 t) {
    due[i] = t;
    sweep.Note(i, t);
  }
  void Advance(Time32 now) {
    sweep.Advance(now, [&](uint32_t first, uint32_t end) {
      ++scans;
      Time32 least = now + TimerSweep::kIdleMs;
      for (uint32_t i = first; i < end && i < due.size(); ++i) {
        if (due[i] == 0) continue;
        if (Diff32(due[i], now) <= 0) {
          fired[i].push_back(now);
          due[i] = 0;
          if (on_fire) on_fire(i, now);
        }
        if (due[i] != 0 && Diff32(due[i], least) < 0) least = due[i];
      }
      return least;
    });
  }
  TimerSweep sweep;
  std::vector<Time32> due;
  std::vector<std::vector<Time32>> fired;
  std::function<void(uint32_t, Time32)> on_fire;
  int scans = 0;
};

TEST(TimerSweep, FiresEachTimerAtTheFirstAdvancePastItsTime) {
  std::mt19937 rng(7);
  const Time32 start = 0xfffff000u;  // the clock wraps during the test
  SweptTable t(start, 3000);
  std::vector<Time32> want(3000, 0);
  for (uint32_t i = 0; i < 3000; i += 1 + rng() % 3) {
    // Most within a few seconds, some far beyond (no horizon).
    const Time32 due = start + 1 + (i % 10 == 0 ? 40000 + rng() % 100000 : rng() % 9000);
    t.Set(i, due);
    want[i] = due;
  }
  Time32 now = start;
  std::vector<Time32> ticks;
  while (Diff32(now, start) < 150000) {
    now += 1 + rng() % 97;
    t.Advance(now);
    ticks.push_back(now);
  }
  for (uint32_t i = 0; i < 3000; ++i) {
    if (want[i] == 0) {
      EXPECT_TRUE(t.fired[i].empty()) << i;
      continue;
    }
    // The oracle: the first tick at or past the due time.
    Time32 first = 0;
    for (Time32 k : ticks) {
      if (Diff32(k, want[i]) >= 0) {
        first = k;
        break;
      }
    }
    ASSERT_EQ(t.fired[i].size(), 1u) << i;
    EXPECT_EQ(t.fired[i][0], first) << i;
  }
}

TEST(TimerSweep, RescheduleDuringAScanIsNotLostAndIdleBlocksAreNotScanned) {
  SweptTable t(1000, 1024);
  // Firing record 5 sets record 700 (another chunk) and record 6 (its own
  // block, already passed) to fire later.
  t.on_fire = [&](uint32_t i, Time32 now) {
    if (i == 5) {
      t.Set(700, now + 50);
      t.Set(6, now + 60);
    }
  };
  t.Set(5, 1010);
  t.Advance(1010);
  EXPECT_EQ(t.fired[5].size(), 1u);
  const int scans = t.scans;
  t.Advance(1040);  // nothing due: no block is scanned
  EXPECT_EQ(t.scans, scans);
  t.Advance(1070);
  ASSERT_EQ(t.fired[6].size(), 1u);
  ASSERT_EQ(t.fired[700].size(), 1u);
  EXPECT_EQ(t.fired[700][0], 1070u);
  // A long jump fires everything due, once.
  for (uint32_t i = 0; i < 1024; i += 3) t.Set(i, 2000 + i * 97);
  t.Advance(1000000);
  for (uint32_t i = 0; i < 1024; i += 3) EXPECT_EQ(t.fired[i].back(), 1000000u) << i;
}

Options DefaultOptions() { return Options(); }

// Users under hashes that collide on purpose (8 home positions, 2 tags):
// long runs that wrap past the table's end, and erasures inside them. After
// every step each user held is found under its hash, and no other.
TEST(UserIndex, FindsExactlyTheUsersHeldThroughGrowthAndErasure) {
  auto hash_of = [](uint32_t u) {
    return (uint64_t{(u * 2654435761u) % 8} << 45) | (uint64_t{u * 40503u} << 16 & 0x1fff0000u) |
           (u % 2);
  };
  std::mt19937 rng(11);
  UserIndex index;
  std::set<uint32_t> held;
  index.Erase(5, hash_of(5), hash_of);  // nothing to erase: nothing changes
  EXPECT_EQ(index.Find(hash_of(5), [](uint32_t) { return true; }), UserIndex::kNotFound);
  auto check = [&] {
    ASSERT_EQ(index.size(), held.size());
    for (uint32_t u = 0; u < 400; ++u) {
      const uint32_t found = index.Find(hash_of(u), [u](uint32_t v) { return v == u; });
      ASSERT_EQ(found, held.count(u) ? u : UserIndex::kNotFound) << "user " << u;
    }
  };
  for (int step = 0; step < 4000; ++step) {
    const uint32_t u = rng() % 400;
    if (held.count(u)) {
      index.Erase(u, hash_of(u), hash_of);
      held.erase(u);
    } else {
      index.Insert(u, hash_of(u), hash_of);
      held.insert(u);
    }
    if (step % 7 == 0) check();
  }
  check();
  // Every user out, one by one, then back.
  for (uint32_t u : std::vector<uint32_t>(held.begin(), held.end())) {
    index.Erase(u, hash_of(u), hash_of);
    held.erase(u);
    check();
  }
  for (uint32_t u = 0; u < 400; ++u) index.Insert(u, hash_of(u), hash_of), held.insert(u);
  check();
}

// A lookup reads a user (calls eq) only for slots whose hash bits match.
TEST(UserIndex, ALookupComparesOnlyUsersWhoseHashBitsMatch) {
  UserIndex index;
  auto hash_of = [](uint32_t u) {  // splitmix64's finalizer
    uint64_t z = u + 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
  };
  for (uint32_t u = 0; u < 100'000; ++u) index.Insert(u, hash_of(u), hash_of);
  int compared = 0;
  for (uint32_t u = 0; u < 100'000; ++u) {
    ASSERT_EQ(index.Find(hash_of(u), [&](uint32_t v) { return ++compared, v == u; }), u);
  }
  // With a user compared at every slot probed, it would be about 3 times as many.
  EXPECT_LT(compared, 100'000 + 5'000);
}

TEST(EvaluateDevice, LiveUntilOfflineAfterThenNot) {
  const LivenessPolicy p(DefaultOptions());
  Device d;
  d.phase = Phase::kLive;
  d.flags = dflag::kSeen0 << SourceIndex(Source::kApp);
  d.seen[SourceIndex(Source::kApp)] = ToTime32(10000);
  d.set_bits(fast::ActiveBit(SourceIndex(Source::kApp)));
  DeviceView v = EvaluateDevice(d, 10500, p, 0);
  EXPECT_TRUE(v.live);
  EXPECT_TRUE(v.online);
  EXPECT_FALSE(v.suspect);
  EXPECT_EQ(v.deadline_ms, 14000);
  EXPECT_TRUE(EvaluateDevice(d, 11500, p, 0).suspect);
  EXPECT_TRUE(EvaluateDevice(d, 13999, p, 0).live);
  EXPECT_FALSE(EvaluateDevice(d, 14000, p, 0).live);
}

TEST(EvaluateDevice, QuietWhenEveryLiveSourceIsPastItsIntervalPlusTheMargin) {
  Options o;
  EXPECT_EQ(EvaluateDevice(Device(), 0, LivenessPolicy(o), 0).quiet_at_ms,
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
  DeviceView v = EvaluateDevice(d, 10100, p, 0);
  // INFERRED (60 s interval) is the last to turn quiet; APP outranks it.
  EXPECT_EQ(v.quiet_at_ms, 9000 + 60000 + 500);
  EXPECT_EQ(v.probe_source, SourceIndex(Source::kApp));
  // Once APP lapsed, only INFERRED keeps it: probes name INFERRED.
  v = EvaluateDevice(d, 14000, p, 0);
  EXPECT_EQ(v.probe_source, SourceIndex(Source::kInferred));
  EXPECT_EQ(v.quiet_at_ms, 9000 + 60000 + 500);
  d.flags = dflag::kSeen0 << SourceIndex(Source::kApp);
  EXPECT_EQ(EvaluateDevice(d, 10100, p, 0).quiet_at_ms, 10000 + 1000 + 500);
}

TEST(EvaluateDevice, GraceKeepsTheActivityItHad) {
  const LivenessPolicy p(DefaultOptions());
  Device d;
  d.phase = Phase::kGrace;
  d.flags = dflag::kGraceOnline;
  d.due = ToTime32(5000);
  EXPECT_TRUE(EvaluateDevice(d, 4999, p, 0).online);
  EXPECT_FALSE(EvaluateDevice(d, 5000, p, 0).live);
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
