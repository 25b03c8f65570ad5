// Every bad input gets a clear error status and changes nothing.
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "presence/wire.h"
#include "tests/test_util.h"

namespace presence::testing {
namespace {

using ::testing::HasSubstr;

// Runs `call` and checks that it fails with InvalidArgument (or `code`), that
// its message mentions `words`, and that the engine holds exactly what it did.
class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(t_.engine->Signal(TestEngine::Sig("alice", "web")).ok());
    t_.engine->Tick();
  }
  void ExpectRejected(const absl::Status& st, absl::string_view words,
                      absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
    EXPECT_EQ(st.code(), code) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(std::string(words)));
    const Engine::Sizes s = t_.engine->GetSizes();
    EXPECT_EQ(s.users, 1u);
    EXPECT_EQ(s.devices, 1u);
    EXPECT_EQ(s.overrides, 0u);
    EXPECT_EQ(t_.StateOf("alice"), State::kOnline);
  }
  TestEngine t_;
};

TEST_F(BadInput, EmptyAndOversizedIds) {
  const std::string long_id(kMaxUserIdBytes + 1, 'x');
  ExpectRejected(t_.engine->Signal(TestEngine::Sig("", "web")), "user_id is empty");
  ExpectRejected(t_.engine->Signal(TestEngine::Sig("bob", "")), "device_id is empty");
  ExpectRejected(t_.engine->Signal(TestEngine::Sig(long_id, "web")), "user_id is 129 bytes");
  ExpectRejected(t_.engine->Signal(TestEngine::Sig("bob", long_id)), "device_id is 129 bytes");
  ExpectRejected(t_.engine->Connect(TestEngine::Sig("", "web")).status(), "user_id is empty");
  ExpectRejected(t_.engine->SetOverride("", OverrideState::kDnd).status(), "user_id is empty");
  ExpectRejected(t_.engine->SetOverride(long_id, OverrideState::kDnd).status(), "129 bytes");
  ExpectRejected(t_.engine->DisconnectDevice("", "web", 0, DisconnectKind::kClean), "empty");
  EXPECT_FALSE(t_.engine->GetOne("").known);
  EXPECT_FALSE(t_.engine->GetOne(long_id).known);
  // Ids are opaque bytes: NULs and non-UTF-8 are fine, and the maximum is.
  const std::string max_id(kMaxUserIdBytes, '\xff');
  const std::string nul_id("a\0b", 3);  // outlives `s`, whose user_id views it
  Signal s = TestEngine::Sig(nul_id, max_id);
  EXPECT_TRUE(t_.engine->Signal(s).ok());
  EXPECT_TRUE(t_.engine->GetOne(nul_id).known);
  EXPECT_FALSE(t_.engine->GetOne("a").known);
}

TEST_F(BadInput, ZeroSession) {
  ExpectRejected(t_.engine->Signal(TestEngine::Sig("bob", "web", 0)), "session_id must be > 0");
}

TEST_F(BadInput, UnknownEnumValues) {
  Signal s = TestEngine::Sig("bob", "web");
  s.source = static_cast<Source>(0);
  ExpectRejected(t_.engine->Signal(s), "unknown source value 0");
  s = TestEngine::Sig("bob", "web");
  s.activity = static_cast<Activity>(9);
  ExpectRejected(t_.engine->Signal(s), "unknown activity value 9");
  s = TestEngine::Sig("bob", "web");
  s.platform = static_cast<Platform>(6);
  ExpectRejected(t_.engine->Signal(s), "unknown platform value 6");
  ExpectRejected(t_.engine->SetOverride("bob", static_cast<OverrideState>(5)).status(),
                 "unknown override state value 5");
  ExpectRejected(t_.engine->DisconnectDevice("alice", "web", 0, static_cast<DisconnectKind>(3)),
                 "unknown disconnect kind value 3");
  auto h = t_.engine->Connect(TestEngine::Sig("alice", "web"));
  ASSERT_TRUE(h.ok());
  ExpectRejected(t_.engine->Beat(*h, static_cast<Activity>(0)), "unknown activity value");
  ExpectRejected(t_.engine->Beat(*h, Activity::kActive, static_cast<Source>(4)),
                 "unknown source value");
  ExpectRejected(t_.engine->Disconnect(*h, static_cast<DisconnectKind>(0)),
                 "unknown disconnect kind value 0");
}

