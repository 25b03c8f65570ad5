// workspace_sim: a small workspace on a simulated clock.
//
// A few hundred users with one to three devices each (web, desktop, mobile)
// send jittery heartbeats, lose a few, drop connections, reconnect, log out.
// Six named users play scripted scenes on top of that crowd:
//
//   alice  reloads her only browser tab: an abrupt disconnect, then a new
//          session 400 ms later, inside the 1.5 s grace. Nobody sees a thing.
//   bob    closes his laptop lid (abrupt disconnect, no return): OFFLINE once
//          the grace has passed.
//   carol  sets Do Not Disturb for 15 s: DND, then ONLINE when it expires.
//   dave   goes invisible: OFFLINE to everyone, ONLINE to himself.
//   erin   has only a phone in her pocket, kept alive by INFERRED background
//          signals once a minute: AWAY.
//   frank  loses his network for 10 s without a goodbye: OFFLINE by timeout,
//          then back; the engine counts that as a false offline.
//
// The program drives a presence::ManualClock itself, in 100 ms ticks, calling
// Engine::Tick() after each one, so it runs much faster than real time and a
// given --seed always prints the same thing. Every published change of the
// named users is printed as it happens; for the crowd, one count per second.
// At the end: a summary and checks of the scenes. Exit code 0 when every check
// passes, 1 when one fails, 2 on a usage error.
//
//   workspace_sim [--users N] [--seconds S] [--seed X] [--quiet]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/listener.h"

namespace {

using presence::Activity;
using presence::Cause;
using presence::CauseName;
using presence::ChangeEvent;
using presence::DeviceHandle;
using presence::DeviceSummary;
using presence::DisconnectKind;
using presence::Platform;
using presence::Source;
using presence::State;
using presence::StateName;

constexpr int64_t kTickMs = 100;                 // one Engine::Tick() per tick
constexpr int64_t kEpochMs = 1'704'099'600'000;  // 2024-01-01 09:00 UTC: clock at t = 0
constexpr int kScriptedSeconds = 25;             // the scripted scenes end by then

// ---- Flags -------------------------------------------------------------------

struct Flags {
  int users = 300;
  int seconds = 60;
  uint64_t seed = 1;
  bool quiet = false;
};

constexpr char kUsage[] =
    "usage: workspace_sim [--users N] [--seconds S] [--seed X] [--quiet]\n"
    "  --users N    users in the workspace, the six named ones included (default 300)\n"
    "  --seconds S  simulated seconds to run, at least 25 (default 60)\n"
    "  --seed X     seed of the random crowd; a seed always prints the same (default 1)\n"
    "  --quiet      print only the summary\n";

// Reads "--flag value" or "--flag=value" arguments into `flags`. Returns an
// error message, or an empty string when every argument was understood.
std::string ParseFlags(int argc, char** argv, Flags* flags) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--quiet") {
      flags->quiet = true;
      continue;
    }
    const std::vector<std::string> parts = absl::StrSplit(arg, absl::MaxSplits('=', 1));
    const std::string& name = parts[0];
    if (parts.size() == 1 && i + 1 == argc) return absl::StrCat(name, " needs a value");
    const std::string value = parts.size() == 2 ? parts[1] : argv[++i];
    bool ok;
    if (name == "--users") {
      ok = absl::SimpleAtoi(value, &flags->users) && flags->users >= 6;
    } else if (name == "--seconds") {
      ok = absl::SimpleAtoi(value, &flags->seconds) && flags->seconds >= kScriptedSeconds;
    } else if (name == "--seed") {
      ok = absl::SimpleAtoi(value, &flags->seed);
    } else {
      return absl::StrCat("unknown flag ", name);
    }
    if (!ok) return absl::StrCat("bad value for ", name, ": ", value);
  }
  return "";
}

// ---- Formatting ----------------------------------------------------------------

// Simulation time in seconds, from a time on the engine's clock.
double SimSeconds(int64_t clock_ms) { return (clock_ms - kEpochMs) / 1000.0; }

