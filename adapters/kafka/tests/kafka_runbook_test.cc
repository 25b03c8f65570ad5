// The two runbooks of docs/runbooks.md that are calls of the host's engine,
// not presencectl commands, followed step by step over Kafka (librdkafka's
// mock cluster) and a shared store: "Replaying Kafka for a rebuild" and
// "Moving partitions between engines". Each step below is the runbook's.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "gmock/gmock.h"
#include "adapters/kafka/tests/mock_kafka.h"
#include "presence/kafka_bus.h"
#include "presence/ownership.h"
#include "presence/store.h"
#include "presence/wire.h"
#include "tests/test_util.h"

namespace presence {
namespace {

using kafka_testing::MockKafka;
using testing::TestEngine;
using ::testing::HasSubstr;
using ::testing::Not;

// A gateway's signal, on the bus.
void Publish(Bus* bus, const std::string& user, const std::string& device, Clock* clock,
             Activity activity = Activity::kActive) {
  Signal s = TestEngine::Sig(user, device, 1, Source::kApp, activity);
  s.timestamp_ms = clock->NowMs();
  auto off = bus->Publish(BusRecordType::kSignal, s.user_id, EncodeSignal(s));
  ASSERT_TRUE(off.ok()) << off.status();
}

// Runbook step "replay to the end": ConsumeBus until it answers 0.
void ReplayToTheEnd(Engine* e) {
  for (;;) {
    auto n = e->ConsumeBus();
    ASSERT_TRUE(n.ok()) << n.status();
    if (*n == 0) return;
  }
}

std::vector<std::string> Users(int n) {
  std::vector<std::string> users;
  for (int i = 0; i < n; ++i) users.push_back("user-" + std::to_string(i));
  return users;
}

TEST(Runbook, ReplayingKafkaForARebuild) {
  MockKafka& kafka = MockKafka::Shared();
  KafkaBusOptions bo = kafka.NewTopicOptions(4);
  auto bus = KafkaBus::Create(bo).value();
  auto store = NewMemoryStore();
  ManualClock clock(1'000'000);
  Options o;
  o.clock = &clock;
  o.store = store.get();
  o.bus = bus.get();
  auto engine = Engine::Create(o).value();
  const std::vector<std::string> users = Users(12);
  for (const std::string& u : users) Publish(bus.get(), u, "web", &clock);
  ReplayToTheEnd(engine.get());
  clock.Advance(100);
  engine->Tick();
  std::vector<absl::string_view> ids(users.begin(), users.end());
  for (const UserPresence& p : engine->Get(ids)) ASSERT_EQ(p.state, State::kOnline);

  // Gateways keep publishing while the operator works: user-0 goes idle.
  Publish(bus.get(), users[0], "web", &clock, Activity::kIdle);

  // Step 1: flush, so that nothing pending is lost.
  engine->Tick();
  // Step 2: rebuild: reload the store, resume from the committed offsets.
  ASSERT_TRUE(engine->Rebuild().ok());
  // What it has to replay shows as the heartbeat backlog (the signal sent
  // meanwhile, and the change events the engine published after its last read).
  EXPECT_THAT(engine->RenderMetrics(), Not(HasSubstr("presence_signal_backlog 0\n")));
  // Step 3: replay the bus to its end; the heartbeat backlog is then 0.
  ReplayToTheEnd(engine.get());
  EXPECT_THAT(engine->RenderMetrics(), HasSubstr("presence_signal_backlog 0\n"));
  // Step 4: tick: the replayed records and offsets are written, changes published.
  clock.Advance(100);
  engine->Tick();
  // Step 5: users are where they were, with what came meanwhile.
  const std::vector<UserPresence> after = engine->Get(ids);
  EXPECT_EQ(after[0].state, State::kAway);  // the signal sent meanwhile was replayed
  for (size_t i = 1; i < after.size(); ++i) EXPECT_EQ(after[i].state, State::kOnline) << users[i];
}

TEST(Runbook, MovingPartitionsBetweenEngines) {
  MockKafka& kafka = MockKafka::Shared();
  KafkaBusOptions bo = kafka.NewTopicOptions(4);
  // Two engine processes: a bus client each, one shared store.
  auto bus_a = KafkaBus::Create(bo).value();
  auto bus_b = KafkaBus::Create(bo).value();
  auto store = NewMemoryStore();
  ManualClock clock(1'000'000);
  Options o;
  o.clock = &clock;
  o.store = store.get();
  o.owns_all_partitions = false;
  o.bus = bus_a.get();
  auto a = Engine::Create(o).value();
  o.bus = bus_b.get();
  auto b = Engine::Create(o).value();

  // Before: engine-a owns every partition, engine-b none.
  auto before = OwnershipTable::Create(4, {{0, 3, "engine-a"}}).value();
  ASSERT_TRUE(ApplyOwnership(a.get(), before, "engine-a").ok());
  ASSERT_TRUE(ApplyOwnership(b.get(), before, "engine-b").ok());
  const std::vector<std::string> users = Users(16);
  for (const std::string& u : users) Publish(bus_a.get(), u, "web", &clock);
  ReplayToTheEnd(a.get());
  clock.Advance(100);
  a->Tick();

  // Step 1: the new table: partitions 2 and 3 move to engine-b.
  auto after = OwnershipTable::Create(4, {{0, 1, "engine-a"}, {2, 3, "engine-b"}}).value();
  // Step 2: the engine that gives them up first: it flushes, commits its
  // offsets and drops their users.
  ASSERT_TRUE(ApplyOwnership(a.get(), after, "engine-a").ok());
  // Gateways keep publishing meanwhile; nobody serves partitions 2-3 now.
  std::string moved_user;
  for (const std::string& u : users) {
    if (PartitionFor(u, 4) >= 2) moved_user = u;
  }
  ASSERT_FALSE(moved_user.empty());
  Publish(bus_a.get(), moved_user, "web", &clock, Activity::kIdle);
  // Step 3: then the engine that takes them: it loads them from the store
  // and replays the bus from their committed offsets.
  ASSERT_TRUE(ApplyOwnership(b.get(), after, "engine-b").ok());
  ReplayToTheEnd(b.get());
  clock.Advance(100);
  b->Tick();

  // Step 4: check each engine's presence_owned_partitions, and who serves whom.
  EXPECT_THAT(a->RenderMetrics(), HasSubstr("presence_owned_partitions 2\n"));
  EXPECT_THAT(b->RenderMetrics(), HasSubstr("presence_owned_partitions 2\n"));
  EXPECT_EQ(b->OwnedPartitions(), (std::vector<uint32_t>{2, 3}));
  for (const std::string& u : users) {
    SCOPED_TRACE(u);
    Engine* owner = PartitionFor(u, 4) >= 2 ? b.get() : a.get();
    Engine* other = owner == a.get() ? b.get() : a.get();
    const State want = u == moved_user ? State::kAway : State::kOnline;
    EXPECT_EQ(owner->GetOne(u).state, want);
    EXPECT_TRUE(absl::IsFailedPrecondition(other->SetOverride(u, OverrideState::kDnd).status()));
  }
}

}  // namespace
}  // namespace presence
