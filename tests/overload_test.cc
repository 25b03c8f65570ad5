// The overload steps (docs/design.md section 7; docs/operations.md
// "Overload"): the engine's ladder driven by a slow store, a failing store
// and a flood of signals over a failing bus, and each step as the fan-out
// applies it, with its metrics, and the way back.
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "presence/fanout.h"
#include "tests/fanout_client.h"
#include "tests/flaky.h"
#include "tests/test_util.h"

namespace presence::testing {
namespace {

using ::testing::HasSubstr;

std::string Metric(absl::string_view name, int value) {
  return absl::StrCat(name, " ", value, "\n");
}

// An engine over a store and a bus that the test slows down or breaks.
struct Overloadable {
  explicit Overloadable(int enter_ticks = 3, int exit_ticks = 5) {
    o.clock = &clock;
    o.store = &store;
    o.bus = &bus;
    o.overload_tick_budget_ms = 100;
    o.overload_backlog_bound = 50;
    o.overload_enter_ticks = enter_ticks;
    o.overload_exit_ticks = exit_ticks;
    engine = Engine::Create(o).value();
  }
  // A tick that has something to write: a new user comes online.
  void BusyTick() {
    ASSERT_TRUE(engine->Signal(TestEngine::Sig("flood-" + std::to_string(next_++), "web")).ok());
    clock.Advance(100);
    engine->Tick();
  }
  ManualClock clock{1'000'000};
  FlakyStore store;
  FlakyBus bus{1};
  Options o;
  std::unique_ptr<Engine> engine;
  int next_ = 0;
};

TEST(Overload, ASlowStoreStepsDownTheLadderAndItStepsBackWhenItRecovers) {
  Overloadable t(/*enter_ticks=*/3, /*exit_ticks=*/5);
  t.store.SlowDown(&t.clock, 150);  // every write takes 150 ms of a 100 ms budget
  const int expected[] = {0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3};
  for (int want : expected) {
    t.BusyTick();
    EXPECT_EQ(t.engine->OverloadLevel(), want);
  }
  std::string m = t.engine->RenderMetrics();
  EXPECT_THAT(m, HasSubstr(Metric("presence_overload_level", 3)));
  for (const char* step : {"flush_interval", "topic_counts", "polling"}) {
    EXPECT_THAT(m, HasSubstr(absl::StrCat("presence_overload_steps_total{step=\"", step,
                                          "\",direction=\"enter\"} 1\n")));
  }
  // The store recovers: one step back per 5 healthy ticks.
  t.store.SlowDown(&t.clock, 0);
  const int back[] = {3, 3, 3, 3, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 0, 0};
  for (int want : back) {
    t.BusyTick();
    EXPECT_EQ(t.engine->OverloadLevel(), want);
  }
  m = t.engine->RenderMetrics();
  EXPECT_THAT(m, HasSubstr(Metric("presence_overload_level", 0)));
  EXPECT_THAT(m, HasSubstr("presence_overload_steps_total{step=\"polling\",direction=\"leave\"} 1\n"));
  EXPECT_THAT(m, HasSubstr("presence_overload_steps_total{step=\"flush_interval\",direction=\"leave\"} 1\n"));
}

TEST(Overload, AFailingStoreAndAFloodOverAFailingBusAreTriggersToo) {
  {
    Overloadable t(/*enter_ticks=*/2, /*exit_ticks=*/100);
    t.store.failing = true;  // records wait for the store
    t.BusyTick();
    t.BusyTick();
    EXPECT_EQ(t.engine->OverloadLevel(), 1);
  }
  {
    Overloadable t(/*enter_ticks=*/2, /*exit_ticks=*/100);
    t.bus.failing_publish = true;
    // A flood: 60 users in one tick, their change events wait for the bus
    // (bound 50); one tick over the bound is not yet a step.
    for (int i = 0; i < 60; ++i) ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("u" + std::to_string(i), "web")).ok());
    t.clock.Advance(100);
    t.engine->Tick();
    EXPECT_EQ(t.engine->OverloadLevel(), 0);
    EXPECT_THAT(t.engine->RenderMetrics(), HasSubstr("presence_bus_backlog 60\n"));
    t.engine->Tick();
    EXPECT_EQ(t.engine->OverloadLevel(), 1);
  }
  {
    // A quick store, few events: never a step.
    Overloadable t(/*enter_ticks=*/1, /*exit_ticks=*/100);
    for (int i = 0; i < 20; ++i) t.BusyTick();
    EXPECT_EQ(t.engine->OverloadLevel(), 0);
  }
}

class RecordingSink : public Sink {
 public:
  void Deliver(SubscriberId, const Batch& batch) override { batches.push_back(batch); }
  std::vector<Batch> batches;
};