TEST_F(BadInput, BeatManyCountsEveryBadHandleAndAppliesTheRest) {
  EXPECT_EQ(t_.engine->BeatMany({}).applied, 0u);
  auto h = t_.engine->Connect(TestEngine::Sig("alice", "web"));
  ASSERT_TRUE(h.ok());
  const DeviceHandle handles[] = {DeviceHandle{}, *h, DeviceHandle{~0ull},
                                  DeviceHandle{h->value ^ (1ull << 40)}, *h};
  BatchResult r = t_.engine->BeatMany(handles);
  EXPECT_EQ(r.applied, 2u);
  EXPECT_EQ(r.rejected, 3u);
  ExpectRejected(r.first_error, "handle", absl::StatusCode::kNotFound);
  r = t_.engine->BeatMany(handles, static_cast<Activity>(7));
  EXPECT_EQ(r.applied, 0u);
  EXPECT_EQ(r.rejected, 5u);
  ExpectRejected(r.first_error, "handle", absl::StatusCode::kNotFound);
  r = t_.engine->BeatMany(absl::MakeConstSpan(handles + 1, 1), Activity::kActive,
                          static_cast<Source>(9));
  ExpectRejected(r.first_error, "unknown source value");
  EXPECT_EQ(r.rejected, 1u);
}

TEST_F(BadInput, TimestampsFarInTheFutureOrPast) {
  Signal s = TestEngine::Sig("bob", "web");
  s.timestamp_ms = t_.clock.NowMs() + 60'000;
  ExpectRejected(t_.engine->Signal(s), "ahead of the engine's clock");
  s.timestamp_ms = t_.clock.NowMs() - 3'600'000;
  ExpectRejected(t_.engine->Signal(s), "behind the engine's clock");
  s.timestamp_ms = -5;
  ExpectRejected(t_.engine->Signal(s), "behind the engine's clock");
  // The extremes are told by their exact distance, which int64 cannot hold.
  const uint64_t now = static_cast<uint64_t>(t_.clock.NowMs());
  s.timestamp_ms = INT64_MAX;
  ExpectRejected(t_.engine->Signal(s),
                 absl::StrCat("timestamp_ms is ", uint64_t{INT64_MAX} - now, " ms ahead"));
  s.timestamp_ms = INT64_MIN;
  ExpectRejected(t_.engine->Connect(s).status(),
                 absl::StrCat("timestamp_ms is ", now + (uint64_t{1} << 63), " ms behind"));
}

TEST_F(BadInput, UnknownOrClosedHandles) {
  ExpectRejected(t_.engine->Disconnect(DeviceHandle{}, DisconnectKind::kClean), "handle",
                 absl::StatusCode::kNotFound);
  ExpectRejected(t_.engine->Disconnect(DeviceHandle{0x00ffffff00000001ull}, DisconnectKind::kClean),
                 "handle", absl::StatusCode::kNotFound);
  ExpectRejected(t_.engine->Beat(DeviceHandle{0x0000000100000000ull | 12345678}), "handle",
                 absl::StatusCode::kNotFound);
  auto h = t_.engine->Connect(TestEngine::Sig("alice", "web", 2));
  ASSERT_TRUE(h.ok());
  DeviceHandle forged{h->value ^ (1ull << 40)};  // wrong generation
  ExpectRejected(t_.engine->Beat(forged), "handle", absl::StatusCode::kNotFound);
  ExpectRejected(t_.engine->Disconnect(forged, DisconnectKind::kClean), "handle",
                 absl::StatusCode::kNotFound);
}

TEST_F(BadInput, OverrideThatHasAlreadyExpired) {
  ExpectRejected(t_.engine->SetOverride("alice", OverrideState::kDnd, t_.clock.NowMs()).status(),
                 "not after now");
  ExpectRejected(t_.engine->SetOverride("alice", OverrideState::kDnd, 5).status(), "not after now");
  ExpectRejected(t_.engine->RevokeOverride("alice", 42), "no override with that id",
                 absl::StatusCode::kNotFound);
  ExpectRejected(t_.engine->RevokeOverride("nobody", 1), "unknown user", absl::StatusCode::kNotFound);
}

