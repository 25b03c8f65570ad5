// Tests of presence::PhiAccrualDetector (docs/design.md rule 6): what it learns,
// what it answers before it knows enough, how the engine bounds it, and that
// it is safe to call from many threads at once.
#include "presence/phi_detector.h"

#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "test_util.h"

namespace presence {
namespace {

using testing::TestEngine;

// Feeds `n` intervals of `interval_ms` to `key`, starting at `t`; returns the
// time of the last signal.
int64_t Feed(PhiAccrualDetector& d, uint64_t key, int64_t t, int n, int64_t interval_ms) {
  d.Observe(key, Source::kApp, t, 4000);
  for (int i = 0; i < n; ++i) {
    t += interval_ms;
    d.Observe(key, Source::kApp, t, 4000);
  }
  return t;
}

// The seam: Observe answers what OfflineAfterMs answers right after, and an
// INFERRED signal (which the engine never passes) is neither learned nor
// shortened.
TEST(PhiDetector, ObserveAnswersTheTimeoutAndLearnsNothingFromInferred) {
  PhiAccrualDetector d;
  int64_t t = 0, answer = 0;
  for (int i = 0; i < 30; ++i, t += 1000) answer = d.Observe(1, Source::kApp, t, 4000);
  EXPECT_LT(answer, 4000);
  EXPECT_EQ(answer, d.OfflineAfterMs(1, t - 1000, 4000));
  EXPECT_EQ(d.Observe(1, Source::kInferred, t, 4000), 4000);
  EXPECT_EQ(d.Stats(1).samples, 29u);  // the INFERRED one was not learned
  EXPECT_EQ(d.Observe(2, Source::kInferred, 0, 240000), 240000);
  EXPECT_FALSE(d.Stats(2).known);
}

TEST(PhiDetector, QuantileMatchesTheThreshold) {
  PhiDetectorOptions o;
  o.threshold = 1;
  EXPECT_NEAR(PhiAccrualDetector(o).z(), 1.2816, 1e-3);
  o.threshold = 3;
  EXPECT_NEAR(PhiAccrualDetector(o).z(), 3.0902, 1e-3);
  o.threshold = 8;
  EXPECT_NEAR(PhiAccrualDetector(o).z(), 5.6120, 1e-3);
}

TEST(PhiDetector, AnswersTheFixedBoundUntilMinSamples) {
  PhiDetectorOptions o;
  o.min_samples = 5;
  PhiAccrualDetector d(o);
  EXPECT_EQ(d.OfflineAfterMs(7, 0, 4000), 4000);  // never seen
  int64_t t = Feed(d, 7, 1000, 4, 1000);            // 4 intervals
  EXPECT_EQ(d.OfflineAfterMs(7, t, 4000), 4000);
  EXPECT_EQ(d.Phi(7, t, t + 100000), 0.0);
  t = Feed(d, 7, t, 0, 1000);
  d.Observe(7, Source::kApp, t + 1000, 4000);  // the 5th interval
  EXPECT_LT(d.OfflineAfterMs(7, t + 1000, 4000), 4000);
}

TEST(PhiDetector, RegularHeartbeatsGiveMeanPlusZTimesTheStdDevFloor) {
  PhiDetectorOptions o;
  o.model_loss = false;  // the textbook model
  o.threshold = 8;
  o.min_std_dev_ms = 100;
  PhiAccrualDetector d(o);
  const int64_t t = Feed(d, 1, 0, 50, 1000);
  const auto st = d.Stats(1);
  EXPECT_TRUE(st.known);
  EXPECT_EQ(st.samples, 50u);
  EXPECT_NEAR(st.mean_ms, 1000, 1e-6);
  EXPECT_NEAR(st.std_dev_ms, 0, 1e-6);
  // 1000 + 5.612 * 100, rounded up.
  EXPECT_EQ(d.OfflineAfterMs(1, t, 4000), 1562);
  EXPECT_NEAR(d.Phi(1, t, t + 1562), 8.0, 0.05);
  EXPECT_LT(d.Phi(1, t, t + 1000), 1.0);
  EXPECT_GT(d.Phi(1, t, t + 3000), 15.0);
}

TEST(PhiDetector, LearnsJitterAndAnswersLaterForAJitteryDevice) {
  PhiDetectorOptions o;
  o.model_loss = false;
  o.threshold = 8;
  PhiAccrualDetector d(o);
  // Alternating 700 / 1300 ms: mean 1000, sd 300.
  d.Observe(1, Source::kApp, 0, 4000);
  d.Observe(2, Source::kApp, 0, 4000);
  int64_t t1 = 0, t2 = 0;
  for (int i = 0; i < 200; ++i) {
    t1 += (i % 2) ? 700 : 1300;
    d.Observe(1, Source::kApp, t1, 4000);
    t2 += 1000;
    d.Observe(2, Source::kApp, t2, 4000);
  }
  EXPECT_NEAR(d.Stats(1).mean_ms, 1000, 20);
  EXPECT_NEAR(d.Stats(1).std_dev_ms, 300, 20);
  const int64_t jittery = d.OfflineAfterMs(1, t1, 10000);
  const int64_t steady = d.OfflineAfterMs(2, t2, 10000);
  EXPECT_NEAR(jittery, 1000 + 5.612 * 300, 70);
  EXPECT_LT(steady, jittery);
}

// The textbook model takes one lost heartbeat (a 2 s gap) for a many-sigma
// event; the loss model expects it, and answers later for a lossy device.
TEST(PhiDetector, LossModelExpectsLostHeartbeats) {
  PhiDetectorOptions textbook;
  textbook.model_loss = false;
  PhiAccrualDetector classic(textbook), lossy_aware;
  int64_t t = 0;
  classic.Observe(1, Source::kApp, t, 4000);
  lossy_aware.Observe(1, Source::kApp, t, 4000);
  lossy_aware.Observe(2, Source::kApp, t, 4000);
  uint64_t lcg = 12345;
  for (int i = 1; i <= 400; ++i) {
    t += 1000;
    classic.Observe(1, Source::kApp, t, 4000);
    lossy_aware.Observe(1, Source::kApp, t, 4000);
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    if ((lcg >> 33) % 10 != 0) lossy_aware.Observe(2, Source::kApp, t, 4000);  // device 2 loses 10%, at random
  }
  EXPECT_GT(classic.Phi(1, t, t + 2000), 15.0);
  EXPECT_LT(lossy_aware.Phi(1, t, t + 2000), 4.0);
  const auto clean = lossy_aware.Stats(1), lossy = lossy_aware.Stats(2);
  EXPECT_NEAR(clean.mean_ms, 1000, 1e-3);
  EXPECT_NEAR(lossy.mean_ms, 1000, 1e-3);  // a 2 s interval is a loss, not a long interval
  EXPECT_LT(clean.loss, 0.005);
  EXPECT_NEAR(lossy.loss, 0.1, 0.04);
  EXPECT_GT(lossy.timeout_ms, clean.timeout_ms + 1000);
  // The timeout is where phi reaches the threshold.
  EXPECT_NEAR(lossy_aware.Phi(1, t, t + int64_t(clean.timeout_ms)), 6.0, 0.3);
  EXPECT_NEAR(lossy_aware.Phi(2, t, t + int64_t(lossy.timeout_ms)), 6.0, 0.3);
  EXPECT_EQ(lossy_aware.OfflineAfterMs(1, t, 10000), int64_t(std::ceil(clean.timeout_ms)));
  EXPECT_EQ(lossy_aware.OfflineAfterMs(2, t, 4000), 4000);  // its bursts need more than 4 s
}

// Loss in bursts shows as long runs: a device that loses three heartbeats in
// a row now and then gets a longer timeout than one that loses as many
// heartbeats one at a time.
TEST(PhiDetector, BurstsNeedLongerTimeoutsThanSingleLosses) {
  PhiDetectorOptions o;
  o.threshold = 4;
  PhiAccrualDetector d(o);
  int64_t t1 = 0, t2 = 0;
  d.Observe(1, Source::kApp, 0, 4000);
  d.Observe(2, Source::kApp, 0, 4000);
  for (int i = 1; i <= 150; ++i) {
    t1 += i % 30 == 0 ? 4000 : 1000;                 // 3 lost in a row every 30
    t2 += i % 10 == 0 ? 2000 : 1000;                 // 1 lost every 10
    d.Observe(1, Source::kApp, t1, 4000);
    d.Observe(2, Source::kApp, t2, 4000);
  }
  EXPECT_NEAR(d.Stats(1).loss, d.Stats(2).loss, 0.03);
  EXPECT_GT(d.Stats(1).timeout_ms, d.Stats(2).timeout_ms + 1500);
}

TEST(PhiDetector, NeverAnswersPastTheFixedBound) {
  PhiAccrualDetector d;
  const int64_t t = Feed(d, 1, 0, 20, 3800);  // 3800 + 5.6 * 100 is past the bound
  EXPECT_EQ(d.OfflineAfterMs(1, t, 4000), 4000);
}

TEST(PhiDetector, LongGapsAreNotLearnedAndSameInstantIsIgnored) {
  PhiDetectorOptions o;
  o.max_interval_ms = 10000;
  PhiAccrualDetector d(o);
  int64_t t = Feed(d, 1, 0, 10, 1000);
  d.Observe(1, Source::kApp, t + 60000, 4000);  // away for a minute, then back
  d.Observe(1, Source::kApp, t + 60000, 4000);  // a second source at the same instant
  EXPECT_EQ(d.Stats(1).samples, 10u);
  EXPECT_NEAR(d.Stats(1).mean_ms, 1000, 1e-6);
  d.Observe(1, Source::kApp, t + 61000, 4000);  // the restart point was moved: this interval is 1 s
  EXPECT_EQ(d.Stats(1).samples, 11u);
  EXPECT_NEAR(d.Stats(1).mean_ms, 1000, 1e-6);
}

TEST(PhiDetector, SlowSourcesKeepTheirFixedBound) {
  PhiAccrualDetector d;  // adaptive_bound_limit_ms = 30000
  const int64_t t = Feed(d, 1, 0, 20, 1000);
  EXPECT_EQ(d.OfflineAfterMs(1, t, 240000), 240000);  // INFERRED's bound
  EXPECT_LT(d.OfflineAfterMs(1, t, 4000), 4000);
}

TEST(PhiDetector, ForgetDropsTheDevice) {
  PhiAccrualDetector d;
  Feed(d, 1, 0, 20, 1000);
  Feed(d, 2, 0, 20, 1000);
  EXPECT_EQ(d.size(), 2u);
  d.Forget(1);
  EXPECT_EQ(d.size(), 1u);
  EXPECT_FALSE(d.Stats(1).known);
  EXPECT_EQ(d.OfflineAfterMs(1, 0, 4000), 4000);
}

TEST(PhiDetector, BadOptionsAreMadeSane) {
  PhiDetectorOptions o;
  o.threshold = -1;
  o.min_samples = 0;
  o.alpha = 7;
  o.shards = 3;
  PhiAccrualDetector d(o);
  EXPECT_EQ(d.options().threshold, PhiDetectorOptions().threshold);
  EXPECT_EQ(d.options().min_samples, 1);
  EXPECT_EQ(d.options().alpha, PhiDetectorOptions().alpha);
  EXPECT_EQ(d.options().shards, 4);
  o = PhiDetectorOptions();
  o.threshold = 100;
  EXPECT_EQ(PhiAccrualDetector(o).options().threshold, 15.0);
}

TEST(PhiDetector, ManyThreadsAtOnce) {
  PhiAccrualDetector d;
  constexpr int kThreads = 4, kDevices = 500, kRounds = 40;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int th = 0; th < kThreads; ++th) {
    threads.emplace_back([&, th] {
      for (int r = 0; r <= kRounds; ++r) {
        for (int i = 0; i < kDevices; ++i) {
          const uint64_t key = (uint64_t(th) << 32) | uint64_t(i);
          d.Observe(key, Source::kApp, int64_t(r) * 1000, 4000);
          const int64_t a = d.OfflineAfterMs(key, int64_t(r) * 1000, 4000);
          if (a < 1 || a > 4000) bad.fetch_add(1);
          if (r == kRounds && i % 2 == 0) d.Forget(key);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(d.size(), size_t(kThreads * kDevices / 2));
  EXPECT_EQ(d.Stats((uint64_t{1} << 32) | 1).samples, uint32_t(kRounds));
}

// In an engine: a device on a steady 1 s heartbeat is declared offline at the
// floor (2 s) rather than at the fixed 4 s; a device of a platform the
// detector does not cover keeps the fixed 4 s.
TEST(PhiDetectorInEngine, DetectsSoonerButNotBeforeTheFloor) {
  PhiDetectorOptions po;
  po.model_loss = false;
  po.threshold = 8;
  PhiAccrualDetector detector(po);
  Options o;
  o.detector = &detector;
  o.detector_platforms = 1u << static_cast<int>(Platform::kMobile);
  o.detector_floor_ms = 2000;
  TestEngine t(o);
  Signal phone = TestEngine::Sig("ann", "phone");
  phone.platform = Platform::kMobile;
  Signal web = TestEngine::Sig("bob", "web");
  DeviceHandle hp = t.engine->Connect(phone).value();
  DeviceHandle hw = t.engine->Connect(web).value();
  for (int i = 0; i < 20; ++i) {
    t.Run(1000);
    ASSERT_TRUE(t.engine->Beat(hp).ok());
    ASSERT_TRUE(t.engine->Beat(hw).ok());
  }
  const int64_t last = t.clock.NowMs();
  t.listener.Take();
  // Learned: mean 1000, sd at its 100 ms floor, phi 8 -> 1562 ms, clamped up to the floor.
  t.Run(1900);
  EXPECT_EQ(t.StateOf("ann"), State::kOnline);
  t.Run(100);
  EXPECT_EQ(t.StateOf("ann"), State::kOffline);
  auto ann = t.listener.For("ann");
  ASSERT_EQ(ann.size(), 1u);
  EXPECT_EQ(ann[0].state, State::kOffline);
  EXPECT_EQ(ann[0].cause, Cause::kTimeout);
  EXPECT_EQ(ann[0].published_at_ms, last + 2000);
  EXPECT_EQ(t.StateOf("bob"), State::kOnline);
  t.Run(2000);
  auto bob = t.listener.For("bob");
  ASSERT_EQ(bob.size(), 1u);
  EXPECT_EQ(bob[0].published_at_ms, last + 4000);
}

// The detector is bounded above: a device whose learned timeout is past the
// fixed bound is offline at the fixed bound.
TEST(PhiDetectorInEngine, BoundedAboveByOfflineAfter) {
  PhiDetectorOptions po;
  po.model_loss = false;
  po.min_std_dev_ms = 2000;  // would answer 1000 + 4.75 * 2000
  PhiAccrualDetector detector(po);
  Options o;
  o.detector = &detector;
  o.detector_platforms = 1u << static_cast<int>(Platform::kWeb);
  TestEngine t(o);
  DeviceHandle h = t.engine->Connect(TestEngine::Sig("ann", "web")).value();
  for (int i = 0; i < 10; ++i) {
    t.Run(1000);
    ASSERT_TRUE(t.engine->Beat(h).ok());
  }
  t.Run(3900);
  EXPECT_EQ(t.StateOf("ann"), State::kOnline);
  t.Run(100);
  EXPECT_EQ(t.StateOf("ann"), State::kOffline);
}

}  // namespace
}  // namespace presence
