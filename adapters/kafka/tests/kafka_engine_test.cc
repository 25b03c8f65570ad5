// The engine over the Kafka bus (mock cluster) and a memory store: signals
// published by "gateways" are consumed (Engine::ConsumeBus) and written
// through on Tick; a second engine on the same store and bus rebuilds the
// same state; the consumed offsets reach the Kafka group only after the
// Store has them.
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "adapters/kafka/tests/mock_kafka.h"
#include "presence/kafka_bus.h"
#include "presence/store.h"
#include "presence/wire.h"
#include "tests/conformance/loaded.h"
#include "tests/test_util.h"

namespace presence {
namespace {

using kafka_testing::MockKafka;
using testing::TestEngine;

// A memory store that counts the writes carrying offsets.
class WatchedStore : public Store {
 public:
  absl::Status Write(const StoreBatch& batch) override {
    if (!batch.offsets.empty()) ++offset_writes;
    return inner_->Write(batch);
  }
  absl::Status Load(StoreVisitor* v) override { return inner_->Load(v); }
  conformance::Loaded Contents() {
    conformance::Loaded l;
    EXPECT_TRUE(inner_->Load(&l).ok());
    return l;
  }
  int offset_writes = 0;

 private:
  std::unique_ptr<Store> inner_ = NewMemoryStore();
};

void Publish(KafkaBus* bus, const Signal& s) {
  auto off = bus->Publish(BusRecordType::kSignal, s.user_id, EncodeSignal(s));
  ASSERT_TRUE(off.ok()) << off.status();
}

// Consumes until every partition is at its end. One ConsumeBus may stop
// short: a Kafka read answers with what the client has fetched so far.
size_t CatchUp(Engine* e) {
  size_t total = 0;
  for (;;) {
    auto n = e->ConsumeBus();
    EXPECT_TRUE(n.ok()) << n.status();
    if (!n.ok() || *n == 0) return total;
    total += *n;
  }
}

TEST(KafkaEngine, ANewEngineOnTheSameStoreAndBusReachesTheSameState) {
  MockKafka kafka(3);
  KafkaBusOptions bo = kafka.NewTopicOptions(4, "presence-engines");
  std::unique_ptr<KafkaBus> bus = KafkaBus::Create(bo).value();
  WatchedStore memory;
  KafkaCommittingStore store(&memory, bus.get(), /*wait=*/true);
  ManualClock clock(1'000'000);
  Options o;
  o.store = &store;
  o.bus = bus.get();
  o.clock = &clock;
  auto a = Engine::Create(o).value();
  std::vector<std::string> users;
  for (int i = 0; i < 20; ++i) users.push_back("user-" + std::to_string(i));

  // Phase 1: signals through Kafka, consumed and written through; the
  // partition leaders move between rounds.
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 20; ++i) {
      const std::string device = "d" + std::to_string(i % 2);  // the signal views it
      Signal s = TestEngine::Sig(users[i], device, 1, Source::kApp,
                                 (i + round) % 3 ? Activity::kActive : Activity::kIdle);
      s.timestamp_ms = clock.NowMs();
      Publish(bus.get(), s);
    }
    for (int p = 0; p < 4; ++p) kafka.SetLeader(bo.topic, p, 1 + (round + p) % 3);
    EXPECT_GE(CatchUp(a.get()), 20u);
    clock.Advance(700);
    a->Tick();  // writes the records, then the offsets, then publishes changes to Kafka
  }
  ASSERT_TRUE(a->SetOverride(users[3], OverrideState::kDnd).ok());
  ASSERT_TRUE(a->SetOverride(users[4], OverrideState::kInvisible, clock.NowMs() + 60000).ok());
  a->Tick();
  // The engine's own change events went to Kafka too, beside the signals.
  size_t changes = 0;
  for (uint32_t p = 0; p < 4; ++p) {
    for (uint64_t off = 0;;) {
      auto recs = bus->Read(p, off, 500);
      ASSERT_TRUE(recs.ok()) << recs.status();
      if (recs->empty()) break;
      for (const auto& r : *recs) changes += r.type == BusRecordType::kChange;
      off = recs->back().offset + 1;
    }
  }
  EXPECT_GT(changes, 0u);

  // The Kafka group has exactly the offsets the Store has.
  const auto committed_in_store = memory.Contents().offsets;
  ASSERT_EQ(committed_in_store.size(), 4u);
  auto in_kafka = bus->CommittedOffsets();
  ASSERT_TRUE(in_kafka.ok()) << in_kafka.status();
  ASSERT_EQ(in_kafka->size(), 4u);
  for (const CommittedOffset& c : *in_kafka) EXPECT_EQ(c.offset, committed_in_store.at(c.partition));
  EXPECT_EQ(bus->stats().commits, static_cast<uint64_t>(memory.offset_writes));
  EXPECT_EQ(bus->stats().commit_errors, 0u);

  // Phase 2: more signals on Kafka, applied by A but never written (no Tick):
  // neither the Store nor the group moves.
  for (int i = 0; i < 20; i += 3) {
    Signal s = TestEngine::Sig(users[i], "phone", 7, Source::kInferred);
    s.timestamp_ms = clock.NowMs();
    Publish(bus.get(), s);
  }
  EXPECT_GE(CatchUp(a.get()), 7u);
  EXPECT_EQ(memory.Contents().offsets, committed_in_store);
  EXPECT_EQ(*bus->CommittedOffsets(), *in_kafka);

