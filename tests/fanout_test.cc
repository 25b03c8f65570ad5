// The promises of docs/design.md section 3 and include/presence/fanout.h, one test
// each, on the manual clock.
#include "presence/fanout.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fanout_client.h"
#include "tests/test_util.h"

namespace presence::testing {
namespace {

using ::testing::HasSubstr;

struct FanoutEngine : TestEngine {
  explicit FanoutEngine(FanoutOptions fo = Unthrottled(), Options o = Options())
      : TestEngine(o), fanout(Fanout::Create(engine.get(), fo).value()) {}
  static FanoutOptions Unthrottled() {
    FanoutOptions fo;
    fo.rate_per_sec = 0;
    return fo;
  }
  DeviceHandle Online(absl::string_view user, absl::string_view device = "web") {
    return engine->Connect(Sig(user, device)).value();
  }
  SubscriberId Sub(std::vector<absl::string_view> users, std::string owner = "") {
    SubscriberOptions so;
    so.owner_user_id = owner;
    SubscriberId s = fanout->Subscribe(so).value();
    EXPECT_TRUE(fanout->AddUsers(s, users).ok());
    return s;
  }
  std::unique_ptr<Fanout> fanout;
};

TEST(Fanout, FirstBatchIsASnapshotOfTheInterestSetThenOnlyDiffs) {
  FanoutEngine t;
  t.Online("alice");
  t.Online("bob");
  t.engine->Tick();
  SubscriberId s = t.Sub({"alice", "bob", "carol"});
  t.Run(100);
  ClientView v;
  ASSERT_EQ(Drain(t.fanout.get(), s, &v), 1u);
  EXPECT_EQ(v.snapshots, 1u);
  // carol was never published: nothing is said of her, as of anyone that
  // never existed (docs/design.md section 4, erase).
  EXPECT_EQ(v.list.size(), 2u);
  EXPECT_EQ(v.StateOf("alice"), State::kOnline);
  EXPECT_EQ(v.StateOf("carol"), std::nullopt);
  ASSERT_TRUE(t.engine->SetOverride("bob", OverrideState::kDnd).ok());
  t.Run(1000);  // bob's last change was published at the first tick: min_dwell
  Batch b;
  ASSERT_TRUE(t.fanout->Poll(s, &b).value());
  const v1::DiffBatch m = v.Apply(b);
  EXPECT_FALSE(m.snapshot());
  ASSERT_EQ(m.users_size(), 1);
  EXPECT_EQ(m.users(0).user_id(), "bob");
  EXPECT_EQ(v.StateOf("bob"), State::kDnd);
  t.Run(500);
  EXPECT_FALSE(t.fanout->Poll(s, &b).value());  // nothing changed, nothing sent
}

TEST(Fanout, ABatchKeepsTheLatestStateAndDropsUsersBackWhereTheyWere) {
  FanoutOptions fo = FanoutEngine::Unthrottled();
  fo.flush_interval_ms = 1000;
  Options o;
  o.min_dwell_ms = 0;
  FanoutEngine t(fo, o);
  DeviceHandle a = t.Online("alice");
  DeviceHandle b = t.Online("bob");
  SubscriberId s = t.Sub({"alice", "bob"});
  t.Run(100);  // the snapshot flush; the next is 1000 ms later
  ClientView v;
  Drain(t.fanout.get(), s, &v);
  // Within one flush interval: alice goes away and comes back (A -> B -> A),
  // bob goes away, then DND.
  ASSERT_TRUE(t.engine->Beat(a, Activity::kIdle).ok());
  ASSERT_TRUE(t.engine->Beat(b, Activity::kIdle).ok());
  t.Run(300);
  ASSERT_TRUE(t.engine->Beat(a, Activity::kActive).ok());
  ASSERT_TRUE(t.engine->SetOverride("bob", OverrideState::kDnd).ok());
  t.Run(700);
  Batch batch;
  ASSERT_TRUE(t.fanout->Poll(s, &batch).value());
  const v1::DiffBatch m = v.Apply(batch);
  ASSERT_EQ(m.users_size(), 1);
  EXPECT_EQ(m.users(0).user_id(), "bob");
  EXPECT_EQ(m.users(0).state(), v1::STATE_DND);
}

TEST(Fanout, MaxBatchFlushesBeforeTheInterval) {
  FanoutOptions fo = FanoutEngine::Unthrottled();
  fo.flush_interval_ms = 10000;
  fo.max_batch = 3;
  FanoutEngine t(fo);
  SubscriberId s = t.Sub({"u1", "u2", "u3", "u4"});
  t.engine->Tick();  // the snapshot goes at the first tick
  ClientView v;
  Drain(t.fanout.get(), s, &v);
  t.Online("u1");
  t.Online("u2");
  t.Run(100);
  EXPECT_EQ(Drain(t.fanout.get(), s, &v), 0u);  // 2 < max_batch: waits for the interval
  t.Online("u3");
  t.Run(100);
  EXPECT_EQ(Drain(t.fanout.get(), s, &v), 1u);
  EXPECT_EQ(v.StateOf("u3"), State::kOnline);
}

TEST(Fanout, ATopicSectionIsEncodedOnceAndSharedByItsSubscribers) {
  FanoutEngine t;
  const std::vector<absl::string_view> team = {"alice", "bob", "carol"};
  t.Online("alice");
  t.engine->Tick();
  ASSERT_TRUE(t.fanout->AddMembers("team", team).ok());
  std::vector<SubscriberId> subs;
  for (int i = 0; i < 3; ++i) {
    subs.push_back(t.fanout->Subscribe().value());
    ASSERT_TRUE(t.fanout->Join(subs.back(), "team").ok());
  }
  t.Run(100);
  std::vector<ClientView> views(3);
  for (int i = 0; i < 3; ++i) Drain(t.fanout.get(), subs[i], &views[i]);
  t.Online("bob");
  t.Run(100);
  std::vector<Batch> got(3);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(t.fanout->Poll(subs[i], &got[i]).value());
    views[i].Apply(got[i]);
    EXPECT_EQ(views[i].StateOf("bob"), State::kOnline);
    ASSERT_EQ(got[i].parts.size(), 1u);
  }
  EXPECT_EQ(got[0].parts[0].get(), got[1].parts[0].get());  // the same buffer
  EXPECT_EQ(got[1].parts[0].get(), got[2].parts[0].get());
  EXPECT_NE(got[0].header, got[1].header);  // each with its own header
  // Sections: the first (every member, when the topic was made), then bob's.
  EXPECT_THAT(t.fanout->RenderMetrics(), HasSubstr("presence_fanout_topic_sections_total 2\n"));
}

TEST(Fanout, LargeTopicsSwitchToIntervalModeThenToCountsOnly) {
  FanoutOptions fo = FanoutEngine::Unthrottled();
  fo.interval_mode_members = 4;
  fo.large_topic_interval_ms = 1000;
  fo.counts_only_members = 8;
  FanoutEngine t(fo);
  std::vector<std::string> names;
  for (int i = 0; i < 6; ++i) names.push_back("m" + std::to_string(i));
  std::vector<absl::string_view> ids(names.begin(), names.end());
  ASSERT_TRUE(t.fanout->AddMembers("big", ids).ok());
  SubscriberId s = t.fanout->Subscribe().value();
  ASSERT_TRUE(t.fanout->Join(s, "big").ok());
  t.Run(100);
  ClientView v;
  Drain(t.fanout.get(), s, &v);
  std::vector<DeviceHandle> handles;
  // Interval mode: changes every 100 ms come out at most once a second.
  for (int i = 0; i < 6; ++i) {
    handles.push_back(t.Online(ids[i]));
    t.Run(100);
  }
  t.Run(1000);
  EXPECT_LE(Drain(t.fanout.get(), s, &v), 2u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(v.StateOf(names[i]), State::kOnline) << names[i];
  // Counts only: past 8 members, sections carry occupancy and no users.
  for (int i = 6; i < 10; ++i) names.push_back("m" + std::to_string(i));
  ids.assign(names.begin(), names.end());
  ASSERT_TRUE(t.fanout->AddMembers("big", ids).ok());
  for (auto h : handles) ASSERT_TRUE(t.engine->Beat(h).ok());
  t.Run(1100);
  Drain(t.fanout.get(), s, &v);
  EXPECT_TRUE(v.topics["big"].empty());
  ASSERT_TRUE(v.counts.count("big"));
  EXPECT_EQ(v.counts["big"].online(), 6u);
  EXPECT_EQ(v.counts["big"].offline(), 4u);
}

TEST(Fanout, ThrottledSubscriberGetsCoalescedDiffsLaterNeverAGap) {
  FanoutOptions fo;
  fo.rate_per_sec = 2;
  fo.burst = 1;
  Options o;
  o.min_dwell_ms = 0;
  FanoutEngine t(fo, o);
  DeviceHandle h = t.Online("alice");
  SubscriberId s = t.Sub({"alice", "bob"});
  t.Run(100);
  ClientView v;
  size_t batches = Drain(t.fanout.get(), s, &v);
  for (int i = 0; i < 30; ++i) {  // alice flips every 100 ms for 3 s
    ASSERT_TRUE(t.engine->Beat(h, i % 2 ? Activity::kActive : Activity::kIdle).ok());
    t.Run(100);
    batches += Drain(t.fanout.get(), s, &v);
  }
  ASSERT_TRUE(t.engine->SetOverride("bob", OverrideState::kDnd).ok());
  t.Online("bob");
  t.Run(2000);
  batches += Drain(t.fanout.get(), s, &v);
  EXPECT_LE(batches, 1u + 2 * 5 + 1);  // about 2 per second
  EXPECT_EQ(v.StateOf("alice"), t.StateOf("alice"));
  EXPECT_EQ(v.StateOf("bob"), State::kDnd);
  EXPECT_THAT(t.fanout->RenderMetrics(), ::testing::Not(HasSubstr("presence_fanout_throttled_total 0\n")));
}

TEST(Fanout, ALaggingSubscriberGetsOneSnapshotInsteadOfTheBacklog) {
  FanoutOptions fo = FanoutEngine::Unthrottled();
  fo.max_outbox_batches = 3;
  Options o;
  o.min_dwell_ms = 0;
  FanoutEngine t(fo, o);
  DeviceHandle h = t.Online("alice");
  SubscriberId s = t.Sub({"alice"});
  for (int i = 0; i < 20; ++i) {  // never polled
    ASSERT_TRUE(t.engine->Beat(h, i % 2 ? Activity::kActive : Activity::kIdle).ok());
    t.Run(100);
  }
  ClientView v;
  Batch b;
  ASSERT_TRUE(t.fanout->Poll(s, &b).value());
  EXPECT_TRUE(b.snapshot);
  v.last_seq = b.sequence - 1;  // a snapshot restarts the client's view
  v.Apply(b);
  EXPECT_EQ(v.StateOf("alice"), t.StateOf("alice"));
  EXPECT_THAT(t.fanout->RenderMetrics(), HasSubstr("presence_fanout_lagging_total 1\n"));
  ASSERT_TRUE(t.engine->Beat(h, Activity::kIdle).ok());
  t.Run(100);
  Drain(t.fanout.get(), s, &v);  // back to diffs, in sequence
  EXPECT_EQ(v.StateOf("alice"), t.StateOf("alice"));
}

TEST(Fanout, ResumeReplaysWhatWasMissedOrSendsASnapshot) {
  FanoutOptions fo = FanoutEngine::Unthrottled();
  fo.resume_window = 4;
  Options o;
  o.min_dwell_ms = 0;
  FanoutEngine t(fo, o);
  DeviceHandle h = t.Online("alice");
  SubscriberId s = t.Sub({"alice"});
  std::vector<Batch> got;
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(t.engine->Beat(h, i % 2 ? Activity::kActive : Activity::kIdle).ok());
    t.Run(100);
    Batch b;
    while (t.fanout->Poll(s, &b).value()) got.push_back(b);
  }
  ASSERT_EQ(got.size(), 6u);  // the snapshot, then 5 diffs
  EXPECT_EQ(got.back().sequence, 6u);
  // The client applied up to 4 and lost 5 and 6.
  ASSERT_TRUE(t.fanout->Resume(s, 4).ok());
  Batch b;
  ASSERT_TRUE(t.fanout->Poll(s, &b).value());
  EXPECT_EQ(b.sequence, 5u);
  EXPECT_EQ(b.Encode(), got[4].Encode());
  ASSERT_TRUE(t.fanout->Poll(s, &b).value());
  EXPECT_EQ(b.sequence, 6u);
  EXPECT_FALSE(t.fanout->Poll(s, &b).value());
  // Too far back: a snapshot, with the next sequence number.
  ASSERT_TRUE(t.fanout->Resume(s, 1).ok());
  ASSERT_TRUE(t.fanout->Poll(s, &b).value());
  EXPECT_TRUE(b.snapshot);
  EXPECT_EQ(b.sequence, 7u);
  ClientView v;
  v.last_seq = 6;
  v.Apply(b);
  EXPECT_EQ(v.StateOf("alice"), t.StateOf("alice"));
  EXPECT_TRUE(absl::IsInvalidArgument(t.fanout->Resume(s, 99)));
  EXPECT_TRUE(t.fanout->Resume(s, 7).ok());  // up to date: nothing to do
  EXPECT_FALSE(t.fanout->Poll(s, &b).value());
}

TEST(Fanout, InvisibleIsOfflineToEveryoneButTheOwnersOwnList) {
  FanoutEngine t;
  t.Online("alice");
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kInvisible).ok());
  ASSERT_TRUE(t.fanout->AddMembers("team", {"alice", "bob"}).ok());
  SubscriberId own = t.Sub({"alice"}, "alice");
  SubscriberId other = t.Sub({"alice"}, "bob");
  SubscriberId topic_own = t.fanout->Subscribe({"alice", nullptr}).value();
  ASSERT_TRUE(t.fanout->Join(topic_own, "team").ok());
  t.Run(200);
  ClientView v_own, v_other, v_topic;
  Drain(t.fanout.get(), own, &v_own);
  Drain(t.fanout.get(), other, &v_other);
  Drain(t.fanout.get(), topic_own, &v_topic);
  EXPECT_EQ(v_own.StateOf("alice"), State::kOnline);
  // She went invisible before her first publication: to others she is
  // someone who never existed (no entry at all, so no hint of devices).
  EXPECT_EQ(v_other.StateOf("alice"), std::nullopt);
  EXPECT_EQ(v_topic.StateOf("alice"), std::nullopt);  // topics carry the public view
  // Going visible again reaches everyone.
  ASSERT_TRUE(t.engine->ClearOverrides("alice").ok());
  t.Run(1000);
  Drain(t.fanout.get(), other, &v_other);
  Drain(t.fanout.get(), topic_own, &v_topic);
  EXPECT_EQ(v_other.StateOf("alice"), State::kOnline);
  EXPECT_EQ(v_topic.StateOf("alice"), State::kOnline);
}

