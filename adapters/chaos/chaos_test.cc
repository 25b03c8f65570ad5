// The chaos test (issue 10; docs/scale-out.md, "Chaos test"). On loopback:
// librdkafka's mock cluster (in this process, its brokers on loopback
// ports), a real redis-server as the shared store, three engine processes
// (presence_chaos_engine) and a load generator (GatewayPublishers, in this
// process).
//
//   Chaos.SigkillUnderLoad   SIGKILLs an engine under load; measures the RTO,
//                            acknowledged transitions lost, duplicates on the
//                            bus and at the watchers.
//   Chaos.RegionCutAndHeal   two regions with a RegionMirror each (in this
//                            process), the link between them cut under load
//                            and healed; measures the RPO and the time to
//                            converge.
//
// Each prints its figures ("CHAOS ..." lines); benchmarks/RESULTS.md, "Scale-out
// chaos", holds a run's table and the command.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "adapters/kafka/tests/mock_kafka.h"
#include "adapters/testing/servers.h"
#include "gtest/gtest.h"
#include "presence/bus.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/gateway.h"
#include "presence/kafka_bus.h"
#include "presence/kafka_ownership.h"
#include "presence/redis_store.h"
#include "presence/region.h"
#include "presence/store.h"
#include "presence/wire.h"
#include "tests/flaky.h"

#ifndef PRESENCE_CHAOS_ENGINE
#error "PRESENCE_CHAOS_ENGINE must name the presence_chaos_engine binary"
#endif

