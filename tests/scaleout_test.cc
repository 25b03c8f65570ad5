// Scale-out on one machine (docs/design.md section 6): the ownership table,
// engines that serve only the partitions they own and hand them over
// without loss, and the gateway side that publishes signals to the bus.
#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "presence/bus.h"
#include "presence/fanout.h"
#include "presence/gateway.h"
#include "presence/ownership.h"
#include "presence/remote_feed.h"
#include "presence/wire.h"
#include "tests/fanout_client.h"
#include "tests/flaky.h"
#include "tests/test_util.h"

namespace presence::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint32_t kPartitions = 8;

// A user id of each partition, and more of them.
std::vector<std::string> UsersOf(uint32_t partition, int n) {
  std::vector<std::string> out;
  for (int i = 0; static_cast<int>(out.size()) < n; ++i) {
    std::string u = "user-" + std::to_string(i);
    if (PartitionFor(u, kPartitions) == partition) out.push_back(u);
  }
  return out;
}

// ---- The ownership table --------------------------------------------------------

TEST(OwnershipTable, CoversEveryPartitionExactlyOnce) {
  auto t = OwnershipTable::Create(16, {{8, 15, "b"}, {0, 7, "a"}});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->OwnerOfPartition(0), "a");
  EXPECT_EQ(t->OwnerOfPartition(15), "b");
  EXPECT_EQ(t->PartitionsOf("b").size(), 8u);
  EXPECT_TRUE(t->PartitionsOf("nobody").empty());
  for (const std::string& u : {"alice", "bob", "carol"}) {
    EXPECT_EQ(t->OwnerOf(u), t->OwnerOfPartition(PartitionFor(u, 16)));
  }
  auto even = OwnershipTable::Even(10, {"x", "y", "z"});
  ASSERT_TRUE(even.ok()) << even.status();
  size_t total = 0;
  for (const char* o : {"x", "y", "z"}) {
    const size_t n = even->PartitionsOf(o).size();
    EXPECT_TRUE(n == 3 || n == 4) << o << " has " << n;
    total += n;
  }
  EXPECT_EQ(total, 10u);
}