TEST(Fanout, ASubscriberNeverReceivesUsersOutsideItsInterest) {
  FanoutEngine t;
  ASSERT_TRUE(t.fanout->AddMembers("team", {"alice", "bob"}).ok());
  SubscriberId s = t.Sub({"carol"});
  t.Run(100);
  for (const char* u : {"alice", "bob", "carol", "dave"}) t.Online(u);
  t.Run(500);
  ClientView v;
  Drain(t.fanout.get(), s, &v);
  EXPECT_EQ(v.ever_seen, (std::set<std::string>{"carol"}));
  ASSERT_TRUE(t.fanout->Join(s, "team").ok());
  ASSERT_TRUE(t.fanout->RemoveUsers(s, {"carol"}).ok());
  t.Run(100);
  Drain(t.fanout.get(), s, &v);
  EXPECT_EQ(v.list.count("carol"), 0u);  // told it left
  EXPECT_EQ(v.topics["team"].size(), 2u);
  EXPECT_EQ(v.ever_seen, (std::set<std::string>{"alice", "bob", "carol"}));
}

TEST(Fanout, ListAndMembershipChangesReachTheClient) {
  FanoutEngine t;
  t.Online("alice");
  t.Online("bob");
  t.Online("carol");
  ASSERT_TRUE(t.fanout->AddMembers("team", {"alice"}).ok());
  SubscriberId s = t.Sub({"alice"});
  ASSERT_TRUE(t.fanout->Join(s, "team").ok());
  t.Run(100);
  ClientView v;
  Drain(t.fanout.get(), s, &v);
  ASSERT_TRUE(t.fanout->ReplaceUsers(s, {"bob"}).ok());
  ASSERT_TRUE(t.fanout->ReplaceMembers("team", {"bob", "carol"}).ok());
  t.Run(100);
  Drain(t.fanout.get(), s, &v);
  EXPECT_EQ(v.list.size(), 1u);
  EXPECT_EQ(v.StateOf("bob"), State::kOnline);
  EXPECT_EQ(v.topics["team"].count("alice"), 0u);
  EXPECT_EQ(v.topics["team"].count("carol"), 1u);
  ASSERT_TRUE(t.fanout->Leave(s, "team").ok());
  t.Run(100);
  Drain(t.fanout.get(), s, &v);
  EXPECT_EQ(v.topics.count("team"), 0u);
}

