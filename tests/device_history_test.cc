// The per-device audit (docs/design.md section 4) through the C++ API, on the
// manual clock: every transition of a device is recorded with its cause
// (connect, grace, each way to die, probe outcomes), only the user reads it
// (rule 8), it survives a restart in the file store, and retention covers it.
// The expected lists are written out by hand from the scenarios, not
// computed by the engine's code.
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "presence/file_store.h"
#include "presence/history.h"
#include "presence/prober.h"
#include "tests/file_store_test.h"
#include "tests/test_util.h"

namespace presence::testing {
namespace {

using ::testing::ElementsAre;
using E = DeviceEvent;

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

// "event@ms after start/session" for each of the device's transitions, as
// its user reads them.
std::vector<std::string> Audit(Engine& e, const std::string& user, const std::string& device,
                               int64_t start) {
  auto h = e.DeviceHistory(user, device, 0, kMax, user);
  EXPECT_TRUE(h.ok()) << h.status();
  std::vector<std::string> out;
  if (!h.ok()) return out;
  for (const DeviceTransition& t : *h) {
    EXPECT_EQ(t.user_id, user);
    EXPECT_EQ(t.device_id, device);
    out.push_back(absl::StrCat(static_cast<int>(t.event), "@", t.at_ms - start, "/", t.session_id));
  }
  return out;
}

std::string Ev(E e, int64_t at, uint64_t session = 1) {
  return absl::StrCat(static_cast<int>(e), "@", at, "/", session);
}

// A prober that answers the probes of devices named "answers", and of no
// other.
class SelectiveProber : public Prober {
 public:
  void Probe(const ProbeRequest& r) override {
    if (r.device_id == "answers") ids.push_back(r.probe_id);
  }
  std::vector<uint64_t> ids;
};

struct AuditEngine {
  explicit AuditEngine(HistoryStore* h) {
    Options o;
    o.history = h;
    o.prober = &prober;
    o.probe_retry_ms = 1000;  // probes at 2 s and 3 s of silence, DEAD at 4 s
    o.max_probes = 2;
    t = std::make_unique<TestEngine>(o);
    start = t->clock.NowMs();
  }
  Engine& engine() { return *t->engine; }
  void Signal(const std::string& user, const std::string& device, uint64_t session = 1,
              const std::string& gateway = "") {
    presence::Signal s = TestEngine::Sig(user, device, session);
    s.gateway = gateway;
    ASSERT_TRUE(engine().Signal(s).ok());
  }
  SelectiveProber prober;
  std::unique_ptr<TestEngine> t;
  int64_t start = 0;
};

TEST(DeviceHistory, EveryTransitionIsRecordedWithItsCause) {
  auto history = NewMemoryHistoryStore();
  AuditEngine a(history.get());
  Engine& e = a.engine();
  // At 0: every device connects; "drained" through gateway gw-x.
  for (const char* d : {"grace", "clean", "replaced", "silent", "answers", "lapsed", "back"}) {
    a.Signal("alice", d);
  }
  a.Signal("alice", "drained", 1, "gw-x");
  a.t->Run(500);
  // At 500: an abrupt disconnect (grace, then dead 1500 ms later), a clean
  // one, a newer session, a drain.
  ASSERT_TRUE(e.DisconnectDevice("alice", "grace", 1, DisconnectKind::kAbrupt).ok());
  ASSERT_TRUE(e.DisconnectDevice("alice", "clean", 1, DisconnectKind::kClean).ok());
  a.Signal("alice", "replaced", 2);
  ASSERT_EQ(e.DrainGateway("gw-x").value(), 1u);
  // "answers" answers its probe at 2000; "back" and "lapsed" beat at 1000
  // and 3000.
  a.t->Run(500);
  a.Signal("alice", "back");
  a.Signal("alice", "lapsed");
  a.t->Run(1000);
  ASSERT_EQ(a.prober.ids.size(), 1u);
  ASSERT_TRUE(e.AnswerProbe(a.prober.ids[0]).ok());
  a.t->Run(1000);
  a.Signal("alice", "back");
  a.Signal("alice", "lapsed");
  // "silent": probed at 2000 and 3000, never answered: DEAD at 4000. It
  // comes back on its session at once: a revival connects again.
  a.t->Run(1000);
  a.Signal("alice", "silent");
  // "lapsed" is disconnected abruptly past its deadline (7000), before any
  // tick noticed (and sent it probes).
  a.t->clock.Advance(3500);
  ASSERT_TRUE(e.DisconnectDevice("alice", "lapsed", 1, DisconnectKind::kAbrupt).ok());
  // Transitions reach the history on a tick (this one, at 7500, also finds
  // the others that fell silent dead).
  e.Tick();

  EXPECT_THAT(Audit(e, "alice", "grace", a.start),
              ElementsAre(Ev(E::kConnect, 0), Ev(E::kGrace, 500), Ev(E::kDeadAfterGrace, 2000)));
  EXPECT_THAT(Audit(e, "alice", "clean", a.start),
              ElementsAre(Ev(E::kConnect, 0), Ev(E::kDeadClean, 500)));
  EXPECT_THAT(Audit(e, "alice", "replaced", a.start),
              ElementsAre(Ev(E::kConnect, 0), Ev(E::kDeadReplaced, 500, 1),
                          Ev(E::kConnect, 500, 2),
                          // silent since 500, probed at 2500 and 3500: noticed
                          // dead by the tick at 7500
                          Ev(E::kProbeGivenUp, 7500, 2), Ev(E::kDeadTimeout, 7500, 2)));
  EXPECT_THAT(Audit(e, "alice", "drained", a.start),
              ElementsAre(Ev(E::kConnect, 0), Ev(E::kDeadDrained, 500)));
  EXPECT_THAT(Audit(e, "alice", "answers", a.start),
              ElementsAre(Ev(E::kConnect, 0), Ev(E::kProbeAnswered, 2000),
                          // probed again at 4000, then no tick until 7500
                          Ev(E::kProbeGivenUp, 7500), Ev(E::kDeadTimeout, 7500)));
  EXPECT_THAT(Audit(e, "alice", "silent", a.start),
              ElementsAre(Ev(E::kConnect, 0), Ev(E::kProbeGivenUp, 4000),
                          Ev(E::kDeadTimeout, 4000), Ev(E::kConnect, 4000)));
  EXPECT_THAT(Audit(e, "alice", "lapsed", a.start),
              ElementsAre(Ev(E::kConnect, 0), Ev(E::kDeadAbrupt, 7500)));
  // Heartbeats of a live device are no transitions; silent past its
  // deadline with no tick to probe it, it dies without a probe outcome.
  EXPECT_THAT(Audit(e, "alice", "back", a.start),
              ElementsAre(Ev(E::kConnect, 0), Ev(E::kDeadTimeout, 7500)));
  // A window answers its part, oldest first; the platform is the device's.
  auto w = e.DeviceHistory("alice", "grace", a.start + 1, a.start + 2000, "alice").value();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[1].event, E::kDeadAfterGrace);
  EXPECT_EQ(w[1].platform, Platform::kWeb);
  // An unknown device or user has none.
  EXPECT_TRUE(e.DeviceHistory("alice", "nothing", 0, kMax, "alice").value().empty());
  EXPECT_TRUE(e.DeviceHistory("nobody", "grace", 0, kMax, "nobody").value().empty());
}

// Each entry has the platform the device had then: a new session on another
// platform ends the old one as it was, and connects as it is now.
TEST(DeviceHistory, EachEntryHasThePlatformOfItsSession) {
  auto history = NewMemoryHistoryStore();
  AuditEngine a(history.get());
  Engine& e = a.engine();
  auto signal = [&](const char* device, uint64_t session, Platform p) {
    presence::Signal s = TestEngine::Sig("alice", device, session);
    s.platform = p;
    ASSERT_TRUE(e.Signal(s).ok());
  };
  signal("replaced", 1, Platform::kWeb);
  signal("lapsed", 1, Platform::kWeb);
  a.t->Run(500);
  signal("replaced", 2, Platform::kMobile);  // takes over a live session
  // "lapsed" is past its deadline (4000) with no tick to notice it when its
  // next session comes.
  a.t->clock.Advance(5000);
  signal("lapsed", 2, Platform::kDesktop);
  e.Tick();
  auto platforms = [&](const char* device) {
    std::vector<std::string> out;
    const std::vector<DeviceTransition> h = e.DeviceHistory("alice", device, 0, kMax, "alice").value();
    for (const DeviceTransition& t : h) {
      out.push_back(absl::StrCat(static_cast<int>(t.event), "/", t.session_id, "/", PlatformName(t.platform)));
    }
    return out;
  };
  // (silent since 500, its session 2 dies at the tick, still a phone)
  EXPECT_THAT(platforms("replaced"), ElementsAre("1/1/web", "8/1/web", "1/2/mobile", "3/2/mobile"));
  EXPECT_THAT(platforms("lapsed"), ElementsAre("1/1/web", "3/1/web", "1/2/desktop"));
}

TEST(DeviceHistory, OnlyTheUserReadsItAndAnyoneElseLearnsNothing) {
  auto history = NewMemoryHistoryStore();
  AuditEngine a(history.get());
  Engine& e = a.engine();
  a.Signal("alice", "web");
  a.t->Run(200);
  ASSERT_FALSE(e.DeviceHistory("alice", "web", 0, kMax, "alice").value().empty());
  // Another viewer, or none, is refused alike whether the user and device
  // exist or not, and whether or not it is invisible.
  for (const char* viewer : {"bob", ""}) {
    for (auto [user, device] : {std::pair{"alice", "web"}, std::pair{"alice", "nothing"},
                                std::pair{"nobody", "web"}}) {
      auto h = e.DeviceHistory(user, device, 0, kMax, viewer);
      EXPECT_TRUE(absl::IsPermissionDenied(h.status())) << user << "/" << device << " by '"
                                                        << viewer << "': " << h.status();
      EXPECT_EQ(h.status().message(), "a device's history is only its user's own");
    }
  }
  // Bad input is answered before the viewer is looked at.
  EXPECT_TRUE(absl::IsInvalidArgument(e.DeviceHistory("", "web", 0, 1, "").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(e.DeviceHistory("alice", "", 0, 1, "alice").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      e.DeviceHistory("alice", std::string(300, 'd'), 0, 1, "alice").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(e.DeviceHistory("alice", "web", 5, 1, "alice").status()));
  // Without a history store the user is told so.
  TestEngine none;
  EXPECT_TRUE(absl::IsFailedPrecondition(
      none.engine->DeviceHistory("alice", "web", 0, 1, "alice").status()));
}

TEST(DeviceHistory, TheFileStoreKeepsItAcrossARestartAndRetentionDropsIt) {
  testing_fs::TempDir dir;
  std::vector<std::string> before;
  int64_t start = 0;
  {
    auto fs = FileStore::Open(dir.path(), FileStoreOptions()).value();
    AuditEngine a(fs->history());
    start = a.start;
    a.Signal("alice", "web");
    a.t->Run(500);
    ASSERT_TRUE(a.engine().DisconnectDevice("alice", "web", 1, DisconnectKind::kClean).ok());
    a.t->Run(100);
    before = Audit(a.engine(), "alice", "web", start);
    ASSERT_THAT(before, ElementsAre(Ev(E::kConnect, 0), Ev(E::kDeadClean, 500)));
    a.t.reset();
  }
  auto fs = FileStore::Open(dir.path(), FileStoreOptions()).value();
  ASSERT_TRUE(fs->Compact().ok());  // through a snapshot too
  fs.reset();
  fs = FileStore::Open(dir.path(), FileStoreOptions()).value();
  Options o;
  o.history = fs->history();
  o.history_retention_ms = 60000;
  TestEngine t(o);
  EXPECT_EQ(Audit(*t.engine, "alice", "web", start), before);
  // Retention runs once a minute and drops what is older than its window.
  t.Run(125000, 1000);
  EXPECT_TRUE(Audit(*t.engine, "alice", "web", start).empty());
}

// The stores that keep the audit in memory keep at most 65,536 entries per
// user: past that the oldest eighth of the user's go, so a device that
// connects and disconnects without end cannot fill the memory. The file
// store comes back from its log (and from a snapshot) to the same entries.
TEST(DeviceHistory, AUsersAuditInMemoryIsBounded) {
  constexpr int64_t kAppended = 70000;
  // Trimmed at the 65,537th to 57,344; 4,463 came after.
  constexpr int64_t kKept = 57344 + (kAppended - 65537);
  auto check = [&](HistoryStore& h, const char* what) {
    auto all = h.QueryDevice("alice", "phone", 0, kMax).value();
    ASSERT_EQ(static_cast<int64_t>(all.size()), kKept) << what;
    EXPECT_EQ(all.front().at_ms, kAppended - kKept) << what;
    EXPECT_EQ(all.back().at_ms, kAppended - 1) << what;
    EXPECT_EQ(h.QueryDevice("bob", "phone", 0, kMax).value().size(), 1u) << what;
  };
  auto fill = [&](HistoryStore& h) {
    ASSERT_TRUE(h.AppendDevices({DeviceTransition{"bob", "phone", 0, 1, E::kConnect, Platform::kWeb}}).ok());
    std::vector<DeviceTransition> batch;
    for (int64_t i = 0; i < kAppended; ++i) {
      batch.push_back(DeviceTransition{"alice", "phone", i, 1, i % 2 ? E::kDeadClean : E::kConnect,
                                       Platform::kMobile});
      if (batch.size() == 1000) {
        ASSERT_TRUE(h.AppendDevices(batch).ok());
        batch.clear();
      }
    }
  };
  auto memory = NewMemoryHistoryStore();
  fill(*memory);
  check(*memory, "memory");

  testing_fs::TempDir dir;
  {
    auto fs = FileStore::Open(dir.path(), FileStoreOptions()).value();
    fill(*fs->history());
    check(*fs->history(), "file");
    EXPECT_THAT(fs->RenderMetrics(),
                ::testing::HasSubstr(absl::StrCat("presence_file_store_device_transitions_dropped_total ",
                                                  kAppended - kKept)));
  }
  auto fs = FileStore::Open(dir.path(), FileStoreOptions()).value();
  check(*fs->history(), "file, reopened from its log");
  ASSERT_TRUE(fs->Compact().ok());
  fs.reset();
  fs = FileStore::Open(dir.path(), FileStoreOptions()).value();
  check(*fs->history(), "file, reopened from a snapshot");
}

}  // namespace
}  // namespace presence::testing