namespace presence {
namespace {

using kafka_testing::MockKafka;
using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;

int64_t MsBetween(TimePoint a, TimePoint b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}
void SleepMs(int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

constexpr uint32_t kPartitions = 12;
constexpr int kUsers = 240;

void MockOptions(KafkaBusOptions* o) {  // as MockKafka::NewTopicOptions
  o->consumer_config.push_back({"fetch.wait.max.ms", "10"});
  o->producer_config.push_back({"max.in.flight.requests.per.connection", "1"});
}

std::unique_ptr<KafkaBus> NewBus(const std::string& brokers, const std::string& topic,
                                 uint32_t partitions) {
  KafkaBusOptions o;
  o.brokers = brokers;
  o.topic = topic;
  o.partitions = partitions;
  MockOptions(&o);
  auto bus = KafkaBus::Create(o);
  EXPECT_TRUE(bus.ok()) << bus.status();
  return bus.ok() ? std::move(*bus) : nullptr;
}

// ---- An engine process -------------------------------------------------------------

class EngineProcess {
 public:
  EngineProcess(std::string id, const std::vector<std::string>& args, const std::string& log)
      : id_(std::move(id)) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) std::abort();
    std::vector<std::string> argv = {PRESENCE_CHAOS_ENGINE};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (std::string& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with the test
      dup2(in[0], STDIN_FILENO);
      dup2(out[1], STDOUT_FILENO);
      if (log_fd >= 0) dup2(log_fd, STDERR_FILENO);
      execv(cargv[0], cargv.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (log_fd >= 0) close(log_fd);
    to_ = in[1];
    from_ = out[0];
    reader_ = std::thread([this] { ReadLines(); });
  }
  ~EngineProcess() {
    if (!dead_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(to_);
    reader_.join();
    close(from_);
  }

  const std::string& id() const { return id_; }
  void Send(const std::string& line) {
    const std::string l = line + "\n";
    (void)!write(to_, l.data(), l.size());
  }
  // The next line (from where the last wait stopped) that starts with
  // `prefix`, or nullopt after timeout_ms. An "error" line fails the test.
  std::optional<std::string> Wait(const std::string& prefix, int64_t timeout_ms) {
    std::unique_lock<std::mutex> lock(mu_);
    const auto deadline = SteadyClock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      for (; cursor_ < lines_.size(); ++cursor_) {
        const std::string& l = lines_[cursor_].second;
        EXPECT_FALSE(absl::StartsWith(l, "error ")) << id_ << ": " << l;
        if (absl::StartsWith(l, prefix)) {
          last_at_ = lines_[cursor_].first;
          return lines_[cursor_++].second;
        }
      }
      if (eof_ || cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
        if (cursor_ >= lines_.size()) return std::nullopt;
      }
    }
  }
  TimePoint last_at() const { return last_at_; }
  // The latest line that starts with `prefix` (not consumed) and when it came.
  std::optional<std::pair<TimePoint, std::string>> Latest(const std::string& prefix) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = lines_.size(); i-- > 0;) {
      if (absl::StartsWith(lines_[i].second, prefix)) return lines_[i];
    }
    return std::nullopt;
  }
  std::vector<std::string> Errors() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto& [at, l] : lines_) {
      if (absl::StartsWith(l, "error ")) out.push_back(l);
    }
    return out;
  }
  // SIGKILL, then waitpid: when the harness knows it is dead.
  TimePoint KillAndReap() {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    dead_ = true;
    return SteadyClock::now();
  }

 private:
  void ReadLines() {
    std::string buf;
    char chunk[4096];
    for (;;) {
      const ssize_t n = read(from_, chunk, sizeof chunk);
      if (n <= 0) break;
      buf.append(chunk, static_cast<size_t>(n));
      for (size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
        std::lock_guard<std::mutex> lock(mu_);
        lines_.emplace_back(SteadyClock::now(), buf.substr(0, nl));
        buf.erase(0, nl + 1);
        cv_.notify_all();
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    eof_ = true;
    cv_.notify_all();
  }

  std::string id_;
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  bool dead_ = false;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<TimePoint, std::string>> lines_;
  size_t cursor_ = 0;
  bool eof_ = false;
  TimePoint last_at_;
};

// ---- What the bus carried: every change event, as a watcher of the topic -------------

class BusTail {
 public:
  struct Seen {
    uint64_t version = 0;
    State state = State::kOffline;
    Cause cause = Cause::kSignal;
  };
  BusTail(const std::string& brokers, const std::string& topic)
      : bus_(NewBus(brokers, topic, kPartitions)), thread_([this] { Run(); }) {}
  ~BusTail() {
    stop_ = true;
    thread_.join();
  }
  // When the change event with this trace id was read (nullopt: not yet).
  std::optional<TimePoint> TraceSeenAt(uint64_t trace) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = traces_.find(trace);
    if (it == traces_.end()) return std::nullopt;
    return it->second;
  }
  bool TraceSeen(uint64_t trace) { return TraceSeenAt(trace).has_value(); }
  // When a change event first showed `user` in `state` (nullopt: not yet).
  std::optional<TimePoint> StateSeenAt(const std::string& user, State state) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = first_in_state_.find({user, state});
    if (it == first_in_state_.end()) return std::nullopt;
    return it->second;
  }
  // The latest change event of each user.
  std::map<std::string, Seen> Latest() {
    std::lock_guard<std::mutex> lock(mu_);
    return latest_;
  }
  uint64_t events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  uint64_t duplicates() {
    std::lock_guard<std::mutex> lock(mu_);
    return duplicates_;
  }
  uint64_t timeouts() {
    std::lock_guard<std::mutex> lock(mu_);
    return timeouts_;
  }

 private:
  void Run() {
    std::vector<uint64_t> next(kPartitions, 0);
    while (!stop_) {
      size_t read = 0;
      for (uint32_t p = 0; p < kPartitions; ++p) {
        auto recs = bus_->Read(p, next[p], 1024);
        if (!recs.ok()) continue;
        read += recs->size();
        const auto now = SteadyClock::now();
        std::lock_guard<std::mutex> lock(mu_);
        for (const BusRecord& r : *recs) {
          next[p] = r.offset + 1;
          if (r.type != BusRecordType::kChange) continue;
          auto e = DecodeChangeEvent(r.payload);
          if (!e.ok()) continue;
          ++events_;
          if (!seen_.insert({e->user_id, e->version}).second) ++duplicates_;
          if (e->cause == Cause::kTimeout) ++timeouts_;
          if (e->trace_id != 0) traces_.emplace(e->trace_id, now);
          first_in_state_.emplace(std::make_pair(e->user_id, e->state), now);
          Seen& l = latest_[e->user_id];
          if (e->version > l.version) l = Seen{e->version, e->state, e->cause};
        }
      }
      if (read == 0) SleepMs(5);
    }
  }

  std::unique_ptr<KafkaBus> bus_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::set<std::pair<std::string, uint64_t>> seen_;
  std::map<uint64_t, TimePoint> traces_;
  std::map<std::pair<std::string, State>, TimePoint> first_in_state_;
  std::map<std::string, Seen> latest_;
  uint64_t events_ = 0, duplicates_ = 0, timeouts_ = 0;
  std::thread thread_;
};

// ---- The load: gateways publishing a known schedule -----------------------------------

State StateOf(Activity a) { return a == Activity::kActive ? State::kOnline : State::kAway; }

// Users user-0 .. user-(kUsers-1), one web device each, heartbeating once a
// second with their activity; while `flips` is on, each user's activity flips
// every 2 s (staggered), a transition ONLINE <-> AWAY. Several gateways, each a
// GatewayPublisher on its own Kafka client, each with a slice of the users.
class Load {
 public:
  struct Acked {  // a transition the gateway acknowledged
    uint64_t trace = 0;
    Activity activity = Activity::kActive;
    TimePoint at;
  };
  Load(const std::string& brokers, const std::string& topic, int gateways) {
    per_user_.resize(kUsers);
    for (int g = 0; g < gateways; ++g) {
      threads_.emplace_back([this, brokers, topic, g, gateways] { Run(brokers, topic, g, gateways); });
    }
  }
  ~Load() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  void SetFlips(bool on) { flips_ = on; }
  // From now on, the users of `partitions` keep their activity (they go on
  // heartbeating): their last transition is the one in flight when their
  // engine dies, and the final state shows whether it survived (a later one
  // cannot hide its loss).
  void Freeze(const std::vector<uint32_t>& partitions) {
    std::lock_guard<std::mutex> lock(mu_);
    frozen_partitions_ = partitions;
    frozen_ = true;
  }
  static bool IsFrozen(int i, const std::vector<uint32_t>& partitions) {
    return std::count(partitions.begin(), partitions.end(),
                                    PartitionFor(absl::StrCat("user-", i), kPartitions)) > 0;
  }
  // The users' acknowledged transitions, in order; and counts.
  std::vector<std::vector<Acked>> Transitions() {
    std::lock_guard<std::mutex> lock(mu_);
    return per_user_;
  }
  uint64_t acked() const { return acked_; }
  uint64_t refused() const { return refused_; }
  uint64_t late_rounds() const { return late_rounds_; }

