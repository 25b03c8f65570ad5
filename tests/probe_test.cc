// Push/pull checks (docs/design.md rule 9) through the C++ API, on the
// manual clock: when the engine probes a silent device, what an answer does,
// that offline_after stays the upper bound, the per-gateway rate limit and
// the metrics.
#include <atomic>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "presence/prober.h"
#include "src/core/test_hooks.h"
#include "tests/test_util.h"

namespace presence::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::SizeIs;

// What a probe asked, and when.
struct Sent {
  std::string user, device, gateway;
  uint64_t session, id;
  Source source;
  int attempt;
  int64_t at_ms;
};

// A prober that records each request; `answer` (when set) decides whether
// it answers at once, from inside Probe.
class RecordingProber : public Prober {
 public:
  void Probe(const ProbeRequest& r) override {
    sent.push_back(Sent{std::string(r.user_id), std::string(r.device_id), std::string(r.gateway),
                        r.session_id, r.probe_id, r.source, r.attempt, clock->NowMs()});
    if (answer && answer(sent.back())) answers.push_back(engine->AnswerProbe(r.probe_id));
  }
  std::vector<int64_t> Times() const {
    std::vector<int64_t> out;
    for (const Sent& s : sent) out.push_back(s.at_ms);
    return out;
  }
  Clock* clock = nullptr;
  Engine* engine = nullptr;
  std::function<bool(const Sent&)> answer;
  std::vector<Sent> sent;
  std::vector<absl::Status> answers;
};

// The schedule of the example: probes at 2 s and 3 s of silence,
// DEAD at 4 s (the defaults probe at 2, 2.5, 3 and 3.5 s).
Options TwoProbes() {
  Options o;
  o.probe_retry_ms = 1000;
  o.max_probes = 2;
  return o;
}

// An engine with a RecordingProber.
struct ProbeEngine {
  explicit ProbeEngine(Options o = TwoProbes()) {
    o.prober = &prober;
    o.min_dwell_ms = 0;
    t = std::make_unique<TestEngine>(o);
    prober.clock = &t->clock;
    prober.engine = t->engine.get();
  }
  Engine& engine() { return *t->engine; }
  // The value of a metric without labels in RenderMetrics (-1: absent).
  double MetricValue(absl::string_view name) {
    for (absl::string_view line : absl::StrSplit(engine().RenderMetrics(), '\n')) {
      std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
      double v;
      if (parts.size() == 2 && parts[0] == name && absl::SimpleAtod(parts[1], &v)) return v;
    }
    return -1;
  }
  RecordingProber prober;
  std::unique_ptr<TestEngine> t;
};

std::vector<State> States(const std::vector<ChangeEvent>& events) {
  std::vector<State> out;
  for (const auto& e : events) out.push_back(e.state);
  return out;
}

constexpr int64_t kStart = 1'000'000;

TEST(Probe, SilentDeviceIsProbedAtTwoAndThreeSecondsThenDeadAtFour) {
  ProbeEngine p;
  Signal s = TestEngine::Sig("alice", "web", 7);
  s.gateway = "gw-1";
  ASSERT_TRUE(p.engine().Signal(s).ok());
  p.t->Run(3900);
  EXPECT_THAT(p.prober.Times(), ElementsAre(kStart + 2000, kStart + 3000));
  ASSERT_THAT(p.prober.sent, SizeIs(2));
  for (int k = 0; k < 2; ++k) {
    const Sent& r = p.prober.sent[k];
    EXPECT_EQ(r.user, "alice");
    EXPECT_EQ(r.device, "web");
    EXPECT_EQ(r.gateway, "gw-1");
    EXPECT_EQ(r.session, 7u);
    EXPECT_EQ(r.source, Source::kApp);
    EXPECT_EQ(r.attempt, k + 1);
    EXPECT_NE(r.id, 0u);
  }
  EXPECT_NE(p.prober.sent[0].id, p.prober.sent[1].id);
  EXPECT_EQ(p.t->StateOf("alice"), State::kOnline);
  // Unanswered: DEAD at offline_after, not a moment later, and no more probes.
  p.t->Run(100);
  EXPECT_EQ(p.t->StateOf("alice"), State::kOffline);
  auto ev = p.t->listener.Take();
  ASSERT_THAT(States(ev), ElementsAre(State::kOnline, State::kOffline));
  EXPECT_EQ(ev[1].cause, Cause::kTimeout);
  EXPECT_EQ(ev[1].published_at_ms, kStart + 4000);
  p.t->Run(10000);
  EXPECT_THAT(p.prober.sent, SizeIs(2));
  EXPECT_EQ(p.MetricValue("presence_probes_sent_total"), 2);
  EXPECT_EQ(p.MetricValue("presence_probes_given_up_total"), 1);
  EXPECT_EQ(p.MetricValue("presence_probes_answered_total"), 0);
  // An answer now is late: counted, nothing applied.
  EXPECT_TRUE(absl::IsFailedPrecondition(p.engine().AnswerProbe(p.prober.sent[1].id)));
  EXPECT_EQ(p.MetricValue("presence_probes_late_total"), 1);
  EXPECT_EQ(p.t->StateOf("alice"), State::kOffline);
}