TEST(OwnershipTable, RefusesGapsOverlapsAndBadRanges) {
  auto gap = OwnershipTable::Create(16, {{0, 6, "a"}, {8, 15, "b"}});
  EXPECT_TRUE(absl::IsInvalidArgument(gap.status()));
  EXPECT_THAT(gap.status().message(), HasSubstr("gap: partitions 7 to 7 have no owner"));
  auto tail = OwnershipTable::Create(16, {{0, 7, "a"}});
  EXPECT_THAT(tail.status().message(), HasSubstr("gap: partitions 8 to 15"));
  auto overlap = OwnershipTable::Create(16, {{0, 8, "a"}, {8, 15, "b"}});
  EXPECT_TRUE(absl::IsInvalidArgument(overlap.status()));
  EXPECT_THAT(overlap.status().message(), HasSubstr("overlap: partition 8 is owned by both a and b"));
  EXPECT_THAT(OwnershipTable::Create(16, {{0, 16, "a"}}).status().message(),
              HasSubstr("not within partitions 0 to 15"));
  EXPECT_TRUE(absl::IsInvalidArgument(OwnershipTable::Create(16, {{5, 4, "a"}}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(OwnershipTable::Create(16, {{0, 15, ""}}).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(OwnershipTable::Create(16, {{0, 15, std::string(129, 'x')}}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(OwnershipTable::Create(0, {}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(OwnershipTable::Create(4, {}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(OwnershipTable::Even(4, {"a", "a"}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(OwnershipTable::Even(2, {"a", "b", "c"}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(OwnershipTable::Even(2, {}).status()));
}

// ---- Engines that own partitions ------------------------------------------------

// Two engines on one bus and one store, as two machines would be.
struct Cluster {
  FlakyStore store;
  FlakyBus bus{kPartitions};
  ManualClock clock{1'000'000};
  RecordingListener heard_a, heard_b;
  std::unique_ptr<Engine> a = Make(&heard_a), b = Make(&heard_b);

  std::unique_ptr<Engine> Make(RecordingListener* listener) {
    Options o;
    o.store = &store;
    o.bus = &bus;
    o.clock = &clock;
    o.listener = listener;
    o.owns_all_partitions = false;
    return Engine::Create(o).value();
  }
  void Publish(const Signal& s) {
    Signal stamped = s;
    stamped.timestamp_ms = clock.NowMs();
    ASSERT_TRUE(bus.Publish(BusRecordType::kSignal, s.user_id, EncodeSignal(stamped)).ok());
  }
  // Both engines consume all they own and tick, `ms` later.
  void Step(int64_t ms = 100) {
    for (Engine* e : {a.get(), b.get()}) {
      for (;;) {
        auto n = e->ConsumeBus();
        ASSERT_TRUE(n.ok()) << n.status();
        if (*n == 0) break;
      }
    }
    clock.Advance(ms);
    a->Tick();
    b->Tick();
  }
};

TEST(Partitions, AnEngineServesOnlyThePartitionsItOwns) {
  Cluster c;
  EXPECT_TRUE(c.a->OwnedPartitions().empty());
  EXPECT_EQ(c.a->BusPartitions(), kPartitions);
  const std::string mine = UsersOf(1, 1)[0], theirs = UsersOf(5, 1)[0];
  ASSERT_TRUE(c.a->AssignPartitions({0, 1, 2, 3}).ok());
  EXPECT_THAT(c.a->OwnedPartitions(), ElementsAre(0, 1, 2, 3));
  EXPECT_TRUE(c.a->Signal(TestEngine::Sig(mine, "web")).ok());
  absl::Status st = c.a->Signal(TestEngine::Sig(theirs, "web"));
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("partition 5, which this engine does not own"));
  EXPECT_TRUE(absl::IsFailedPrecondition(c.a->SetOverride(theirs, OverrideState::kDnd).status()));
  EXPECT_TRUE(c.a->SetOverride(mine, OverrideState::kDnd).ok());
  // Bad partitions, and engines without a bus.
  EXPECT_TRUE(absl::IsInvalidArgument(c.a->AssignPartitions({3, kPartitions})));
  EXPECT_THAT(c.a->OwnedPartitions(), ElementsAre(0, 1, 2, 3));
  EXPECT_TRUE(absl::IsInvalidArgument(c.a->RevokePartitions({99})));
  Options no_bus;
  no_bus.owns_all_partitions = false;
  EXPECT_TRUE(absl::IsInvalidArgument(Engine::Create(no_bus).status()));
  auto plain = Engine::Create(Options()).value();
  EXPECT_TRUE(absl::IsFailedPrecondition(plain->AssignPartitions({0})));
  EXPECT_EQ(plain->BusPartitions(), 0u);
  EXPECT_TRUE(plain->OwnedPartitions().empty());
}

TEST(Partitions, AHandoverLosesNothingAndPublishesNothingTwice) {
  Cluster c;
  auto all_a = OwnershipTable::Create(kPartitions, {{0, kPartitions - 1, "a"}}).value();
  auto split = OwnershipTable::Even(kPartitions, {"a", "b"}).value();
  ASSERT_TRUE(ApplyOwnership(c.a.get(), all_a, "a").ok());
  ASSERT_TRUE(ApplyOwnership(c.b.get(), all_a, "b").ok());
  std::vector<std::string> users;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    for (const std::string& u : UsersOf(p, 3)) users.push_back(u);
  }
  // Every user online on a web device, through A.
  for (const std::string& u : users) c.Publish(TestEngine::Sig(u, "web"));
  c.Step();
  for (const std::string& u : users) EXPECT_EQ(c.a->GetOne(u).state, State::kOnline) << u;
  // Phone signals A consumes but never writes before the move...
  for (const std::string& u : users) c.Publish(TestEngine::Sig(u, "phone", 1, Source::kInferred));
  for (;;) {
    auto n = c.a->ConsumeBus();
    ASSERT_TRUE(n.ok());
    if (*n == 0) break;
  }
  // ...then B takes partitions 4 to 7: A flushes and lets go, B loads and
  // replays.
  ASSERT_TRUE(ApplyOwnership(c.a.get(), split, "a").ok());
  ASSERT_TRUE(ApplyOwnership(c.b.get(), split, "b").ok());
  EXPECT_THAT(c.a->OwnedPartitions(), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(c.b->OwnedPartitions(), ElementsAre(4, 5, 6, 7));
  // More signals after the move: a DND for everyone, through the bus owner.
  for (const std::string& u : users) {
    Engine* owner = split.OwnerOf(u) == "a" ? c.a.get() : c.b.get();
    ASSERT_TRUE(owner->SetOverride(u, OverrideState::kDnd).ok()) << u;
  }
  c.Step(1500);
  for (const std::string& u : users) {
    SCOPED_TRACE(u);
    Engine* owner = split.OwnerOf(u) == "a" ? c.a.get() : c.b.get();
    Engine* other = owner == c.a.get() ? c.b.get() : c.a.get();
    const UserPresence p = owner->GetOne(u);
    EXPECT_EQ(p.state, State::kDnd);
    EXPECT_EQ(p.devices.total(), 2) << "web and phone, the phone replayed from the bus";
    EXPECT_FALSE(other->GetOne(u).known);
  }
  // Each (user, version) was published once, by one engine or the other.
  std::map<std::pair<std::string, uint64_t>, int> seen;
  for (auto* heard : {&c.heard_a, &c.heard_b}) {
    for (const ChangeEvent& e : heard->events()) ++seen[{e.user_id, e.version}];
  }
  for (const auto& [key, n] : seen) EXPECT_EQ(n, 1) << key.first << " v" << key.second;
  for (const std::string& u : users) {
    EXPECT_EQ(c.heard_a.For(u).size() + c.heard_b.For(u).size(), 2u) << u << ": online, then dnd";
  }
}

TEST(Partitions, LettingGoKeepsTheRecordsAndInvalidatesTheHandles) {
  Cluster c;
  ASSERT_TRUE(c.a->AssignPartitions({2, 3}).ok());
  const std::string u = UsersOf(3, 1)[0];
  auto h = c.a->Connect(TestEngine::Sig(u, "web"));
  ASSERT_TRUE(h.ok());
  c.Step();
  ASSERT_TRUE(c.a->RevokePartitions({3, 6}).ok());  // 6 was never owned: ignored
  EXPECT_THAT(c.a->OwnedPartitions(), ElementsAre(2));
  EXPECT_TRUE(absl::IsNotFound(c.a->Beat(*h)));
  EXPECT_FALSE(c.a->GetOne(u).known);
  c.Step();
  // The store still holds the device, for the next owner.
  const auto contents = c.store.Contents();
  EXPECT_EQ(contents.devices.count({u, "web"}), 1u);
  ASSERT_TRUE(c.b->AssignPartitions({3}).ok());
  EXPECT_EQ(c.b->GetOne(u).devices.total(), 1);
  // A commits offsets of its own partitions only: B's for partition 3 are
  // never overwritten by A's older ones.
  c.Publish(TestEngine::Sig(u, "tablet"));
  const uint64_t end = c.bus.EndOffset(3).value();
  c.Step();  // B consumes to `end` and commits it; A ticks after B
  EXPECT_EQ(c.store.Contents().offsets.at(3), end);
}

TEST(Partitions, AStoreUnreachableDuringTheRebuildTakesNothing) {
  Cluster c;
  c.store.failing_load = true;
  absl::Status st = c.a->AssignPartitions({0, 1});
  EXPECT_TRUE(absl::IsUnavailable(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("none was taken"));
  EXPECT_TRUE(c.a->OwnedPartitions().empty());
  c.store.failing_load = false;
  EXPECT_TRUE(c.a->AssignPartitions({0, 1}).ok());
  EXPECT_THAT(c.a->OwnedPartitions(), ElementsAre(0, 1));
}

TEST(Partitions, AFailedFlushStillLetsGoAndTheNextOwnerReplays) {
  Cluster c;
  ASSERT_TRUE(c.a->AssignPartitions({4}).ok());
  const std::string u = UsersOf(4, 1)[0];
  c.Publish(TestEngine::Sig(u, "web"));
  c.store.failing = true;
  c.Step();  // consumed, but neither the record nor the offset is written
  absl::Status st = c.a->RevokePartitions({4});
  EXPECT_TRUE(absl::IsUnavailable(st)) << st;
  EXPECT_TRUE(c.a->OwnedPartitions().empty());
  c.store.failing = false;
  ASSERT_TRUE(c.b->AssignPartitions({4}).ok());
  EXPECT_EQ(c.b->GetOne(u).devices.total(), 1) << "replayed from offset 0";
}

TEST(Partitions, TakenPartitionsAreAllPrefetchedFromTheirCommittedOffsetsBeforeTheReplay) {
  Cluster c;
  ASSERT_TRUE(c.a->AssignPartitions({4, 5}).ok());
  for (uint32_t p : {4u, 5u}) c.Publish(TestEngine::Sig(UsersOf(p, 1)[0], "web"));
  c.Step();  // A consumes both and commits their ends
  const std::map<uint32_t, uint64_t> committed = c.store.Contents().offsets;
  ASSERT_TRUE(c.a->RevokePartitions({4, 5}).ok());
  // What B replays: a signal on each, past the committed offsets.
  for (uint32_t p : {4u, 5u}) c.Publish(TestEngine::Sig(UsersOf(p, 1)[0], "tablet"));
  c.bus.prefetched.clear();
  const size_t reads = c.bus.reads.load();
  ASSERT_TRUE(c.b->AssignPartitions({4, 5}).ok());
  ASSERT_EQ(c.bus.prefetched.size(), 2u);
  std::set<uint32_t> hinted;
  for (const FlakyBus::Prefetched& h : c.bus.prefetched) {
    hinted.insert(h.partition);
    EXPECT_EQ(h.offset, committed.at(h.partition)) << "partition " << h.partition;
    EXPECT_EQ(h.reads_before, reads) << "partition " << h.partition << " was hinted after a read began";
  }
  EXPECT_THAT(hinted, ElementsAre(4, 5));
  for (uint32_t p : {4u, 5u}) EXPECT_EQ(c.b->GetOne(UsersOf(p, 1)[0]).devices.total(), 2) << p;
}

// The change events on one partition of the bus, decoded.
std::vector<ChangeEvent> ChangesOn(FlakyBus& bus, uint32_t partition) {
  std::vector<ChangeEvent> out;
  for (const BusRecord& r : bus.All()) {
    if (r.partition != partition || r.type != BusRecordType::kChange) continue;
    auto e = DecodeChangeEvent(r.payload);
    EXPECT_TRUE(e.ok()) << e.status();
    if (e.ok()) out.push_back(*e);
  }
  return out;
}

TEST(Partitions, AChangeTheBusRefusedIsPublishedOnTheNextTickInOrder) {
  Cluster c;
  ASSERT_TRUE(c.a->AssignPartitions({5}).ok());
  const std::string u = UsersOf(5, 1)[0];
  ASSERT_TRUE(c.a->Signal(TestEngine::Sig(u, "web")).ok());
  c.bus.failing_publish = true;
  c.Step();
  EXPECT_TRUE(ChangesOn(c.bus, 5).empty());
  EXPECT_THAT(c.a->RenderMetrics(), HasSubstr("presence_bus_backlog 1\n"));
  ASSERT_TRUE(c.a->SetOverride(u, OverrideState::kDnd).ok());
  c.Step(1500);  // still failing: both wait
  c.bus.failing_publish = false;
  c.Step();
  const auto changes = ChangesOn(c.bus, 5);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].state, State::kOnline);
  EXPECT_EQ(changes[1].state, State::kDnd);
  EXPECT_LT(changes[0].version, changes[1].version);
  EXPECT_THAT(c.a->RenderMetrics(), HasSubstr("presence_bus_backlog 0\n"));
}

TEST(Partitions, ATickPublishesItsChangesInBatches) {
  FlakyBus bus(4);
  Options o;
  o.bus = &bus;
  TestEngine t(o);
  std::vector<std::string> users;
  for (int i = 0; i < 2500; ++i) users.push_back("user-" + std::to_string(i));
  for (const std::string& u : users) ASSERT_TRUE(t.engine->Signal(TestEngine::Sig(u, "web")).ok());
  t.engine->Tick();
  EXPECT_EQ(bus.batch_sizes, (std::vector<size_t>{1024, 1024, 452}));
  std::set<std::string> on_bus;
  for (const BusRecord& r : bus.All()) {
    if (r.type == BusRecordType::kChange) on_bus.insert(r.key);
  }
  EXPECT_EQ(on_bus, std::set<std::string>(users.begin(), users.end()));
}

TEST(Partitions, ANewOwnerAnnouncesWhatTheDeadOwnerStoredButNeverPublished) {
  Cluster c;
  ASSERT_TRUE(c.a->AssignPartitions({6}).ok());
  const std::string u = UsersOf(6, 1)[0];
  ASSERT_TRUE(c.a->Signal(TestEngine::Sig(u, "web")).ok());
  c.bus.failing_publish = true;
  c.Step();  // stored, not published
  const uint64_t version = c.a->GetPublished({u})[0].version;
  c.a.reset();  // dies with the event still waiting
  c.bus.failing_publish = false;
  EXPECT_TRUE(ChangesOn(c.bus, 6).empty());
  ASSERT_TRUE(c.b->AssignPartitions({6}).ok());
  const auto changes = ChangesOn(c.bus, 6);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].user_id, u);
  EXPECT_EQ(changes[0].state, State::kOnline);
  EXPECT_EQ(changes[0].version, version);
  EXPECT_EQ(changes[0].cause, Cause::kMerge);
  EXPECT_EQ(changes[0].devices.total(), 1);
}

// A user record keeps when its public view last changed as a distance below
// the version's time, which fits 49 days. One further below (here a record
// whose versions moved on 60 days after its last change) is kept exactly all
// the same, and announced as it was stored.
TEST(Partitions, APublishTimeFarBelowItsVersionIsKeptExactly) {
  Cluster c;
  constexpr int64_t kDay = 86'400'000;
  const std::string u = UsersOf(6, 1)[0];
  const int64_t now = c.clock.NowMs() + 60 * kDay;
  c.clock.Advance(60 * kDay);
  UserRecord r;
  r.user_id = u;
  r.version = 1;
  r.state_version = r.public_version = static_cast<uint64_t>(now) << 10;
  r.state = r.self_state = State::kDnd;
  r.last_seen_ms = r.published_at_ms = now - 60 * kDay;
  r.overrides.push_back({7, OverrideState::kDnd, now - 60 * kDay, 0});
  StoreBatch batch;
  batch.users.push_back(r);
  ASSERT_TRUE(c.store.Write(batch).ok());
  ASSERT_TRUE(c.b->AssignPartitions({6}).ok());
  const auto changes = ChangesOn(c.bus, 6);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].state, State::kDnd);
  EXPECT_EQ(changes[0].published_at_ms, now - 60 * kDay);
  EXPECT_EQ(changes[0].changed_at_ms, now - 60 * kDay);
}

TEST(Partitions, ARecordOfAnotherPartitionIsCountedAndSkipped) {
  Cluster c;
  ASSERT_TRUE(c.a->AssignPartitions({0, 1, 2, 3, 4, 5, 6, 7}).ok());
  const std::string u = UsersOf(2, 1)[0], decoy = UsersOf(6, 1)[0];
  Signal s = TestEngine::Sig(u, "web");
  s.timestamp_ms = c.clock.NowMs();
  // Keyed by a user of partition 6, so the bus puts it there.
  ASSERT_TRUE(c.bus.Publish(BusRecordType::kSignal, decoy, EncodeSignal(s)).ok());
  c.Step();
  EXPECT_FALSE(c.a->GetOne(u).known);
  EXPECT_THAT(c.a->RenderMetrics(), HasSubstr("presence_bus_wrong_partition_total 1\n"));
  EXPECT_THAT(c.a->RenderMetrics(), HasSubstr("presence_owned_partitions 8\n"));
}

TEST(Partitions, ApplyOwnershipChecksTheTableAgainstTheBus) {
  Cluster c;
  auto small = OwnershipTable::Even(4, {"a"}).value();
  absl::Status st = ApplyOwnership(c.a.get(), small, "a");
  EXPECT_TRUE(absl::IsInvalidArgument(st));
  EXPECT_THAT(st.message(), HasSubstr("the table has 4 partitions, the engine's bus 8"));
  EXPECT_TRUE(absl::IsInvalidArgument(ApplyOwnership(nullptr, small, "a")));
}

// ---- The gateway side -----------------------------------------------------------

struct Gateway {
  FlakyBus bus{kPartitions};
  ManualClock clock{5'000'000};
  std::unique_ptr<GatewayPublisher> gw = Make(4);
  std::unique_ptr<GatewayPublisher> Make(size_t bound) {
    GatewayOptions o;
    o.gateway_id = "gw-1";
    o.clock = &clock;
    o.max_buffered = bound;
    return GatewayPublisher::Create(&bus, o).value();
  }
  std::vector<Signal> Published(std::vector<DecodedSignal>* keep) {
    std::vector<Signal> out;
    for (const BusRecord& r : bus.All()) {
      keep->emplace_back();
      EXPECT_TRUE(DecodeSignal(r.payload, &keep->back()).ok());
      EXPECT_EQ(r.partition, PartitionFor(r.key, kPartitions));
    }
    for (const DecodedSignal& d : *keep) out.push_back(d.signal());
    return out;
  }
};

TEST(GatewayPublisher, NormalizesAndTagsEachSignal) {
  Gateway g;
  Signal s = TestEngine::Sig("alice", "web");
  s.gateway = "someone-else";
  auto t1 = g.gw->Publish(s);
  ASSERT_TRUE(t1.ok()) << t1.status();
  s.trace_id = 77;
  s.timestamp_ms = 4'999'000;
  auto t2 = g.gw->Publish(s);
  ASSERT_TRUE(t2.ok());
  EXPECT_NE(*t1, 0u);
  EXPECT_EQ(*t2, 77u);
  std::vector<DecodedSignal> keep;
  auto out = g.Published(&keep);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].gateway, "gw-1");
  EXPECT_EQ(out[0].timestamp_ms, 5'000'000);
  EXPECT_EQ(out[0].trace_id, *t1);
  EXPECT_EQ(out[1].timestamp_ms, 4'999'000);
  EXPECT_EQ(out[1].trace_id, 77u);
  // Fresh trace ids differ.
  std::set<uint64_t> ids;
  for (int i = 0; i < 100; ++i) ids.insert(g.gw->Publish(TestEngine::Sig("bob", "web")).value());
  EXPECT_EQ(ids.size(), 100u);
  // Malformed signals are refused, and counted.
  EXPECT_TRUE(absl::IsInvalidArgument(g.gw->Publish(TestEngine::Sig("", "web")).status()));
  Signal bad = TestEngine::Sig("alice", "web");
  bad.source = static_cast<Source>(9);
  EXPECT_TRUE(absl::IsInvalidArgument(g.gw->Publish(bad).status()));
  EXPECT_EQ(g.gw->stats().invalid, 2u);
  EXPECT_EQ(g.gw->stats().published, 102u);
}

// docs/design.md section 6: disconnects travel the bus. A clean logout on a
// gateway makes the owner's device dead at once (not after offline_after),
// and an abrupt one gets the reconnect grace, as they would on the owner.
TEST(GatewayPublisher, DisconnectsTravelTheBusCleanAndAbrupt) {
  for (const DisconnectKind kind : {DisconnectKind::kClean, DisconnectKind::kAbrupt}) {
    Gateway g;
    Options o;
    o.clock = &g.clock;
    o.bus = &g.bus;
    auto e = Engine::Create(o).value();
    ASSERT_TRUE(g.gw->Publish(TestEngine::Sig("alice", "web")).ok());
    ASSERT_TRUE(g.gw->Publish(TestEngine::Sig("alice", "phone", 3)).ok());
    ASSERT_TRUE(g.gw->PublishDisconnect(TestEngine::Sig("alice", "web"), kind).ok());
    ASSERT_TRUE(e->ConsumeBus().ok());
    e->Tick();
    // Only the phone is live; the web device is gone or in its grace.
    const UserPresence p = e->GetOne("alice");
    EXPECT_EQ(p.devices.total(), kind == DisconnectKind::kClean ? 1 : 2);
    g.clock.Advance(o.reconnect_grace_ms);
    e->Tick();
    EXPECT_EQ(e->GetOne("alice").devices.total(), 1);
    // The disconnect came after its session's signals: a later signal of
    // that session is stale.
    EXPECT_TRUE(absl::IsFailedPrecondition(e->Signal(TestEngine::Sig("alice", "web"))));
    // A disconnect of a bad kind is refused at the gateway and counted.
    EXPECT_TRUE(absl::IsInvalidArgument(
        g.gw->PublishDisconnect(TestEngine::Sig("alice", "web"), static_cast<DisconnectKind>(7))
            .status()));
    EXPECT_EQ(g.gw->stats().invalid, 1u);
    EXPECT_EQ(g.gw->stats().published, 3u);
  }
}

// ---- Overrides through the bus (issue 15: overrides from any gateway) ----------

// A store that writes records but loses every offset: a new owner replays
// the whole bus, as after a crash before the offsets were written. It
// remembers the last offsets it was asked to commit.
class OffsetsLostStore : public Store {
 public:
  absl::Status Write(const StoreBatch& batch) override {
    if (!batch.offsets.empty()) asked_offsets = batch.offsets;
    for (const CommittedOffset& o : batch.offsets) kept[o.partition] = std::max(kept[o.partition], o.offset);
    StoreBatch b = batch;
    b.offsets.clear();
    return inner->Write(b);
  }
  absl::Status Load(StoreVisitor* v) override { return inner->Load(v); }
  std::unique_ptr<Store> inner = NewMemoryStore();
  std::vector<CommittedOffset> asked_offsets;
  std::map<uint32_t, uint64_t> kept;  // the highest asked per partition, as a store keeps it
};
uint64_t Sum(const std::vector<CommittedOffset>& offsets) {
  uint64_t n = 0;
  for (const CommittedOffset& o : offsets) n += o.offset;
  return n;
}

// A gateway and one engine that owns every partition, on one bus and store.
struct OverrideRig {
  Gateway g;
  std::unique_ptr<Store> store = NewMemoryStore();
  RecordingListener heard;
  std::unique_ptr<Engine> e = Make(store.get(), &heard);
  std::unique_ptr<Engine> Make(Store* s, RecordingListener* listener) {
    Options o;
    o.clock = &g.clock;
    o.bus = &g.bus;
    o.store = s;
    o.listener = listener;
    o.owns_all_partitions = false;
    auto engine = Engine::Create(o).value();
    std::vector<uint32_t> all;
    for (uint32_t p = 0; p < kPartitions; ++p) all.push_back(p);
    EXPECT_TRUE(engine->AssignPartitions(all).ok());
    return engine;
  }
  static OverrideCommand Set(absl::string_view user, OverrideState state, int64_t until_ms = 0) {
    OverrideCommand c;
    c.op = OverrideOp::kSet;
    c.user_id = user;
    c.state = state;
    c.until_ms = until_ms;
    return c;
  }
  static OverrideCommand Revoke(absl::string_view user, uint64_t id) {
    OverrideCommand c;
    c.op = OverrideOp::kRevoke;
    c.user_id = user;
    c.override_id = id;
    return c;
  }
  // Everything on the bus consumed, then a tick.
  void Step(Engine* engine) {
    for (;;) {
      auto n = engine->ConsumeBus();
      ASSERT_TRUE(n.ok()) << n.status();
      if (*n == 0) break;
    }
    g.clock.Advance(100);
    engine->Tick();
  }
  std::vector<uint64_t> Ids(Engine* engine, absl::string_view user) {
    std::vector<uint64_t> out;
    const std::vector<OverrideInfo> list = engine->ListOverrides(user).value();
    for (const OverrideInfo& o : list) out.push_back(o.id);
    return out;
  }
};

TEST(OverridesOnTheBus, TheGatewayChoosesTheIdAndTheOwnerAppliesItOnce) {
  OverrideRig r;
  ASSERT_TRUE(r.g.gw->Publish(TestEngine::Sig("alice", "web")).ok());
  const int64_t asked_at = r.g.clock.NowMs();
  auto dnd = r.g.gw->PublishOverride(OverrideRig::Set("alice", OverrideState::kDnd, asked_at + 60'000));
  ASSERT_TRUE(dnd.ok()) << dnd.status();
  EXPECT_GE(*dnd, kFirstChosenOverrideId);
  EXPECT_LE(*dnd, kMaxOverrideId);
  r.Step(r.e.get());
  EXPECT_EQ(r.e->GetOne("alice").state, State::kDnd);
  auto list = r.e->ListOverrides("alice").value();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, *dnd);
  EXPECT_EQ(list[0].state, OverrideState::kDnd);
  EXPECT_EQ(list[0].set_at_ms, asked_at) << "the gateway's time, the same on every replay";
  EXPECT_EQ(list[0].until_ms, asked_at + 60'000);
  // The bus delivers the command again (a gateway's retried batch): the
  // owner holds that id already, and nothing changes or is published.
  std::vector<BusRecord> commands;
  for (const BusRecord& rec : r.g.bus.All()) {
    if (rec.type == BusRecordType::kOverride) commands.push_back(rec);
  }
  ASSERT_EQ(commands.size(), 1u);
  const BusRecord set_record = commands[0];
  const size_t heard = r.heard.events().size();
  ASSERT_TRUE(r.g.bus.Publish(BusRecordType::kOverride, "alice", set_record.payload).ok());
  r.Step(r.e.get());
  EXPECT_THAT(r.Ids(r.e.get(), "alice"), ElementsAre(*dnd));
  EXPECT_EQ(r.heard.events().size(), heard);
  // Revoked through the bus: ONLINE again, published once.
  auto revoked = r.g.gw->PublishOverride(OverrideRig::Revoke("alice", *dnd));
  ASSERT_TRUE(revoked.ok()) << revoked.status();
  EXPECT_EQ(*revoked, *dnd);
  r.Step(r.e.get());
  EXPECT_TRUE(r.Ids(r.e.get(), "alice").empty());
  EXPECT_EQ(r.e->GetOne("alice").state, State::kOnline);
  r.g.clock.Advance(Options().min_dwell_ms);  // published once the dwell is over
  r.e->Tick();
  ASSERT_EQ(r.heard.events().size(), heard + 1);
  EXPECT_EQ(r.heard.events().back().cause, Cause::kOverride);
  // A clear through the bus removes every override; two gateways (or one
  // restarted: the seed is random) choose different ids.
  OverrideRig other;
  std::set<uint64_t> ids;
  for (int i = 0; i < 3; ++i) {
    ids.insert(r.g.gw->PublishOverride(OverrideRig::Set("alice", OverrideState::kAway)).value());
    ids.insert(other.g.gw->PublishOverride(OverrideRig::Set("alice", OverrideState::kAway)).value());
  }
  EXPECT_EQ(ids.size(), 6u);
  r.Step(r.e.get());
  EXPECT_EQ(r.Ids(r.e.get(), "alice").size(), 3u);
  OverrideCommand clear;
  clear.op = OverrideOp::kClear;
  clear.user_id = "alice";
  EXPECT_EQ(r.g.gw->PublishOverride(clear).value(), 0u);
  r.Step(r.e.get());
  EXPECT_TRUE(r.Ids(r.e.get(), "alice").empty());
  EXPECT_EQ(r.e->GetOne("alice").state, State::kOnline);
}

// A new owner loads the records the old one wrote and replays the bus from
// the last committed offset; here the offsets never reached the store, so
// the replay covers commands whose effect the records already hold. The
// end is the same as before the failover: the set held is not stacked
// twice, the set-then-revoke leaves nothing, and nothing in between shows.
TEST(OverridesOnTheBus, AReplayAfterAFailoverChangesNothing) {
  OffsetsLostStore store;
  OverrideRig r;
  RecordingListener heard_a, heard_b;
  auto a = r.Make(&store, &heard_a);
  ASSERT_TRUE(r.g.gw->Publish(TestEngine::Sig("alice", "web")).ok());
  const uint64_t dnd = r.g.gw->PublishOverride(OverrideRig::Set("alice", OverrideState::kDnd)).value();
  const uint64_t away = r.g.gw->PublishOverride(OverrideRig::Set("alice", OverrideState::kAway)).value();
  ASSERT_TRUE(r.g.gw->PublishOverride(OverrideRig::Revoke("alice", away)).ok());
  r.Step(a.get());
  EXPECT_THAT(r.Ids(a.get(), "alice"), ElementsAre(dnd));
  EXPECT_EQ(a->GetOne("alice").state, State::kDnd);
  // A dies (its records are written, its offsets are not); B takes over.
  auto b = r.Make(&store, &heard_b);
  EXPECT_THAT(r.Ids(b.get(), "alice"), ElementsAre(dnd));
  r.Step(b.get());
  EXPECT_THAT(r.Ids(b.get(), "alice"), ElementsAre(dnd));
  EXPECT_EQ(b->GetOne("alice").state, State::kDnd);
  for (const ChangeEvent& e : heard_b.events()) {
    EXPECT_EQ(e.state, State::kDnd) << "the replay showed a state the user left: " << StateName(e.state);
  }
  // The engine's own ids stay below the chosen ones after loading one.
  EXPECT_LT(b->SetOverride("alice", OverrideState::kAway).value(), kFirstChosenOverrideId);
}

TEST(OverridesOnTheBus, ApplyOverrideIsIdempotentAndChecksItsCommand) {
  OverrideRig r;
  OverrideCommand set = OverrideRig::Set("bob", OverrideState::kInvisible);
  set.override_id = kFirstChosenOverrideId + 7;
  EXPECT_EQ(r.e->ApplyOverride(set).value(), 1u);
  EXPECT_EQ(r.e->ApplyOverride(set).value(), 0u) << "held already";
  EXPECT_EQ(r.e->ApplyOverride(OverrideRig::Revoke("bob", set.override_id)).value(), 1u);
  EXPECT_EQ(r.e->ApplyOverride(OverrideRig::Revoke("bob", set.override_id)).value(), 0u)
      << "a revoke replayed, or of an id never set, is no error";
  OverrideCommand clear;
  clear.op = OverrideOp::kClear;
  clear.user_id = "nobody-yet";
  EXPECT_EQ(r.e->ApplyOverride(clear).value(), 0u);
  // A set that ended before it arrived (a late replay) adds nothing.
  OverrideCommand ended = OverrideRig::Set("bob", OverrideState::kDnd, r.g.clock.NowMs());
  ended.override_id = kFirstChosenOverrideId + 8;
  EXPECT_EQ(r.e->ApplyOverride(ended).value(), 0u);
  auto left = r.e->ListOverrides("bob");  // NotFound once bob holds nothing at all
  EXPECT_TRUE(!left.ok() || left->empty());
  // Malformed commands: an id of the engine's own range, none for a revoke,
  // an unknown state or op.
  OverrideCommand low = set;
  low.override_id = 5;
  EXPECT_TRUE(absl::IsInvalidArgument(r.e->ApplyOverride(low).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(r.e->ApplyOverride(OverrideRig::Revoke("bob", 0)).status()));
  OverrideCommand bad_state = set;
  bad_state.state = static_cast<OverrideState>(9);
  EXPECT_TRUE(absl::IsInvalidArgument(r.e->ApplyOverride(bad_state).status()));
  OverrideCommand bad_op = set;
  bad_op.op = static_cast<OverrideOp>(0);
  EXPECT_TRUE(absl::IsInvalidArgument(r.e->ApplyOverride(bad_op).status()));
  // A user of a partition this engine does not own.
  ASSERT_TRUE(r.e->RevokePartitions({PartitionFor("bob", kPartitions)}).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(r.e->ApplyOverride(set).status()));
  // The wire form round-trips, and refuses what ApplyOverride refuses.
  set.set_at_ms = 123;
  set.until_ms = 456;
  set.trace_id = 9;
  set.gateway = "gw-x";
  DecodedOverrideCommand d;
  ASSERT_TRUE(DecodeOverrideCommand(EncodeOverrideCommand(set), &d).ok());
  const OverrideCommand back = d.command();
  EXPECT_EQ(back.op, OverrideOp::kSet);
  EXPECT_EQ(back.user_id, "bob");
  EXPECT_EQ(back.override_id, set.override_id);
  EXPECT_EQ(back.state, OverrideState::kInvisible);
  EXPECT_EQ(back.set_at_ms, 123);
  EXPECT_EQ(back.until_ms, 456);
  EXPECT_EQ(back.trace_id, 9u);
  EXPECT_EQ(back.gateway, "gw-x");
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeOverrideCommand(EncodeOverrideCommand(low), &d)));
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeOverrideCommand("\xff\xff", &d)));
}

// The gateway refuses what the single engine would (and publishes none of
// it), with the same messages.
TEST(OverridesOnTheBus, TheGatewayRefusesWhatTheEngineWouldRefuse) {
  OverrideRig r;
  const int64_t now = r.g.clock.NowMs();
  auto past = r.g.gw->PublishOverride(OverrideRig::Set("alice", OverrideState::kDnd, now));
  EXPECT_TRUE(absl::IsInvalidArgument(past.status()));
  auto direct = r.e->SetOverride("alice", OverrideState::kDnd, now);
  EXPECT_EQ(past.status().message(), direct.status().message());
  EXPECT_TRUE(absl::IsInvalidArgument(
      r.g.gw->PublishOverride(OverrideRig::Set("alice", static_cast<OverrideState>(0))).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      r.g.gw->PublishOverride(OverrideRig::Set("", OverrideState::kDnd)).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(r.g.gw->PublishOverride(OverrideRig::Revoke("alice", 0)).status()));
  EXPECT_EQ(r.g.gw->stats().invalid, 4u);
  EXPECT_TRUE(r.g.bus.All().empty());
  // While the bus fails, a command waits in order with the signals, and
  // the buffer's bound refuses more.
  r.g.bus.failing = true;
  ASSERT_TRUE(r.g.gw->Publish(TestEngine::Sig("alice", "web")).ok());
  const uint64_t id = r.g.gw->PublishOverride(OverrideRig::Set("alice", OverrideState::kDnd)).value();
  EXPECT_EQ(r.g.gw->stats().buffered, 2u);
  r.g.bus.failing = false;
  ASSERT_TRUE(r.g.gw->Flush().ok());
  const std::vector<BusRecord> all = r.g.bus.All();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].type, BusRecordType::kSignal);
  EXPECT_EQ(all[1].type, BusRecordType::kOverride);
  r.Step(r.e.get());
  EXPECT_THAT(r.Ids(r.e.get(), "alice"), ElementsAre(id));
}

// A handover, clean (RevokePartitions, then the next owner's
// AssignPartitions) or after a crash, loses no heartbeat: the offsets
// committed cover every heartbeat consumed, so the records must hold their
// times too, or the next owner would load an older last signal and call the
// device dead before its next heartbeat (a false OFFLINE).
TEST(Partitions, AHandoverLosesNoHeartbeat) {
  for (const bool clean : {true, false}) {
    SCOPED_TRACE(clean ? "clean" : "crash");
    Gateway g;
    std::unique_ptr<Store> store = NewMemoryStore();
    auto make = [&]() {
      Options o;
      o.clock = &g.clock;
      o.bus = &g.bus;
      o.store = store.get();
      o.owns_all_partitions = false;
      return Engine::Create(o).value();
    };
    std::vector<uint32_t> all;
    for (uint32_t p = 0; p < kPartitions; ++p) all.push_back(p);
    auto a = make();
    ASSERT_TRUE(a->AssignPartitions(all).ok());
    auto run = [&](Engine* e, int64_t ms) {
      for (int64_t t = 0; t < ms; t += 100) {
        while (e->ConsumeBus().value() > 0) {
        }
        g.clock.Advance(100);
        e->Tick();
      }
    };
    ASSERT_TRUE(g.gw->Publish(TestEngine::Sig("alice", "web")).ok());
    run(a.get(), 100);
    ASSERT_EQ(a->GetOne("alice").state, State::kOnline);
    // Heartbeats every 1.5 s for 6 s; the last one 100 ms before the handover.
    for (int i = 0; i < 4; ++i) {
      run(a.get(), 1400);
      ASSERT_TRUE(g.gw->Publish(TestEngine::Sig("alice", "web")).ok());
      run(a.get(), 100);
    }
    const int64_t last_beat = g.clock.NowMs() - 100;
    if (clean) ASSERT_TRUE(a->RevokePartitions(all).ok());
    auto b = make();
    ASSERT_TRUE(b->AssignPartitions(all).ok());
    // Alive until last_beat + 4 s with no further heartbeat.
    run(b.get(), 3500);
    ASSERT_LT(g.clock.NowMs(), last_beat + 4000);
    EXPECT_EQ(b->GetOne("alice").state, State::kOnline) << "a false OFFLINE after the handover";
  }
}

// ---- Erasures on the bus --------------------------------------------------------

// A history whose Erase fails while `failing` is set.
class FlakyEraseHistory : public HistoryStore {
 public:
  absl::Status Append(absl::Span<const Transition> t) override { return inner->Append(t); }
  absl::StatusOr<std::vector<Transition>> Query(absl::string_view u, int64_t from,
                                                int64_t to) override {
    return inner->Query(u, from, to);
  }
  absl::StatusOr<std::optional<Transition>> LastBefore(absl::string_view u, int64_t at) override {
    return inner->LastBefore(u, at);
  }
  absl::Status AppendDevices(absl::Span<const DeviceTransition> t) override {
    return inner->AppendDevices(t);
  }
  absl::StatusOr<std::vector<DeviceTransition>> QueryDevice(absl::string_view u,
                                                            absl::string_view d, int64_t from,
                                                            int64_t to) override {
    return inner->QueryDevice(u, d, from, to);
  }
  absl::Status Erase(absl::string_view u) override {
    if (failing) return absl::UnavailableError("history down");
    return inner->Erase(u);
  }
  absl::Status DropBefore(int64_t before) override { return inner->DropBefore(before); }
  bool failing = false;
  std::unique_ptr<HistoryStore> inner = NewMemoryHistoryStore();
};

// One side of a cluster on one bus: a gateway (its publisher, and an engine
// owning nothing with a fan-out fed by a RemoteFeed, as presence_server's
// gateway role runs them) and an owner of every partition, with a store
// and a history.
struct EraseWorld {
  EraseWorld() {
    Options go;
    go.clock = &g.clock;
    go.bus = &g.bus;
    go.owns_all_partitions = false;
    gateway_engine = Engine::Create(go).value();
    FanoutOptions fo;
    fo.rate_per_sec = 0;
    fanout = Fanout::Create(gateway_engine.get(), fo).value();
    feed = RemoteFeed::Create(&g.bus, fanout.get(), {}).value();
    watcher = fanout->Subscribe().value();
    EXPECT_TRUE(fanout->AddUsers(watcher, {"alice", "bob"}).ok());
    owner = MakeOwner();
  }
  std::unique_ptr<Engine> MakeOwner() {
    Options o;
    o.clock = &g.clock;
    o.bus = &g.bus;
    o.store = &store;
    o.history = &history;
    o.owns_all_partitions = false;
    auto e = Engine::Create(o).value();
    std::vector<uint32_t> all;
    for (uint32_t p = 0; p < kPartitions; ++p) all.push_back(p);
    EXPECT_TRUE(e->AssignPartitions(all).ok());  // replays from the committed offsets
    return e;
  }
  // The hosts' loops, once: the owner consumes and ticks, the gateway's
  // feed reads and its fan-out flushes to the watcher's client.
  void Step() {
    for (;;) {
      auto n = owner->ConsumeBus();
      ASSERT_TRUE(n.ok()) << n.status();
      if (*n == 0) break;
    }
    g.clock.Advance(100);
    owner->Tick();
    ASSERT_TRUE(feed->Poll().ok());
    gateway_engine->Tick();
    Batch b;
    while (fanout->Poll(watcher, &b).value()) client.Apply(b);
  }
  // Everything anyone can read of `user` (the user itself included).
  std::string Show(const std::string& user) {
    std::string out;
    for (const std::string& viewer : {std::string(), user}) {
      const UserPresence p = owner->GetOne(user, viewer);
      absl::StrAppend(&out, "get ", p.known, " ", StateName(p.state), " ", p.last_seen_ms, "; ");
      auto h = owner->History(user, 0, g.clock.NowMs(), viewer);
      absl::StrAppend(&out, "history ", h.ok() ? h->size() : 0, "; ");
    }
    auto listed = client.list.find(user);
    absl::StrAppend(&out, "client ", listed == client.list.end() ? "-" : listed->second.ShortDebugString());
    struct Collect : StoreVisitor {
      explicit Collect(const std::string& u) : user(u) {}
      void OnUser(const UserRecord& r) override { n += r.user_id == user; }
      void OnDevice(const DeviceRecord& r) override { n += r.user_id == user; }
      void OnOffset(const CommittedOffset&) override {}
      const std::string& user;
      int n = 0;
    } c(user);
    EXPECT_TRUE(store.Load(&c).ok());
    absl::StrAppend(&out, "; stored ", c.n);
    return out;
  }
  Gateway g;
  OffsetsLostStore store;
  FlakyEraseHistory history;
  std::unique_ptr<Engine> gateway_engine;
  std::unique_ptr<Fanout> fanout;
  std::unique_ptr<RemoteFeed> feed;
  SubscriberId watcher = 0;
  ClientView client;
  std::unique_ptr<Engine> owner;
};

// An erasure published by a gateway (docs/design.md section 4) is the same
// as "never existed" to the owner, its store and history, and a watcher on
// the gateway; a failover that replays the whole bus, the erasure included,
// brings nothing back; and no offset past the erasure is committed before
// the history forgot the user.
TEST(ErasuresOnTheBus, AnErasureThroughAGatewayEqualsNeverHavingExisted) {
  EraseWorld a, b;  // alice lives in a, and is erased there; b never had her
  for (EraseWorld* w : {&a, &b}) ASSERT_TRUE(w->g.gw->Publish(TestEngine::Sig("bob", "web")).ok());
  ASSERT_TRUE(a.g.gw->Publish(TestEngine::Sig("alice", "web")).ok());
  ASSERT_TRUE(a.g.gw->PublishOverride(OverrideRig::Set("alice", OverrideState::kDnd)).ok());
  for (EraseWorld* w : {&a, &b}) w->Step();
  ASSERT_EQ(a.client.list.count("alice"), 1u);
  ASSERT_GE(a.owner->History("alice", 0, a.g.clock.NowMs(), "alice")->size(), 1u);

  // The history fails the erasure at first: the user is gone from the
  // engine and the store, and the offsets wait.
  a.history.failing = true;
  ASSERT_TRUE(a.g.gw->PublishErase("alice").ok());
  const std::vector<BusRecord> all = a.g.bus.All();
  EXPECT_EQ(std::count_if(all.begin(), all.end(),
                          [](const BusRecord& r) { return r.type == BusRecordType::kErase; }),
            1);
  EXPECT_TRUE(absl::IsInvalidArgument(a.g.gw->PublishErase("")));
  // While the bus fails, an erasure is refused, not held.
  a.g.bus.failing = true;
  EXPECT_TRUE(absl::IsUnavailable(a.g.gw->PublishErase("alice")));
  EXPECT_EQ(a.g.gw->stats().buffered, 0u);
  a.g.bus.failing = false;
  const uint64_t committed = Sum(a.store.asked_offsets);
  for (EraseWorld* w : {&a, &b}) w->Step();
  EXPECT_FALSE(a.owner->GetOne("alice").known);
  EXPECT_EQ(Sum(a.store.asked_offsets), committed) << "an offset past the erasure was committed";
  a.history.failing = false;
  for (EraseWorld* w : {&a, &b}) w->Step();
  EXPECT_GT(Sum(a.store.asked_offsets), committed);
  EXPECT_EQ(a.Show("alice"), b.Show("alice"));
  EXPECT_EQ(a.Show("bob"), b.Show("bob"));
  EXPECT_EQ(a.client.list.size(), 1u);

  // A new owner replays the whole bus: alice's signals, then her erasure.
  for (EraseWorld* w : {&a, &b}) {
    w->owner = w->MakeOwner();
    w->Step();
  }
  EXPECT_EQ(a.Show("alice"), b.Show("alice"));
  EXPECT_EQ(a.Show("bob"), b.Show("bob"));
  // Once erased, she may come back: anew.
  for (EraseWorld* w : {&a, &b}) {
    ASSERT_TRUE(w->g.gw->Publish(TestEngine::Sig("alice", "phone")).ok());
    w->Step();
  }
  EXPECT_TRUE(a.owner->GetOne("alice").known);
  EXPECT_EQ(a.Show("alice"), b.Show("alice"));
}

// While an erasure waits for the bus, its partition's offsets are held
// back (a new owner would replay the command rather than lose the event);
// the other partitions' are committed as usual.
TEST(ErasuresOnTheBus, OffsetsWaitForTheErasureEventOnlyInItsPartition) {
  EraseWorld w;
  std::string other = "bob";
  for (int i = 0; PartitionFor(other, kPartitions) == PartitionFor("alice", kPartitions); ++i) {
    other = absl::StrCat("bob", i);
  }
  const uint32_t pa = PartitionFor("alice", kPartitions), pb = PartitionFor(other, kPartitions);
  auto offset_of = [&](uint32_t p) -> int64_t {
    auto it = w.store.kept.find(p);
    return it == w.store.kept.end() ? -1 : static_cast<int64_t>(it->second);
  };
  ASSERT_TRUE(w.g.gw->Publish(TestEngine::Sig("alice", "web")).ok());
  ASSERT_TRUE(w.g.gw->Publish(TestEngine::Sig(other, "web")).ok());
  w.Step();
  ASSERT_TRUE(w.g.gw->PublishErase("alice").ok());
  ASSERT_TRUE(w.g.gw->Publish(TestEngine::Sig(other, "phone")).ok());
  const int64_t a_before = offset_of(pa), b_before = offset_of(pb);
  // The owner reads the command and the signal, then cannot publish.
  while (w.owner->ConsumeBus().value() > 0) {
  }
  w.g.bus.failing_publish = true;
  w.g.clock.Advance(100);
  w.owner->Tick();
  EXPECT_EQ(offset_of(pa), a_before) << "an offset past an erasure not on the bus was committed";
  EXPECT_GT(offset_of(pb), b_before);
  EXPECT_THAT(w.owner->RenderMetrics(), HasSubstr("presence_offsets_held_partitions 1\n"));
  w.g.bus.failing_publish = false;
  w.g.clock.Advance(100);
  w.owner->Tick();
  EXPECT_GT(offset_of(pa), a_before);
  EXPECT_THAT(w.owner->RenderMetrics(), HasSubstr("presence_offsets_held_partitions 0\n"));
}

// Erase commands that are malformed, or keyed to another partition, are
// counted and skipped; the wire form round-trips.
TEST(ErasuresOnTheBus, AMalformedCommandIsCountedAndSkipped) {
  EraseWorld w;
  ASSERT_TRUE(w.g.gw->Publish(TestEngine::Sig("alice", "web")).ok());
  w.Step();
  std::string bob_in_alices_partition;
  for (int i = 0; bob_in_alices_partition.empty(); ++i) {
    const std::string id = absl::StrCat("bob", i);
    if (PartitionFor(id, kPartitions) != PartitionFor("alice", kPartitions)) {
      bob_in_alices_partition = id;
    }
  }
  ASSERT_TRUE(w.g.bus.Publish(BusRecordType::kErase, "alice", "\xff\xff").ok());
  ASSERT_TRUE(w.g.bus.Publish(BusRecordType::kErase, "alice", EncodeEraseCommand("", "gw")).ok());
  ASSERT_TRUE(
      w.g.bus.Publish(BusRecordType::kErase, "alice", EncodeEraseCommand(bob_in_alices_partition, "gw"))
          .ok());
  w.Step();
  EXPECT_TRUE(w.owner->GetOne("alice").known);
  const std::string metrics = w.owner->RenderMetrics();
  EXPECT_THAT(metrics, HasSubstr("presence_signals_dropped_total{reason=\"invalid\"} 2"));
  EXPECT_THAT(metrics, HasSubstr("presence_bus_wrong_partition_total 1"));
  DecodedEraseCommand d;
  ASSERT_TRUE(DecodeEraseCommand(EncodeEraseCommand("alice", "gw-9"), &d).ok());
  EXPECT_EQ(d.user_id, "alice");
  EXPECT_EQ(d.gateway, "gw-9");
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeEraseCommand(EncodeEraseCommand("a", std::string(200, 'g')), &d)));
  EXPECT_EQ(BusRecordTypeNamed(BusRecordTypeName(BusRecordType::kErase)), BusRecordType::kErase);
  EXPECT_EQ(BusRecordTypeName(static_cast<BusRecordType>(9)), "");
  EXPECT_FALSE(BusRecordTypeNamed("nothing").has_value());
}

// ---- Partition commands (an operator's drain and bulk revoke in a cluster) --------

// Users of every partition with devices through two gateways, and engines
// that own the partitions between them; every engine's events reach one
// listener. The store loses offsets, so a new owner replays the whole bus.
struct CommandWorld {
  explicit CommandWorld(int engines) { Own(engines); }
  std::unique_ptr<GatewayPublisher> MakeGateway(const std::string& id) {
    GatewayOptions o;
    o.gateway_id = id;
    o.clock = &clock;
    return GatewayPublisher::Create(&bus, o).value();
  }
  // New engines, `n` of them, take the partitions over (p goes to p % n).
  void Own(int n) {
    owners.clear();
    for (int i = 0; i < n; ++i) {
      Options o;
      o.clock = &clock;
      o.bus = &bus;
      o.store = &store;
      o.listener = &heard;
      o.owns_all_partitions = false;
      owners.push_back(Engine::Create(o).value());
      std::vector<uint32_t> mine;
      for (uint32_t p = 0; p < kPartitions; ++p) {
        if (static_cast<int>(p) % n == i) mine.push_back(p);
      }
      EXPECT_TRUE(owners.back()->AssignPartitions(mine).ok());
    }
  }
  Engine* OwnerOf(absl::string_view user) {
    return owners[PartitionFor(user, kPartitions) % owners.size()].get();
  }
  // Every engine consumes what the bus holds; then `between` (an operator's
  // direct call, at the time a command read now is applied); then a tick.
  void Step(const std::function<void()>& between = nullptr) {
    for (auto& e : owners) {
      while (e->ConsumeBus().value() > 0) {
      }
    }
    if (between) between();
    clock.Advance(100);
    for (auto& e : owners) e->Tick();
  }
  // What anyone may read of the user, and what the user was published as.
  std::string Show(const std::string& user, bool events = true) {
    const UserPresence p = OwnerOf(user)->GetOne(user, user);
    std::string out = absl::StrCat(p.known, " ", StateName(p.state), " seen ", p.last_seen_ms, " devices ",
                                   p.devices.total(), " v", p.version, " overrides");
    auto list = OwnerOf(user)->ListOverrides(user);
    if (list.ok()) {
      for (const OverrideInfo& o : *list) absl::StrAppend(&out, " ", OverrideStateName(o.state), "@", o.set_at_ms);
    }
    if (!events) return out;
    for (const ChangeEvent& e : heard.For(user)) {
      absl::StrAppend(&out, "; v", e.version, " ", StateName(e.state), " ", CauseName(e.cause));
    }
    return out;
  }
  std::string metric(absl::string_view line) {
    uint64_t sum = 0;
    for (auto& e : owners) {
      const std::string m = e->RenderMetrics();
      const size_t at = m.find(absl::StrCat("\n", line, " "));
      if (at != std::string::npos) sum += std::stoull(m.substr(at + line.size() + 2));
    }
    return absl::StrCat(sum);
  }

  FlakyBus bus{kPartitions};
  ManualClock clock{5'000'000};
  OffsetsLostStore store;
  RecordingListener heard;
  std::unique_ptr<GatewayPublisher> gw1 = MakeGateway("gw-1"), gw2 = MakeGateway("gw-2");
  std::vector<std::unique_ptr<Engine>> owners;
};

// Three users of each partition: one on each gateway, one on both.
std::vector<std::string> CommandUsers() {
  std::vector<std::string> out;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    for (const std::string& u : UsersOf(p, 3)) out.push_back(u);
  }
  return out;
}
void ConnectCommandUsers(CommandWorld* w, uint64_t session) {
  const std::vector<std::string> users = CommandUsers();
  for (size_t i = 0; i < users.size(); ++i) {
    if (i % 3 != 1) ASSERT_TRUE(w->gw1->Publish(TestEngine::Sig(users[i], "web", session)).ok());
    if (i % 3 != 0) ASSERT_TRUE(w->gw2->Publish(TestEngine::Sig(users[i], "phone", session)).ok());
  }
}