 private:
  void Run(const std::string& brokers, const std::string& topic, int g, int gateways) {
    auto bus = NewBus(brokers, topic, kPartitions);
    if (bus == nullptr) return;
    GatewayOptions go;
    go.gateway_id = absl::StrCat("gw-", g);
    auto gw = GatewayPublisher::Create(bus.get(), go).value();
    std::vector<int> mine;
    for (int i = g; i < kUsers; i += gateways) mine.push_back(i);
    std::vector<Activity> current(kUsers, Activity::kActive);
    std::vector<bool> started(kUsers, false);
    auto round_start = SteadyClock::now();
    for (int round = 0; !stop_; ++round) {
      for (size_t j = 0; j < mine.size() && !stop_; ++j) {
        const int i = mine[j];
        // Paced over the second.
        std::this_thread::sleep_until(round_start + std::chrono::milliseconds(1000 * j / mine.size()));
        Activity a = current[i];
        bool frozen = false;
        if (frozen_) {
          std::lock_guard<std::mutex> lock(mu_);
          frozen = IsFrozen(i, frozen_partitions_);
        }
        if (flips_ && !frozen && started[i] && (round + i) % 2 == 0) {
          a = a == Activity::kActive ? Activity::kIdle : Activity::kActive;
        }
        const std::string user = absl::StrCat("user-", i);
        Signal s;
        s.user_id = user;
        s.device_id = "web";
        s.session_id = 1;
        s.platform = Platform::kWeb;
        s.source = Source::kApp;
        s.activity = a;
        auto trace = gw->Publish(s);
        if (!trace.ok()) {
          ++refused_;
          continue;
        }
        ++acked_;
        if (!started[i] || a != current[i]) {
          std::lock_guard<std::mutex> lock(mu_);
          per_user_[i].push_back({*trace, a, SteadyClock::now()});
        }
        started[i] = true;
        current[i] = a;
      }
      round_start += std::chrono::seconds(1);
      if (round_start < SteadyClock::now()) {
        ++late_rounds_;  // the machine is slow: do not burst to catch up
        round_start = SteadyClock::now();
      }
    }
  }

  std::atomic<bool> stop_{false}, flips_{true}, frozen_{false};
  std::vector<uint32_t> frozen_partitions_;
  std::atomic<uint64_t> acked_{0}, refused_{0}, late_rounds_{0};
  std::mutex mu_;
  std::vector<std::vector<Acked>> per_user_;
  std::vector<std::thread> threads_;
};

// Probe users, one per partition, heartbeating (ACTIVE) on a gateway of
// their own; Flip sends each probe of `partitions` IDLE and returns the
// trace ids: the change to AWAY is what "served again" means.
class Probes {
 public:
  Probes(const std::string& brokers, const std::string& topic) : bus_(NewBus(brokers, topic, kPartitions)) {
    GatewayOptions go;
    go.gateway_id = "gw-probe";
    gw_ = GatewayPublisher::Create(bus_.get(), go).value();
    for (uint32_t p = 0; p < kPartitions; ++p) {
      for (int i = 0;; ++i) {
        std::string u = absl::StrCat("probe-", i);
        if (PartitionFor(u, kPartitions) == p) {
          users_.push_back(u);
          break;
        }
      }
    }
    activity_.assign(kPartitions, Activity::kActive);
    thread_ = std::thread([this] {
      while (!stop_) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          for (uint32_t p = 0; p < kPartitions; ++p) (void)Publish(p);
        }
        for (int i = 0; i < 10 && !stop_; ++i) SleepMs(100);
      }
    });
  }
  ~Probes() {
    stop_ = true;
    thread_.join();
  }
  // The probes flipped. Their change to AWAY is the sign: not the trace id,
  // since the heartbeats that follow the flip may reach a new owner in the
  // same replay, and the change then carries the latest one's trace.
  std::vector<std::string> Flip(const std::vector<uint32_t>& partitions) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> flipped;
    for (uint32_t p : partitions) {
      activity_[p] = Activity::kIdle;
      auto t = Publish(p);
      EXPECT_TRUE(t.ok()) << t.status();
      flipped.push_back(users_[p]);
    }
    return flipped;
  }

 private:
  absl::StatusOr<uint64_t> Publish(uint32_t p) {
    Signal s;
    s.user_id = users_[p];
    s.device_id = "probe";
    s.session_id = 1;
    s.platform = Platform::kDesktop;
    s.activity = activity_[p];
    return gw_->Publish(s);
  }
  std::unique_ptr<KafkaBus> bus_;
  std::unique_ptr<GatewayPublisher> gw_;
  std::vector<std::string> users_;
  std::vector<Activity> activity_;
  std::mutex mu_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Every user record the store holds.
