// Crash test of the engine over the file store: a child process runs an
// engine writing through a FileStore (kEveryWrite), step by step on a
// manual clock, and tells the parent through a pipe each time a step's Tick
// returned (its changes are then durable). The parent kills it with SIGKILL
// at a random moment, opens the folder with a new engine (a rebuild), and
// compares it, user by user, with a replay: a reference engine without a
// store that ran the same steps. Every user must be as the replay after the
// last acknowledged step, or after the one in flight when the child died
// (its records may have reached the store before the kill).
//
// The steps are keyed signals (active and idle, APP and INFERRED), clean
// disconnects and reconnects, and overrides. (A device in its reconnect
// grace is not kept across a restart: the grace ends with the process.)
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/file_store.h"

namespace presence {
namespace {

constexpr int kUsers = 12;
constexpr int kSteps = 400;
constexpr int64_t kStart = 1'000'000;
constexpr int64_t kStepMs = 100;

struct Op {
  enum Kind { kSignal, kDisconnect, kOverride, kClear } kind;
  int user, device;
  Source source;
  Activity activity;
  OverrideState override_state;
};

std::string UserName(int u) { return "user-" + std::to_string(u); }
std::string DeviceName(int d) { return "dev-" + std::to_string(d); }

// The same steps for every run with the same seed.
std::vector<std::vector<Op>> MakeSteps(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<Op>> steps(kSteps);
  for (auto& step : steps) {
    const int n = 1 + rng() % 6;
    for (int i = 0; i < n; ++i) {
      Op op{};
      op.user = rng() % kUsers;
      op.device = rng() % 2;
      const int r = rng() % 20;
      op.kind = r < 15 ? Op::kSignal : r < 17 ? Op::kDisconnect : r < 19 ? Op::kOverride : Op::kClear;
      op.source = rng() % 4 ? Source::kApp : Source::kInferred;
      op.activity = rng() % 3 ? Activity::kActive : Activity::kIdle;
      op.override_state = static_cast<OverrideState>(1 + rng() % 4);
      step.push_back(op);
    }
  }
  return steps;
}

// Runs steps [0, upto] on `engine`, ticking after each; `on_step` is told
// each step that was ticked.
template <typename OnStep>
void RunSteps(Engine* engine, ManualClock* clock, const std::vector<std::vector<Op>>& steps,
              int upto, OnStep on_step) {
  std::vector<uint64_t> session(kUsers * 2, 1);
  for (int k = 0; k <= upto && k < static_cast<int>(steps.size()); ++k) {
    clock->Set(kStart + k * kStepMs);
    for (const Op& op : steps[k]) {
      const std::string user = UserName(op.user), device = DeviceName(op.device);
      uint64_t& s = session[op.user * 2 + op.device];
      switch (op.kind) {
        case Op::kSignal: {
          Signal sig;
          sig.user_id = user;
          sig.device_id = device;
          sig.session_id = s;
          sig.platform = op.device == 0 ? Platform::kWeb : Platform::kMobile;
          sig.source = op.source;
          sig.activity = op.activity;
          (void)engine->Signal(sig);
          break;
        }
        case Op::kDisconnect:
          if (engine->DisconnectDevice(user, device, s, DisconnectKind::kClean).ok()) ++s;
          break;
        case Op::kOverride:
          (void)engine->SetOverride(user, op.override_state);
          break;
        case Op::kClear:
          (void)engine->ClearOverrides(user);
          break;
      }
    }
    engine->Tick();
    on_step(k);
  }
}

Options StoreOptions(FileStore* fs, ManualClock* clock) {
  Options o;
  o.clock = clock;
  o.shards = 2;
  o.store = fs->store();
  o.history = fs->history();
  return o;
}

// The child: runs the steps, acknowledging each, until it is killed.
[[noreturn]] void Child(const std::string& dir, uint64_t seed, int ack_fd) {
  ManualClock clock(kStart);
  auto fs = FileStore::Open(dir, FileStoreOptions()).value();
  auto engine = Engine::Create(StoreOptions(fs.get(), &clock)).value();
  RunSteps(engine.get(), &clock, MakeSteps(seed), kSteps - 1, [&](int k) {
    if (write(ack_fd, &k, sizeof k) != sizeof k) _exit(3);
  });
  pause();  // wait for the kill
  _exit(0);
}

struct View {
  State state, self, published;
  uint64_t version;
  int devices;
  bool has_override;
  int64_t last_seen;
  bool operator==(const View& o) const {
    return state == o.state && self == o.self && published == o.published &&
           version == o.version && devices == o.devices && has_override == o.has_override &&
           last_seen == o.last_seen;
  }
};

View ViewOf(Engine* e, int u) {
  const std::string id = UserName(u);
  const absl::string_view ids[] = {id};
  const UserPresence p = e->GetOne(id);
  const UserPresence pub = e->GetPublished(ids)[0];
  return View{p.state, e->GetOne(id, id).state, pub.state, pub.version,
              p.devices.total(), p.has_override, p.last_seen_ms};
}

std::vector<View> ReplayTo(const std::vector<std::vector<Op>>& steps, int k) {
  ManualClock clock(kStart);
  Options o;
  o.clock = &clock;
  o.shards = 2;
  auto engine = Engine::Create(o).value();
  RunSteps(engine.get(), &clock, steps, k, [](int) {});
  std::vector<View> out;
  for (int u = 0; u < kUsers; ++u) out.push_back(ViewOf(engine.get(), u));
  return out;
}

TEST(EngineCrash, ARebuiltEngineEqualsAReplayOfTheAcknowledgedSteps) {
  const uint64_t base_seed = std::getenv("PRESENCE_CRASH_SEED") ? std::atoll(std::getenv("PRESENCE_CRASH_SEED")) : 1;
  std::mt19937_64 rng(base_seed);
  const std::filesystem::path root =
      std::filesystem::temp_directory_path() / ("presence-engine-crash-" + std::to_string(getpid()));
  int checked = 0, in_flight_seen = 0;
  for (int iteration = 0; iteration < 12; ++iteration) {
    SCOPED_TRACE(::testing::Message() << "iteration " << iteration);
    const uint64_t seed = base_seed * 1000 + iteration;
    const std::string dir = (root / std::to_string(iteration)).string();
    std::filesystem::remove_all(dir);
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      Child(dir, seed, fds[1]);
    }
    close(fds[1]);
    // Let it run a random while, then kill it mid-step.
    const int wait_ms = 30 + rng() % 400;
    int last_ack = -1;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fds[0], POLLIN, 0};
      if (poll(&p, 1, 5) > 0) {
        int k;
        if (read(fds[0], &k, sizeof k) == sizeof k) last_ack = k;
      }
    }
    kill(pid, SIGKILL);
    int k;
    while (read(fds[0], &k, sizeof k) == sizeof k) last_ack = k;  // acks sent before the kill
    close(fds[0]);
    waitpid(pid, nullptr, 0);