// A drain published by a gateway for every partition does, across the
// engines that own them, what one engine's DrainGateway does when it owns
// them all; a failover that replays the whole bus, the command included,
// changes nothing, and a device that came back after the drain stays.
TEST(PartitionCommands, ADrainThroughAGatewayEqualsADrainAtOneOwner) {
  CommandWorld bus_world(2), direct(1);
  // The feed of a third node, which the drain names: told once per partition.
  int drains_heard = 0;
  RemoteFeedOptions fo;
  fo.on_command = [&](const PartitionCommand& c) {
    EXPECT_EQ(c.action, PartitionCommand::Action::kDrain);
    EXPECT_EQ(c.drained_gateway, "gw-2");
    EXPECT_EQ(c.gateway, "gw-1");
    EXPECT_EQ(c.issued_at_ms, bus_world.clock.NowMs());
    ++drains_heard;
  };
  Options fe;
  fe.clock = &bus_world.clock;
  auto feed_engine = Engine::Create(fe).value();
  auto fanout = Fanout::Create(feed_engine.get(), {}).value();
  auto feed = RemoteFeed::Create(&bus_world.bus, fanout.get(), {}, fo).value();

  for (CommandWorld* w : {&bus_world, &direct}) {
    ConnectCommandUsers(w, 1);
    w->Step();
  }
  // A phone beats through gw-2 just after the drain is issued, but reaches
  // the bus before it: drained all the same.
  const std::vector<std::string> users = CommandUsers();
  for (CommandWorld* w : {&bus_world, &direct}) {
    Signal late = TestEngine::Sig(users[1], "phone", 1);
    late.gateway = "gw-2";
    late.timestamp_ms = w->clock.NowMs() + 500;
    ASSERT_TRUE(w->bus.Publish(BusRecordType::kSignal, late.user_id, EncodeSignal(late)).ok());
  }
  PartitionCommand drain;
  drain.action = PartitionCommand::Action::kDrain;
  drain.drained_gateway = "gw-2";
  ASSERT_TRUE(bus_world.gw1->PublishToEveryPartition(drain).ok());
  ASSERT_TRUE(feed->Poll().ok());
  EXPECT_EQ(drains_heard, static_cast<int>(kPartitions));
  for (CommandWorld* w : {&bus_world, &direct}) w->clock.Advance(600);  // the owners read it later
  bus_world.Step();
  direct.Step([&] {
    while (direct.owners[0]->DrainGateway("gw-2").value() > 0) {
    }
  });
  for (CommandWorld* w : {&bus_world, &direct}) {
    w->clock.Advance(Options().min_dwell_ms);
    w->Step();
  }
  for (size_t i = 0; i < users.size(); ++i) {
    EXPECT_EQ(bus_world.Show(users[i]), direct.Show(users[i])) << users[i];
    EXPECT_EQ(bus_world.OwnerOf(users[i])->GetOne(users[i]).state, i % 3 == 1 ? State::kOffline : State::kOnline)
        << users[i];
  }
  EXPECT_EQ(bus_world.metric("presence_partition_commands_total{action=\"drain\"}"), absl::StrCat(kPartitions));
  EXPECT_EQ(bus_world.metric("presence_partition_command_changes_total{action=\"drain\"}"),
            absl::StrCat(2 * kPartitions));  // two users of each partition had a phone on gw-2

  // The drained devices come back through gw-2, in new sessions, more than
  // a second after the drain was issued.
  for (CommandWorld* w : {&bus_world, &direct}) {
    w->clock.Advance(1000);
    for (size_t i = 0; i < users.size(); ++i) {
      if (i % 3 != 0) ASSERT_TRUE(w->gw2->Publish(TestEngine::Sig(users[i], "phone", 2)).ok());
    }
    w->Step();
  }
  // One new engine takes every partition over and replays the whole bus
  // (each announces what it took again, cause merge).
  for (CommandWorld* w : {&bus_world, &direct}) {
    w->Own(1);
    w->Step();
  }
  for (const std::string& u : users) {
    EXPECT_EQ(bus_world.Show(u), direct.Show(u)) << u;
    EXPECT_EQ(bus_world.OwnerOf(u)->GetOne(u).state, State::kOnline) << u;
  }
}