TEST(Probe, TheDefaultsProbeAtTwoToThreeAndAHalfSeconds) {
  ProbeEngine p{Options()};
  ASSERT_TRUE(p.engine().Signal(TestEngine::Sig("alice", "web")).ok());
  p.t->Run(5000);
  EXPECT_THAT(p.prober.Times(),
              ElementsAre(kStart + 2000, kStart + 2500, kStart + 3000, kStart + 3500));
  EXPECT_EQ(p.t->listener.events().back().published_at_ms, kStart + 4000);
}

TEST(Probe, ADeviceThatOnlyAnswersProbesStaysOnline) {
  ProbeEngine p;
  p.prober.answer = [](const Sent&) { return true; };  // at once, from inside Probe
  ASSERT_TRUE(p.engine().Connect(TestEngine::Sig("alice", "web")).ok());
  p.t->Run(60000);
  EXPECT_THAT(States(p.t->listener.events()), ElementsAre(State::kOnline));
  EXPECT_EQ(p.t->StateOf("alice"), State::kOnline);
  // One probe per 2 s of silence (each answer is a signal that restarts it).
  EXPECT_EQ(p.prober.sent.size(), 30u);
  for (const absl::Status& st : p.prober.answers) EXPECT_TRUE(st.ok()) << st;
  for (const Sent& r : p.prober.sent) EXPECT_EQ(r.attempt, 1);
  EXPECT_EQ(p.MetricValue("presence_probes_answered_total"), 30);
  EXPECT_EQ(p.MetricValue("presence_probes_given_up_total"), 0);
  // last_seen follows the answers.
  EXPECT_EQ(p.engine().GetOne("alice").last_seen_ms, kStart + 60000);
}

TEST(Probe, AnAnswerToTheRetrySavesTheDevice) {
  ProbeEngine p;
  p.prober.answer = [](const Sent& r) { return r.attempt == 2; };  // the first one is lost
  ASSERT_TRUE(p.engine().Signal(TestEngine::Sig("alice", "web")).ok());
  p.t->Run(4500);
  EXPECT_THAT(p.prober.Times(), ElementsAre(kStart + 2000, kStart + 3000));
  EXPECT_EQ(p.t->StateOf("alice"), State::kOnline);
  EXPECT_THAT(States(p.t->listener.events()), ElementsAre(State::kOnline));
  // The unanswered first probe of that silence is over: its answer is late.
  EXPECT_TRUE(absl::IsFailedPrecondition(p.engine().AnswerProbe(p.prober.sent[0].id)));
  // Then silence: probed again 2 s after the answer, dead 4 s after it.
  p.prober.answer = nullptr;
  p.t->Run(3000);
  EXPECT_THAT(p.prober.Times(),
              ElementsAre(kStart + 2000, kStart + 3000, kStart + 5000, kStart + 6000));
  EXPECT_THAT(States(p.t->listener.events()), ElementsAre(State::kOnline, State::kOffline));
  EXPECT_EQ(p.t->listener.events().back().published_at_ms, kStart + 7000);
}