// "2 (web 1, mobile 1)": live devices per platform.
std::string DescribeDevices(const DeviceSummary& d) {
  std::string parts;
  for (Platform p : {Platform::kWeb, Platform::kDesktop, Platform::kMobile, Platform::kConsole,
                     Platform::kOther}) {
    if (d.count(p) == 0) continue;
    absl::StrAppend(&parts, parts.empty() ? "" : ", ", presence::PlatformName(p), " ",
                    d.count(p));
  }
  return parts.empty() ? "0" : absl::StrCat(d.total(), " (", parts, ")");
}

// ---- The change log: what the engine published --------------------------------

// ChangeLog receives every published change. It prints the named users'
// changes in full and keeps them for the checks; for everyone else it counts
// changes per new state and prints the counts once per simulated second.
class ChangeLog : public presence::ChangeListener {
 public:
  ChangeLog(std::vector<std::string> watched, bool quiet)
      : watched_(std::move(watched)), quiet_(quiet) {}

  void OnChanges(absl::Span<const ChangeEvent> events) override {
    for (const ChangeEvent& e : events) {
      ++by_cause_[e.cause];
      if (!IsWatched(e.user_id)) {
        ++others_this_second_[e.state];
        continue;
      }
      watched_events_.push_back(e);
      if (quiet_) continue;
      std::string note;
      if (e.invisible) {
        note = absl::StrCat("  (invisible: ", e.user_id, " sees ", StateName(e.self_state), ")");
      }
      absl::PrintF("[%5.1fs] %-6s %-7s -> %-7s  %-15s live %s%s\n", SimSeconds(e.published_at_ms),
                   e.user_id, StateName(e.previous), StateName(e.state), CauseName(e.cause),
                   DescribeDevices(e.devices), note);
    }
  }

  // Prints, then resets, the crowd's counts of the second that ends at `t_s`.
  void EndOfSecond(int t_s) {
    int total = 0;
    std::string parts;
    for (const auto& [state, n] : others_this_second_) {
      total += n;
      absl::StrAppend(&parts, parts.empty() ? "" : ", ", StateName(state), " ", n);
    }
    if (total > 0 && !quiet_) {
      absl::PrintF("[%3d.0s] crowd: %d change%s -> %s\n", t_s, total, total == 1 ? "" : "s",
                   parts);
    }
    others_this_second_.clear();
  }

  // The named user's published changes, oldest first.
  std::vector<ChangeEvent> EventsOf(absl::string_view user) const {
    std::vector<ChangeEvent> out;
    for (const ChangeEvent& e : watched_events_) {
      if (e.user_id == user) out.push_back(e);
    }
    return out;
  }
  const std::map<Cause, int>& by_cause() const { return by_cause_; }

 private:
  bool IsWatched(absl::string_view user) const {
    for (const std::string& w : watched_) {
      if (w == user) return true;
    }
    return false;
  }

  const std::vector<std::string> watched_;
  const bool quiet_;
  std::vector<ChangeEvent> watched_events_;
  std::map<Cause, int> by_cause_;
  std::map<State, int> others_this_second_;
};

// ---- The simulation -----------------------------------------------------------

// One client of a user, as the host sees it: a socket and its handle.
struct Device {
  std::string user_id;
  std::string device_id;
  Platform platform = Platform::kWeb;
  Source source = Source::kApp;  // what keeps it alive: the app, or INFERRED signals
  bool scripted = false;         // a named user's device: no random behaviour
  bool connected = false;        // the host holds an open session
  uint64_t session = 0;          // grows on every reconnect
  DeviceHandle handle;
  Activity activity = Activity::kActive;
};

// Workspace owns the clock, the engine and the devices, and runs a queue of
// timed actions: each action runs with the clock set to its own time, and the
// engine ticks every 100 ms in between.
class Workspace {
 public:
  // Per heartbeat of a crowd device: the chances that it is lost on the way,
  // that the person goes idle or comes back, and that the connection breaks.
  static constexpr double kLoss = 0.03;
  static constexpr double kGoIdle = 0.004;
  static constexpr double kGoActive = 0.03;
  static constexpr double kAbruptDrop = 0.0008;  // socket dropped; most come back
  static constexpr double kGoSilent = 0.0004;    // network gone, no goodbye: a timeout
  static constexpr double kLogOut = 0.0003;      // clean disconnect, gone for good