// A bulk revoke published for every partition does what one engine's
// RevokeOverridesSetBetween does when it owns them all, and a replay of the
// whole bus changes nothing of it.
TEST(PartitionCommands, ABulkRevokeThroughAGatewayEqualsOneAtOneOwner) {
  CommandWorld bus_world(2), direct(1);
  const std::vector<std::string> users = CommandUsers();
  for (CommandWorld* w : {&bus_world, &direct}) {
    ConnectCommandUsers(w, 1);
    // Three rounds of overrides, a second apart: the operator revokes the
    // middle one's.
    for (OverrideState state : {OverrideState::kAway, OverrideState::kDnd, OverrideState::kAway}) {
      for (size_t i = 0; i < users.size(); i += 2) {
        ASSERT_TRUE(w->gw1->PublishOverride(OverrideRig::Set(users[i], state)).ok());
      }
      w->clock.Advance(1000);
    }
    w->Step();
  }
  const int64_t middle = bus_world.clock.NowMs() - 100 - 2000;
  PartitionCommand revoke;
  revoke.action = PartitionCommand::Action::kRevokeOverrides;
  revoke.set_from_ms = middle - 10;
  revoke.set_to_ms = middle + 10;
  ASSERT_TRUE(bus_world.gw2->PublishToEveryPartition(revoke).ok());
  bus_world.Step();
  direct.Step([&] { EXPECT_EQ(direct.owners[0]->RevokeOverridesSetBetween(middle - 10, middle + 10), 12u); });
  EXPECT_EQ(bus_world.metric("presence_partition_command_changes_total{action=\"revoke_overrides\"}"), "12");
  for (CommandWorld* w : {&bus_world, &direct}) {
    w->clock.Advance(Options().min_dwell_ms);
    w->Step();
  }
  for (size_t i = 0; i < users.size(); ++i) {
    EXPECT_EQ(bus_world.Show(users[i]), direct.Show(users[i])) << users[i];
    EXPECT_EQ(bus_world.OwnerOf(users[i])->ListOverrides(users[i]).value().size(), i % 2 == 0 ? 2u : 0u);
  }
  // Replayed (the sets, then the revoke), nothing comes back. (A direct
  // call, which is not on the bus, would not survive this: the sets it
  // revoked would be set again.)
  std::map<std::string, std::string> before;
  for (const std::string& u : users) before[u] = bus_world.Show(u, /*events=*/false);
  bus_world.Own(1);
  bus_world.Step();
  for (const std::string& u : users) EXPECT_EQ(bus_world.Show(u, /*events=*/false), before[u]) << u;
}