TEST(Probe, OfflineAfterStaysTheUpperBound) {
  ProbeEngine p;
  ASSERT_TRUE(p.engine().Signal(TestEngine::Sig("alice", "web")).ok());
  p.t->Run(3000);
  ASSERT_THAT(p.prober.sent, SizeIs(2));
  // The answer comes at 4 s of silence exactly, before any tick noticed the
  // deadline: too late, the device is DEAD (Get said so already).
  p.t->clock.Advance(1000);
  EXPECT_EQ(p.t->StateOf("alice"), State::kOffline);
  EXPECT_TRUE(absl::IsFailedPrecondition(p.engine().AnswerProbe(p.prober.sent[1].id)));
  EXPECT_EQ(p.t->StateOf("alice"), State::kOffline);
  p.t->engine->Tick();
  EXPECT_THAT(States(p.t->listener.events()), ElementsAre(State::kOnline, State::kOffline));
  EXPECT_EQ(p.MetricValue("presence_probes_late_total"), 1);
  EXPECT_EQ(p.MetricValue("presence_probes_given_up_total"), 1);
  EXPECT_EQ(p.MetricValue("presence_false_offlines_total"), 0);
}

TEST(Probe, AHeartbeatEndsTheProbingAndItsAnswerIsLate) {
  ProbeEngine p;
  auto h = p.engine().Connect(TestEngine::Sig("alice", "web"));
  ASSERT_TRUE(h.ok());
  p.t->Run(2500);
  ASSERT_THAT(p.prober.sent, SizeIs(1));
  ASSERT_TRUE(p.engine().Beat(*h).ok());  // the heartbeat was only late
  p.t->Run(1500);
  EXPECT_THAT(p.prober.sent, SizeIs(1));  // no retry: it signalled
  EXPECT_TRUE(absl::IsFailedPrecondition(p.engine().AnswerProbe(p.prober.sent[0].id)));
  // The next silence is probed 2 s after that heartbeat.
  p.t->Run(1000);
  EXPECT_THAT(p.prober.Times(), ElementsAre(kStart + 2000, kStart + 4500));
  EXPECT_EQ(p.t->StateOf("alice"), State::kOnline);
}

TEST(Probe, AnswerKeepsTheActivityOfItsSource) {
  ProbeEngine p;
  p.prober.answer = [](const Sent&) { return true; };
  ASSERT_TRUE(p.engine()
                  .Signal(TestEngine::Sig("alice", "web", 1, Source::kApp, Activity::kIdle))
                  .ok());
  p.t->Run(10000);
  EXPECT_THAT(States(p.t->listener.events()), ElementsAre(State::kAway));
  EXPECT_GE(p.prober.sent.size(), 4u);
}

TEST(Probe, ADeviceKeptByInferredSignalsIsProbedOnItsOwnClock) {
  ProbeEngine p;
  ASSERT_TRUE(p.engine().Signal(TestEngine::Sig("alice", "phone", 1, Source::kInferred)).ok());
  p.t->Run(60900, 1000);
  EXPECT_TRUE(p.prober.sent.empty());
  p.t->Run(200, 100);  // 61 s: its 60 s interval plus the 1 s margin
  ASSERT_THAT(p.prober.sent, SizeIs(1));
  EXPECT_EQ(p.prober.sent[0].source, Source::kInferred);
  EXPECT_EQ(p.prober.sent[0].at_ms, kStart + 61000);
  ASSERT_TRUE(p.engine().AnswerProbe(p.prober.sent[0].id).ok());
  EXPECT_EQ(p.engine().GetOne("alice", "alice").last_seen_ms, kStart + 61100);  // answered then
}

TEST(Probe, NoProbeWhileAnotherSourceIsFresh) {
  ProbeEngine p;
  ASSERT_TRUE(p.engine().Signal(TestEngine::Sig("alice", "phone", 1, Source::kInferred)).ok());
  ASSERT_TRUE(p.engine().Signal(TestEngine::Sig("alice", "phone", 1, Source::kApp)).ok());
  // APP goes quiet, INFERRED does not: the device is not SUSPECT, no probe.
  p.t->Run(5000);
  EXPECT_TRUE(p.prober.sent.empty());
}

TEST(Probe, DisconnectAndNewSessionEndTheProbing) {
  ProbeEngine p;
  auto h = p.engine().Connect(TestEngine::Sig("alice", "web", 1));
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE(p.engine().Connect(TestEngine::Sig("bob", "web", 1)).ok());
  p.t->Run(2000);
  ASSERT_THAT(p.prober.sent, SizeIs(2));
  std::map<std::string, uint64_t> id;
  for (const Sent& r : p.prober.sent) id[r.user] = r.id;
  ASSERT_TRUE(p.engine().Disconnect(*h, DisconnectKind::kAbrupt).ok());
  ASSERT_TRUE(p.engine().Signal(TestEngine::Sig("bob", "web", 2)).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(p.engine().AnswerProbe(id["alice"])));
  EXPECT_TRUE(absl::IsFailedPrecondition(p.engine().AnswerProbe(id["bob"])));
  EXPECT_EQ(p.MetricValue("presence_probes_late_total"), 2);
  EXPECT_EQ(p.MetricValue("presence_probes_given_up_total"), 0);
}