  Workspace(const Flags& flags, ChangeLog* log) : rng_(flags.seed), log_(log) {
    presence::Options options;  // the defaults: 1 s heartbeats, 4 s offline, 1.5 s grace
    options.clock = &clock_;
    options.listener = log;
    engine_ = presence::Engine::Create(options).value();
  }

  presence::Engine& engine() { return *engine_; }
  int64_t now() const { return clock_.NowMs() - kEpochMs; }  // simulation time in ms
  size_t device_count() const { return devices_.size(); }
  int errors() const { return errors_; }

  // Adds a device; it connects at `connect_at_ms`.
  Device* AddDevice(std::string user, std::string device, Platform platform, int64_t connect_at_ms,
                    bool scripted, Source source = Source::kApp) {
    devices_.push_back(std::make_unique<Device>());
    Device* d = devices_.back().get();
    d->user_id = std::move(user);
    d->device_id = std::move(device);
    d->platform = platform;
    d->source = source;
    d->scripted = scripted;
    At(connect_at_ms, [this, d] { Connect(d); });
    return d;
  }

  // Runs `action` at simulation time `t_ms`.
  void At(int64_t t_ms, std::function<void()> action) {
    queue_.push(Timed{t_ms, next_seq_++, std::move(action)});
  }

  // Runs the simulation for `seconds`, ticking the engine every 100 ms.
  void Run(int seconds) {
    for (int64_t tick = kTickMs; tick <= int64_t{seconds} * 1000; tick += kTickMs) {
      while (!queue_.empty() && queue_.top().t_ms <= tick) {
        Timed next = queue_.top();
        queue_.pop();
        clock_.Set(kEpochMs + next.t_ms);
        next.action();
      }
      clock_.Set(kEpochMs + tick);
      engine_->Tick();
      if (tick % 1000 == 0) log_->EndOfSecond(static_cast<int>(tick / 1000));
    }
  }

  // ---- What the host does -------------------------------------------------------

  // Opens a new session for the device and starts its heartbeats.
  void Connect(Device* d) {
    presence::Signal s;
    s.user_id = d->user_id;
    s.device_id = d->device_id;
    s.session_id = ++d->session;
    s.platform = d->platform;
    s.source = d->source;
    s.activity = d->activity = Activity::kActive;
    absl::StatusOr<DeviceHandle> handle = engine_->Connect(s);
    if (!Ok(handle.status(), "Connect")) return;
    d->handle = *handle;
    d->connected = true;
    ScheduleBeat(d);
  }

  // The socket closed: cleanly (logout) or abruptly (dropped, page reload).
  void Disconnect(Device* d, DisconnectKind kind) {
    d->connected = false;
    Ok(engine_->Disconnect(d->handle, kind), "Disconnect");
  }

  // The network went away without a goodbye: heartbeats simply stop, and the
  // host never calls Disconnect. The engine finds out by timeout.
  void GoSilent(Device* d) { d->connected = false; }

  // Any failed engine call is unexpected here: print it and count it.
  bool Ok(const absl::Status& status, const char* what) {
    if (status.ok()) return true;
    ++errors_;
    absl::FPrintF(stderr, "[%5.1fs] %s failed: %s\n", now() / 1000.0, what, status.ToString());
    return false;
  }

 private:
  struct Timed {
    int64_t t_ms;
    uint64_t seq;  // ties run in the order they were queued
    std::function<void()> action;
    bool operator<(const Timed& o) const {  // for the max-heap: earliest first
      return t_ms != o.t_ms ? t_ms > o.t_ms : seq > o.seq;
    }
  };