class UserCollector : public StoreVisitor {
 public:
  void OnUser(const UserRecord& u) override { users[u.user_id] = u.state; }
  void OnDevice(const DeviceRecord&) override {}
  void OnOffset(const CommittedOffset&) override {}
  std::map<std::string, State> users;
};

std::vector<uint32_t> ParseOwned(const std::string& line) {  // "owned e1 0,1,2 took_ms=.."
  std::vector<uint32_t> out;
  const size_t a = line.find(' ', 6), b = line.find(' ', a + 1);
  std::string list = line.substr(a + 1, b - a - 1);
  for (const auto& p : absl::StrSplit(list, ',', absl::SkipEmpty())) out.push_back(std::stoul(std::string(p)));
  return out;
}

uint64_t Field(const std::string& line, const std::string& name) {
  const size_t at = line.find(" " + name + "=");
  if (at == std::string::npos) return 0;
  return std::stoull(line.substr(at + name.size() + 2));
}

// Waits until the latest "owned" lines of `alive` cover every partition
// exactly once, each engine with some; returns each one's partitions and
// when the last of those lines came (nullopt after timeout_ms).
struct Coverage {
  std::map<std::string, std::vector<uint32_t>> owned;
  TimePoint at;
};
std::optional<Coverage> WaitCoverage(const std::vector<EngineProcess*>& alive, int64_t timeout_ms) {
  const auto deadline = SteadyClock::now() + std::chrono::milliseconds(timeout_ms);
  while (SteadyClock::now() < deadline) {
    Coverage c;
    std::vector<int> count(kPartitions, 0);
    bool ok = true;
    for (EngineProcess* e : alive) {
      auto l = e->Latest("owned ");
      if (!l) {
        ok = false;
        break;
      }
      c.owned[e->id()] = ParseOwned(l->second);
      if (c.owned[e->id()].empty()) ok = false;
      for (uint32_t p : c.owned[e->id()]) ++count[p];
      c.at = std::max(c.at, l->first);
    }
    for (int n : count) ok = ok && n == 1;
    if (ok) return c;
    SleepMs(20);
  }
  for (EngineProcess* e : alive) {  // what each said last, for the failure
    auto owned = e->Latest("owned "), warn = e->Latest("warn ");
    std::printf("CHAOS %s: last %s; last %s\n", e->id().c_str(),
                owned ? owned->second.c_str() : "owned: none", warn ? warn->second.c_str() : "warn: none");
  }
  return std::nullopt;
}

