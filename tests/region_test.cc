// presence::RegionMirror (include/presence/region.h): the merge rule, the
// hybrid logical clock, bad input, and randomized convergence of 2 and 3
// regions across partitions.
#include "presence/region.h"

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "presence/bus.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/wire.h"
#include "presence/v1/presence.pb.h"
#include "src/core/wire_internal.h"
#include "tests/flaky.h"

namespace presence {
namespace {

using ::testing::HasSubstr;

// The regions' buses: a failing publish is a partition between regions.
using TestBus = testing::FlakyBus;

// A clock that may be set anywhere, backwards too.
class SetClock final : public Clock {
 public:
  int64_t now = 1'000;
  int64_t NowMs() const override { return now; }
};

ChangeEvent Event(const std::string& user, State state, uint64_t version) {
  ChangeEvent e;
  e.user_id = user;
  e.previous = e.previous_self = State::kOffline;
  e.state = e.self_state = state;
  e.version = version;
  e.last_seen_ms = e.self_last_seen_ms = 500 + static_cast<int64_t>(version);
  e.devices.live[0] = e.self_devices.live[0] = state == State::kOffline ? 0 : 1;
  return e;
}

std::string Mirrored(const ChangeEvent& e, uint64_t hlc, const std::string& region,
                     bool erased = false) {
  v1::MirroredChange m;
  internal::ChangeEventToProto(e, /*include_self=*/true, m.mutable_event());
  m.set_hlc(hlc);
  m.set_region(region);
  m.set_erased(erased);
  return m.SerializeAsString();
}

// A tombstone as RegionMirror::Erase publishes it.
std::string Tombstone(const std::string& user, uint64_t hlc, const std::string& region) {
  ChangeEvent e;
  e.user_id = user;
  e.cause = Cause::kMerge;
  return Mirrored(e, hlc, region, /*erased=*/true);
}

uint64_t Hlc(int64_t ms, uint64_t logical) {
  return (static_cast<uint64_t>(ms) << kHlcLogicalBits) | logical;
}

// One region: its clock, its outbound bus and its mirror.
struct Region {
  SetClock clock;
  TestBus out{4};
  std::unique_ptr<RegionMirror> mirror;
};

// A mirror for `region`, named `id`, reading the buses `inbound`.
std::unique_ptr<RegionMirror> MakeMirror(Region& region, const std::string& id,
                                         std::vector<Bus*> inbound,
                                         ChangeListener* listener = nullptr,
                                         size_t max_pending = 1000) {
  RegionMirrorOptions o;
  o.region_id = id;
  o.clock = &region.clock;
  o.outbound = &region.out;
  o.inbound = std::move(inbound);
  o.listener = listener;
  o.max_pending = max_pending;
  return RegionMirror::Create(o).value();
}

void Wire(std::vector<std::unique_ptr<Region>>& regions, const std::vector<std::string>& ids,
          size_t max_pending = 1000) {
  for (size_t i = 0; i < ids.size(); ++i) regions.push_back(std::make_unique<Region>());
  for (size_t i = 0; i < ids.size(); ++i) {
    std::vector<Bus*> inbound;
    for (size_t j = 0; j < ids.size(); ++j) {
      if (j != i) inbound.push_back(&regions[j]->out);
    }
    regions[i]->mirror = MakeMirror(*regions[i], ids[i], std::move(inbound), nullptr, max_pending);
  }
}

// ---- Bad input --------------------------------------------------------------

TEST(RegionBadInput, InvalidOptionsAreRejected) {
  TestBus out(1), in(1);
  auto create = [&](auto edit) {
    RegionMirrorOptions o;
    o.region_id = "eu";
    o.outbound = &out;
    o.inbound = {&in};
    edit(o);
    return RegionMirror::Create(o).status();
  };
  EXPECT_TRUE(create([](RegionMirrorOptions&) {}).ok());
  for (std::string bad : {std::string(), std::string(kMaxRegionIdBytes + 1, 'a'),
                          std::string("eu west"), std::string("eu\n"), std::string("\xc3\xa9u")}) {
    auto st = create([&](RegionMirrorOptions& o) { o.region_id = bad; });
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << bad;
    EXPECT_THAT(st.message(), HasSubstr("region id"));
  }
  EXPECT_TRUE(create([](RegionMirrorOptions& o) { o.region_id = std::string(kMaxRegionIdBytes, 'a'); }).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(create([](RegionMirrorOptions& o) { o.outbound = nullptr; })));
  EXPECT_TRUE(absl::IsInvalidArgument(create([](RegionMirrorOptions& o) { o.inbound = {nullptr}; })));
  EXPECT_TRUE(absl::IsInvalidArgument(create([&](RegionMirrorOptions& o) { o.inbound = {&in, &in}; })));
  EXPECT_TRUE(absl::IsInvalidArgument(create([&](RegionMirrorOptions& o) { o.inbound = {&out}; })));
  EXPECT_TRUE(absl::IsInvalidArgument(create([](RegionMirrorOptions& o) { o.max_pending = 0; })));
  EXPECT_TRUE(absl::IsInvalidArgument(create([](RegionMirrorOptions& o) { o.read_batch = 0; })));
}

TEST(RegionBadInput, AnInvalidEventIsRefusedAndChangesNothing) {
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"eu", "us"});
  ChangeEvent bad = Event("", State::kOnline, 1);
  EXPECT_TRUE(absl::IsInvalidArgument(r[0]->mirror->Mirror({Event("alice", State::kOnline, 1), bad})));
  // Version 0 marks an erasure to the listener: a change may not carry it.
  auto v0 = r[0]->mirror->Mirror({Event("alice", State::kOnline, 0)});
  EXPECT_TRUE(absl::IsInvalidArgument(v0)) << v0;
  EXPECT_THAT(v0.message(), HasSubstr("version 0"));
  EXPECT_TRUE(absl::IsInvalidArgument(r[0]->mirror->Erase("")));
  EXPECT_TRUE(absl::IsInvalidArgument(r[0]->mirror->Erase(std::string(kMaxUserIdBytes + 1, 'a'))));
  EXPECT_FALSE(r[0]->mirror->Get("alice").has_value());
  EXPECT_EQ(r[0]->mirror->LastHlc(), 0u);
  EXPECT_EQ(r[0]->out.EndOffset(PartitionFor("alice", 4)).value(), 0u);
}