TEST_F(BadInput, BatchRejectsOnlyTheBadSignals) {
  std::vector<Signal> batch = {TestEngine::Sig("bob", "web"), TestEngine::Sig("", "web"),
                               TestEngine::Sig("carol", "web")};
  BatchResult r = t_.engine->SignalBatch(batch);
  EXPECT_EQ(r.applied, 2u);
  EXPECT_EQ(r.rejected, 1u);
  EXPECT_TRUE(absl::IsInvalidArgument(r.first_error));
  EXPECT_EQ(t_.StateOf("bob"), State::kOnline);
  EXPECT_EQ(t_.StateOf("carol"), State::kOnline);
  EXPECT_THAT(t_.engine->RenderMetrics(),
              HasSubstr("presence_signals_dropped_total{reason=\"invalid\"} 1"));
}

TEST_F(BadInput, LimitsArePassedWithResourceExhausted) {
  Options o;
  o.max_devices_per_user = 2;
  o.max_overrides_per_user = 1;
  TestEngine t(o);
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "a")).ok());
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "b")).ok());
  EXPECT_TRUE(absl::IsResourceExhausted(t.engine->Signal(TestEngine::Sig("bob", "c"))));
  // The devices it has still signal: the limit is on new ones.
  EXPECT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "b")).ok());
  EXPECT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "a")).ok());
  EXPECT_EQ(t.engine->GetOne("bob").devices.total(), 2);
  ASSERT_TRUE(t.engine->SetOverride("bob", OverrideState::kDnd).ok());
  EXPECT_TRUE(absl::IsResourceExhausted(t.engine->SetOverride("bob", OverrideState::kAway).status()));
  EXPECT_EQ(t.StateOf("bob"), State::kDnd);
}

TEST(Floods, ADeviceIsRateLimitedPerSecondAndKeepsItsState) {
  Options o;
  o.max_signals_per_device_per_sec = 5;
  TestEngine t(o);
  auto h = t.engine->Connect(TestEngine::Sig("bob", "web"));  // 1 of 5
  ASSERT_TRUE(h.ok());
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(t.engine->Beat(*h).ok());
  EXPECT_TRUE(absl::IsResourceExhausted(t.engine->Beat(*h)));  // lock-free path
  EXPECT_TRUE(absl::IsResourceExhausted(t.engine->Beat(*h, Activity::kIdle)));  // locked path
  EXPECT_TRUE(absl::IsResourceExhausted(t.engine->Signal(TestEngine::Sig("bob", "web"))));
  EXPECT_EQ(t.StateOf("bob"), State::kOnline);  // the idle one was not applied
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "phone")).ok());  // per device
  t.clock.Advance(1000);
  EXPECT_TRUE(t.engine->Beat(*h).ok());  // a new second
  EXPECT_THAT(t.engine->RenderMetrics(),
              HasSubstr("presence_signals_dropped_total{reason=\"rate_limited\"} 3"));
}

TEST(Floods, TheMemoryBudgetRefusesNewDevicesAndEvictsNothing) {
  Options o;
  o.memory_budget_bytes = 3 * kDeviceChargeBytes + 2 * kUserChargeBytes;
  TestEngine t(o);
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "web")).ok());
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("alice", "phone")).ok());
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "web")).ok());
  const absl::Status refused = t.engine->Signal(TestEngine::Sig("bob", "phone"));
  EXPECT_TRUE(absl::IsResourceExhausted(refused));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("memory budget"));
  EXPECT_TRUE(absl::IsResourceExhausted(t.engine->Signal(TestEngine::Sig("carol", "web"))));
  EXPECT_TRUE(absl::IsResourceExhausted(
      t.engine->SetOverride("dave", OverrideState::kDnd).status()));
  // Everything held keeps working, and freeing makes room again.
  EXPECT_EQ(t.engine->GetOne("alice").devices.total(), 2);
  EXPECT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "web")).ok());
  EXPECT_FALSE(t.engine->GetOne("carol").known);
  ASSERT_TRUE(t.engine->DisconnectDevice("alice", "phone", 0, DisconnectKind::kClean).ok());
  t.Run(o.dead_retention_ms + 1000, 60000);
  ASSERT_TRUE(t.engine->Signal(TestEngine::Sig("bob", "phone")).ok());
  EXPECT_THAT(t.engine->RenderMetrics(), HasSubstr("presence_memory_charged_bytes"));
}