// The SIGKILL scenario, with either ownership source of the engines:
// "kafka" (KafkaOwnership, default options: the group notices the death
// after its session timeout) or "table" (the harness notices it with
// waitpid and hands the survivors a new OwnershipTable).
void RunSigkill(const std::string& ownership) {
  auto redis = testing_servers::RedisServer::Start("everysec");
  ASSERT_TRUE(redis.ok()) << redis.status();
  MockKafka kafka(3);
  const std::string topic = "presence-chaos";
  kafka.CreateTopic(topic, kPartitions);
  KafkaBusOptions engines_bus;  // the engines' (--topic, --group)
  engines_bus.topic = topic;
  engines_bus.group_id = "presence-chaos";
  kafka.CoordinateOwners(engines_bus);
  auto logs = testing_servers::TempFolder::Make("chaos").value();
  const std::string prefix = "chaos:";

  // Three engines, partitions 0-3, 4-7, 8-11.
  std::vector<std::unique_ptr<EngineProcess>> engines;
  for (const char* id : {"e1", "e2", "e3"}) {
    engines.push_back(std::make_unique<EngineProcess>(
        id,
        std::vector<std::string>{absl::StrCat("--id=", id), "--ownership=" + ownership,
                                 "--brokers=" + kafka.bootstrap(),
                                 "--topic=" + topic, "--group=" + engines_bus.group_id,
                                 absl::StrCat("--partitions=", kPartitions),
                                 absl::StrCat("--redis-port=", (*redis)->port()),
                                 "--redis-prefix=" + prefix, absl::StrCat("--watch=", kUsers),
                                 // A manual figure with another session timeout (RESULTS.md).
                                 absl::StrCat("--session-timeout-ms=",
                                              getenv("PRESENCE_CHAOS_SESSION_TIMEOUT_MS") != nullptr
                                                  ? getenv("PRESENCE_CHAOS_SESSION_TIMEOUT_MS")
                                                  : "0")},
        absl::StrCat(logs->path(), "/", id, ".log")));
  }
  for (auto& e : engines) ASSERT_TRUE(e->Wait("ready", 30000)) << e->id();
  if (ownership == "table") {
    for (auto& e : engines) e->Send("own 0-3:e1,4-7:e2,8-11:e3");
  }
  const auto before = WaitCoverage({engines[0].get(), engines[1].get(), engines[2].get()}, 60000);
  ASSERT_TRUE(before) << "the engines never shared the partitions out";

  BusTail tail(kafka.bootstrap(), topic);
  Probes probes(kafka.bootstrap(), topic);
  Load load(kafka.bootstrap(), topic, 3);
  SleepMs(5000);  // everyone online, transitions flowing

  auto store = RedisStore::Open([&] {
    RedisStoreOptions ro;
    ro.port = (*redis)->port();
    ro.key_prefix = prefix;
    return ro;
  }());
  ASSERT_TRUE(store.ok()) << store.status();

  // SIGKILL e2 under load; the survivors take its partitions.
  const std::vector<uint32_t> dead = WaitCoverage(
      {engines[0].get(), engines[1].get(), engines[2].get()}, 1000)->owned.at("e2");
  load.Freeze(dead);
  const TimePoint killed_at = SteadyClock::now();
  const TimePoint reaped_at = engines[1]->KillAndReap();
  const std::vector<std::string> probe_users = probes.Flip(dead);
  // What the store held of the dead engine's users when it died (nobody
  // writes them until the takeover): their acknowledged transitions that it
  // lacks were in flight, at risk.
  UserCollector at_kill;
  ASSERT_TRUE((*store)->Load(&at_kill).ok());
  const TimePoint snapshot_done = SteadyClock::now();
  if (ownership == "table") {
    engines[0]->Send("own 0-5:e1,6-11:e3");
    engines[2]->Send("own 0-5:e1,6-11:e3");
  }
  const auto after = WaitCoverage({engines[0].get(), engines[2].get()}, 60000);
  ASSERT_TRUE(after) << "the survivors never took the dead engine's partitions";
  const int64_t takeover_ms = MsBetween(killed_at, after->at);
  int64_t rto_ms = -1;
  for (int i = 0; i < 300; ++i) {  // up to 30 s
    bool all = true;
    int64_t worst = 0;
    for (const std::string& probe : probe_users) {
      auto at = tail.StateSeenAt(probe, State::kAway);
      if (!at) {
        all = false;
        break;
      }
      worst = std::max(worst, MsBetween(killed_at, *at));
    }
    if (all) {
      rto_ms = worst;
      break;
    }
    SleepMs(100);
  }
  SleepMs(5000);  // more load on the new owners

  // Quiesce: heartbeats go on, transitions stop; wait until the store and
  // the bus agree with the last acknowledged state of every user.
  load.SetFlips(false);
  const TimePoint quiet_at = SteadyClock::now();
  size_t store_wrong = 0, bus_wrong = 0, lost = 0;
  int64_t settle_ms = -1;
  std::vector<std::vector<Load::Acked>> acked;
  for (int i = 0; i < 100; ++i) {  // up to 20 s
    SleepMs(200);
    acked = load.Transitions();
    UserCollector in_store;
    ASSERT_TRUE((*store)->Load(&in_store).ok());
    const auto on_bus = tail.Latest();
    store_wrong = bus_wrong = lost = 0;
    for (int u = 0; u < kUsers; ++u) {
      const std::string user = absl::StrCat("user-", u);
      if (acked[u].empty()) continue;
      const State want = StateOf(acked[u].back().activity);
      auto s = in_store.users.find(user);
      auto b = on_bus.find(user);
      const bool stored = s != in_store.users.end() && s->second == want;
      const bool published = b != on_bus.end() && b->second.state == want;
      store_wrong += !stored;
      bus_wrong += !published;
      lost += !stored && !published;
    }
    if (store_wrong == 0 && bus_wrong == 0) {
      settle_ms = MsBetween(quiet_at, SteadyClock::now());
      break;
    }
  }
  // Transitions: acknowledged, and published under their own trace id (the
  // others were superseded by the user's next signal before a publish: the
  // dwell of docs/design.md rule 7, or one tick).
  uint64_t transitions = 0, own_trace = 0;
  for (const auto& per_user : acked) {
    for (const Load::Acked& a : per_user) {
      ++transitions;
      own_trace += tail.TraceSeen(a.trace);
    }
  }
  // The transitions in flight at the kill: the last one acknowledged before
  // it, of each user of the dead partitions, when the store lacked it.
  // Published under its own trace or the user's final state: recovered.
  size_t at_risk = 0, at_risk_lost = 0, frozen_users = 0;
  {
    UserCollector final_store;
    ASSERT_TRUE((*store)->Load(&final_store).ok());
    for (int u = 0; u < kUsers; ++u) {
      const std::string user = absl::StrCat("user-", u);
      if (std::count(dead.begin(), dead.end(), PartitionFor(user, kPartitions)) == 0) continue;
      const bool frozen = Load::IsFrozen(u, dead);
      frozen_users += frozen;
      const Load::Acked* last = nullptr;
      for (const Load::Acked& a : acked[u]) {
        if (a.at < killed_at) last = &a;
      }
      if (last == nullptr) continue;
      auto s = at_kill.users.find(user);
      if (s != at_kill.users.end() && s->second == StateOf(last->activity)) continue;
      ++at_risk;
      const bool published = tail.TraceSeen(last->trace);
      const bool final_ok = frozen && final_store.users[user] == StateOf(last->activity);
      if (!published && !final_ok) ++at_risk_lost;
    }
  }
  // Each surviving watcher must come to show every final state: asked
  // until it does (its feed polls every tick), for up to 10 s.
  uint64_t w_diffs = 0, w_dups = 0, w_back = 0, w_snap = 0, w_wrong = 0;
  for (int k : {0, 2}) {
    std::string stats;
    std::vector<std::string> wrong;
    const TimePoint deadline = SteadyClock::now() + std::chrono::seconds(10);
    do {
      engines[k]->Send("stats");
      auto st = engines[k]->Wait("stats", 10000);
      ASSERT_TRUE(st) << engines[k]->id();
      stats = *st;
      auto view = engines[k]->Wait("view", 10000);
      ASSERT_TRUE(view) << engines[k]->id();
      std::map<std::string, int> shown;
      for (absl::string_view item : absl::StrSplit(*view, ' ', absl::SkipEmpty())) {
        const size_t colon = item.rfind(':');
        if (colon == absl::string_view::npos) continue;
        shown[std::string(item.substr(0, colon))] = std::stoi(std::string(item.substr(colon + 1)));
      }
      wrong.clear();
      for (int u = 0; u < kUsers; ++u) {
        if (acked[u].empty()) continue;
        const std::string user = absl::StrCat("user-", u);
        auto it = shown.find(user);
        const int want = static_cast<int>(StateOf(acked[u].back().activity));
        if (it == shown.end() || it->second != want) {
          wrong.push_back(absl::StrCat(user, " as ", it == shown.end() ? -1 : it->second,
                                       ", want ", want, " (partition ",
                                       PartitionFor(user, kPartitions),
                                       Load::IsFrozen(u, dead) ? ", frozen)" : ")"));
        }
      }
    } while (!wrong.empty() && SteadyClock::now() < deadline);
    std::printf("CHAOS watcher %s\n", stats.c_str());
    for (const std::string& w : wrong) {
      std::printf("CHAOS watcher %s shows %s\n", engines[k]->id().c_str(), w.c_str());
    }
    w_diffs += Field(stats, "diffs");
    w_dups += Field(stats, "dups");
    w_back += Field(stats, "backwards");
    w_snap += Field(stats, "snapshots");
    w_wrong += wrong.size();
  }
  load.Stop();
  const std::string tag = absl::StrCat("CHAOS sigkill [", ownership, "]: ");
  std::string out;
  absl::StrAppend(&out, tag, "users=", kUsers, " partitions=", kPartitions,
                  " engines=3 kill=e2 (partitions ", absl::StrJoin(dead, ","), ")\n");
  absl::StrAppend(&out, tag, "detect_ms=", MsBetween(killed_at, reaped_at),
                  " store_snapshot_ms=", MsBetween(reaped_at, snapshot_done),
                  " takeover_ms=", takeover_ms, " rto_ms=", rto_ms, " (probe change on the bus)\n");
  absl::StrAppend(&out, tag, "dead_engine_users=", frozen_users, " in_flight_at_kill=", at_risk,
                  " in_flight_lost=", at_risk_lost, "\n");
  absl::StrAppend(&out, tag, "signals_acked=", load.acked(), " refused=", load.refused(),
                  " late_rounds=", load.late_rounds(), " transitions_acked=", transitions,
                  " published_with_own_trace=", own_trace, " superseded=", transitions - own_trace,
                  "\n");
  absl::StrAppend(&out, tag, "final_state_lost=", lost, " store_wrong=", store_wrong,
                  " bus_wrong=", bus_wrong, " settle_ms=", settle_ms, "\n");
  absl::StrAppend(&out, tag, "bus_changes=", tail.events(), " bus_duplicates=", tail.duplicates(),
                  " timeouts=", tail.timeouts(), "\n");
  absl::StrAppend(&out, tag, "watcher_diffs=", w_diffs, " watcher_duplicates=", w_dups,
                  " watcher_backwards=", w_back, " watcher_snapshots=", w_snap,
                  " watcher_final_wrong=", w_wrong, "\n");
  // The RTO target: under 5 s when the harness sees the death at once; with
  // the Kafka group, issue 15's, twice the group's session timeout plus 1 s
  // (the group notices a death after its session timeout, then the mock
  // cluster waits up to another before it rebalances).
  const char* session = getenv("PRESENCE_CHAOS_SESSION_TIMEOUT_MS");
  const int64_t session_ms = session != nullptr && std::atoi(session) > 0
                                 ? std::atoi(session)
                                 : KafkaOwnershipOptions().session_timeout_ms;
  const int64_t rto_target_ms = ownership == "table" ? 5000 : 2 * session_ms + 1000;
  absl::StrAppend(&out, tag, "rto_target_ms=", rto_target_ms, " ",
                  rto_ms >= 0 && rto_ms <= rto_target_ms ? "met" : "MISSED", "\n");
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);

  EXPECT_EQ(lost, 0u) << "acknowledged final states neither stored nor published";
  EXPECT_EQ(at_risk_lost, 0u) << "transitions in flight at the kill were lost";
  EXPECT_EQ(store_wrong, 0u);
  // Exact, with no tolerance: a change the dead engine wrote but was killed
  // before publishing is published again by the new owner at its stored
  // version (docs/scale-out.md, "Chaos test"), so the bus ends on every
  // user's last acknowledged state.
  EXPECT_EQ(bus_wrong, 0u) << "final states the bus never carried";
  EXPECT_GE(rto_ms, 0) << "a probe of the dead engine's partitions was never served";
  // The target is printed; the bound asserted leaves room for a loaded
  // machine (the mock's rebalance waits stretch with it), so that only a
  // failover that is broken, not slow, fails the test.
  EXPECT_LE(rto_ms, ownership == "table" ? 5000 : 4 * session_ms) << "RTO (" << ownership << " ownership)";
  EXPECT_EQ(w_dups, 0u) << "a watcher saw a diff twice";
  EXPECT_EQ(w_back, 0u) << "a watcher saw a version go back";
  EXPECT_GT(w_diffs, 0u);
  EXPECT_EQ(w_wrong, 0u) << "a watcher does not show a user's final state";
  EXPECT_EQ(load.refused(), 0u);
  for (auto& e : engines) {
    for (const std::string& err : e->Errors()) ADD_FAILURE() << e->id() << ": " << err;
  }
  for (int k : {0, 2}) engines[k]->Send("quit");
}