TEST(RegionBadInput, ARegionIdCollisionIsAFailedPreconditionNamingTheRegion) {
  // "us" publishes a record under "eu"'s id: two regions configured alike.
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"eu", "us"});
  ASSERT_TRUE(r[1]->out.Publish(BusRecordType::kChange, "alice",
                                Mirrored(Event("alice", State::kOnline, 1), Hlc(1000, 0), "us")).ok());
  ASSERT_TRUE(r[1]->out.Publish(BusRecordType::kChange, "alice",
                                Mirrored(Event("alice", State::kAway, 2), Hlc(1000, 1), "eu")).ok());
  for (int i = 0; i < 2; ++i) {  // sticky: every Poll says so until fixed
    auto polled = r[0]->mirror->Poll();
    ASSERT_TRUE(absl::IsFailedPrecondition(polled.status())) << polled.status();
    EXPECT_THAT(polled.status().message(), HasSubstr("region id collision"));
    EXPECT_THAT(polled.status().message(), HasSubstr("\"eu\""));
  }
  // What came before the collision was merged; the colliding record was not.
  auto alice = r[0]->mirror->Get("alice");
  ASSERT_TRUE(alice.has_value());
  EXPECT_EQ(alice->region, "us");
  EXPECT_EQ(alice->event.state, State::kOnline);
}