  std::vector<absl::string_view> ids(users.begin(), users.end());
  const std::vector<UserPresence> before = a->Get(ids);
  std::vector<UserPresence> before_self;
  for (auto id : ids) before_self.push_back(a->GetOne(id, id));
  a.reset();  // the engine stops

  // B: a new engine, and a new bus client too, on the same store and topic.
  bus.reset();
  bus = KafkaBus::Create(bo).value();
  KafkaCommittingStore store_b(&memory, bus.get(), /*wait=*/true);
  o.store = &store_b;
  o.bus = bus.get();
  auto b = Engine::Create(o).value();
  EXPECT_GE(CatchUp(b.get()), 7u);  // from the offsets committed in the Store
  const std::vector<UserPresence> after = b->Get(ids);
  for (size_t i = 0; i < ids.size(); ++i) {
    SCOPED_TRACE(users[i]);
    EXPECT_EQ(after[i].state, before[i].state);
    EXPECT_EQ(after[i].devices, before[i].devices);
    EXPECT_EQ(after[i].last_seen_ms, before[i].last_seen_ms);
    EXPECT_EQ(after[i].has_override, before[i].has_override);
    EXPECT_EQ(b->GetOne(ids[i], ids[i]).state, before_self[i].state);
  }
  EXPECT_EQ(b->GetPublished(ids)[3].version, before[3].version);

  // B ticks: now the replayed offsets are durable, in the Store and the group.
  b->Tick();
  auto end = memory.Contents().offsets;
  auto group = bus->CommittedOffsets();
  ASSERT_TRUE(group.ok());
  for (const CommittedOffset& c : *group) EXPECT_EQ(c.offset, end.at(c.partition));
  for (uint32_t p = 0; p < 4; ++p) EXPECT_GT(end.at(p), 0u);
}

TEST(KafkaEngine, TheAsynchronousCommitFollowsTheStore) {
  MockKafka& kafka = MockKafka::Shared();
  KafkaBusOptions bo = kafka.NewTopicOptions(4, "g");
  auto bus = KafkaBus::Create(bo).value();
  WatchedStore memory;
  KafkaCommittingStore store(&memory, bus.get());  // wait = false
  TestEngine t([&] {
    Options o;
    o.store = &store;
    o.bus = bus.get();
    return o;
  }());
  for (int i = 0; i < 50; ++i) {
    const std::string user = "u" + std::to_string(i);  // the signal views it
    Signal s = TestEngine::Sig(user, "web");
    s.timestamp_ms = t.clock.NowMs();
    Publish(bus.get(), s);
  }
  EXPECT_EQ(CatchUp(t.engine.get()), 50u);
  t.Run(200);
  EXPECT_EQ(t.StateOf("u7"), State::kOnline);
  kafka_testing::WaitUntil([&] { return bus->stats().commits >= 1; });
  const auto in_store = memory.Contents().offsets;
  auto group = bus->CommittedOffsets();
  ASSERT_TRUE(group.ok());
  ASSERT_EQ(group->size(), in_store.size());
  for (const CommittedOffset& c : *group) EXPECT_EQ(c.offset, in_store.at(c.partition));
}

// The heartbeat backlog gauge reads what the engine's bus already knows:
// rendering the metrics sends no request to a broker (an engine's /metrics
// used to ask the leader of every owned partition, on the server's io
// thread), and the gauge still follows the records that arrive.
TEST(KafkaEngine, RenderingMetricsAsksNoBroker) {
  MockKafka& kafka = MockKafka::Shared();
  KafkaBusOptions bo = kafka.NewTopicOptions(4);
  auto bus = KafkaBus::Create(bo).value();      // the engine's
  auto gateway = KafkaBus::Create(bo).value();  // a gateway's, another process
  auto store = NewMemoryStore();
  TestEngine t([&] {
    Options o;
    o.store = store.get();
    o.bus = bus.get();
    return o;
  }());
  auto publish = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      const std::string user = "u" + std::to_string(i);  // the signal views it
      Signal s = TestEngine::Sig(user, "web");
      s.timestamp_ms = t.clock.NowMs();
      Publish(gateway.get(), s);
    }
  };
  publish(0, 40);
  EXPECT_EQ(CatchUp(t.engine.get()), 40u);
  const uint64_t queries = bus->stats().watermark_queries;
  for (int i = 0; i < 50; ++i) {
    EXPECT_THAT(t.engine->RenderMetrics(), ::testing::HasSubstr("presence_signal_backlog 0\n"));
  }
  EXPECT_EQ(bus->stats().watermark_queries, queries);
  // Records the engine has not consumed: its bus learns their end from its
  // next fetch, and the gauge shows them until they are consumed.
  publish(40, 60);
  t.Run(100);  // the engine's tick publishes its change events to the bus too
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  uint64_t backlog = 0;
  while (backlog == 0 && std::chrono::steady_clock::now() < deadline) {
    auto n = t.engine->ConsumeBus(1);  // one record: the fetch behind it learns the end
    ASSERT_TRUE(n.ok()) << n.status();
    const std::string m = t.engine->RenderMetrics();
    const size_t at = m.find("\npresence_signal_backlog ");
    ASSERT_NE(at, std::string::npos);
    backlog = std::stoull(m.substr(at + 25));
  }
  EXPECT_GT(backlog, 0u);
  CatchUp(t.engine.get());
  EXPECT_THAT(t.engine->RenderMetrics(), ::testing::HasSubstr("presence_signal_backlog 0\n"));
}

}  // namespace
}  // namespace presence