// A user that leaves a list while it has news, and a user that takes its place
// before the next batch: the batch says the first is gone and carries the
// second, once each, and nothing of the first's news.
TEST(Fanout, AUserLeavingAListWithNewsIsRemovedAndTheNextOneIsSentOnce) {
  Options o;
  o.min_dwell_ms = 0;
  FanoutEngine t(FanoutEngine::Unthrottled(), o);
  t.Online("alice");
  t.Online("bob");
  t.Online("carol");
  SubscriberId s = t.Sub({"alice", "bob"});
  t.Run(100);
  ClientView v;
  Drain(t.fanout.get(), s, &v);
  ASSERT_EQ(v.list.size(), 2u);
  ASSERT_TRUE(t.engine->SetOverride("alice", OverrideState::kDnd).ok());
  ASSERT_TRUE(t.engine->SetOverride("bob", OverrideState::kAway).ok());
  t.engine->Tick();  // alice's and bob's news wait for the next flush
  ASSERT_TRUE(t.fanout->RemoveUsers(s, {"alice"}).ok());
  ASSERT_TRUE(t.fanout->AddUsers(s, {"carol"}).ok());
  t.Run(100);
  Batch b;
  ASSERT_TRUE(t.fanout->Poll(s, &b).value());
  const v1::DiffBatch m = v.Apply(b);
  std::vector<std::string> said;
  for (const auto& u : m.users()) said.push_back(u.user_id() + (u.removed() ? ":removed" : ""));
  EXPECT_THAT(said, ::testing::UnorderedElementsAre("alice:removed", "bob", "carol"));
  EXPECT_EQ(v.StateOf("alice"), std::nullopt);
  EXPECT_EQ(v.StateOf("bob"), State::kAway);
  EXPECT_EQ(v.StateOf("carol"), State::kOnline);
  // Removed, then taken back before the next batch: sent once, as it is now.
  ASSERT_TRUE(t.engine->SetOverride("carol", OverrideState::kDnd).ok());
  t.engine->Tick();
  ASSERT_TRUE(t.fanout->RemoveUsers(s, {"carol"}).ok());
  ASSERT_TRUE(t.fanout->AddUsers(s, {"carol"}).ok());
  t.Run(100);
  ASSERT_TRUE(t.fanout->Poll(s, &b).value());
  const v1::DiffBatch m2 = v.Apply(b);
  ASSERT_EQ(m2.users_size(), 1);
  EXPECT_EQ(m2.users(0).user_id(), "carol");
  EXPECT_FALSE(m2.users(0).removed());
  EXPECT_EQ(v.StateOf("carol"), State::kDnd);
}