TEST(RegionBadInput, MalformedRecordsAreCountedAndSkipped) {
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"eu", "us"});
  r[1]->out.max_read = 1;  // and short reads are read past
  Bus& bus = r[1]->out;
  const ChangeEvent ok = Event("alice", State::kOnline, 1);
  ChangeEvent bad_state = ok;
  bad_state.state = static_cast<State>(9);
  ASSERT_TRUE(bus.Publish(BusRecordType::kChange, "alice", "\xff\xff not a proto").ok());
  ASSERT_TRUE(bus.Publish(BusRecordType::kSignal, "alice", Mirrored(ok, Hlc(1000, 0), "us")).ok());
  ASSERT_TRUE(bus.Publish(BusRecordType::kChange, "bob", Mirrored(ok, Hlc(1000, 0), "us")).ok());  // key is not the user
  ASSERT_TRUE(bus.Publish(BusRecordType::kChange, "alice", Mirrored(ok, 0, "us")).ok());
  ASSERT_TRUE(bus.Publish(BusRecordType::kChange, "alice", Mirrored(ok, uint64_t{1} << 63, "us")).ok());
  ASSERT_TRUE(bus.Publish(BusRecordType::kChange, "alice", Mirrored(ok, Hlc(1000, 0), "")).ok());
  ASSERT_TRUE(bus.Publish(BusRecordType::kChange, "alice", Mirrored(ok, Hlc(1000, 0), "u s")).ok());
  ASSERT_TRUE(bus.Publish(BusRecordType::kChange, "alice", Mirrored(bad_state, Hlc(1000, 0), "us")).ok());
  ChangeEvent version0 = ok;  // version 0 marks a tombstone; a change may not have it
  version0.version = 0;
  ASSERT_TRUE(bus.Publish(BusRecordType::kChange, "alice", Mirrored(version0, Hlc(1000, 0), "us")).ok());
  // Tombstones: one without a user (no event), one whose user is not the key,
  // one whose user id is invalid (key and event alike).
  v1::MirroredChange no_user;
  no_user.set_hlc(Hlc(1000, 0));
  no_user.set_region("us");
  no_user.set_erased(true);
  ASSERT_TRUE(bus.Publish(BusRecordType::kChange, "alice", no_user.SerializeAsString()).ok());
  ASSERT_TRUE(bus.Publish(BusRecordType::kChange, "alice", Tombstone("bob", Hlc(1000, 0), "us")).ok());
  const std::string too_long(kMaxUserIdBytes + 1, 'a');
  ASSERT_TRUE(bus.Publish(BusRecordType::kChange, too_long, Tombstone(too_long, Hlc(1000, 0), "us")).ok());
  ASSERT_TRUE(bus.Publish(BusRecordType::kChange, "alice", Mirrored(ok, Hlc(1000, 0), "us")).ok());
  auto polled = r[0]->mirror->Poll();
  ASSERT_TRUE(polled.ok()) << polled.status();
  EXPECT_EQ(*polled, 1u);
  EXPECT_EQ(r[0]->mirror->stats().malformed, 12u);
  EXPECT_EQ(r[0]->mirror->stats().tombstones, 0u);
  EXPECT_EQ(r[0]->mirror->stats().merged, 1u);
  EXPECT_EQ(r[0]->mirror->Get("alice")->hlc, Hlc(1000, 0));
  EXPECT_EQ(r[0]->mirror->Poll().value(), 0u);  // all consumed
}

TEST(RegionBadInput, AFullOutboundQueueIsResourceExhaustedAndLosesNothingQueued) {
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"eu", "us"}, /*max_pending=*/2);
  RegionMirror& eu = *r[0]->mirror;
  r[0]->out.failing_publish = true;
  ASSERT_TRUE(eu.Mirror({Event("alice", State::kOnline, 1), Event("bob", State::kOnline, 1)}).ok());
  ASSERT_TRUE(eu.Mirror({Event("alice", State::kAway, 2)}).ok());  // replaces alice's
  EXPECT_EQ(eu.stats().pending, 2u);
  const uint64_t before = eu.LastHlc();
  absl::Status full = eu.Mirror({Event("alice", State::kDnd, 3), Event("carol", State::kOnline, 1)});
  EXPECT_TRUE(absl::IsResourceExhausted(full)) << full;
  EXPECT_THAT(full.message(), HasSubstr("queue full"));
  EXPECT_EQ(eu.LastHlc(), before);  // nothing of the batch applied
  EXPECT_EQ(eu.Get("alice")->event.state, State::kAway);
  EXPECT_FALSE(eu.Get("carol").has_value());
  EXPECT_TRUE(absl::IsResourceExhausted(eu.Erase("carol")));  // an erasure queues too
  EXPECT_EQ(eu.LastHlc(), before);
  EXPECT_EQ(eu.stats().tombstones, 0u);
  eu.OnChanges({Event("carol", State::kOnline, 1)});
  EXPECT_EQ(eu.stats().rejected_full, 1u);
  EXPECT_TRUE(absl::IsUnavailable(eu.Flush()));
  EXPECT_GT(eu.stats().publish_failures, 0u);

  r[0]->out.failing_publish = false;  // healed: the next flush publishes all
  eu.OnTick(0);
  EXPECT_EQ(eu.stats().pending, 0u);
  ASSERT_TRUE(r[1]->mirror->Poll().ok());
  EXPECT_EQ(r[1]->mirror->Get("alice")->event.state, State::kAway);
  EXPECT_EQ(r[1]->mirror->Get("bob")->event.state, State::kOnline);
  EXPECT_EQ(r[1]->mirror->stats().merged, 2u);  // alice's first change was replaced
}

// ---- The merge rule ---------------------------------------------------------