  // The next heartbeat: about once a second with +-250 ms of jitter for app
  // heartbeats, about once a minute for INFERRED background signals.
  void ScheduleBeat(Device* d) {
    const int64_t base = d->source == Source::kInferred ? 60'000 : 1'000;
    const int64_t jitter = base / 4;
    const uint64_t session = d->session;
    At(now() + Uniform(base - jitter, base + jitter), [this, d, session] {
      if (!d->connected || d->session != session) return;  // that session is over
      Heartbeat(d);
    });
  }

  void Heartbeat(Device* d) {
    if (d->scripted) {
      Ok(engine_->Beat(d->handle, d->activity, d->source), "Beat");
      ScheduleBeat(d);
      return;
    }
    if (!Chance(kLoss)) Ok(engine_->Beat(d->handle, d->activity, d->source), "Beat");
    if (Chance(d->activity == Activity::kActive ? kGoIdle : kGoActive)) {
      d->activity = d->activity == Activity::kActive ? Activity::kIdle : Activity::kActive;
    }
    const double fault = Uniform01();
    if (fault < kAbruptDrop) {
      Disconnect(d, DisconnectKind::kAbrupt);
      // Seven in ten come back: some within the grace (a reload: no diff),
      // some later (an OFFLINE that turns out false).
      if (Chance(0.7)) At(now() + Uniform(300, 15'000), [this, d] { Connect(d); });
      return;
    }
    if (fault < kAbruptDrop + kGoSilent) {
      GoSilent(d);
      At(now() + Uniform(2'000, 20'000), [this, d] { Connect(d); });
      return;
    }
    if (fault < kAbruptDrop + kGoSilent + kLogOut) {
      Disconnect(d, DisconnectKind::kClean);
      return;
    }
    ScheduleBeat(d);
  }

  int64_t Uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }
  double Uniform01() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }
  bool Chance(double p) { return Uniform01() < p; }

  presence::ManualClock clock_{kEpochMs};
  std::unique_ptr<presence::Engine> engine_;
  std::mt19937_64 rng_;
  ChangeLog* log_;
  std::vector<std::unique_ptr<Device>> devices_;
  std::priority_queue<Timed> queue_;
  uint64_t next_seq_ = 0;
  int errors_ = 0;
};

// ---- Summary helpers ------------------------------------------------------------

// The sample lines of Prometheus text whose metric name starts with `prefix`.
std::vector<std::string> MetricLines(const std::string& metrics, absl::string_view prefix) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(metrics, '\n')) {
    if (absl::StartsWith(line, prefix)) out.emplace_back(line);
  }
  return out;
}

// The value of the one sample line "<sample> <value>", or -1 when missing.
double MetricValue(const std::string& metrics, absl::string_view sample) {
  for (const std::string& line : MetricLines(metrics, absl::StrCat(sample, " "))) {
    double v;
    if (absl::SimpleAtod(absl::string_view(line).substr(sample.size() + 1), &v)) return v;
  }
  return -1;
}

class Checks {
 public:
  void Expect(bool ok, absl::string_view what) {
    absl::PrintF("  %s  %s\n", ok ? "PASS" : "FAIL", what);
    if (!ok) ++failed_;
  }
  bool all_passed() const { return failed_ == 0; }

 private:
  int failed_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (argc == 2 && (absl::string_view(argv[1]) == "--help" || absl::string_view(argv[1]) == "-h")) {
    absl::PrintF("%s", kUsage);
    return 0;
  }
  if (const std::string error = ParseFlags(argc, argv, &flags); !error.empty()) {
    absl::FPrintF(stderr, "workspace_sim: %s\n%s", error, kUsage);
    return 2;
  }

  const std::vector<std::string> named = {"alice", "bob", "carol", "dave", "erin", "frank"};
  ChangeLog log(named, flags.quiet);
  Workspace ws(flags, &log);
  presence::Engine& engine = ws.engine();