// Partition commands that are malformed, or read from a partition they are
// not for, are counted and skipped; the keys and the wire form.
TEST(PartitionCommands, AMalformedOrMisaddressedCommandIsCountedAndSkipped) {
  CommandWorld w(1);
  ConnectCommandUsers(&w, 1);
  w.Step();
  PartitionCommand drain;
  drain.action = PartitionCommand::Action::kDrain;
  drain.drained_gateway = "gw-2";
  drain.gateway = "gw-x";
  drain.partition = 3;  // but published to partition 2
  const std::string key2 = PartitionKey(2, kPartitions);
  ASSERT_TRUE(w.bus.Publish(BusRecordType::kCommand, key2, EncodePartitionCommand(drain)).ok());
  ASSERT_TRUE(w.bus.Publish(BusRecordType::kCommand, key2, "\xff\xff").ok());
  PartitionCommand empty = drain;
  empty.partition = 2;
  empty.drained_gateway = "";
  ASSERT_TRUE(w.bus.Publish(BusRecordType::kCommand, key2, EncodePartitionCommand(empty)).ok());
  w.Step();
  for (const std::string& u : CommandUsers()) EXPECT_EQ(w.OwnerOf(u)->GetOne(u).state, State::kOnline) << u;
  const std::string metrics = w.owners[0]->RenderMetrics();
  EXPECT_THAT(metrics, HasSubstr("presence_signals_dropped_total{reason=\"invalid\"} 2"));
  EXPECT_THAT(metrics, HasSubstr("presence_bus_wrong_partition_total 1"));
  EXPECT_THAT(metrics, HasSubstr("presence_partition_commands_total{action=\"drain\"} 0"));

  // A copy applies to the users of its own partition only, though the
  // engine owns them all.
  PartitionCommand only2 = drain;
  only2.partition = 2;
  only2.issued_at_ms = w.clock.NowMs();
  ASSERT_TRUE(w.bus.Publish(BusRecordType::kCommand, key2, EncodePartitionCommand(only2)).ok());
  w.Step();
  w.clock.Advance(Options().min_dwell_ms);
  w.Step();
  const std::vector<std::string> all_users = CommandUsers();
  for (size_t i = 0; i < all_users.size(); ++i) {
    const bool drained = i % 3 == 1 && PartitionFor(all_users[i], kPartitions) == 2;
    EXPECT_EQ(w.OwnerOf(all_users[i])->GetOne(all_users[i]).state, drained ? State::kOffline : State::kOnline)
        << all_users[i];
  }
  EXPECT_THAT(w.owners[0]->RenderMetrics(),
              HasSubstr("presence_partition_command_changes_total{action=\"drain\"} 2\n"));

  for (uint32_t n = 1; n <= 64; ++n) {
    for (uint32_t p = 0; p < n; ++p) ASSERT_EQ(PartitionFor(PartitionKey(p, n), n), p) << p << " of " << n;
    EXPECT_EQ(PartitionKey(n, n), "");
  }
  EXPECT_EQ(PartitionKey(0, 0), "#0.0");
  PartitionCommand revoke;
  revoke.action = PartitionCommand::Action::kRevokeOverrides;
  revoke.set_from_ms = 5;
  revoke.set_to_ms = 9;
  revoke.partition = 7;
  revoke.gateway = "gw-3";
  revoke.issued_at_ms = 11;
  PartitionCommand back;
  ASSERT_TRUE(DecodePartitionCommand(EncodePartitionCommand(revoke), &back).ok());
  EXPECT_EQ(back.action, PartitionCommand::Action::kRevokeOverrides);
  EXPECT_EQ(std::make_tuple(back.set_from_ms, back.set_to_ms, back.partition, back.gateway, back.issued_at_ms),
            std::make_tuple(5, 9, 7u, std::string("gw-3"), 11));
  revoke.issued_at_ms = (int64_t{1} << 50) + 1;
  EXPECT_TRUE(absl::IsInvalidArgument(DecodePartitionCommand(EncodePartitionCommand(revoke), &back)));
  revoke.issued_at_ms = 11;
  revoke.set_from_ms = 10;  // after set_to_ms
  EXPECT_TRUE(absl::IsInvalidArgument(DecodePartitionCommand(EncodePartitionCommand(revoke), &back)));
  revoke.set_from_ms = -1;
  EXPECT_TRUE(absl::IsInvalidArgument(DecodePartitionCommand(EncodePartitionCommand(revoke), &back)));
  EXPECT_TRUE(absl::IsInvalidArgument(DecodePartitionCommand(EncodePartitionCommand(PartitionCommand{}), &back)))
      << "a drain without its gateway";
  EXPECT_TRUE(absl::IsInvalidArgument(DecodePartitionCommand("", &back))) << "no action";
  EXPECT_EQ(BusRecordTypeNamed("command"), BusRecordType::kCommand);
}