TEST(RegionMerge, TheGreatestHlcWinsThenTheGreatestRegionId) {
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"b", "a", "c"});
  RegionMirror& b = *r[0]->mirror;
  auto publish = [&](size_t from, State s, uint64_t hlc) {
    ASSERT_TRUE(r[from]->out.Publish(BusRecordType::kChange, "alice",
                                     Mirrored(Event("alice", s, 1), hlc, from == 1 ? "a" : "c")).ok());
  };
  publish(1, State::kOnline, Hlc(2000, 5));
  publish(2, State::kAway, Hlc(2000, 4));  // smaller hlc: loses
  ASSERT_EQ(b.Poll().value(), 1u);
  EXPECT_EQ(b.Get("alice")->region, "a");
  publish(2, State::kDnd, Hlc(2000, 5));  // equal hlc, "c" > "a": wins
  ASSERT_EQ(b.Poll().value(), 1u);
  EXPECT_EQ(b.Get("alice")->region, "c");
  EXPECT_EQ(b.Get("alice")->event.state, State::kDnd);
  publish(1, State::kOffline, Hlc(2000, 5));  // equal hlc, "a" < "c": loses
  ASSERT_EQ(b.Poll().value(), 0u);
  EXPECT_EQ(b.Get("alice")->event.state, State::kDnd);
  // A local change is stamped after all of it, so it wins.
  ASSERT_TRUE(b.Mirror({Event("alice", State::kOnline, 7)}).ok());
  EXPECT_EQ(b.Get("alice")->region, "b");
  EXPECT_EQ(b.Get("alice")->hlc, Hlc(2000, 6));
}

TEST(RegionMerge, DuplicatesAndStaleRecordsAreNoOps) {
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"eu", "us"});
  const std::string rec = Mirrored(Event("alice", State::kOnline, 2), Hlc(3000, 0), "us");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(r[1]->out.Publish(BusRecordType::kChange, "alice", rec).ok());
  ASSERT_TRUE(r[1]->out.Publish(BusRecordType::kChange, "alice",
                                Mirrored(Event("alice", State::kAway, 1), Hlc(2999, 9), "us")).ok());
  EXPECT_EQ(r[0]->mirror->Poll().value(), 1u);
  EXPECT_EQ(r[0]->mirror->stats().duplicate_or_stale, 3u);
  EXPECT_EQ(r[0]->mirror->Get("alice")->event.state, State::kOnline);
  EXPECT_EQ(r[0]->mirror->Get("alice")->event.version, 2u);
}

TEST(RegionMerge, TheViewHoldsTheEventAsTheWireCarriesIt) {
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"eu", "us"});
  ChangeEvent e = Event("alice", State::kOffline, 4);
  e.invisible = true;
  e.self_state = State::kDnd;
  e.trace_id = 77;
  ASSERT_TRUE(r[0]->mirror->Mirror({e}).ok());
  ASSERT_TRUE(r[1]->mirror->Poll().ok());
  auto here = r[0]->mirror->Get("alice").value();
  auto there = r[1]->mirror->Get("alice").value();
  EXPECT_EQ(EncodeChangeEvent(here.event, true), EncodeChangeEvent(there.event, true));
  EXPECT_EQ(there.event.self_state, State::kDnd);
  EXPECT_TRUE(there.event.invisible);
  EXPECT_EQ(there.event.trace_id, 77u);
  EXPECT_EQ(std::tie(here.hlc, here.region), std::tie(there.hlc, there.region));
}

TEST(RegionMerge, TheListenerHearsOfRemoteRecordsThatWon) {
  // It may read the view from inside the call.
  struct Recorder final : ChangeListener {
    RegionMirror* mirror = nullptr;
    std::vector<std::tuple<std::string, State, std::string>> heard;
    void OnChanges(absl::Span<const ChangeEvent> events) override {
      for (const ChangeEvent& e : events) {
        heard.emplace_back(e.user_id, e.state, mirror->Get(e.user_id)->region);
      }
    }
  } recorder;
  Region eu, us;
  eu.mirror = MakeMirror(eu, "eu", {&us.out}, &recorder);
  recorder.mirror = eu.mirror.get();
  const std::string rec = Mirrored(Event("alice", State::kOnline, 1), Hlc(2000, 0), "us");
  ASSERT_TRUE(us.out.Publish(BusRecordType::kChange, "alice", rec).ok());
  ASSERT_TRUE(us.out.Publish(BusRecordType::kChange, "alice", rec).ok());  // a duplicate
  ASSERT_TRUE(us.out.Publish(BusRecordType::kChange, "bob",
                             Mirrored(Event("bob", State::kAway, 1), Hlc(2000, 1), "us")).ok());
  ASSERT_TRUE(eu.mirror->Mirror({Event("carol", State::kOnline, 1)}).ok());  // local: not heard
  ASSERT_EQ(eu.mirror->Poll().value(), 2u);
  std::sort(recorder.heard.begin(), recorder.heard.end());
  EXPECT_THAT(recorder.heard,
              ::testing::ElementsAre(std::make_tuple("alice", State::kOnline, "us"),
                                     std::make_tuple("bob", State::kAway, "us")));
}

