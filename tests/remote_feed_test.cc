// RemoteFeed (include/presence/remote_feed.h): fan-out across two engines on
// one in-process bus and one shared store, on a manual clock. Engine A owns
// partitions {0, 1}, engine B owns {2, 3}; the subscribers live on B.
#include "presence/remote_feed.h"

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "presence/bus.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/fanout.h"
#include "presence/store.h"
#include "presence/wire.h"
#include "tests/fanout_client.h"
#include "tests/flaky.h"
#include "tests/test_util.h"

namespace presence::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

constexpr uint32_t kPartitions = 4;

// The in-process bus, answering at most two records per Read (as a Kafka
// client may); Rekey shows a record under another key than it was published
// with (a producer that partitioned it wrongly).
struct ShortReadBus : FlakyBus {
  ShortReadBus() : FlakyBus(kPartitions) { max_read = 2; }
};

// The first id "<prefix><i>" whose partition is `partition`.
std::string UserIn(uint32_t partition, const std::string& prefix) {
  for (int i = 0;; ++i) {
    std::string id = prefix + std::to_string(i);
    if (PartitionFor(id, kPartitions) == partition) return id;
  }
}

const std::vector<uint32_t> kOwnedByA = {0, 1};
const std::vector<uint32_t> kOwnedByB = {2, 3};

struct Cluster {
  explicit Cluster(const RemoteFeedOptions& feed_options = {}) {
    a = MakeEngine(&a_events);
    b = MakeEngine(nullptr);
    FanoutOptions fo;
    fo.rate_per_sec = 0;
    fanout = Fanout::Create(b.get(), fo).value();
    feed = RemoteFeed::Create(&bus, fanout.get(), kOwnedByB, feed_options).value();
  }
  std::unique_ptr<Engine> MakeEngine(ChangeListener* listener) {
    Options o;
    o.clock = &clock;
    o.bus = &bus;
    o.store = store.get();
    o.listener = listener;
    o.min_dwell_ms = 0;
    return Engine::Create(o).value();
  }
  // One round of the hosts' loops: A publishes, B's feed reads, B flushes.
  RemoteFeedPollResult Step(int64_t ms = 100) {
    clock.Advance(ms);
    a->Tick();
    RemoteFeedPollResult r = feed->Poll().value();
    b->Tick();
    return r;
  }
  // A subscriber on B watching `user`, after the flush of its snapshot.
  SubscriberId Watch(const std::string& user) {
    SubscriberId s = fanout->Subscribe().value();
    EXPECT_TRUE(fanout->AddUsers(s, {user}).ok());
    Step();
    return s;
  }
  // Every (state, version) that the subscriber's list was sent for `user`,
  // snapshots included, since the last call.
  std::vector<std::pair<State, uint64_t>> Seen(SubscriberId s, const std::string& user) {
    std::vector<std::pair<State, uint64_t>> out;
    Batch batch;
    while (fanout->Poll(s, &batch).value()) {
      const v1::DiffBatch m = view.Apply(batch);
      for (const auto& u : m.users()) {
        if (u.user_id() == user) out.emplace_back(static_cast<State>(u.state()), u.version());
      }
    }
    return out;
  }
  // The public versions (what a subscriber other than the user is told).
  std::vector<uint64_t> VersionsPublishedByA(const std::string& user) const {
    std::vector<uint64_t> out;
    for (const ChangeEvent& e : a_events.For(user)) out.push_back(e.public_version);
    return out;
  }

  ManualClock clock{1'000'000};
  ShortReadBus bus;
  std::unique_ptr<Store> store = NewMemoryStore();
  RecordingListener a_events;
  ClientView view;  // the client of the subscriber that the test polls
  std::unique_ptr<Engine> a, b;
  std::unique_ptr<Fanout> fanout;
  std::unique_ptr<RemoteFeed> feed;
};

Signal Sig(const std::string& user) { return TestEngine::Sig(user, "web"); }