// A command for every partition is published after what waits, one per
// partition with its key; while the bus fails it is refused, not held.
TEST(GatewayPublisher, ACommandForEveryPartitionIsRefusedNotHeldWhileTheBusFails) {
  Gateway g;
  PartitionCommand drain;
  drain.action = PartitionCommand::Action::kDrain;
  drain.drained_gateway = "gw-old";
  g.bus.failing = true;
  ASSERT_TRUE(g.gw->Publish(TestEngine::Sig("alice", "web")).ok());  // held
  EXPECT_TRUE(absl::IsUnavailable(g.gw->PublishToEveryPartition(drain)));
  EXPECT_EQ(g.gw->stats().buffered, 1u) << "the signal waits; the command is not held";
  EXPECT_TRUE(g.bus.All().empty());
  drain.drained_gateway = std::string(200, 'g');
  EXPECT_TRUE(absl::IsInvalidArgument(g.gw->PublishToEveryPartition(drain)));
  g.bus.failing = false;
  drain.drained_gateway = "gw-old";
  ASSERT_TRUE(g.gw->PublishToEveryPartition(drain).ok());
  const std::vector<BusRecord> all = g.bus.All();
  ASSERT_EQ(all.size(), 1 + kPartitions);
  std::set<uint32_t> partitions;
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i].type == BusRecordType::kSignal) {
      ASSERT_EQ(all[i].key, "alice");
      ASSERT_LT(i + 1, all.size());
      EXPECT_EQ(all[i + 1].partition, all[i].partition) << "the signal that waited goes first";
      continue;
    }
    EXPECT_EQ(all[i].type, BusRecordType::kCommand);
    PartitionCommand c;
    ASSERT_TRUE(DecodePartitionCommand(all[i].payload, &c).ok());
    EXPECT_EQ(c.partition, all[i].partition);
    EXPECT_EQ(all[i].key, PartitionKey(c.partition, kPartitions));
    EXPECT_EQ(c.gateway, "gw-1");
    EXPECT_EQ(c.issued_at_ms, g.clock.NowMs());
    partitions.insert(c.partition);
  }
  EXPECT_EQ(partitions.size(), kPartitions);
  EXPECT_EQ(g.gw->stats().buffered, 0u);

  // The bus fails part way: the 510 signals that waited (their flush
  // first fails) and two copies go in the first call of 512 records, the
  // other copies' call fails. Those leave the queue; the signals are not
  // taken back.
  Gateway h;
  auto gw = h.Make(1000);
  h.bus.failing = true;
  for (int i = 0; i < 510; ++i) ASSERT_TRUE(gw->Publish(TestEngine::Sig("alice", "web")).ok());
  h.bus.failing = false;
  h.bus.scripted = {false, true, false};
  EXPECT_TRUE(absl::IsUnavailable(gw->PublishToEveryPartition(drain)));
  EXPECT_EQ(gw->stats().buffered, 0u);
  auto count = [&](BusRecordType t) {
    const std::vector<BusRecord> records = h.bus.All();
    return std::count_if(records.begin(), records.end(), [&](const BusRecord& r) { return r.type == t; });
  };
  EXPECT_EQ(count(BusRecordType::kSignal), 510);
  EXPECT_EQ(count(BusRecordType::kCommand), 2);
  ASSERT_TRUE(gw->PublishToEveryPartition(drain).ok()) << "sent again: every partition has it";
  EXPECT_EQ(count(BusRecordType::kCommand), 2 + kPartitions);
}