// ---- Erasure -----------------------------------------------------------------

TEST(RegionErase, AnErasureInOneRegionRemovesTheUserInTheOthers) {
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"eu", "us"});
  RegionMirror& eu = *r[0]->mirror;
  RegionMirror& us = *r[1]->mirror;
  ASSERT_TRUE(eu.Mirror({Event("alice", State::kOnline, 1), Event("bob", State::kAway, 1)}).ok());
  ASSERT_EQ(us.Poll().value(), 2u);
  ASSERT_TRUE(us.Get("alice").has_value());

  ASSERT_TRUE(eu.Erase("alice").ok());
  EXPECT_FALSE(eu.Get("alice").has_value());
  ASSERT_EQ(eu.View().size(), 1u);
  EXPECT_EQ(eu.View()[0].event.user_id, "bob");
  EXPECT_EQ(eu.stats().tombstones, 1u);
  EXPECT_EQ(eu.stats().local, 3u);

  ASSERT_EQ(us.Poll().value(), 1u);
  EXPECT_FALSE(us.Get("alice").has_value());
  ASSERT_EQ(us.View().size(), 1u);
  EXPECT_EQ(us.View()[0].event.user_id, "bob");
  EXPECT_EQ(us.stats().tombstones, 1u);
  EXPECT_EQ(us.stats().merged, 3u);
  EXPECT_EQ(us.stats().malformed, 0u);

  // On the wire: the tombstone's event is a valid OFFLINE event with version
  // 0, so a reader from before `erased` merges it as that.
  auto recs = r[0]->out.Read(PartitionFor("alice", 4), 0, 10).value();
  ASSERT_EQ(recs.size(), 2u);
  v1::MirroredChange m;
  ASSERT_TRUE(m.ParseFromString(recs[1].payload));
  EXPECT_TRUE(m.erased());
  EXPECT_EQ(m.region(), "eu");
  auto old_reader = internal::ChangeEventFromProto(m.event());
  ASSERT_TRUE(old_reader.ok()) << old_reader.status();
  EXPECT_EQ(old_reader->user_id, "alice");
  EXPECT_EQ(old_reader->state, State::kOffline);
  EXPECT_EQ(old_reader->version, 0u);
  EXPECT_EQ(old_reader->devices.live[0], 0u);
}

TEST(RegionErase, AnOlderRecordArrivingLaterDoesNotBringTheUserBack) {
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"eu", "us", "ap"});
  RegionMirror& eu = *r[0]->mirror;
  r[1]->clock.now = 2000;
  const std::string first = Mirrored(Event("alice", State::kOnline, 1), Hlc(1000, 0), "us");
  ASSERT_TRUE(r[1]->out.Publish(BusRecordType::kChange, "alice", first).ok());
  ASSERT_TRUE(r[1]->mirror->Erase("alice").ok());  // stamped Hlc(2000, 0)
  ASSERT_EQ(eu.Poll().value(), 2u);
  EXPECT_FALSE(eu.Get("alice").has_value());
  const uint64_t stale_before = eu.stats().duplicate_or_stale;

  // A replay of the first record; ap, cut off until now, with a change made
  // before the erasure, and one with an equal HLC and a smaller region id.
  ASSERT_TRUE(r[1]->out.Publish(BusRecordType::kChange, "alice", first).ok());
  ASSERT_TRUE(r[2]->out.Publish(BusRecordType::kChange, "alice",
                                Mirrored(Event("alice", State::kDnd, 5), Hlc(1999, 7), "ap")).ok());
  ASSERT_TRUE(r[2]->out.Publish(BusRecordType::kChange, "alice",
                                Mirrored(Event("alice", State::kDnd, 6), Hlc(2000, 0), "ap")).ok());
  EXPECT_EQ(eu.Poll().value(), 0u);
  EXPECT_FALSE(eu.Get("alice").has_value());
  EXPECT_TRUE(eu.View().empty());
  EXPECT_EQ(eu.stats().duplicate_or_stale, stale_before + 3);
  EXPECT_EQ(eu.stats().tombstones, 1u);
  // ap itself (which made those) takes the tombstone too.
  ASSERT_TRUE(r[2]->mirror->Poll().ok());
  EXPECT_FALSE(r[2]->mirror->Get("alice").has_value());
}