// A user that leaves a list, is erased and is put back on the list before
// the next batch: the subscriber, which was told of it, hears of its removal
// (erase equals never existed), not nothing.
TEST(Fanout, AUserErasedWhileOffTheListIsRemovedWhenItComesBack) {
  FanoutEngine t;
  t.Online("alice");
  SubscriberId s = t.Sub({"alice"});
  t.Run(100);
  ClientView v;
  Drain(t.fanout.get(), s, &v);
  ASSERT_EQ(v.StateOf("alice"), State::kOnline);
  ASSERT_TRUE(t.fanout->RemoveUsers(s, {"alice"}).ok());
  ASSERT_TRUE(t.engine->Erase("alice").ok());
  t.engine->Tick();  // no flush yet: its interval has not passed
  ASSERT_TRUE(t.fanout->AddUsers(s, {"alice"}).ok());
  t.Run(100);
  Drain(t.fanout.get(), s, &v);
  EXPECT_EQ(v.list.count("alice"), 0u);
  EXPECT_EQ(v.StateOf("alice"), std::nullopt);
}

struct RecordingSink : Sink {
  void Deliver(SubscriberId id, const Batch& b) override {
    batches.push_back(b);
    ids.push_back(id);
    if (on_deliver) on_deliver();
  }
  std::vector<Batch> batches;
  std::vector<SubscriberId> ids;
  std::function<void()> on_deliver;
};

