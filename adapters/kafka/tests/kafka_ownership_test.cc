// KafkaOwnership against the mock cluster: engines own exactly the
// partitions their Kafka consumer group assigns them, hand them over on a
// clean close, take them over after a crash within the session timeout, and
// retry an assignment the store could not serve. The group protocol runs on
// real time, so these tests wait (with deadlines) for the group to settle.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "adapters/kafka/tests/mock_kafka.h"
#include "presence/kafka_bus.h"
#include "presence/kafka_ownership.h"
#include "presence/wire.h"
#include "tests/flaky.h"
#include "tests/test_util.h"

namespace presence {
namespace {

using kafka_testing::MockKafka;
using testing::FlakyStore;
using testing::TestEngine;
using ::testing::IsEmpty;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kPartitions = 8;

int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// One engine process: its bus client, its engine, its group membership.
struct Node {
  Node(const KafkaBusOptions& bo, Store* store, ManualClock* clock, const std::string& name) {
    bus = KafkaBus::Create(bo).value();
    Options o;
    o.store = store;
    o.bus = bus.get();
    o.clock = clock;
    o.owns_all_partitions = false;
    engine = Engine::Create(o).value();
    own = KafkaOwnership::Create(engine.get(), KafkaOwnershipOptions::ForBus(bo, name)).value();
  }
  // One loop of the host: the group, the bus, then time. Answers Poll's status.
  absl::Status Step() {
    absl::Status st = own->Poll(10);
    for (;;) {
      auto n = engine->ConsumeBus();
      EXPECT_TRUE(n.ok()) << n.status();
      if (!n.ok() || *n == 0) break;
    }
    engine->Tick();
    return st;
  }
  // The engine serves what the group assigned it.
  bool Settled() const { return !own->Assigned().empty() && engine->OwnedPartitions() == own->Assigned(); }