TEST(RegionErase, ANewerChangeAfterTheErasureWins) {
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"eu", "us"});
  RegionMirror& eu = *r[0]->mirror;
  RegionMirror& us = *r[1]->mirror;
  r[0]->clock.now = 5000;  // eu's clock is ahead: us's later change still wins
  ASSERT_TRUE(eu.Mirror({Event("alice", State::kOnline, 1)}).ok());
  ASSERT_TRUE(eu.Erase("alice").ok());
  ASSERT_EQ(us.Poll().value(), 2u);
  EXPECT_FALSE(us.Get("alice").has_value());
  // alice signs in again in us, after it saw the erasure.
  ASSERT_TRUE(us.Mirror({Event("alice", State::kAway, 1)}).ok());
  EXPECT_EQ(us.Get("alice")->event.state, State::kAway);
  EXPECT_EQ(us.stats().tombstones, 0u);
  ASSERT_EQ(eu.Poll().value(), 1u);
  auto alice = eu.Get("alice");
  ASSERT_TRUE(alice.has_value());
  EXPECT_EQ(alice->region, "us");
  EXPECT_EQ(alice->event.state, State::kAway);
  EXPECT_EQ(eu.stats().tombstones, 0u);
  // And an erasure of a user the mirror never held is a tombstone all the same.
  ASSERT_TRUE(eu.Erase("nobody").ok());
  ASSERT_EQ(us.Poll().value(), 1u);
  EXPECT_FALSE(us.Get("nobody").has_value());
  EXPECT_EQ(us.stats().tombstones, 1u);
  ASSERT_EQ(us.View().size(), 1u);
}

TEST(RegionErase, TheListenerHearsOfATombstoneThatWonAsVersionZero) {
  // The host erases the user locally on it: Engine::Erase publishes no
  // change, so nothing is mirrored back.
  struct Host final : ChangeListener {
    RegionMirror* mirror = nullptr;
    Engine* engine = nullptr;
    std::vector<ChangeEvent> heard;
    bool visible_in_call = true;
    void OnChanges(absl::Span<const ChangeEvent> events) override {
      for (const ChangeEvent& e : events) {
        heard.push_back(e);
        if (e.version == 0) {
          visible_in_call = mirror->Get(e.user_id).has_value();
          ASSERT_TRUE(engine->Erase(e.user_id).ok());
        }
      }
    }
  } host;
  ManualClock clock(1'000'000);
  Options opts;
  opts.clock = &clock;
  auto engine = Engine::Create(opts).value();
  Region eu, us;
  eu.mirror = MakeMirror(eu, "eu", {&us.out}, &host);
  engine->AddListener(eu.mirror.get());
  host.mirror = eu.mirror.get();
  host.engine = engine.get();

  Signal s;
  s.user_id = "alice";
  s.device_id = "phone";
  s.session_id = 1;
  ASSERT_TRUE(engine->Signal(s).ok());
  engine->Tick();
  ASSERT_TRUE(engine->GetOne("alice").known);
  const uint64_t eu_stamp = eu.mirror->Get("alice")->hlc;
  const uint64_t published = eu.out.EndOffset(PartitionFor("alice", 4)).value();

  const std::string tomb = Tombstone("alice", eu_stamp + 1, "us");
  ASSERT_TRUE(us.out.Publish(BusRecordType::kChange, "alice", tomb).ok());
  ASSERT_TRUE(us.out.Publish(BusRecordType::kChange, "alice", tomb).ok());  // a duplicate: not heard
  ASSERT_EQ(eu.mirror->Poll().value(), 1u);
  ASSERT_EQ(host.heard.size(), 1u);
  const ChangeEvent& e = host.heard[0];
  EXPECT_EQ(e.user_id, "alice");
  EXPECT_EQ(e.version, 0u);
  EXPECT_EQ(e.cause, Cause::kMerge);
  EXPECT_EQ(e.state, State::kOffline);
  EXPECT_EQ(e.self_state, State::kOffline);
  EXPECT_EQ(e.previous, State::kOffline);
  EXPECT_EQ(e.devices.live[0], 0u);
  EXPECT_EQ(e.last_seen_ms, 0);
  EXPECT_FALSE(host.visible_in_call);
  EXPECT_FALSE(engine->GetOne("alice").known);
  engine->Tick();
  EXPECT_EQ(eu.out.EndOffset(PartitionFor("alice", 4)).value(), published);  // nothing echoed
  EXPECT_FALSE(eu.mirror->Get("alice").has_value());
  engine->RemoveListener(eu.mirror.get());
}