    const auto steps = MakeSteps(seed);
    const std::vector<View> at_ack = last_ack >= 0 ? ReplayTo(steps, last_ack) : std::vector<View>();
    const std::vector<View> in_flight = ReplayTo(steps, last_ack + 1);
    // The rebuilt engine, at the clock of the step it is compared with.
    auto fs = FileStore::Open(dir, FileStoreOptions());
    ASSERT_TRUE(fs.ok()) << fs.status();
    for (int u = 0; u < kUsers; ++u) {
      bool matched = false;
      for (int candidate : {last_ack, last_ack + 1}) {
        if (candidate < 0) continue;
        ManualClock clock(kStart + candidate * kStepMs);
        auto engine = Engine::Create(StoreOptions(fs->get(), &clock)).value();
        const View got = ViewOf(engine.get(), u);
        const View& want = candidate == last_ack ? at_ack[u] : in_flight[u];
        if (got == want) {
          matched = true;
          in_flight_seen += candidate != last_ack;
          break;
        }
      }
      if (last_ack < 0 && !matched) {
        // Killed before the first acknowledgement: the user is unknown or as
        // after step 0.
        ManualClock clock(kStart);
        auto engine = Engine::Create(StoreOptions(fs->get(), &clock)).value();
        matched = !engine->GetOne(UserName(u)).known;
      }
      EXPECT_TRUE(matched) << UserName(u) << " after acknowledged step " << last_ack;
      ++checked;
    }
    std::filesystem::remove_all(dir);
  }
  std::filesystem::remove_all(root);
  std::printf("engine crash: %d users checked over 12 kills (%d matched the step in flight)\n",
              checked, in_flight_seen);
}

}  // namespace
}  // namespace presence