TEST(Probe, UnknownIdsAreNotFound) {
  ProbeEngine p;
  EXPECT_TRUE(absl::IsNotFound(p.engine().AnswerProbe(0)));
  EXPECT_TRUE(absl::IsNotFound(p.engine().AnswerProbe(1)));  // never sent
  EXPECT_TRUE(absl::IsNotFound(p.engine().AnswerProbe(~uint64_t{0})));
  EXPECT_EQ(p.MetricValue("presence_probes_late_total"), 0);
}

TEST(Probe, ProbesAreRateLimitedPerGateway) {
  Options o = TwoProbes();
  o.max_probes_per_gateway_per_sec = 2;
  o.max_signals_per_device_per_sec = 0;
  ProbeEngine p(o);
  for (const char* gw : {"g1", "g2"}) {
    for (int i = 0; i < 5; ++i) {
      const std::string user = absl::StrCat(gw, "-u", i);
      Signal s = TestEngine::Sig(user, "web");
      s.gateway = gw;
      ASSERT_TRUE(p.engine().Signal(s).ok());
    }
  }
  p.t->Run(3500);
  // Each gateway: 2 probes in the second of the first round, 2 in that of
  // the retries; the rest throttled.
  std::map<std::string, std::map<int64_t, int>> per_gateway;
  for (const Sent& r : p.prober.sent) ++per_gateway[r.gateway][r.at_ms];
  for (const char* gw : {"g1", "g2"}) {
    EXPECT_THAT(per_gateway[gw], ElementsAre(std::pair<const int64_t, int>(kStart + 2000, 2),
                                             std::pair<const int64_t, int>(kStart + 3000, 2)))
        << gw;
  }
  EXPECT_EQ(p.MetricValue("presence_probes_sent_total"), 8);
  EXPECT_EQ(p.MetricValue("presence_probes_throttled_total"), 12);
}

TEST(Probe, WithoutAProberNothingIsProbed) {
  TestEngine t;
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  t.Run(5000);
  EXPECT_THAT(States(t.listener.events()), ElementsAre(State::kOnline, State::kOffline));
  EXPECT_NE(t.engine->RenderMetrics().find("presence_probes_sent_total 0\n"), std::string::npos);
}

TEST(Probe, OptionsOutOfRangeAreRefused) {
  RecordingProber prober;
  auto bad = [&](auto set) {
    Options o;
    o.prober = &prober;
    set(o);
    return absl::IsInvalidArgument(Engine::Create(o).status());
  };
  EXPECT_TRUE(bad([](Options& o) { o.max_probes = 0; }));
  EXPECT_TRUE(bad([](Options& o) { o.max_probes = kMaxProbes + 1; }));
  EXPECT_TRUE(bad([](Options& o) { o.probe_retry_ms = 0; }));
  EXPECT_TRUE(bad([](Options& o) { o.probe_margin_ms = -1; }));
  EXPECT_TRUE(bad([](Options& o) { o.max_probes_per_gateway_per_sec = -1; }));
  EXPECT_FALSE(bad([](Options& o) { o.max_probes = kMaxProbes; }));
}

// The heartbeat of a live device stays on the lock-free path with a prober:
// probing lives in the device's timer, never in Beat.
std::atomic<int> lock_free_beats{0};

TEST(Probe, HeartbeatsStayLockFree) {
  ProbeEngine p;
  auto h = p.engine().Connect(TestEngine::Sig("alice", "web"));
  ASSERT_TRUE(h.ok());
  internal::test_hooks::beat_checked = [](DeviceHandle) { ++lock_free_beats; };
  for (int i = 0; i < 20; ++i) {
    p.t->Run(1000);
    ASSERT_TRUE(p.engine().Beat(*h).ok());
  }
  internal::test_hooks::beat_checked = nullptr;
  EXPECT_EQ(lock_free_beats.load(), 20);
  EXPECT_TRUE(p.prober.sent.empty());
}

}  // namespace
}  // namespace presence::testing