// ---- The hybrid logical clock ------------------------------------------------

TEST(RegionHlc, StampsGrowWithTheClockAndEvenWhenItStepsBack) {
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"eu", "us"});
  RegionMirror& eu = *r[0]->mirror;
  auto stamp = [&](const char* user) {
    EXPECT_TRUE(eu.Mirror({Event(user, State::kOnline, 1)}).ok());
    return eu.Get(user)->hlc;
  };
  r[0]->clock.now = 5000;
  EXPECT_EQ(stamp("a"), Hlc(5000, 0));
  EXPECT_EQ(stamp("b"), Hlc(5000, 1));  // same ms: the counter moves
  r[0]->clock.now = 5001;
  EXPECT_EQ(stamp("c"), Hlc(5001, 0));  // the clock moved: the counter resets
  r[0]->clock.now = 4000;               // the clock steps back
  EXPECT_EQ(stamp("d"), Hlc(5001, 1));
  EXPECT_EQ(eu.LastHlc(), Hlc(5001, 1));
}

TEST(RegionHlc, AChangeAfterARemoteRecordIsStampedAfterIt) {
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"eu", "us"});
  r[0]->clock.now = 1000;
  r[1]->clock.now = 9000;  // us's clock runs 8 s ahead
  ASSERT_TRUE(r[1]->mirror->Mirror({Event("alice", State::kOnline, 1)}).ok());
  ASSERT_EQ(r[0]->mirror->Poll().value(), 1u);
  EXPECT_EQ(r[0]->mirror->LastHlc(), Hlc(9000, 0));  // the receive rule
  // alice goes away in eu, after it saw us's record: eu's change wins
  // everywhere, although eu's physical clock is behind.
  ASSERT_TRUE(r[0]->mirror->Mirror({Event("alice", State::kAway, 2)}).ok());
  EXPECT_EQ(r[0]->mirror->Get("alice")->hlc, Hlc(9000, 1));
  ASSERT_EQ(r[1]->mirror->Poll().value(), 1u);
  EXPECT_EQ(r[1]->mirror->Get("alice")->event.state, State::kAway);
  EXPECT_EQ(r[1]->mirror->LastHlc(), Hlc(9000, 1));
}

// ---- From a real engine ------------------------------------------------------

TEST(RegionEngine, AnEnginesChangesAreMirroredOnTick) {
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, {"eu", "us"});
  ManualClock clock(1'000'000);
  Options opts;
  opts.clock = &clock;
  auto engine = Engine::Create(opts).value();
  engine->AddListener(r[0]->mirror.get());
  Signal s;
  s.user_id = "alice";
  s.device_id = "phone";
  s.session_id = 1;
  ASSERT_TRUE(engine->Signal(s).ok());
  engine->Tick();
  ASSERT_EQ(r[1]->mirror->Poll().value(), 1u);
  auto alice = r[1]->mirror->Get("alice");
  ASSERT_TRUE(alice.has_value());
  EXPECT_EQ(alice->region, "eu");
  EXPECT_EQ(alice->event.state, State::kOnline);
  engine->RemoveListener(r[0]->mirror.get());
}

// ---- Randomized convergence --------------------------------------------------