TEST(Fanout, PushSinkGetsBatchesAndMayCallBack) {
  FanoutEngine t;
  RecordingSink sink;
  SubscriberId s = t.fanout->Subscribe({"", &sink}).value();
  ASSERT_TRUE(t.fanout->AddUsers(s, {"alice"}).ok());
  sink.on_deliver = [&] { ASSERT_TRUE(t.fanout->AddUsers(s, {"bob"}).ok()); };
  t.Run(100);
  ASSERT_EQ(sink.batches.size(), 1u);
  EXPECT_EQ(sink.ids[0], s);
  sink.on_deliver = nullptr;
  t.Online("bob");
  t.Run(100);
  ClientView v;
  for (const Batch& b : sink.batches) v.Apply(b);
  EXPECT_EQ(v.StateOf("bob"), State::kOnline);
  Batch b;
  EXPECT_TRUE(absl::IsFailedPrecondition(t.fanout->Poll(s, &b).status()));
}

TEST(Fanout, MetricsCountDelivery) {
  FanoutEngine t;
  SubscriberId s = t.Sub({"alice"});
  t.Online("alice");
  t.Run(200);
  ClientView v;
  Drain(t.fanout.get(), s, &v);
  const std::string m = t.fanout->RenderMetrics();
  for (const char* name :
       {"presence_fanout_batches_total", "presence_fanout_user_diffs_total",
        "presence_fanout_bytes_total", "presence_fanout_backlog_batches",
        "presence_fanout_throttled_total", "presence_fanout_lagging_subscribers"}) {
    EXPECT_THAT(m, HasSubstr(std::string("# TYPE ") + name + " "));
  }
  EXPECT_THAT(m, HasSubstr("presence_fanout_batches_total 1\n"));
  EXPECT_THAT(m, HasSubstr("presence_fanout_subscribers 1\n"));
}