TEST(RemoteFeed, ASubscriberOnBGetsTheChangesOfAUserOwnedByAInOrder) {
  Cluster c;
  const std::string alice = UserIn(0, "alice-");
  const SubscriberId s = c.Watch(alice);
  EXPECT_THAT(c.Seen(s, alice), IsEmpty());  // the snapshot: alice never existed yet

  DeviceHandle h = c.a->Connect(Sig(alice)).value();
  EXPECT_EQ(c.Step().delivered, 1u);
  ASSERT_TRUE(c.a->SetOverride(alice, OverrideState::kDnd).ok());
  EXPECT_EQ(c.Step().delivered, 1u);
  ASSERT_TRUE(c.a->Disconnect(h, DisconnectKind::kClean).ok());
  EXPECT_EQ(c.Step().delivered, 1u);

  const std::vector<uint64_t> versions = c.VersionsPublishedByA(alice);
  ASSERT_EQ(versions.size(), 3u);
  EXPECT_THAT(c.Seen(s, alice),
              ElementsAre(Pair(State::kOnline, versions[0]), Pair(State::kDnd, versions[1]),
                          Pair(State::kOffline, versions[2])));
  EXPECT_LT(versions[0], versions[1]);
  EXPECT_LT(versions[1], versions[2]);
  EXPECT_EQ(c.b->GetSizes().users, 0u);  // B itself never held alice
}

TEST(RemoteFeed, PollLoopsOverShortReadsAndStopsAtMax) {
  Cluster c;
  const std::string alice = UserIn(1, "alice-");
  c.Watch(alice);
  DeviceHandle h = c.a->Connect(Sig(alice)).value();
  for (int i = 0; i < 3; ++i) {
    c.clock.Advance(100);
    c.a->Tick();
    ASSERT_TRUE(c.a->Beat(h, i % 2 == 0 ? Activity::kIdle : Activity::kActive).ok());
  }
  c.clock.Advance(100);
  c.a->Tick();  // 4 changes of alice in partition 1; the bus answers 2 per read
  EXPECT_EQ(c.feed->Poll(3).value().read, 3u);
  const RemoteFeedPollResult rest = c.feed->Poll().value();
  EXPECT_EQ(rest.read, 1u);
  EXPECT_EQ(rest.delivered, 1u);
  EXPECT_EQ(c.feed->Stats().delivered, 4u);
  EXPECT_EQ(c.feed->Offsets()[1], c.bus.EndOffset(1).value());
}

TEST(RemoteFeed, TheSnapshotOfANewSubscriberIsTheLatestRemoteChange) {
  Cluster c;
  const std::string alice = UserIn(0, "alice-");
  c.a->Connect(Sig(alice)).value();
  c.Step();
  ASSERT_TRUE(c.a->SetOverride(alice, OverrideState::kDnd).ok());
  c.Step();  // the feed read both changes while nobody on B watched alice
  const std::vector<uint64_t> versions = c.VersionsPublishedByA(alice);
  ASSERT_EQ(versions.size(), 2u);

  const SubscriberId s = c.Watch(alice);
  EXPECT_THAT(c.Seen(s, alice), ElementsAre(Pair(State::kDnd, versions[1])));
  EXPECT_EQ(c.view.snapshots, 1u);
  ASSERT_TRUE(c.a->ClearOverrides(alice).ok());
  c.Step();
  EXPECT_THAT(c.Seen(s, alice),
              ElementsAre(Pair(State::kOnline, c.VersionsPublishedByA(alice).back())));
}

// What a gateway answers a query with: the latest change read for a user of
// a partition the feed does not own, watched or not; nothing for an owned
// partition's user (the engine answers) or a user never read.
TEST(RemoteFeed, LatestIsTheLastChangeReadOfAUserNotOwned) {
  Cluster c;
  const std::string alice = UserIn(0, "alice-"), bob = UserIn(1, "bob-");
  EXPECT_FALSE(c.feed->Latest(alice).has_value());
  c.a->Connect(Sig(alice)).value();
  c.a->Connect(Sig(bob)).value();
  c.Step();
  ASSERT_TRUE(c.a->SetOverride(alice, OverrideState::kDnd).ok());
  c.Step();
  std::optional<ChangeEvent> a = c.feed->Latest(alice);
  ASSERT_TRUE(a.has_value());  // unwatched
  EXPECT_EQ(a->state, State::kDnd);
  EXPECT_EQ(a->version, c.a_events.For(alice).back().version);
  c.Watch(bob);
  ASSERT_TRUE(c.feed->Latest(bob).has_value());  // watched
  EXPECT_EQ(c.feed->Latest(bob)->state, State::kOnline);
  // Once the feed's node owns the partition, its engine answers.
  ASSERT_TRUE(c.feed->SetOwnedPartitions({0, 2, 3}).ok());
  EXPECT_FALSE(c.feed->Latest(alice).has_value());
  EXPECT_FALSE(c.feed->Latest(UserIn(2, "carol-")).has_value());
}