TEST(Chaos, SigkillUnderLoadKafkaOwnership) { RunSigkill("kafka"); }
TEST(Chaos, SigkillUnderLoadHarnessTable) { RunSigkill("table"); }


// ---- Two regions, the link between them cut and healed ------------------------------

// A bus as seen across the link between two regions: while cut (failing),
// every call fails, as a partitioned network would make it.
using CutLink = testing::FlakyBus;

constexpr int kRegionUsers = 200;

// One region: an engine (system clock, default options) and its mirror,
// publishing to the region's own Kafka topic and reading the other
// region's through a CutLink; a loop that ticks and polls every 100 ms, and
// a load that drives the region's users straight into the engine.
struct Region {
  std::string id;
  std::unique_ptr<KafkaBus> out, in;
  std::unique_ptr<CutLink> link;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<RegionMirror> mirror;
  std::mutex mu;  // held by one loop iteration; the cut takes it to look at a still view
  std::atomic<bool> stop{false}, flips{true};
  std::atomic<uint64_t> poll_errors{0};
  std::thread loop, load;

  Region(std::string region, const std::string& brokers, const std::string& own_topic,
         const std::string& other_topic, int index)
      : id(std::move(region)) {
    out = NewBus(brokers, own_topic, 2);
    in = NewBus(brokers, other_topic, 2);
    link = std::make_unique<CutLink>(in.get());
    engine = Engine::Create(Options()).value();
    RegionMirrorOptions mo;
    mo.region_id = id;
    mo.outbound = out.get();
    mo.inbound = {link.get()};
    mirror = RegionMirror::Create(mo).value();
    engine->AddListener(mirror.get());
    loop = std::thread([this] {
      while (!stop) {
        {
          std::lock_guard<std::mutex> lock(mu);
          engine->Tick();
          if (!mirror->Poll().ok()) ++poll_errors;
        }
        SleepMs(100);
      }
    });
    // Users of this region: ru-i with i % 2 == index, and ru-i with
    // i % 10 == 4 in both (a user active in two regions at once).
    load = std::thread([this, index] {
      std::vector<int> mine;
      for (int i = 0; i < kRegionUsers; ++i) {
        if (i % 2 == index || i % 10 == 4) mine.push_back(i);
      }
      std::vector<Activity> current(kRegionUsers, Activity::kActive);
      auto round_start = SteadyClock::now();
      for (int round = 0; !stop; ++round) {
        for (size_t j = 0; j < mine.size() && !stop; ++j) {
          const int i = mine[j];
          std::this_thread::sleep_until(round_start +
                                        std::chrono::milliseconds(1000 * j / mine.size()));
          if (flips && round > 0 && (round + i) % 2 == 0) {
            current[i] = current[i] == Activity::kActive ? Activity::kIdle : Activity::kActive;
          }
          const std::string user = absl::StrCat("ru-", i);
          Signal s;
          s.user_id = user;
          s.device_id = id;  // one device per region
          s.session_id = 1;
          s.platform = Platform::kMobile;
          s.activity = current[i];
          EXPECT_TRUE(engine->Signal(s).ok());
        }
        round_start += std::chrono::seconds(1);
        if (round_start < SteadyClock::now()) round_start = SteadyClock::now();
      }
    });
  }
  ~Region() {
    stop = true;
    load.join();
    loop.join();
  }
};