  std::unique_ptr<KafkaBus> bus;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<KafkaOwnership> own;  // destroyed first: it calls the engine
};

// Steps every node until `done` or `timeout_ms`; true when done.
template <typename Done>
bool StepUntil(const std::vector<Node*>& nodes, Done done, int timeout_ms = 10000) {
  const auto start = Clock::now();
  while (MsSince(start) < timeout_ms) {
    for (Node* n : nodes) EXPECT_TRUE(n->Step().ok());
    if (done()) return true;
  }
  return false;
}

// Every partition served by exactly one of `nodes`.
bool SplitWithoutOverlapOrGap(const std::vector<Node*>& nodes) {
  std::multiset<uint32_t> all;
  for (Node* n : nodes) {
    if (!n->Settled()) return false;
    for (uint32_t p : n->engine->OwnedPartitions()) all.insert(p);
  }
  if (all.size() != kPartitions) return false;
  return std::set<uint32_t>(all.begin(), all.end()).size() == kPartitions;
}

// Two users of each partition.
std::vector<std::string> Users() {
  std::vector<std::string> out;
  std::vector<int> per(kPartitions, 0);
  for (int i = 0; out.size() < 2 * kPartitions; ++i) {
    std::string u = "user-" + std::to_string(i);
    if (per[PartitionFor(u, kPartitions)]++ < 2) out.push_back(u);
  }
  return out;
}

// A gateway: publishes each user's signal from `device` to the bus.
void PublishAll(KafkaBus* bus, const std::vector<std::string>& users, const std::string& device,
                const ManualClock& clock) {
  for (const std::string& u : users) {
    Signal s = TestEngine::Sig(u, device);
    s.timestamp_ms = clock.NowMs();
    ASSERT_TRUE(bus->Publish(BusRecordType::kSignal, u, EncodeSignal(s)).ok());
  }
}

// The node that serves `user`, or null.
Node* OwnerOf(const std::vector<Node*>& nodes, const std::string& user) {
  for (Node* n : nodes) {
    const auto owned = n->engine->OwnedPartitions();
    if (std::count(owned.begin(), owned.end(), PartitionFor(user, kPartitions))) return n;
  }
  return nullptr;
}

// Every user online on its owner, with exactly `devices` devices.
bool AllServedWith(const std::vector<Node*>& nodes, const std::vector<std::string>& users, int devices) {
  for (const std::string& u : users) {
    Node* owner = OwnerOf(nodes, u);
    if (owner == nullptr) return false;
    const UserPresence p = owner->engine->GetOne(u);
    if (p.state != State::kOnline || p.devices.total() != devices) return false;
  }
  return true;
}

struct Cluster {
  MockKafka& kafka = MockKafka::Shared();
  KafkaBusOptions bo = kafka.NewTopicOptions(kPartitions, "presence-engines");
  FlakyStore store;
  ManualClock clock{1'000'000};
  std::unique_ptr<KafkaBus> gateway = KafkaBus::Create(bo).value();
};

TEST(KafkaOwnership, TwoEnginesSplitThePartitionsWithNoOverlapAndNoGap) {
  Cluster c;
  Node a(c.bo, &c.store, &c.clock, "engine-a"), b(c.bo, &c.store, &c.clock, "engine-b");
  const auto start = Clock::now();
  ASSERT_TRUE(StepUntil({&a, &b}, [&] { return SplitWithoutOverlapOrGap({&a, &b}); }))
      << "a: " << ::testing::PrintToString(a.own->Assigned())
      << " b: " << ::testing::PrintToString(b.own->Assigned());
  std::printf("[ measured ] two members split %u partitions in %lld ms\n", kPartitions,
              static_cast<long long>(MsSince(start)));
  EXPECT_EQ(a.own->Assigned().size(), kPartitions / 2);

  // Each serves its users; the membership consumers read nothing.
  const std::vector<std::string> users = Users();
  PublishAll(c.gateway.get(), users, "web", c.clock);
  ASSERT_TRUE(StepUntil({&a, &b}, [&] { return AllServedWith({&a, &b}, users, 1); }));
  EXPECT_EQ(a.own->stats().records_fetched + b.own->stats().records_fetched, 0u);
  EXPECT_EQ(a.own->stats().assign_errors + b.own->stats().assign_errors, 0u);

  // The bus's own group (offset commits without membership) is not the
  // owners' group, so its commits still go through.
  EXPECT_TRUE(a.bus->CommitOffsets({{0, 1}}).ok());
}

TEST(KafkaOwnership, ACleanCloseHandsEverythingOverAndLosesNothing) {
  Cluster c;
  Node a(c.bo, &c.store, &c.clock, "engine-a"), b(c.bo, &c.store, &c.clock, "engine-b");
  ASSERT_TRUE(StepUntil({&a, &b}, [&] { return SplitWithoutOverlapOrGap({&a, &b}); }));
  const std::vector<std::string> users = Users();
  PublishAll(c.gateway.get(), users, "web", c.clock);
  ASSERT_TRUE(StepUntil({&a, &b}, [&] { return AllServedWith({&a, &b}, users, 1); }));
  // Signals A consumes but has not written when it leaves: its Close flushes.
  PublishAll(c.gateway.get(), users, "phone", c.clock);
  for (;;) {
    auto n = a.engine->ConsumeBus();
    ASSERT_TRUE(n.ok()) << n.status();
    if (*n == 0) break;
  }
  const std::vector<uint32_t> moved = a.engine->OwnedPartitions();

  const auto start = Clock::now();
  ASSERT_TRUE(a.own->Close().ok());
  EXPECT_THAT(a.engine->OwnedPartitions(), IsEmpty());
  EXPECT_THAT(a.own->Assigned(), IsEmpty());
  EXPECT_TRUE(absl::IsFailedPrecondition(a.own->Poll()));
  ASSERT_TRUE(StepUntil({&b}, [&] { return b.engine->OwnedPartitions().size() == kPartitions && b.Settled(); }));
  const int64_t handover_ms = MsSince(start);
  std::printf("[ measured ] clean handover of %zu partitions: %lld ms\n", moved.size(),
              static_cast<long long>(handover_ms));

  // Signals after the move reach B; every signal before and after shows.
  PublishAll(c.gateway.get(), users, "tablet", c.clock);
  ASSERT_TRUE(StepUntil({&b}, [&] { return AllServedWith({&b}, users, 3); }))
      << "a user lacks a device: a signal was lost in the handover";
}

TEST(KafkaOwnership, ACrashedMemberIsReplacedAfterTheSessionTimeout) {
  Cluster c;
  auto a = std::make_unique<Node>(c.bo, &c.store, &c.clock, "engine-a");
  Node b(c.bo, &c.store, &c.clock, "engine-b");
  ASSERT_TRUE(StepUntil({a.get(), &b}, [&] { return SplitWithoutOverlapOrGap({a.get(), &b}); }));
  const std::vector<std::string> users = Users();
  PublishAll(c.gateway.get(), users, "web", c.clock);
  ASSERT_TRUE(StepUntil({a.get(), &b}, [&] { return AllServedWith({a.get(), &b}, users, 1); }));
  // A consumes more but crashes before writing it: B replays it from Kafka.
  PublishAll(c.gateway.get(), users, "phone", c.clock);
  for (;;) {
    auto n = a->engine->ConsumeBus();
    ASSERT_TRUE(n.ok()) << n.status();
    if (*n == 0) break;
  }

  const auto crash = Clock::now();
  a->own->Abandon();  // no revocation, no LeaveGroup
  a.reset();
  const int session_ms = KafkaOwnershipOptions().session_timeout_ms;
  ASSERT_TRUE(StepUntil(
      {&b}, [&] { return b.engine->OwnedPartitions().size() == kPartitions && b.Settled(); },
      3 * session_ms + 1000));
  const int64_t rto_ms = MsSince(crash);
  std::printf("[ measured ] takeover after a crash (RTO), session.timeout.ms=%d: %lld ms\n",
              session_ms, static_cast<long long>(rto_ms));
  EXPECT_GE(rto_ms, session_ms - 500)
      << "taken over before the session timeout: the crashed member left the group";
  // A real broker rebalances as soon as the remaining members rejoined: an
  // RTO of about session_ms + heartbeat_interval_ms (4 s). librdkafka
  // 2.0.2's mock checks sessions once a second and then waits
  // session_ms - 1000 for members to rejoin, whoever is left: up to
  // 2 * session_ms here (about 5.8 s measured with 3 s). The bound leaves room for a
  // loaded CI machine; the figure itself is printed and kept in RESULTS.md.
  EXPECT_LT(rto_ms, 3 * session_ms + 1000);
  EXPECT_TRUE(AllServedWith({&b}, users, 2));
}

// librdkafka before 2.3.0 aborts the process when it destroys a member
// whose JoinGroup the group answered but no SyncGroup yet (its assignor has
// no state): an engine stopped during its first rebalance. Close and
// Abandon end such a member without taking the process down.
TEST(KafkaOwnership, AMemberEndedBeforeItsFirstAssignmentLeavesTheProcessRunning) {
  MockKafka kafka(1);  // of its own: its coordinator refuses every sync
  kafka.RefuseSyncGroups(1000);
  const KafkaBusOptions bo = kafka.NewTopicOptions(kPartitions, "presence-engines");
  FlakyStore store;
  ManualClock clock{1'000'000};
  for (const bool close : {true, false}) {
    Node a(bo, &store, &clock, close ? "engine-closed" : "engine-abandoned");
    const size_t refusals = kafka.SyncGroupRefusalsLeft();
    ASSERT_TRUE(StepUntil({&a}, [&] { return kafka.SyncGroupRefusalsLeft() < refusals; }))
        << "the group never answered the member's JoinGroup";
    EXPECT_THAT(a.own->Assigned(), IsEmpty());
    if (close) {
      EXPECT_TRUE(a.own->Close().ok());
    } else {
      a.own->Abandon();
    }
    EXPECT_TRUE(absl::IsFailedPrecondition(a.own->Poll()));
    EXPECT_THAT(a.engine->OwnedPartitions(), IsEmpty());
  }
}

TEST(KafkaOwnership, AnUnreachableStoreFailsTheAssignmentUntilItIsBack) {
  Cluster c;
  const std::vector<std::string> users = Users();
  PublishAll(c.gateway.get(), users, "web", c.clock);
  Node a(c.bo, &c.store, &c.clock, "engine-a");
  c.store.failing_load = true;
  absl::Status st;
  const auto start = Clock::now();
  while (st.ok() && MsSince(start) < 10000) st = a.own->Poll(10);
  EXPECT_TRUE(absl::IsUnavailable(st)) << st;
  EXPECT_EQ(a.own->Assigned().size(), kPartitions) << "the group's assignment stands";
  EXPECT_THAT(a.engine->OwnedPartitions(), IsEmpty()) << "nothing taken without the store";
  EXPECT_TRUE(absl::IsUnavailable(a.own->Poll())) << "tried again, and failed again";
  EXPECT_GE(a.own->stats().assign_errors, 2u);

  c.store.failing_load = false;
  EXPECT_TRUE(a.own->Poll().ok());
  EXPECT_EQ(a.engine->OwnedPartitions(), a.own->Assigned());
  ASSERT_TRUE(StepUntil({&a}, [&] { return AllServedWith({&a}, users, 1); }));
}

TEST(KafkaOwnership, CreateChecksTheEngineAndTheOptions) {
  Cluster c;
  auto bus = KafkaBus::Create(c.bo).value();
  Options o;
  o.bus = bus.get();
  auto all = Engine::Create(o).value();  // owns_all_partitions
  const auto opts = KafkaOwnershipOptions::ForBus(c.bo, "engine-a");
  EXPECT_EQ(opts.group_id, "presence-engines-owners");
  EXPECT_TRUE(absl::IsInvalidArgument(KafkaOwnership::Create(all.get(), opts).status()));
  o.owns_all_partitions = false;
  auto e = Engine::Create(o).value();
  auto no_member = opts;
  no_member.member.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(KafkaOwnership::Create(e.get(), no_member).status()));
  auto other_topic = opts;
  other_topic.topic = c.kafka.NewTopicOptions(kPartitions + 1).topic;
  auto refused = KafkaOwnership::Create(e.get(), other_topic);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  auto bad = opts;
  bad.config.push_back({"no.such.property", "1"});
  EXPECT_TRUE(absl::IsInvalidArgument(KafkaOwnership::Create(e.get(), bad).status()));
}

}  // namespace
}  // namespace presence
