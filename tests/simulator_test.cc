// Tests of the network-fault simulator (benchmarks/sim/network_sim.h): with no
// loss and no jitter, scripted events give exactly the transitions and timings
// that docs/design.md rules 1 and 7 promise; a fixed seed gives the same run twice.
#include "sim/network_sim.h"

#include <vector>

#include "gtest/gtest.h"

namespace presence::sim {
namespace {

SimConfig Scripted(int users, double duration_s) {
  SimConfig c;
  c.workload.users = users;
  c.random_workload = false;
  c.scripted_devices_per_user = 1;
  c.duration_s = duration_s;
  c.warmup_s = 0;
  c.keep_log = true;
  return c;
}

TEST(Simulator, NoLossNoJitterGivesExactTransitionsAndTimings) {
  Simulator sim(Scripted(2, 40));
  // u0: connects at 1.05 s, its network vanishes at 10.5 s (last heartbeat at
  // 10.05 s), comes back at 20 s, reloads its page at 25 s (back 0.5 s later),
  // hands over at 26 s (2.5 s without heartbeats), logs out at 30.02 s.
  sim.ScriptConnect(0, 1050);
  sim.ScriptEnd(0, 10500, EndKind::kSilent);
  sim.ScriptConnect(0, 20000);
  sim.ScriptReload(0, 25000, 500);
  sim.ScriptHandover(0, 26000, 2500);
  sim.ScriptEnd(0, 30020, EndKind::kClean);
  // u1: connects at 2 s, its socket drops at 5.03 s.
  sim.ScriptConnect(1, 2000);
  sim.ScriptEnd(1, 5030, EndKind::kAbrupt);
  sim.Run();

  const std::vector<LoggedChange> want = {
      {1100, 0, State::kOnline, Cause::kSignal},       // next flush after the connect
      {2000, 1, State::kOnline, Cause::kSignal},       // connect on a flush: same tick
      {6600, 1, State::kOffline, Cause::kDisconnect},  // 5.03 s + 1.5 s grace, next flush
      {14100, 0, State::kOffline, Cause::kTimeout},    // 10.05 s + 4 s, next flush
      {20000, 0, State::kOnline, Cause::kSignal},
      {30100, 0, State::kOffline, Cause::kDisconnect},  // clean: the next flush
  };
  EXPECT_EQ(sim.log(), want);

  const Metrics& m = sim.metrics();
  EXPECT_EQ(m.true_transitions, 6u);
  EXPECT_EQ(m.published_transitions, 6u);
  EXPECT_EQ(m.false_offlines, 0u);
  EXPECT_EQ(m.flaps, 0u);
  EXPECT_EQ(m.false_onlines, 0u);
  EXPECT_EQ(m.engine_errors, 0u);
  EXPECT_EQ(m.reloads, 1u);
  EXPECT_EQ(m.handovers, 1u);
  EXPECT_EQ(m.heartbeats_lost, 0u);
  EXPECT_EQ(m.detection_ms[static_cast<int>(EndKind::kSilent)], std::vector<int64_t>{3600});
  EXPECT_EQ(m.detection_ms[static_cast<int>(EndKind::kAbrupt)], std::vector<int64_t>{1570});
  EXPECT_EQ(m.detection_ms[static_cast<int>(EndKind::kClean)], std::vector<int64_t>{80});
  EXPECT_EQ(m.online_latency_ms, (std::vector<int64_t>{50, 0, 0}));
  EXPECT_EQ(m.undetected_outages, 0u);
  // Device time connected: u0 1.05..10.5 and 20..30.02, u1 2..5.03.
  EXPECT_NEAR(m.device_hours * 3.6e6, (10500 - 1050) + (30020 - 20000) + (5030 - 2000), 1e-6);
}

TEST(Simulator, AHandOverLongerThanTheTimeoutIsAFalseOffline) {
  Simulator sim(Scripted(1, 20));
  sim.ScriptConnect(0, 0);
  // Heartbeats at 1..5 s; none due in [5.5 s, 10.5 s); the next at 11 s.
  sim.ScriptHandover(0, 5500, 5000);
  sim.Run();
  const std::vector<LoggedChange> want = {
      {100, 0, State::kOnline, Cause::kSignal},
      {9000, 0, State::kOffline, Cause::kTimeout},  // 5 s + 4 s
      {11000, 0, State::kOnline, Cause::kSignal},   // the next heartbeat's flush
  };
  EXPECT_EQ(sim.log(), want);
  const Metrics& m = sim.metrics();
  EXPECT_EQ(m.false_offlines, 1u);
  EXPECT_EQ(m.flaps, 2u);
  EXPECT_EQ(m.mistake_ms, std::vector<int64_t>{2000});
  EXPECT_EQ(m.engine_false_offlines, 1u);
}

// docs/design.md rule 9: a probe that reaches the device once its hand-over is
// over is answered, and saves it; with a transport that drops what reaches a
// device mid hand-over, the probes sent while its network is gone are lost.
TEST(Simulator, AProbeAfterAHandOverSavesTheDevice) {
  for (bool probes : {false, true}) {
    SimConfig c = Scripted(1, 20);
    c.workload.handover_holds_probes = false;
    c.probes = probes;
    c.engine.app.offline_after_ms = 4500;
    c.engine.probe_retry_ms = 800;  // probes at 7, 7.8, 8.6 and 9.4 s
    Simulator sim(c);
    sim.ScriptConnect(0, 0);
    // Heartbeats at 1..5 s; none due in [5.5 s, 9.3 s); the next at 10 s,
    // past the deadline of 9.5 s.
    sim.ScriptHandover(0, 5500, 3800);
    sim.Run();
    const Metrics& m = sim.metrics();
    EXPECT_EQ(m.engine_errors, 0u);
    if (!probes) {
      EXPECT_EQ(m.false_offlines, 1u);
      EXPECT_EQ(m.probes_sent, 0u);
      continue;
    }
    const std::vector<LoggedChange> want = {{100, 0, State::kOnline, Cause::kSignal}};
    EXPECT_EQ(sim.log(), want);
    EXPECT_EQ(m.false_offlines, 0u);
    EXPECT_EQ(m.probes_sent, 4u);         // three of them during the hand-over
    EXPECT_EQ(m.probe_answers_sent, 1u);  // the one at 9.4 s
    EXPECT_EQ(m.probe_answers_applied, 1u);
  }
}

// A hand-over keeps the connection: what the server sent during it is
// retransmitted after it (200 ms after the first try, then 400, 800...), so a
// probe sent into the hand-over is answered when the network is back.
TEST(Simulator, AProbeHeldThroughAHandOverSavesTheDevice) {
  for (bool holds : {false, true}) {
    SimConfig c = Scripted(1, 20);
    c.workload.handover_holds_probes = holds;
    c.probes = true;
    c.engine.app.offline_after_ms = 3500;  // probes at 7, 7.5 and 8 s
    Simulator sim(c);
    sim.ScriptConnect(0, 0);
    // Heartbeats at 1..5 s; none due in [5.5 s, 8.2 s); the next at 9 s,
    // past the deadline of 8.5 s. Every probe reaches the device mid
    // hand-over.
    sim.ScriptHandover(0, 5500, 2700);
    sim.Run();
    const Metrics& m = sim.metrics();
    EXPECT_EQ(m.engine_errors, 0u);
    EXPECT_EQ(m.probes_sent, 3u);
    if (!holds) {
      const std::vector<LoggedChange> want = {
          {100, 0, State::kOnline, Cause::kSignal},
          {8500, 0, State::kOffline, Cause::kTimeout},
          {9500, 0, State::kOnline, Cause::kSignal},  // the 9 s heartbeat, after the dwell
      };
      EXPECT_EQ(sim.log(), want);
      EXPECT_EQ(m.probe_answers_sent, 0u);
      continue;
    }
    const std::vector<LoggedChange> want = {{100, 0, State::kOnline, Cause::kSignal}};
    EXPECT_EQ(sim.log(), want);
    EXPECT_EQ(m.false_offlines, 0u);
    // The probe of 8 s retried at 8.2 s, the one of 7 s at 8.4 s, the one of
    // 7.5 s at 8.9 s: the first answer saves the device.
    EXPECT_EQ(m.probe_answers_sent, 3u);
    EXPECT_EQ(m.probe_answers_applied, 1u);
  }
}

// docs/design.md rule 7: at most one published change per user per min_dwell (1 s).
// A user who comes back 0.3 s after its offline was published is shown online
// when the dwell ends, not at the next flush: the online latency's tail.
TEST(Simulator, AReturnWithinTheDwellWaitsForIt) {
  SimConfig c = Scripted(1, 10);
  c.scripted_devices_per_user = 2;
  Simulator sim(c);
  sim.ScriptConnect(0, 1000);
  sim.ScriptEnd(0, 5000, EndKind::kClean);  // on a flush: offline published at 5 s
  sim.ScriptConnect(1, 5300);               // the user's other device
  sim.Run();
  const std::vector<LoggedChange> want = {
      {1000, 0, State::kOnline, Cause::kSignal},
      {5000, 0, State::kOffline, Cause::kDisconnect},
      {6000, 0, State::kOnline, Cause::kSignal},  // 5 s + 1 s of dwell, not 5.4 s
  };
  EXPECT_EQ(sim.log(), want);
  EXPECT_EQ(sim.metrics().online_latency_ms, (std::vector<int64_t>{0, 700}));
}

SimConfig Random(uint64_t seed, bool adaptive) {
  SimConfig c;
  c.workload.users = 100;
  c.workload.session_mean_s = 120;
  c.workload.off_mean_s = 30;
  c.workload.reloads_per_hour = 20;
  c.workload.handovers_per_hour = 20;
  c.links = {LinkClass{0.7, Link{Jitter::Gaussian(200), Loss::Independent(0.05)}, "a"},
             LinkClass{0.3, Link{Jitter::Pareto(100, 1.5), Loss::GilbertElliott(0.1, 4)}, "b"}};
  c.duration_s = 400;
  c.warmup_s = 60;
  c.seed = seed;
  c.adaptive = adaptive;
  c.keep_log = true;
  return c;
}

void ExpectSameRun(const SimConfig& c) {
  Simulator a(c), b(c);
  a.Run();
  b.Run();
  ASSERT_FALSE(a.log().empty());
  EXPECT_EQ(a.log(), b.log());
  const Metrics &x = a.metrics(), &y = b.metrics();
  EXPECT_EQ(x.heartbeats_sent, y.heartbeats_sent);
  EXPECT_EQ(x.heartbeats_lost, y.heartbeats_lost);
  EXPECT_EQ(x.true_transitions, y.true_transitions);
  EXPECT_EQ(x.false_offlines, y.false_offlines);
  EXPECT_EQ(x.online_latency_ms, y.online_latency_ms);
  for (int k = 0; k < kEndKinds; ++k) EXPECT_EQ(x.detection_ms[k], y.detection_ms[k]);
  EXPECT_EQ(x.mistake_ms, y.mistake_ms);
  EXPECT_EQ(x.device_hours, y.device_hours);
  EXPECT_EQ(x.engine_errors, 0u);
  EXPECT_EQ(x.false_onlines, y.false_onlines);
  // The run did exercise the faults.
  EXPECT_GT(x.heartbeats_lost, 0u);
  EXPECT_GT(x.true_transitions, 100u);
  EXPECT_GT(x.reloads, 0u);
  EXPECT_GT(x.handovers, 0u);
}

TEST(Simulator, FixedSeedGivesIdenticalRunsFixedThresholds) { ExpectSameRun(Random(42, false)); }

TEST(Simulator, FixedSeedGivesIdenticalRunsAdaptive) { ExpectSameRun(Random(42, true)); }

TEST(Simulator, FixedSeedGivesIdenticalRunsWithProbes) {
  SimConfig c = Random(42, false);
  c.probes = true;
  ExpectSameRun(c);
  Simulator sim(c);
  sim.Run();
  EXPECT_GT(sim.metrics().probes_sent, 0u);
  EXPECT_GT(sim.metrics().probe_answers_applied, 0u);
}

TEST(Simulator, AnotherSeedGivesAnotherRun) {
  Simulator a(Random(1, false)), b(Random(2, false));
  a.Run();
  b.Run();
  EXPECT_NE(a.log(), b.log());
}

TEST(Simulator, GilbertElliottAveragesTheAskedLoss) {
  const Loss l = Loss::GilbertElliott(0.02, 5, 0.5);
  EXPECT_NEAR(l.MeanLoss(), 0.02, 1e-9);
  EXPECT_NEAR(1.0 / l.p_bad_to_good, 5, 1e-9);
  EXPECT_NEAR(Loss::Independent(0.03).MeanLoss(), 0.03, 1e-12);
}

}  // namespace
}  // namespace presence::sim