bool SameRecord(const RegionRecord& a, const RegionRecord& b) {
  return a.event.user_id == b.event.user_id && a.hlc == b.hlc && a.region == b.region &&
         a.event.state == b.event.state && a.event.version == b.event.version;
}

bool SameViews(Region* a, Region* b) {
  std::scoped_lock lock(a->mu, b->mu);
  const auto va = a->mirror->View(), vb = b->mirror->View();
  if (va.size() != vb.size()) return false;
  for (size_t i = 0; i < va.size(); ++i) {
    if (!SameRecord(va[i], vb[i])) return false;
  }
  return true;
}

// Records of `from` that `to` has not merged: the RPO of a cut, in users,
// and the age of the oldest such change (ms, from its HLC).
std::pair<size_t, int64_t> NotMirrored(Region* from, Region* to, int64_t now_ms) {
  size_t n = 0;
  int64_t oldest = 0;
  for (const RegionRecord& r : from->mirror->View()) {
    if (r.region != from->id) continue;
    auto other = to->mirror->Get(r.event.user_id);
    if (other && other->hlc >= r.hlc) continue;
    ++n;
    oldest = std::max(oldest, now_ms - static_cast<int64_t>(r.hlc >> kHlcLogicalBits));
  }
  return {n, oldest};
}