TEST(GatewayPublisher, BuffersWhileTheBusFailsThenPushesBackNeverDropping) {
  Gateway g;
  ASSERT_TRUE(g.gw->Publish(TestEngine::Sig("alice", "web", 1)).ok());
  g.bus.failing = true;
  for (uint64_t session = 2; session <= 5; ++session) {
    EXPECT_TRUE(g.gw->Publish(TestEngine::Sig("alice", "web", session)).ok()) << "buffered";
  }
  EXPECT_EQ(g.gw->stats().buffered, 4u);
  auto refused = g.gw->Publish(TestEngine::Sig("alice", "web", 6));
  EXPECT_TRUE(absl::IsResourceExhausted(refused.status())) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("bus is down"));
  EXPECT_TRUE(absl::IsUnavailable(g.gw->Flush()));
  EXPECT_EQ(g.gw->stats().refused, 1u);
  g.bus.failing = false;
  // The next publish sends what waited first, in order.
  ASSERT_TRUE(g.gw->Publish(TestEngine::Sig("alice", "web", 6)).ok());
  EXPECT_TRUE(g.gw->Flush().ok());
  std::vector<DecodedSignal> keep;
  auto out = g.Published(&keep);
  ASSERT_EQ(out.size(), 6u);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i].session_id, i + 1);
  const auto stats = g.gw->stats();
  EXPECT_EQ(stats.published, 6u);
  EXPECT_EQ(stats.buffered, 0u);
  EXPECT_GE(stats.bus_errors, 4u);
}

// A gateway that collects the signals of one pass of its event loop sends
// them with one bus call per 512 records, each item taken or refused as
// Publish would, in order; while the bus fails they wait, in order, up to
// the bound.
TEST(GatewayPublisher, PublishBatchSendsManyInOneBusCallInOrder) {
  Gateway g;
  std::unique_ptr<GatewayPublisher> gw = g.Make(1000);
  std::vector<std::string> users;
  for (int i = 0; i < 600; ++i) users.push_back("u" + std::to_string(i));
  std::vector<GatewayPublisher::Item> items;
  for (int i = 0; i < 600; ++i) items.push_back({TestEngine::Sig(users[i], "web"), std::nullopt});
  items[7].signal.device_id = "";                // invalid: not taken
  items[9].disconnect = DisconnectKind::kClean;  // the end of u9's session
  const auto out = gw->PublishBatch(items);
  ASSERT_EQ(out.size(), 600u);
  for (int i = 0; i < 600; ++i) EXPECT_EQ(out[i].ok(), i != 7) << i;
  EXPECT_TRUE(absl::IsInvalidArgument(out[7].status()));
  EXPECT_EQ(g.bus.batch_sizes, (std::vector<size_t>{512, 87}));
  std::vector<DecodedSignal> keep;
  const std::vector<Signal> published = g.Published(&keep);
  ASSERT_EQ(published.size(), 599u);
  std::set<std::string> seen;
  for (size_t i = 0; i < published.size(); ++i) {
    const std::string user(published[i].user_id);
    EXPECT_TRUE(seen.insert(user).second) << user;
    EXPECT_EQ(keep[i].disconnect().has_value(), user == "u9") << user;
  }
  EXPECT_EQ(seen.count("u7"), 0u);
  EXPECT_EQ(gw->stats().published, 599u);

  g.bus.failing = true;
  std::vector<GatewayPublisher::Item> more(5, {TestEngine::Sig("late", "web"), std::nullopt});
  std::unique_ptr<GatewayPublisher> small = g.Make(3);
  const auto held = small->PublishBatch(more);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(held[i].ok(), i < 3) << i;  // the bound
  EXPECT_TRUE(absl::IsResourceExhausted(held[3].status()));
  EXPECT_EQ(small->stats().buffered, 3u);
  g.bus.failing = false;
  EXPECT_TRUE(small->Flush().ok());
  EXPECT_EQ(small->stats().published, 3u);
}

TEST(GatewayPublisher, RefusesBadOptions) {
  FlakyBus bus(2);
  GatewayOptions o;
  EXPECT_TRUE(absl::IsInvalidArgument(GatewayPublisher::Create(&bus, o).status()));
  o.gateway_id = std::string(129, 'g');
  EXPECT_TRUE(absl::IsInvalidArgument(GatewayPublisher::Create(&bus, o).status()));
  o.gateway_id = "gw";
  o.max_buffered = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(GatewayPublisher::Create(&bus, o).status()));
  o.max_buffered = 1;
  EXPECT_TRUE(absl::IsInvalidArgument(GatewayPublisher::Create(nullptr, o).status()));
  EXPECT_TRUE(GatewayPublisher::Create(&bus, o).ok());
}

// ---- Two buses: signals on one, change events and notices on the other ----------

// A gateway's publisher, an owner of every partition and another gateway's
// feed, with change events on a bus of their own (Options::change_bus,
// GatewayOptions::notice_bus): the owner reads only signals and commands,
// the feed only changes and notices, and each hears what it did on one bus.
struct TwoBuses {
  FlakyBus signals{kPartitions}, changes{kPartitions};
  ManualClock clock{5'000'000};
  std::unique_ptr<GatewayPublisher> gw;
  std::unique_ptr<Engine> owner, other;  // `other`: the second gateway's engine (owns nothing)
  std::unique_ptr<Fanout> fanout;
  std::unique_ptr<RemoteFeed> feed;
  // What the feed told of each signal (its ids are views into the record).
  struct Heard {
    std::string user_id, gateway;
    uint64_t session_id;
    bool operator==(const Heard& o) const {
      return std::tie(user_id, gateway, session_id) == std::tie(o.user_id, o.gateway, o.session_id);
    }
  };
  std::vector<Heard> heard_signals;
  std::vector<PartitionCommand> heard_commands;