// Regions make random changes to a shared set of users, with skewed clocks
// that move in small steps (so HLCs often tie and counters run), poll in
// random order, and are cut off at random (no polling, publishes failing)
// and healed; they also erase users at random (RegionMirror::Erase). After all
// heal and catch up, every region holds, for every user, the record with the
// greatest (hlc, region) that any region made, and hides the users whose
// greatest record is a tombstone.
// Adds to `*hidden` the users that ended erased.
void Converge(size_t n_regions, uint32_t seed, size_t* hidden) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed << ", " << n_regions << " regions");
  std::mt19937 rng(seed);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  const std::vector<std::string> all_ids = {"ap", "eu", "us"};
  std::vector<std::string> ids(all_ids.begin(), all_ids.begin() + n_regions);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<std::unique_ptr<Region>> r;
  Wire(r, ids);
  for (auto& region : r) region->clock.now = 10'000 + static_cast<int64_t>(pick(50));
  std::vector<bool> cut(n_regions, false);

  const std::vector<std::string> users = {"u0", "u1", "u2", "u3", "u4", "u5"};
  std::map<std::string, RegionRecord> best;  // the expected winners
  std::map<std::string, bool> best_erased;   // whether the winner is a tombstone
  std::map<std::pair<size_t, std::string>, uint64_t> versions;
  const State states[] = {State::kOffline, State::kAway, State::kOnline, State::kDnd};

  auto offer = [&](const std::string& u, RegionRecord mine, bool erased) {
    auto it = best.find(u);
    if (it == best.end() || std::tie(mine.hlc, mine.region) > std::tie(it->second.hlc, it->second.region)) {
      best[u] = std::move(mine);
      best_erased[u] = erased;
    }
  };
  for (int step = 0; step < 160; ++step) {
    const size_t i = pick(n_regions);
    switch (pick(11)) {
      case 0: case 1: case 2: case 3: {  // a local change
        const std::string& u = users[pick(users.size())];
        ChangeEvent e = Event(u, states[pick(4)], ++versions[{i, u}]);
        r[i]->mirror->OnChanges({e});
        RegionRecord mine = r[i]->mirror->Get(u).value();
        ASSERT_EQ(mine.region, ids[i]);  // a fresh local change always wins locally
        offer(u, std::move(mine), false);
        break;
      }
      case 10: {  // an erasure
        const std::string& u = users[pick(users.size())];
        ASSERT_TRUE(r[i]->mirror->Erase(u).ok());
        ASSERT_FALSE(r[i]->mirror->Get(u).has_value());  // it always wins locally
        RegionRecord mine;
        mine.event.user_id = u;
        mine.hlc = r[i]->mirror->LastHlc();
        mine.region = ids[i];
        offer(u, std::move(mine), true);
        break;
      }
      case 4: case 5: case 6:
        if (!cut[i]) ASSERT_TRUE(r[i]->mirror->Poll().ok());
        break;
      case 7: case 8:
        r[i]->clock.now += static_cast<int64_t>(pick(3));
        break;
      case 9:
        cut[i] = !cut[i];
        r[i]->out.failing_publish = cut[i];
        break;
    }
  }
  for (size_t i = 0; i < n_regions; ++i) r[i]->out.failing_publish = false;
  for (auto& region : r) ASSERT_TRUE(region->mirror->Flush().ok());
  for (auto& region : r) ASSERT_TRUE(region->mirror->Poll().ok());

  for (size_t i = 0; i < n_regions; ++i) {
    const RegionMirrorStats st = r[i]->mirror->stats();
    EXPECT_EQ(st.pending, 0u);
    EXPECT_EQ(st.malformed, 0u);
    size_t erased = 0;
    for (const auto& [u, e] : best_erased) {
      if (!e) continue;
      ++erased;
      EXPECT_FALSE(r[i]->mirror->Get(u).has_value()) << ids[i] << " " << u;
    }
    EXPECT_EQ(st.tombstones, erased) << ids[i];
    if (i == 0) *hidden += erased;
    std::vector<RegionRecord> view = r[i]->mirror->View();
    ASSERT_EQ(view.size(), best.size() - erased) << ids[i];
    for (const RegionRecord& got : view) {
      ASSERT_FALSE(best_erased.at(got.event.user_id)) << ids[i] << " " << got.event.user_id;
      const RegionRecord& want = best.at(got.event.user_id);
      EXPECT_EQ(std::tie(got.hlc, got.region), std::tie(want.hlc, want.region))
          << ids[i] << " " << got.event.user_id;
      EXPECT_EQ(EncodeChangeEvent(got.event, true), EncodeChangeEvent(want.event, true));
    }
  }
}

TEST(RegionConvergence, TwoRegionsConvergeAfterRandomInterleavingsAndPartitions) {
  size_t hidden = 0;
  for (uint32_t seed = 1; seed <= 500; ++seed) {
    Converge(2, seed, &hidden);
    if (HasFatalFailure() || HasFailure()) return;
  }
  EXPECT_GT(hidden, 100u) << hidden;  // erasures won often enough to test something
}

TEST(RegionConvergence, ThreeRegionsConvergeAfterRandomInterleavingsAndPartitions) {
  size_t hidden = 0;
  for (uint32_t seed = 1; seed <= 500; ++seed) {
    Converge(3, seed, &hidden);
    if (HasFatalFailure() || HasFailure()) return;
  }
  EXPECT_GT(hidden, 100u) << hidden;  // erasures won often enough to test something
}

}  // namespace
}  // namespace presence