TEST(Chaos, RegionCutAndHeal) {
  MockKafka kafka(3);
  kafka.CreateTopic("region-eu", 2);
  kafka.CreateTopic("region-us", 2);
  Region eu("eu", kafka.bootstrap(), "region-eu", "region-us", 0);
  Region us("us", kafka.bootstrap(), "region-us", "region-eu", 1);
  SleepMs(3000);  // load flowing, both ways mirrored

  // The cut, under load: both directions of the link at once.
  size_t rpo_users = 0;
  int64_t rpo_age_ms = 0;
  {
    std::scoped_lock lock(eu.mu, us.mu);
    eu.link->failing = true;
    us.link->failing = true;
    const int64_t now = SystemClock()->NowMs();
    auto [n1, age1] = NotMirrored(&eu, &us, now);
    auto [n2, age2] = NotMirrored(&us, &eu, now);
    rpo_users = n1 + n2;
    rpo_age_ms = std::max(age1, age2);
  }
  SleepMs(2500);  // each region goes on alone
  eu.flips = false;
  us.flips = false;
  SleepMs(1500);  // quiet (past the dwell): only the cut keeps the views apart
  size_t diverged = 0;
  TimePoint healed_at;
  {
    std::scoped_lock lock(eu.mu, us.mu);
    const int64_t now = SystemClock()->NowMs();
    diverged = NotMirrored(&eu, &us, now).first + NotMirrored(&us, &eu, now).first;
    eu.link->failing = false;
    us.link->failing = false;
    healed_at = SteadyClock::now();
  }
  int64_t converge_ms = -1;
  for (int i = 0; i < 1500; ++i) {  // up to 30 s
    if (SameViews(&eu, &us)) {
      converge_ms = MsBetween(healed_at, SteadyClock::now());
      break;
    }
    SleepMs(20);
  }
  const auto se = eu.mirror->stats(), su = us.mirror->stats();
  std::printf(
      "CHAOS region: users=%d regions=2 (in process, Kafka topics, link cut both ways)\n"
      "CHAOS region: rpo_users=%zu rpo_oldest_ms=%lld diverged_at_heal=%zu converge_ms=%lld\n"
      "CHAOS region: eu local=%llu merged=%llu stale=%llu poll_errors=%llu; us local=%llu "
      "merged=%llu stale=%llu poll_errors=%llu\n",
      kRegionUsers, rpo_users, static_cast<long long>(rpo_age_ms), diverged,
      static_cast<long long>(converge_ms), static_cast<unsigned long long>(se.local),
      static_cast<unsigned long long>(se.merged), static_cast<unsigned long long>(se.duplicate_or_stale),
      static_cast<unsigned long long>(eu.poll_errors.load()),
      static_cast<unsigned long long>(su.local), static_cast<unsigned long long>(su.merged),
      static_cast<unsigned long long>(su.duplicate_or_stale),
      static_cast<unsigned long long>(us.poll_errors.load()));
  std::fflush(stdout);
  EXPECT_GT(diverged, 0u) << "the cut kept nothing apart: it tested nothing";
  ASSERT_GE(converge_ms, 0) << "the regions never converged";
  EXPECT_TRUE(SameViews(&eu, &us));
  EXPECT_EQ(eu.mirror->View().size(), static_cast<size_t>(kRegionUsers));
}

}  // namespace
}  // namespace presence