TEST(BadOptions, OutOfRangeOptionsAreRejected) {
  auto bad = [](auto mutate) {
    Options o;
    mutate(o);
    return Engine::Create(o).status();
  };
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.app.interval_ms = 0; })));
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.app.offline_after_ms = 500; })));
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.shards = 1000; })));
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.reconnect_grace_ms = -1; })));
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.max_signal_age_ms = 10; })));
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.max_future_skew_ms = -1; })));
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.max_future_skew_ms = INT64_MAX; })));
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.min_dwell_ms = -1; })));
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.min_dwell_ms = (1LL << 30) + 1; })));
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.max_devices_per_user = 0; })));
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.dead_retention_ms = 1LL << 40; })));
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.max_signals_per_device_per_sec = -1; })));
  EXPECT_TRUE(absl::IsInvalidArgument(bad([](Options& o) { o.memory_budget_bytes = -1; })));
  EXPECT_TRUE(Engine::Create(Options()).ok());
}

TEST(BadWire, MalformedAndInvalidProtobufIsRejected) {
  DecodedSignal out;
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeSignal("\xff\xff\xff", &out)));
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeSignal("", &out)));  // no ids
  Signal s = TestEngine::Sig("bob", "web");
  s.platform = static_cast<Platform>(77);
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeSignal(EncodeSignal(s), &out)));
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeSignal(EncodeSignal(TestEngine::Sig("bob", "web")), nullptr)));
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeChangeEvent("\x0a\x05" "ab").status()));
  ChangeEvent e;
  e.user_id = "bob";
  e.state = static_cast<State>(9);
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeChangeEvent(EncodeChangeEvent(e)).status()));
  e.state = State::kDnd;
  e.shown_override = OverrideInfo{1, static_cast<OverrideState>(9), 0, 0};
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeChangeEvent(EncodeChangeEvent(e)).status()));
  e.shown_override = OverrideInfo{0, OverrideState::kInvisible, 0, 0};  // never public
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeChangeEvent(EncodeChangeEvent(e)).status()));
  e.shown_override.reset();
  e.self_overrides = {OverrideInfo{1, OverrideState::kDnd, 0, -5}};
  EXPECT_TRUE(absl::IsInvalidArgument(DecodeChangeEvent(EncodeChangeEvent(e, true)).status()));
}

TEST(Wire, SignalAndChangeEventRoundTrip) {
  Signal s = TestEngine::Sig("bob", "phone", 7, Source::kInferred, Activity::kIdle);
  s.platform = Platform::kMobile;
  s.timestamp_ms = 123456;
  s.trace_id = 99;
  s.gateway = "gw-1";
  DecodedSignal d;
  ASSERT_TRUE(DecodeSignal(EncodeSignal(s), &d).ok());
  const Signal back = d.signal();
  EXPECT_EQ(back.user_id, "bob");
  EXPECT_EQ(back.device_id, "phone");
  EXPECT_EQ(back.session_id, 7u);
  EXPECT_EQ(back.platform, Platform::kMobile);
  EXPECT_EQ(back.source, Source::kInferred);
  EXPECT_EQ(back.activity, Activity::kIdle);
  EXPECT_EQ(back.timestamp_ms, 123456);
  EXPECT_EQ(back.trace_id, 99u);
  EXPECT_EQ(back.gateway, "gw-1");

  ChangeEvent e;
  e.user_id = "bob";
  e.previous = State::kOnline;
  e.state = State::kOffline;
  e.self_state = State::kOnline;
  e.invisible = true;
  e.version = 5;
  e.cause = Cause::kOverride;
  e.self_devices.live[0] = 2;
  auto pub = DecodeChangeEvent(EncodeChangeEvent(e));
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(pub->state, State::kOffline);
  EXPECT_EQ(pub->self_state, State::kOffline);  // the public form hides the own view
  EXPECT_FALSE(pub->invisible);
  EXPECT_EQ(pub->devices.total(), 0);
  auto full = DecodeChangeEvent(EncodeChangeEvent(e, /*include_self=*/true));
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->state, State::kOffline);  // still the public view
  EXPECT_EQ(full->self_state, State::kOnline);
  EXPECT_TRUE(full->invisible);
  EXPECT_EQ(full->devices.total(), 0);
  EXPECT_EQ(full->self_devices.total(), 2);
  EXPECT_EQ(full->version, 5u);
}

}  // namespace
}  // namespace presence::testing