TEST(FanoutBadInput, EachGetsAClearErrorAndChangesNothing) {
  FanoutOptions fo = FanoutEngine::Unthrottled();
  fo.max_list_users = 2;
  fo.max_topics_per_subscriber = 1;
  fo.max_topic_members = 2;
  FanoutEngine t(fo);
  t.Online("alice");
  t.Online("a");
  t.engine->Tick();
  SubscriberId s = t.Sub({"alice"});
  EXPECT_TRUE(absl::IsNotFound(t.fanout->AddUsers(999, {"x"})));
  EXPECT_TRUE(absl::IsNotFound(t.fanout->Close(999)));
  Batch b;
  EXPECT_TRUE(absl::IsNotFound(t.fanout->Poll(999, &b).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(t.fanout->Poll(s, nullptr).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(t.fanout->Resume(s, 5)));  // from the future
  EXPECT_TRUE(absl::IsNotFound(t.fanout->Join(s, "empty-topic")));
  EXPECT_TRUE(absl::IsInvalidArgument(t.fanout->Join(s, "")));
  EXPECT_TRUE(absl::IsInvalidArgument(t.fanout->AddUsers(s, {"ok", ""})));
  EXPECT_TRUE(absl::IsResourceExhausted(t.fanout->AddUsers(s, {"b", "c"})));
  EXPECT_TRUE(absl::IsResourceExhausted(t.fanout->AddMembers("t", {"a", "b", "c"})));
  ASSERT_TRUE(t.fanout->AddMembers("t1", {"a"}).ok());
  ASSERT_TRUE(t.fanout->AddMembers("t2", {"a"}).ok());
  ASSERT_TRUE(t.fanout->Join(s, "t1").ok());
  EXPECT_TRUE(absl::IsResourceExhausted(t.fanout->Join(s, "t2")));
  t.Run(100);
  ClientView v;
  Drain(t.fanout.get(), s, &v);
  // Nothing the failed calls named made it in.
  EXPECT_EQ(v.list.size(), 1u);
  EXPECT_EQ(v.topics.size(), 1u);
  EXPECT_EQ(v.ever_seen, (std::set<std::string>{"alice", "a"}));
  ASSERT_TRUE(t.fanout->Close(s).ok());
  EXPECT_TRUE(absl::IsNotFound(t.fanout->Close(s)));
  EXPECT_TRUE(absl::IsNotFound(t.fanout->Poll(s, &b).status()));
  EXPECT_FALSE(Fanout::Create(nullptr).ok());
}

// docs/design.md section 4: after Erase, whoever was told of the user is told to
// drop it, and what a new subscriber sees is what it would see had the user
// never existed: nothing of it.
TEST(Fanout, AnErasedUserIsRemovedFromEveryViewAndNewOnesNeverSeeIt) {
  FanoutEngine t;
  t.Online("alice");
  t.Online("bob");
  ASSERT_TRUE(t.fanout->AddMembers("team", {"alice", "bob"}).ok());
  SubscriberId s = t.Sub({"alice", "bob"});
  SubscriberId own = t.Sub({"alice"}, "alice");
  ASSERT_TRUE(t.fanout->Join(s, "team").ok());
  t.Run(100);
  ClientView v, v_own;
  Drain(t.fanout.get(), s, &v);
  Drain(t.fanout.get(), own, &v_own);
  ASSERT_EQ(v.StateOf("alice"), State::kOnline);
  ASSERT_EQ(v.topics["team"].count("alice"), 1u);
  ASSERT_EQ(v_own.StateOf("alice"), State::kOnline);

  ASSERT_TRUE(t.engine->Erase("alice").ok());
  t.Run(100);
  Drain(t.fanout.get(), s, &v);
  Drain(t.fanout.get(), own, &v_own);
  EXPECT_EQ(v.list.count("alice"), 0u);
  EXPECT_EQ(v.topics["team"].count("alice"), 0u);
  EXPECT_EQ(v.StateOf("bob"), State::kOnline);
  EXPECT_EQ(v_own.list.count("alice"), 0u);

  SubscriberId late = t.Sub({"alice", "bob"});
  ASSERT_TRUE(t.fanout->Join(late, "team").ok());
  t.Run(100);
  ClientView v_late;
  Drain(t.fanout.get(), late, &v_late);
  EXPECT_EQ(v_late.ever_seen, (std::set<std::string>{"bob"}));

  // Back, anew: everyone hears of it again.
  t.clock.Advance(1);
  t.Online("alice", "phone");
  t.Run(1000);
  Drain(t.fanout.get(), s, &v);
  Drain(t.fanout.get(), late, &v_late);
  EXPECT_EQ(v.StateOf("alice"), State::kOnline);
  EXPECT_EQ(v_late.StateOf("alice"), State::kOnline);
}

}  // namespace
}  // namespace presence::testing