  TwoBuses() {
    GatewayOptions go;
    go.gateway_id = "gw-1";
    go.clock = &clock;
    go.notice_bus = &changes;
    gw = GatewayPublisher::Create(&signals, go).value();
    Options o;
    o.clock = &clock;
    o.bus = &signals;
    o.change_bus = &changes;
    o.owns_all_partitions = false;
    owner = Engine::Create(o).value();
    std::vector<uint32_t> all;
    for (uint32_t p = 0; p < kPartitions; ++p) all.push_back(p);
    EXPECT_TRUE(owner->AssignPartitions(all).ok());
    o.change_bus = nullptr;
    o.bus = &changes;
    other = Engine::Create(o).value();
    FanoutOptions fo;
    fo.rate_per_sec = 0;
    fanout = Fanout::Create(other.get(), fo).value();
    RemoteFeedOptions ro;
    ro.on_signal = [this](const Signal& s) {
      heard_signals.push_back(Heard{std::string(s.user_id), std::string(s.gateway), s.session_id});
    };
    ro.on_command = [this](const PartitionCommand& c) { heard_commands.push_back(c); };
    feed = RemoteFeed::Create(&changes, fanout.get(), {}, ro).value();
  }
  void Step() {
    for (;;) {
      auto n = owner->ConsumeBus();
      ASSERT_TRUE(n.ok()) << n.status();
      if (*n == 0) break;
    }
    clock.Advance(100);
    owner->Tick();
    ASSERT_TRUE(feed->Poll().ok());
  }
  static size_t Count(FlakyBus& bus, BusRecordType type) {
    const std::vector<BusRecord> all = bus.All();
    return static_cast<size_t>(
        std::count_if(all.begin(), all.end(), [&](const BusRecord& r) { return r.type == type; }));
  }
};

TEST(TwoBuses, ChangesAndNoticesTravelApartFromTheSignals) {
  TwoBuses w;
  const std::vector<GatewayPublisher::Item> items = {
      {TestEngine::Sig("alice", "web", 7), std::nullopt, /*connect=*/true},
      {TestEngine::Sig("alice", "web", 7), std::nullopt, false},
      {TestEngine::Sig("bob", "web", 3), std::nullopt, true},
  };
  for (const auto& r : w.gw->PublishBatch(items)) ASSERT_TRUE(r.ok()) << r.status();
  w.Step();
  const GatewayPublisher::Item bye{TestEngine::Sig("bob", "web", 3), DisconnectKind::kClean, false};
  ASSERT_TRUE(w.gw->PublishBatch({&bye, 1})[0].ok());
  for (int i = 0; i < 11; ++i) w.Step();  // past bob's dwell (min_dwell_ms)
  // The owner heard every signal; its changes went to the change bus only.
  EXPECT_EQ(w.owner->GetOne("alice").state, State::kOnline);
  EXPECT_EQ(w.owner->GetOne("bob").state, State::kOffline);
  EXPECT_EQ(TwoBuses::Count(w.signals, BusRecordType::kSignal), 4u);
  EXPECT_EQ(TwoBuses::Count(w.signals, BusRecordType::kChange), 0u);
  EXPECT_EQ(TwoBuses::Count(w.changes, BusRecordType::kChange), 3u);  // alice online; bob online, offline
  // The other gateway heard the changes, and each connect once, as published.
  ASSERT_TRUE(w.feed->Latest("alice").has_value());
  EXPECT_EQ(w.feed->Latest("alice")->state, State::kOnline);
  ASSERT_TRUE(w.feed->Latest("bob").has_value());
  EXPECT_EQ(w.feed->Latest("bob")->state, State::kOffline);
  EXPECT_EQ(w.heard_signals,
            (std::vector<TwoBuses::Heard>{{"alice", "gw-1", 7}, {"bob", "gw-1", 3}}));
  EXPECT_EQ(w.gw->stats().notices, 2u);

  // A drain: every owner's copy on the signals' bus, and a notice of each
  // for the gateways.
  PartitionCommand drain;
  drain.action = PartitionCommand::Action::kDrain;
  drain.drained_gateway = "gw-1";
  ASSERT_TRUE(w.gw->PublishToEveryPartition(drain).ok());
  w.Step();
  EXPECT_EQ(w.owner->GetOne("alice").state, State::kOffline) << "drained by its owner";
  EXPECT_EQ(TwoBuses::Count(w.signals, BusRecordType::kCommand), kPartitions);
  ASSERT_EQ(w.heard_commands.size(), kPartitions);
  std::set<uint32_t> partitions;
  for (const PartitionCommand& c : w.heard_commands) {
    EXPECT_EQ(c.drained_gateway, "gw-1");
    partitions.insert(c.partition);
  }
  EXPECT_EQ(partitions.size(), kPartitions);
  EXPECT_EQ(w.gw->stats().notices, 2u + kPartitions);
  EXPECT_EQ(w.gw->stats().buffered, 0u);
}

TEST(TwoBuses, ANoticeFollowsItsOriginalAndWaitsWhileItsBusFails) {
  TwoBuses w;
  const GatewayPublisher::Item connect{TestEngine::Sig("alice", "web", 7), std::nullopt, true};
  w.signals.failing = true;
  ASSERT_TRUE(w.gw->PublishBatch({&connect, 1})[0].ok());  // held
  EXPECT_TRUE(w.changes.All().empty()) << "a notice never goes before its original";
  EXPECT_EQ(w.gw->stats().buffered, 2u);
  w.signals.failing = false;
  w.changes.failing = true;
  EXPECT_TRUE(absl::IsUnavailable(w.gw->Flush())) << "the notice is still held";
  EXPECT_EQ(TwoBuses::Count(w.signals, BusRecordType::kSignal), 1u);
  EXPECT_EQ(w.gw->stats().buffered, 1u);
  // Later signals go while the notice waits; it goes, once, when it can.
  const GatewayPublisher::Item beat{TestEngine::Sig("alice", "web", 7), std::nullopt, false};
  ASSERT_TRUE(w.gw->PublishBatch({&beat, 1})[0].ok());
  EXPECT_EQ(TwoBuses::Count(w.signals, BusRecordType::kSignal), 2u);
  w.changes.failing = false;
  EXPECT_TRUE(w.gw->Flush().ok());
  const std::vector<BusRecord> notices = w.changes.All();
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].type, BusRecordType::kSignal);
  EXPECT_EQ(notices[0].key, "alice");
  EXPECT_EQ(notices[0].payload, w.signals.All()[0].payload) << "the original, as published";
  EXPECT_EQ(w.gw->stats().buffered, 0u);
}

// Notices are copies: while their bus fails they are held up to the bound,
// the oldest dropped past it (counted), and no signal waits for them. A
// command that only some partitions took is noticed for those.
TEST(TwoBuses, ANoticeBusThatStaysDownNeverHoldsUpASignal) {
  FlakyBus signals(kPartitions), changes(kPartitions);
  GatewayOptions go;
  go.gateway_id = "gw-1";
  go.max_buffered = 2;
  go.notice_bus = &changes;
  auto gw = GatewayPublisher::Create(&signals, go).value();
  changes.failing = true;
  const std::vector<std::string> users = {"u0", "u1", "u2", "u3", "u4"};
  for (const std::string& u : users) {
    const GatewayPublisher::Item connect{TestEngine::Sig(u, "web"), std::nullopt, true};
    ASSERT_TRUE(gw->PublishBatch({&connect, 1})[0].ok()) << u << " was refused for the notices held";
  }
  EXPECT_EQ(TwoBuses::Count(signals, BusRecordType::kSignal), users.size());
  EXPECT_EQ(gw->stats().notices_dropped, 3u);
  EXPECT_EQ(gw->stats().buffered, 2u);
  changes.failing = false;
  EXPECT_TRUE(gw->Flush().ok());
  std::set<std::string> noticed;
  for (const BusRecord& r : changes.All()) noticed.insert(r.key);
  EXPECT_EQ(noticed, (std::set<std::string>{"u3", "u4"})) << "the newest are kept";

  // 510 signals wait; then the first call of 512 records takes them and two
  // copies of the drain, the next call fails: those two partitions have it.
  go.max_buffered = 1000;
  auto big = GatewayPublisher::Create(&signals, go).value();
  signals.failing = true;
  for (int i = 0; i < 510; ++i) ASSERT_TRUE(big->Publish(TestEngine::Sig("alice", "web")).ok());
  signals.failing = false;
  signals.scripted = {false, true, false};
  PartitionCommand drain;
  drain.action = PartitionCommand::Action::kDrain;
  drain.drained_gateway = "gw-old";
  EXPECT_TRUE(absl::IsUnavailable(big->PublishToEveryPartition(drain)));
  std::set<uint32_t> on_signals, on_changes;
  for (const BusRecord& r : signals.All()) {
    if (r.type == BusRecordType::kCommand) on_signals.insert(r.partition);
  }
  for (const BusRecord& r : changes.All()) {
    if (r.type != BusRecordType::kCommand) continue;
    PartitionCommand c;
    ASSERT_TRUE(DecodePartitionCommand(r.payload, &c).ok());
    on_changes.insert(c.partition);
  }
  EXPECT_EQ(on_signals.size(), 2u);
  EXPECT_EQ(on_changes, on_signals);
}

TEST(TwoBuses, EachBusMustHaveAsManyPartitions) {
  FlakyBus signals(kPartitions), fewer(kPartitions / 2);
  Options o;
  o.bus = &signals;
  o.change_bus = &fewer;
  const absl::Status engine = Engine::Create(o).status();
  EXPECT_TRUE(absl::IsInvalidArgument(engine)) << engine;
  EXPECT_THAT(engine.message(), HasSubstr("change_bus has 4 partitions and bus 8"));
  GatewayOptions go;
  go.gateway_id = "gw-1";
  go.notice_bus = &fewer;
  const absl::Status gateway = GatewayPublisher::Create(&signals, go).status();
  EXPECT_TRUE(absl::IsInvalidArgument(gateway)) << gateway;
  EXPECT_THAT(gateway.message(), HasSubstr("notice_bus has 4 partitions and bus 8"));
  go.notice_bus = &signals;
  EXPECT_TRUE(absl::IsInvalidArgument(GatewayPublisher::Create(&signals, go).status()));
}

TEST(GatewayPublisher, AnEngineServesWhatTheGatewayPublishedAndCanDrainIt) {
  Cluster c;
  GatewayOptions o;
  o.gateway_id = "gw-7";
  o.clock = &c.clock;
  auto gw = GatewayPublisher::Create(&c.bus, o).value();
  ASSERT_TRUE(c.a->AssignPartitions({0, 1, 2, 3}).ok());
  ASSERT_TRUE(c.b->AssignPartitions({4, 5, 6, 7}).ok());
  std::vector<std::string> users;
  for (int i = 0; i < 16; ++i) users.push_back("member-" + std::to_string(i));
  for (const std::string& u : users) ASSERT_TRUE(gw->Publish(TestEngine::Sig(u, "web")).ok());
  c.Step();
  for (const std::string& u : users) {
    Engine* owner = PartitionFor(u, kPartitions) < 4 ? c.a.get() : c.b.get();
    EXPECT_EQ(owner->GetOne(u).state, State::kOnline) << u;
  }
  // The operator drains the gateway on each engine: its devices go.
  const size_t drained = c.a->DrainGateway("gw-7").value() + c.b->DrainGateway("gw-7").value();
  EXPECT_EQ(drained, users.size());
  c.Step(1500);
  for (const std::string& u : users) {
    Engine* owner = PartitionFor(u, kPartitions) < 4 ? c.a.get() : c.b.get();
    EXPECT_EQ(owner->GetOne(u).state, State::kOffline) << u;
  }
}

}  // namespace
}  // namespace presence::testing