// What a gateway answers GET /presence from (presence_server's cluster):
// the latest change event carries the override shown in each view, the
// user's own stack, and its own last_seen and devices, which an invisible
// user's public view hides; its public encoding carries none of the own
// view (rule 8).
TEST(RemoteFeed, LatestCarriesTheOverridesAndTheOwnView) {
  Cluster c;
  const std::string alice = UserIn(0, "alice-");
  c.a->Connect(Sig(alice)).value();
  c.Step();
  const uint64_t dnd = c.a->SetOverride(alice, OverrideState::kDnd, c.clock.NowMs() + 60'000).value();
  c.Step(1500);  // past the dwell
  std::optional<ChangeEvent> ev = c.feed->Latest(alice);
  ASSERT_TRUE(ev.has_value());
  ASSERT_TRUE(ev->shown_override.has_value());
  // To others its state and end only: an id counts every override set,
  // invisible ones too (rule 8).
  EXPECT_EQ(ev->shown_override->id, 0u);
  EXPECT_EQ(ev->shown_override->set_at_ms, 0);
  EXPECT_EQ(ev->shown_override->state, OverrideState::kDnd);
  EXPECT_EQ(ev->shown_override->until_ms, c.a->ListOverrides(alice).value()[0].until_ms);
  ASSERT_TRUE(ev->self_shown_override.has_value());
  EXPECT_EQ(ev->self_shown_override->id, dnd);
  ASSERT_EQ(ev->self_overrides.size(), 1u);
  const std::optional<ChangeEvent> dnd_event = ev;

  const uint64_t inv = c.a->SetOverride(alice, OverrideState::kInvisible).value();
  c.Step(1500);
  ev = c.feed->Latest(alice);
  ASSERT_TRUE(ev.has_value());
  EXPECT_EQ(ev->state, State::kOffline);
  EXPECT_FALSE(ev->shown_override.has_value()) << "an invisible user shows no override to others";
  EXPECT_EQ(ev->devices.total(), 0);
  ASSERT_TRUE(ev->self_shown_override.has_value());
  EXPECT_EQ(ev->self_shown_override->id, inv);
  EXPECT_EQ(ev->self_devices.total(), 1);
  // Each view as the owner answers it, nothing having changed since.
  const absl::string_view ids[] = {alice};
  const UserPresence own = c.a->GetPublished(ids, alice)[0];
  const UserPresence other = c.a->GetPublished(ids, "bob")[0];
  EXPECT_EQ(ev->self_state, own.state);
  EXPECT_EQ(ev->self_last_seen_ms, own.last_seen_ms);
  EXPECT_EQ(ev->self_devices.total(), own.devices.total());
  EXPECT_EQ(ev->self_shown_override->state, own.override_state);
  EXPECT_EQ(ev->state, other.state);
  EXPECT_EQ(ev->last_seen_ms, other.last_seen_ms);
  EXPECT_FALSE(other.has_override);
  const std::vector<OverrideInfo> stack = c.a->ListOverrides(alice).value();
  ASSERT_EQ(ev->self_overrides.size(), stack.size());
  for (size_t i = 0; i < stack.size(); ++i) {
    EXPECT_EQ(ev->self_overrides[i].id, stack[i].id);
    EXPECT_EQ(ev->self_overrides[i].state, stack[i].state);
    EXPECT_EQ(ev->self_overrides[i].set_at_ms, stack[i].set_at_ms);
    EXPECT_EQ(ev->self_overrides[i].until_ms, stack[i].until_ms);
  }
  // Encoded for anyone but alice: nothing of her own view.
  const ChangeEvent dnd_pub = DecodeChangeEvent(EncodeChangeEvent(*dnd_event, false)).value();
  ASSERT_TRUE(dnd_pub.shown_override.has_value());
  EXPECT_EQ(dnd_pub.shown_override->id, 0u);
  EXPECT_EQ(dnd_pub.shown_override->set_at_ms, 0);
  EXPECT_FALSE(dnd_pub.self_shown_override.has_value() && dnd_pub.self_shown_override->id != 0);
  EXPECT_TRUE(dnd_pub.self_overrides.empty());
  const ChangeEvent pub = DecodeChangeEvent(EncodeChangeEvent(*ev, /*include_self=*/false)).value();
  EXPECT_EQ(pub.self_state, State::kOffline);
  EXPECT_FALSE(pub.self_shown_override.has_value());
  EXPECT_TRUE(pub.self_overrides.empty());
  EXPECT_EQ(pub.self_devices.total(), 0);
  EXPECT_EQ(pub.self_last_seen_ms, ev->last_seen_ms);
  EXPECT_EQ(pub.version, ev->public_version);
}

TEST(RemoteFeed, AReplayOfTheBusDeliversNoDuplicates) {
  Cluster c;
  const std::string alice = UserIn(0, "alice-");
  const SubscriberId s = c.Watch(alice);
  DeviceHandle h = c.a->Connect(Sig(alice)).value();
  c.Step();
  ASSERT_TRUE(c.a->Disconnect(h, DisconnectKind::kClean).ok());
  c.Step();
  EXPECT_EQ(c.Seen(s, alice).size(), 2u);  // online, offline (the snapshot had nothing)

  EXPECT_EQ(c.Step().read, 0u);  // polling again at the end reads nothing
  for (uint32_t p : kOwnedByA) ASSERT_TRUE(c.feed->Seek(p, 0).ok());
  const RemoteFeedPollResult replay = c.Step();
  EXPECT_EQ(replay.read, 2u);
  EXPECT_EQ(replay.delivered, 0u);
  EXPECT_TRUE(c.Seen(s, alice).empty());

  // Even when the fan-out forgot alice in between, and so took a new
  // snapshot, the replay is no news to it.
  ASSERT_TRUE(c.fanout->RemoveUsers(s, {alice}).ok());
  ASSERT_TRUE(c.fanout->AddUsers(s, {alice}).ok());
  for (uint32_t p : kOwnedByA) ASSERT_TRUE(c.feed->Seek(p, 0).ok());
  c.Step();
  EXPECT_THAT(c.Seen(s, alice),
              ElementsAre(Pair(State::kOffline, c.VersionsPublishedByA(alice).back())));
  c.Step();
  EXPECT_TRUE(c.Seen(s, alice).empty());
}

TEST(RemoteFeed, OnlyWatchedUsersAreDeliveredDirectlyOrThroughATopic) {
  Cluster c;
  const std::string alice = UserIn(0, "alice-");
  const std::string dave = UserIn(0, "dave-");
  const std::string carol = UserIn(1, "carol-");
  const SubscriberId s = c.Watch(alice);
  ASSERT_TRUE(c.fanout->AddMembers("team", {dave}).ok());
  ASSERT_TRUE(c.fanout->Join(s, "team").ok());
  c.Step();
  Drain(c.fanout.get(), s, &c.view);

  c.a->Connect(Sig(alice)).value();
  c.a->Connect(Sig(carol)).value();
  c.a->Connect(Sig(dave)).value();
  const RemoteFeedPollResult r = c.Step();
  EXPECT_EQ(r.delivered, 2u);  // alice and dave; carol is watched by no one
  Drain(c.fanout.get(), s, &c.view);
  EXPECT_EQ(c.view.StateOf(alice), State::kOnline);
  EXPECT_EQ(c.view.topics["team"][dave].state(), v1::STATE_ONLINE);
  EXPECT_EQ(c.view.ever_seen.count(carol), 0u);
}

TEST(RemoteFeed, OwnershipChangesStopAndRestartRemoteDelivery) {
  Cluster c;
  const std::string alice = UserIn(1, "alice-");
  const SubscriberId s = c.Watch(alice);
  c.Seen(s, alice);

  // B takes partition 1 over: its own engine answers for alice now, and the
  // feed stops reading partition 1.
  ASSERT_TRUE(c.feed->SetOwnedPartitions({1, 2, 3}).ok());
  c.a->Connect(Sig(alice)).value();
  EXPECT_EQ(c.Step().read, 0u);
  EXPECT_TRUE(c.Seen(s, alice).empty());

  // Partition 1 goes back to A: reading resumes where it stopped, so the
  // change published meanwhile arrives, once.
  ASSERT_TRUE(c.feed->SetOwnedPartitions(kOwnedByB).ok());
  EXPECT_EQ(c.Step().delivered, 1u);
  EXPECT_THAT(c.Seen(s, alice),
              ElementsAre(Pair(State::kOnline, c.VersionsPublishedByA(alice).back())));
  EXPECT_EQ(c.Step().read, 0u);
  EXPECT_TRUE(c.Seen(s, alice).empty());

  EXPECT_EQ(c.feed->SetOwnedPartitions({7}).code(), absl::StatusCode::kInvalidArgument);
}

// Found by the chaos test (adapters/chaos): A publishes a change and dies
// before B's feed has read it; B takes A's partition over. The change is on
// the bus and in the store, but nothing will publish it again: B's watcher
// must still get it.
TEST(RemoteFeed, AChangeTheDeadOwnerPublishedReachesTheWatchersOfTheNewOwner) {
  Cluster c;
  const std::string alice = UserIn(1, "alice-");
  const SubscriberId s = c.Watch(alice);
  c.Seen(s, alice);
  c.a->Connect(Sig(alice)).value();
  c.clock.Advance(100);
  c.a->Tick();  // written, published; B's feed has not polled yet
  const uint64_t published = c.VersionsPublishedByA(alice).back();
  c.a.reset();  // A dies
  // The engines of this cluster own every partition (only the feed is told
  // otherwise): B lets A's go, then takes them over from the store.
  ASSERT_TRUE(c.b->RevokePartitions(kOwnedByA).ok());
  ASSERT_TRUE(c.b->AssignPartitions(kOwnedByA).ok());
  ASSERT_TRUE(c.feed->SetOwnedPartitions({0, 1, 2, 3}).ok());
  EXPECT_EQ(c.b->GetPublished({alice})[0].version, published);
  c.clock.Advance(100);
  (void)c.feed->Poll().value();
  c.b->Tick();
  EXPECT_THAT(c.Seen(s, alice), ElementsAre(Pair(State::kOnline, published)));
}

TEST(RemoteFeed, MalformedAndMisroutedRecordsAreCountedAndSkipped) {
  Cluster c;
  const std::string alice = UserIn(0, "alice-");
  const std::string bob = UserIn(0, "bob-");
  const SubscriberId s = c.Watch(alice);
  c.Seen(s, alice);

  ASSERT_TRUE(c.bus.Publish(BusRecordType::kChange, alice, "\xff not a protobuf").ok());
  ChangeEvent other;
  other.user_id = bob;
  other.version = 1;
  ASSERT_TRUE(c.bus.Publish(BusRecordType::kChange, alice, EncodeChangeEvent(other)).ok());
  // A valid change of alice, shown under a key of another partition.
  ChangeEvent forged;
  forged.user_id = alice;
  forged.state = State::kOnline;
  forged.version = 1;
  const uint64_t at = c.bus.Publish(BusRecordType::kChange, alice, EncodeChangeEvent(forged)).value();
  c.bus.Rekey(0, at, UserIn(3, "zed-"));
  ASSERT_TRUE(c.bus.Publish(BusRecordType::kSignal, alice, "signals are not the feed's").ok());
  c.a->Connect(Sig(alice)).value();  // and after them all, a good change

  const RemoteFeedPollResult r = c.Step();
  EXPECT_EQ(r.read, 5u);
  EXPECT_EQ(r.malformed, 2u);
  EXPECT_EQ(r.unknown_partition, 1u);
  EXPECT_EQ(r.delivered, 1u);
  EXPECT_EQ(r.first_error.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.first_error.message(), HasSubstr("malformed change event in partition 0"));
  EXPECT_THAT(c.Seen(s, alice),
              ElementsAre(Pair(State::kOnline, c.VersionsPublishedByA(alice).back())));

  const std::string metrics = c.feed->RenderMetrics();
  EXPECT_THAT(metrics, HasSubstr("presence_remote_feed_malformed_total 2"));
  EXPECT_THAT(metrics, HasSubstr("presence_remote_feed_unknown_partition_total 1"));

  // Alone, a misrouted record names itself.
  const uint64_t next = c.bus.Publish(BusRecordType::kChange, alice, EncodeChangeEvent(forged)).value();
  c.bus.Rekey(0, next, UserIn(2, "zed-"));
  const RemoteFeedPollResult misrouted = c.feed->Poll().value();
  EXPECT_EQ(misrouted.unknown_partition, 1u);
  EXPECT_EQ(misrouted.first_error.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(misrouted.first_error.message(), HasSubstr("a record from an unknown partition"));
}

// What a gateway needs to close its own connection of a device that came
// back through another gateway: the signals of the partitions it does not
// own, with their session and gateway; not disconnects, not the owned ones.
TEST(RemoteFeed, OnSignalIsToldOfSignalsNotOwnedButNotOfDisconnects) {
  std::vector<std::string> told;
  RemoteFeedOptions fo;
  fo.on_signal = [&](const Signal& s) {
    told.push_back(absl::StrCat(s.user_id, " ", s.device_id, " ", s.session_id, " ", s.gateway));
  };
  Cluster c(fo);
  const std::string remote = UserIn(0, "alice-");  // owned by A
  const std::string owned = UserIn(2, "bob-");     // owned by B
  Signal s = Sig(remote);
  s.device_id = "phone";
  s.session_id = 7;
  s.gateway = "gw-b";
  ASSERT_TRUE(c.bus.Publish(BusRecordType::kSignal, remote, EncodeSignal(s)).ok());
  ASSERT_TRUE(c.bus.Publish(BusRecordType::kSignal, remote, EncodeDisconnect(s, DisconnectKind::kClean)).ok());
  ASSERT_TRUE(c.bus.Publish(BusRecordType::kSignal, remote, "\xff not a signal").ok());
  Signal o = Sig(owned);
  o.gateway = "gw-b";
  ASSERT_TRUE(c.bus.Publish(BusRecordType::kSignal, owned, EncodeSignal(o)).ok());
  const RemoteFeedPollResult r = c.feed->Poll().value();
  EXPECT_EQ(r.malformed, 0u);  // signals are not change events: not counted
  EXPECT_THAT(told, ElementsAre(remote + " phone 7 gw-b"));
}

TEST(RemoteFeed, UnwatchedUsersAreCachedUpToTheBoundFromWhereTheFeedStarts) {
  Cluster c;
  std::vector<std::string> users;
  for (int i = 0; i < 6; ++i) {
    users.push_back(UserIn(i % 2, "u" + std::to_string(i) + "-"));
    c.a->Connect(Sig(users.back())).value();
    c.clock.Advance(100);
    c.a->Tick();  // published before the new feed below exists
  }
  RemoteFeedOptions o;
  o.from_beginning = true;
  o.max_unwatched_users = 4;
  c.feed.reset();
  c.feed = RemoteFeed::Create(&c.bus, c.fanout.get(), kOwnedByB, o).value();
  EXPECT_EQ(c.Step().read, 6u);
  EXPECT_LE(c.feed->Stats().cached_users, 4u);

  // The most recent change is held; the oldest was dropped, so that user
  // starts from B's own answer (nothing: B never published it) until its
  // next change.
  const SubscriberId s = c.Watch(users.back());
  EXPECT_THAT(c.Seen(s, users.back()),
              ElementsAre(Pair(State::kOnline, c.VersionsPublishedByA(users.back()).back())));
  ASSERT_TRUE(c.fanout->AddUsers(s, {users.front()}).ok());
  c.Step();
  EXPECT_THAT(c.Seen(s, users.front()), IsEmpty());
}

// Erase travels the bus: engine A publishes the erasure, B's feed hands it to
// B's fan-out, whose watchers drop the user, and a subscriber made after
// that sees nothing of it, as if it never existed (docs/design.md section 4).
TEST(RemoteFeed, AnErasureOnTheOwnerReachesWatchersOnOtherEngines) {
  Cluster c;
  const std::string alice = UserIn(0, "alice-");
  const SubscriberId s = c.Watch(alice);
  ASSERT_TRUE(c.a->Connect(Sig(alice)).ok());
  c.Step();
  (void)c.Seen(s, alice);
  ASSERT_EQ(c.view.list.count(alice), 1u);

  ASSERT_TRUE(c.a->Erase(alice).ok());
  c.Step();
  (void)c.Seen(s, alice);
  EXPECT_EQ(c.view.list.count(alice), 0u);  // told to drop her

  const SubscriberId late = c.fanout->Subscribe().value();
  ASSERT_TRUE(c.fanout->AddUsers(late, {alice}).ok());
  c.Step();
  Batch b;
  ASSERT_TRUE(c.fanout->Poll(late, &b).value());
  v1::DiffBatch m;
  ASSERT_TRUE(m.ParseFromString(b.Encode()));
  EXPECT_TRUE(m.snapshot());
  EXPECT_EQ(m.users_size(), 0) << m.ShortDebugString();
}

TEST(RemoteFeed, CreateRejectsBadArguments) {
  Cluster c;
  EXPECT_EQ(RemoteFeed::Create(nullptr, c.fanout.get(), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RemoteFeed::Create(&c.bus, c.fanout.get(), {4}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.feed->Seek(4, 0).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace presence::testing