  // ---- The cast: six named users with scripted scenes --------------------------
  Device* alice = ws.AddDevice("alice", "web-1", Platform::kWeb, 500, /*scripted=*/true);
  Device* bob = ws.AddDevice("bob", "web-1", Platform::kWeb, 500, true);
  ws.AddDevice("carol", "desktop", Platform::kDesktop, 500, true);
  ws.AddDevice("carol", "phone", Platform::kMobile, 700, true);
  ws.AddDevice("dave", "desktop", Platform::kDesktop, 500, true);
  ws.AddDevice("erin", "phone", Platform::kMobile, 500, true, Source::kInferred);
  Device* frank = ws.AddDevice("frank", "laptop", Platform::kDesktop, 500, true);

  ws.At(5'000, [&] {
    ws.Ok(engine.SetOverride("dave", presence::OverrideState::kInvisible).status(), "SetOverride");
  });
  ws.At(6'000, [&] {
    const int64_t until = engine.NowMs() + 15'000;  // absolute time on the engine's clock
    ws.Ok(engine.SetOverride("carol", presence::OverrideState::kDnd, until).status(),
          "SetOverride");
  });
  ws.At(8'000, [&] { ws.GoSilent(frank); });

  // The page reload: abrupt disconnect, new session 400 ms later. While it
  // happens, alice must look ONLINE at every tick.
  const int64_t reload_at = 10'000;
  const int64_t grace = engine.options().reconnect_grace_ms;
  int reload_not_online = 0;
  ws.At(reload_at, [&] { ws.Disconnect(alice, DisconnectKind::kAbrupt); });
  ws.At(reload_at + 400, [&] { ws.Connect(alice); });
  for (int64_t t = reload_at; t <= reload_at + grace + 1'000; t += kTickMs) {
    ws.At(t, [&] { reload_not_online += engine.GetOne("alice").state != State::kOnline; });
  }
  ws.At(10'000, [&] { ws.Disconnect(bob, DisconnectKind::kAbrupt); });
  ws.At(18'000, [&] { ws.Connect(frank); });

  // ---- The crowd: everyone else, one to three devices each ----------------------
  const std::vector<std::vector<Platform>> mixes = {
      {Platform::kWeb},
      {Platform::kDesktop},
      {Platform::kWeb, Platform::kMobile},
      {Platform::kDesktop, Platform::kMobile},
      {Platform::kWeb, Platform::kDesktop, Platform::kMobile},
      {Platform::kWeb, Platform::kWeb, Platform::kMobile},  // two browser tabs
  };
  std::mt19937_64 cast_rng(flags.seed ^ 0x5eed);
  std::vector<std::string> user_ids = named;
  for (int i = 1; i <= flags.users - static_cast<int>(named.size()); ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "u%04d", i);
    user_ids.push_back(id);
    const auto& mix = mixes[cast_rng() % mixes.size()];
    for (size_t k = 0; k < mix.size(); ++k) {
      const int64_t arrive = static_cast<int64_t>(cast_rng() % 3'000);  // the first 3 s
      ws.AddDevice(id, absl::StrCat(presence::PlatformName(mix[k]), "-", k + 1), mix[k], arrive,
                   /*scripted=*/false);
    }
  }

  absl::PrintF("workspace_sim: %d users, %d devices, %d simulated seconds, seed %d\n", flags.users,
               ws.device_count(), flags.seconds, flags.seed);
  if (!flags.quiet) {
    absl::PrintF("Changes of %s are printed as they are published;\n"
                 "the other users' changes are counted per second.\n\n",
                 absl::StrJoin(named, ", "));
  }

  ws.Run(flags.seconds);

  // ---- Summary ---------------------------------------------------------------------
  absl::PrintF("\n== Summary after %d simulated seconds ==\n", flags.seconds);

  std::vector<absl::string_view> ids(user_ids.begin(), user_ids.end());
  std::map<State, int> by_state;
  for (const presence::UserPresence& p : engine.Get(ids)) ++by_state[p.state];
  absl::PrintF("users by state:       ");
  for (State s : {State::kOnline, State::kAway, State::kDnd, State::kOffline}) {
    absl::PrintF("  %s %d", StateName(s), by_state[s]);
  }
  absl::PrintF("\ntransitions by cause: ");
  for (const auto& [cause, n] : log.by_cause()) absl::PrintF("  %s %d", CauseName(cause), n);

  const std::string metrics = engine.RenderMetrics();
  const double false_offlines = MetricValue(metrics, "presence_false_offlines_total");
  absl::PrintF("\nfalse offlines:        %.0f (devices back within %d s of a timeout or an abrupt drop)\n",
               false_offlines, engine.options().false_offline_window_ms / 1000);
  absl::PrintF("\nmetrics (from engine.RenderMetrics()):\n");
  for (absl::string_view name : {"presence_transitions_total", "presence_publish_latency_ms"}) {
    for (const std::string& line : MetricLines(metrics, name)) absl::PrintF("  %s\n", line);
  }

  // ---- Checks -----------------------------------------------------------------------
  absl::PrintF("\nchecks:\n");
  Checks checks;
  auto last_event = [&](absl::string_view user) {
    std::vector<ChangeEvent> ev = log.EventsOf(user);
    return ev.empty() ? ChangeEvent() : ev.back();
  };

  int reload_diffs = 0;
  for (const ChangeEvent& e : log.EventsOf("alice")) {
    const int64_t t = e.published_at_ms - kEpochMs;
    reload_diffs += t >= reload_at && t <= reload_at + grace + 1'000;
  }
  checks.Expect(reload_diffs == 0 && reload_not_online == 0,
                absl::StrCat("page reload (alice): ", reload_diffs, " diffs published, ",
                             reload_not_online, " ticks not online"));

  const ChangeEvent bob_off = last_event("bob");
  checks.Expect(bob_off.state == State::kOffline && bob_off.cause == Cause::kDisconnect &&
                    bob_off.published_at_ms - kEpochMs >= 10'000 + grace,
                "lid closed (bob): offline by disconnect, after the grace");

  const std::vector<ChangeEvent> carol = log.EventsOf("carol");
  bool carol_dnd_then_back = false;
  for (size_t i = 0; i + 1 < carol.size(); ++i) {
    carol_dnd_then_back |= carol[i].state == State::kDnd && carol[i].cause == Cause::kOverride &&
                           carol[i + 1].state == State::kOnline &&
                           carol[i + 1].cause == Cause::kOverrideExpiry;
  }
  checks.Expect(carol_dnd_then_back, "DND for 15 s (carol): dnd, then online on expiry");

  checks.Expect(engine.GetOne("dave").state == State::kOffline &&
                    engine.GetOne("dave", /*viewer=*/"dave").state == State::kOnline &&
                    engine.GetOne("dave").devices.total() == 0,
                "invisible (dave): offline with no devices to others, online to himself");

  const presence::UserPresence erin = engine.GetOne("erin");
  checks.Expect(erin.state == State::kAway && erin.devices.count(Platform::kMobile) == 1,
                "inferred signals only (erin): away, one mobile device live");

  std::vector<State> frank_states;
  for (const ChangeEvent& e : log.EventsOf("frank")) frank_states.push_back(e.state);
  checks.Expect(frank_states == std::vector<State>{State::kOnline, State::kOffline, State::kOnline} &&
                    log.EventsOf("frank")[1].cause == Cause::kTimeout && false_offlines >= 1,
                "network lost for 10 s (frank): offline by timeout, back, a false offline");

  bool counts_match = true;
  for (const auto& [cause, n] : log.by_cause()) {
    counts_match &= MetricValue(metrics, absl::StrCat("presence_transitions_total{cause=\"",
                                                      CauseName(cause), "\"}")) == n;
  }
  checks.Expect(counts_match, "the listener saw every transition the metrics count");
  checks.Expect(ws.errors() == 0, absl::StrCat("engine calls failed: ", ws.errors()));

  absl::PrintF("\n%s\n", checks.all_passed() ? "OK" : "FAILED");
  return checks.all_passed() ? 0 : 1;
}