// Each step as the fan-out applies it. enter_ticks 1: each slow tick is one
// step down; exit_ticks 20: healthy ticks hold the level until 20 in a row.
TEST(Overload, TheFanoutAppliesEachStepAndStepsBack) {
  Overloadable t(/*enter_ticks=*/1, /*exit_ticks=*/20);
  FanoutOptions fo;
  fo.flush_interval_ms = 100;
  fo.overload_flush_interval_ms = 1000;
  fo.interval_mode_members = 3;
  fo.large_topic_interval_ms = 100;
  fo.counts_only_members = 1000;
  fo.rate_per_sec = 0;
  auto fanout = Fanout::Create(t.engine.get(), fo).value();
  const std::vector<std::string> team = {"m0", "m1", "m2", "m3", "m4"};
  std::vector<absl::string_view> members(team.begin(), team.end());
  ASSERT_TRUE(fanout->AddMembers("team", members).ok());
  for (const std::string& u : team) ASSERT_TRUE(t.engine->Signal(TestEngine::Sig(u, "web")).ok());
  SubscriberId poller = fanout->Subscribe().value();
  ASSERT_TRUE(fanout->Join(poller, "team").ok());
  RecordingSink sink;
  SubscriberOptions so;
  so.sink = &sink;
  SubscriberId pushed = fanout->Subscribe(so).value();
  const absl::string_view watched[] = {"m0"};
  ASSERT_TRUE(fanout->AddUsers(pushed, watched).ok());
  ClientView poll_view, push_view;
  auto drain_poller = [&] {
    Batch b;
    while (fanout->Poll(poller, &b).value()) poll_view.Apply(b);
  };
  auto healthy_tick = [&](int64_t ms = 100) {
    t.clock.Advance(ms);
    t.engine->Tick();
  };
  auto slow_tick = [&] {
    t.store.SlowDown(&t.clock, 150);
    t.BusyTick();
    t.store.SlowDown(&t.clock, 0);
  };
  auto signal = [&](const std::string& u, Activity a) {
    ASSERT_TRUE(t.engine->Signal(TestEngine::Sig(u, "web", 1, Source::kApp, a)).ok());
  };
  healthy_tick();
  drain_poller();
  for (const Batch& b : sink.batches) push_view.Apply(b);
  ASSERT_EQ(push_view.list.at("m0").state(), v1::STATE_ONLINE);
  ASSERT_EQ(poll_view.topics.at("team").size(), 5u);

  // Step 1: a longer flush interval. A change waits for the 1 s flush.
  slow_tick();
  ASSERT_EQ(t.engine->OverloadLevel(), 1);
  healthy_tick();  // the fan-out flushes at this tick and reads level 1
  EXPECT_THAT(fanout->RenderMetrics(), HasSubstr(Metric("presence_fanout_flush_interval_ms", 1000)));
  size_t before = sink.batches.size();
  signal("m0", Activity::kIdle);
  for (int i = 0; i < 5; ++i) healthy_tick();  // 500 ms: not yet
  EXPECT_EQ(sink.batches.size(), before);
  for (int i = 0; i < 5; ++i) healthy_tick();  // 1 s after the last flush
  ASSERT_EQ(sink.batches.size(), before + 1);
  push_view.Apply(sink.batches.back());
  EXPECT_EQ(push_view.list.at("m0").state(), v1::STATE_AWAY);

  // Step 2: the team (5 members, above interval_mode_members) to counts.
  slow_tick();
  ASSERT_EQ(t.engine->OverloadLevel(), 2);
  signal("m1", Activity::kIdle);
  for (int i = 0; i < 10; ++i) healthy_tick();
  drain_poller();
  ASSERT_TRUE(poll_view.counts.count("team"));
  EXPECT_EQ(poll_view.counts.at("team").away(), 2u);
  EXPECT_EQ(poll_view.counts.at("team").online(), 3u);
  EXPECT_THAT(fanout->RenderMetrics(), HasSubstr(Metric("presence_fanout_counts_only_topics", 1)));

  // Step 3: push subscribers to polling: nothing is pushed, Poll serves it.
  slow_tick();
  ASSERT_EQ(t.engine->OverloadLevel(), 3);
  before = sink.batches.size();
  signal("m0", Activity::kActive);
  for (int i = 0; i < 10; ++i) healthy_tick();
  EXPECT_EQ(sink.batches.size(), before);
  EXPECT_THAT(fanout->RenderMetrics(), HasSubstr(Metric("presence_fanout_polled_push_subscribers", 1)));
  Batch b;
  ASSERT_TRUE(fanout->Poll(pushed, &b).value());
  push_view.Apply(b);
  EXPECT_EQ(push_view.list.at("m0").state(), v1::STATE_ONLINE);
  // One more change, left waiting: it is pushed once the step is left.
  signal("m0", Activity::kIdle);
  for (int i = 0; i < 10; ++i) healthy_tick();
  EXPECT_EQ(sink.batches.size(), before);

  // Recovery: 20 healthy ticks per step back.
  for (int i = 0; i < 10; ++i) healthy_tick();  // 20 healthy ticks since the last slow one
  ASSERT_EQ(t.engine->OverloadLevel(), 2);
  healthy_tick();  // the fan-out reads level 2 and pushes what waited
  ASSERT_EQ(sink.batches.size(), before + 1);
  push_view.Apply(sink.batches.back());
  EXPECT_EQ(push_view.list.at("m0").state(), v1::STATE_AWAY);
  EXPECT_THAT(fanout->RenderMetrics(), HasSubstr(Metric("presence_fanout_polled_push_subscribers", 0)));
  EXPECT_TRUE(absl::IsFailedPrecondition(fanout->Poll(pushed, &b).status()));  // pushed again
  for (int i = 0; i < 40; ++i) healthy_tick();
  ASSERT_EQ(t.engine->OverloadLevel(), 0);
  healthy_tick();
  EXPECT_THAT(fanout->RenderMetrics(), HasSubstr(Metric("presence_fanout_counts_only_topics", 0)));
  EXPECT_THAT(fanout->RenderMetrics(), HasSubstr(Metric("presence_fanout_flush_interval_ms", 100)));
  // The team is per-member again: a change shows as its member.
  signal("m2", Activity::kIdle);
  for (int i = 0; i < 3; ++i) healthy_tick();
  drain_poller();
  EXPECT_EQ(poll_view.topics.at("team").at("m2").state(), v1::STATE_AWAY);
  EXPECT_FALSE(poll_view.counts.count("team"));
}

}  // namespace
}  // namespace presence::testing
