// compare_bench: the same heartbeat workload against presence and against the
// seed design's two shapes (issue 7), one system and one size per process so
// that each one's memory is measured alone. benchmarks/compare.sh runs the
// grid and draws the plot; RESULTS.md holds the figures.
//
// Systems:
//   presence-handle  Engine::Beat on the DeviceHandle that Connect returned
//   presence-many    the same handles through Engine::BeatMany, 1000 per call
//                    (a host handing over an event loop's ready list)
//   presence-keyed   Engine::Signal keyed by (user_id, device_id)
//   presence-keyed-many  the same signals through Engine::SignalBatch, 256
//                    per call (the keyed path's pipeline)
//   presence-phi     the handle path with a PhiAccrualDetector deciding for
//                    every device (adaptive detection's cost per heartbeat)
//   host-only        no engine: only the harness's read of each device's
//                    handle, the part of the presence legs' CPU that is the host's
//   naive            the seed design in process: an std::unordered_map keyed by
//                    a "user/device" string, one mutex, and an std::multimap by
//                    last_seen swept for expiry
//   redis            the seed design's Redis layout: per heartbeat
//                    HSET presence:{user} {device} {state blob} and
//                    ZADD presence:last_seen {ts} {user}/{device}, pipelined;
//                    a ZRANGEBYSCORE expiry sweep per tick. The harness starts
//                    its own redis-server on a free loopback port in a
//                    throwaway directory (built only when hiredis is found).
//
// Workload: `devices` devices, two per user ("u<i>", "d0"/"d1"), all
// connected first (that is where memory is measured), then `seconds`
// simulated seconds in which every device beats once, in a random order (one
// fixed permutation), with a tick (engine Tick, or an expiry sweep) after
// every tenth of the devices, i.e. every 100 ms of simulated time.
//
// With --churn-seconds S, S more simulated seconds (not timed) follow, in
// which every device beats once and 1% of the devices per second reconnect
// with a new session (a clean disconnect, then a connect), and the memory is
// measured again: a steady population must not grow.
//
// Output: one CSV line (with --csv, appended to the file) and a readable line:
//   system,devices,beats_per_s,cpu_beats_per_s,bytes_per_device,cpu_s_per_sim_s,server_cpu_s,
//   bytes_per_device_after_churn (0: no churn run)
// beats_per_s is by wall time (for Redis: client and server together),
// cpu_beats_per_s by this process's CPU time. Bytes per device: mallinfo2
// (in use, arena plus mmap) after connecting minus before, for the in-process
// systems; Redis's INFO used_memory after minus before.
#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/phi_detector.h"

#ifdef PRESENCE_HAVE_HIREDIS
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

namespace {

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}
double WallSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
size_t HeapInUse() {
  const struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

struct Ids {
  std::vector<std::string> users;  // per user
  static constexpr const char* kDevices[2] = {"d0", "d1"};
};

// The system under test: connect everything, then beat and tick.
class System {
 public:
  virtual ~System() = default;
  virtual void ConnectAll(int64_t now_ms) = 0;
  virtual void Beat(size_t device, int64_t now_ms) = 0;
  virtual void Tick(int64_t now_ms) = 0;
  // The device's client goes away cleanly and comes back at once with a new
  // session (`session`, above any it had), as an app that restarts.
  virtual void Reconnect(size_t device, uint64_t session, int64_t now_ms) = 0;
  virtual void Flush() {}
  virtual bool in_process() const { return true; }
  virtual size_t ServerMemory() { return 0; }
  virtual double ServerCpu() { return 0; }
  // CPU seconds spent inside the engine's calls for beats and ticks (the
  // harness's own work, such as reading a handle, excluded); 0 when the
  // system is not an engine.
  virtual double EngineCpu() { return 0; }
};

// ---- presence ----------------------------------------------------------------

class PresenceSystem : public System {
 public:
  PresenceSystem(const Ids& ids, size_t devices, bool keyed, bool adaptive, bool many)
      : ids_(ids), devices_(devices), keyed_(keyed), many_(many) {
    if (keyed_ && many_) signals_.reserve(kSignalBatch);
    presence::Options o;
    o.clock = &clock_;
    if (adaptive) {
      detector_ = std::make_unique<presence::PhiAccrualDetector>();
      o.detector = detector_.get();
      o.detector_platforms = 1u << static_cast<int>(presence::Platform::kWeb);
    }
    engine_ = presence::Engine::Create(o).value();
  }
  void ConnectAll(int64_t now_ms) override {
    clock_.Set(now_ms);
    if (keyed_) {
      sessions_.assign(devices_, 1);
    } else {
      handles_.resize(devices_);
    }
    for (size_t d = 0; d < devices_; ++d) {
      presence::Signal s = SignalFor(d);
      if (keyed_) {
        if (!engine_->Signal(s).ok()) std::abort();
      } else {
        handles_[d] = engine_->Connect(s).value();
      }
    }
    engine_->Tick();
  }
  void Beat(size_t d, int64_t now_ms) override {
    clock_.Set(now_ms);
    if (keyed_ && many_) {
      signals_.push_back(SignalFor(d));
      if (signals_.size() == kSignalBatch) Flush();
    } else if (keyed_) {
      presence::Signal s = SignalFor(d);
      if (!engine_->Signal(s).ok()) std::abort();
    } else if (many_) {
      ready_.push_back(handles_[d]);
      if (ready_.size() == kReady) Flush();
    } else if (!engine_->Beat(handles_[d]).ok()) {
      std::abort();
    }
  }
  void Tick(int64_t now_ms) override {
    Flush();  // the beats gathered so far happened before this tick
    clock_.Set(now_ms);
    const double t0 = CpuSeconds();
    engine_->Tick();
    engine_cpu_ += CpuSeconds() - t0;
  }
  void Reconnect(size_t d, uint64_t session, int64_t now_ms) override {
    Flush();
    clock_.Set(now_ms);
    presence::Signal s = SignalFor(d);
    s.session_id = session;
    if (keyed_) {
      sessions_[d] = static_cast<uint8_t>(session);
      if (!engine_->DisconnectDevice(s.user_id, s.device_id, 0, presence::DisconnectKind::kClean)
               .ok() ||
          !engine_->Signal(s).ok()) {
        std::abort();
      }
    } else {
      if (!engine_->Disconnect(handles_[d], presence::DisconnectKind::kClean).ok()) std::abort();
      handles_[d] = engine_->Connect(s).value();
    }
  }
  void Flush() override {
    if (!signals_.empty()) {
      const double t0 = CpuSeconds();
      if (engine_->SignalBatch(signals_).applied != signals_.size()) std::abort();
      engine_cpu_ += CpuSeconds() - t0;
      signals_.clear();
    }
    if (ready_.empty()) return;
    const double t0 = CpuSeconds();
    if (engine_->BeatMany(ready_).applied != ready_.size()) std::abort();
    engine_cpu_ += CpuSeconds() - t0;
    ready_.clear();
  }
  // Only the batched legs: one clock read per call would weigh on a
  // single beat or signal.
  double EngineCpu() override { return many_ ? engine_cpu_ : 0; }

 private:
  presence::Signal SignalFor(size_t d) const {
    presence::Signal s;
    s.user_id = ids_.users[d / 2];
    s.device_id = Ids::kDevices[d % 2];
    s.session_id = keyed_ ? sessions_[d] : 1;
    s.platform = presence::Platform::kWeb;
    return s;
  }
  const Ids& ids_;
  const size_t devices_;
  const bool keyed_;
  const bool many_;
  static constexpr size_t kReady = 1000;
  static constexpr size_t kSignalBatch = 256;
  std::vector<presence::DeviceHandle> ready_;  // presence-many: beats not yet handed over
  std::vector<presence::Signal> signals_;      // presence-keyed-many: the same
  presence::ManualClock clock_{1'000'000};
  std::unique_ptr<presence::PhiAccrualDetector> detector_;
  std::unique_ptr<presence::Engine> engine_;
  std::vector<presence::DeviceHandle> handles_;
  // presence-keyed: each device's session (the host knows it per connection;
  // 1 byte per device here, counted in the memory figures).
  std::vector<uint8_t> sessions_;
  double engine_cpu_ = 0;
};

// ---- the host alone ------------------------------------------------------------

// What the harness itself costs per beat: the read of a device's 8-byte handle
// from a table in the beat order, which every presence leg pays before it
// calls the engine. A host keeps the handle in its connection object, which
// it touches anyway to read the socket; this leg measures that share so that
// it can be told apart from the engine's.
class HostOnlySystem : public System {
 public:
  explicit HostOnlySystem(size_t devices) : handles_(devices) {}
  void ConnectAll(int64_t) override {
    for (size_t d = 0; d < handles_.size(); ++d) handles_[d] = d * 0x9e3779b97f4a7c15ull;
  }
  void Beat(size_t d, int64_t) override { sum_ += handles_[d]; }
  void Tick(int64_t) override {}
  void Reconnect(size_t d, uint64_t session, int64_t) override { handles_[d] += session; }
  void Flush() override {
    if (sum_ == 42) std::puts("");  // keeps the reads
  }

 private:
  std::vector<uint64_t> handles_;
  uint64_t sum_ = 0;
};

// ---- the seed design in process ------------------------------------------------

class NaiveSystem : public System {
 public:
  NaiveSystem(const Ids& ids, size_t devices) : ids_(ids), devices_(devices) {}
  void ConnectAll(int64_t now_ms) override {
    map_.reserve(devices_);
    for (size_t d = 0; d < devices_; ++d) Beat(d, now_ms);
  }
  void Beat(size_t d, int64_t now_ms) override {
    std::string key = absl::StrCat(ids_.users[d / 2], "/", Ids::kDevices[d % 2]);
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, inserted] = map_.try_emplace(std::move(key));
    Entry& e = it->second;
    if (!inserted) by_last_seen_.erase(e.expiry);
    e.last_seen = now_ms;
    e.session = 1;
    e.state = 1;  // online
    e.expiry = by_last_seen_.emplace(now_ms, &it->first);
  }
  void Reconnect(size_t d, uint64_t session, int64_t now_ms) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(absl::StrCat(ids_.users[d / 2], "/", Ids::kDevices[d % 2]));
      if (it->second.expiry != by_last_seen_.end()) by_last_seen_.erase(it->second.expiry);
      map_.erase(it);
    }
    Beat(d, now_ms);
    std::lock_guard<std::mutex> lock(mu_);
    map_.find(absl::StrCat(ids_.users[d / 2], "/", Ids::kDevices[d % 2]))->second.session = session;
  }
  void Tick(int64_t now_ms) override {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t cutoff = now_ms - 4000;
    while (!by_last_seen_.empty() && by_last_seen_.begin()->first < cutoff) {
      auto it = map_.find(*by_last_seen_.begin()->second);
      it->second.state = 0;  // offline
      by_last_seen_.erase(by_last_seen_.begin());
      it->second.expiry = by_last_seen_.end();
    }
  }

 private:
  struct Entry {
    int64_t last_seen = 0;
    uint64_t session = 0;
    uint8_t state = 0;
    std::multimap<int64_t, const std::string*>::iterator expiry;
  };
  const Ids& ids_;
  const size_t devices_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> map_;
  std::multimap<int64_t, const std::string*> by_last_seen_;
};

// ---- the seed design's Redis layout --------------------------------------------

#ifdef PRESENCE_HAVE_HIREDIS
class RedisSystem : public System {
 public:
  RedisSystem(const Ids& ids, size_t devices, const std::string& server)
      : ids_(ids), devices_(devices) {
    port_ = FreePort();
    char tmpl[] = "/tmp/presence-redis-XXXXXX";
    dir_ = mkdtemp(tmpl);
    pid_ = fork();
    if (pid_ == 0) {
      const std::string port = std::to_string(port_);
      execlp(server.c_str(), server.c_str(), "--port", port.c_str(), "--bind", "127.0.0.1",
             "--dir", dir_.c_str(), "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--logfile", (dir_ + "/redis.log").c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 200 && ctx_ == nullptr; ++i) {
      usleep(50000);
      redisContext* c = redisConnect("127.0.0.1", port_);
      if (c != nullptr && c->err == 0) {
        ctx_ = c;
      } else if (c != nullptr) {
        redisFree(c);
      }
    }
    if (ctx_ == nullptr) {
      std::fprintf(stderr, "compare_bench: redis-server did not start on port %d\n", port_);
      std::exit(1);
    }
    base_memory_ = UsedMemory();
  }
  ~RedisSystem() override {
    if (ctx_ != nullptr) redisFree(ctx_);
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    std::system(("rm -rf '" + dir_ + "'").c_str());
  }
  bool in_process() const override { return false; }
  void ConnectAll(int64_t now_ms) override {
    for (size_t d = 0; d < devices_; ++d) Beat(d, now_ms);
    Flush();
  }
  void Beat(size_t d, int64_t now_ms) override {
    const std::string& user = ids_.users[d / 2];
    const char* device = Ids::kDevices[d % 2];
    char blob[64];
    const int n = std::snprintf(blob, sizeof(blob), "online|1|app|%lld", (long long)now_ms);
    redisAppendCommand(ctx_, "HSET presence:%b %s %b", user.data(), user.size(), device, blob,
                       size_t(n));
    redisAppendCommand(ctx_, "ZADD presence:last_seen %lld %b/%s", (long long)now_ms, user.data(),
                       user.size(), device);
    pending_ += 2;
    if (pending_ >= 2000) Flush();
  }
  void Reconnect(size_t d, uint64_t, int64_t now_ms) override {
    const std::string& user = ids_.users[d / 2];
    redisAppendCommand(ctx_, "HDEL presence:%b %s", user.data(), user.size(), Ids::kDevices[d % 2]);
    ++pending_;
    Beat(d, now_ms);
  }
  void Tick(int64_t now_ms) override {
    redisAppendCommand(ctx_, "ZRANGEBYSCORE presence:last_seen -inf %lld LIMIT 0 1000",
                       (long long)(now_ms - 4000));
    ++pending_;
  }
  void Flush() override {
    for (; pending_ > 0; --pending_) {
      void* reply = nullptr;
      if (redisGetReply(ctx_, &reply) != REDIS_OK) {
        std::fprintf(stderr, "compare_bench: redis error: %s\n", ctx_->errstr);
        std::exit(1);
      }
      freeReplyObject(reply);
    }
  }
  size_t ServerMemory() override { return UsedMemory() - base_memory_; }
  double ServerCpu() override {
    const std::string info = Info("cpu");
    return Field(info, "used_cpu_user:") + Field(info, "used_cpu_sys:");
  }

 private:
  static int FreePort() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof(a);
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      std::perror("compare_bench: free port");
      std::exit(1);
    }
    const int port = ntohs(a.sin_port);
    close(fd);
    return port;
  }
  std::string Info(const char* section) {
    Flush();
    redisReply* r = static_cast<redisReply*>(redisCommand(ctx_, "INFO %s", section));
    std::string out = r != nullptr && r->type == REDIS_REPLY_STRING ? std::string(r->str, r->len) : "";
    if (r != nullptr) freeReplyObject(r);
    return out;
  }
  static double Field(const std::string& info, const char* name) {
    const size_t at = info.find(name);
    return at == std::string::npos ? 0 : std::atof(info.c_str() + at + std::strlen(name));
  }
  size_t UsedMemory() { return static_cast<size_t>(Field(Info("memory"), "used_memory:")); }

  const Ids& ids_;
  const size_t devices_;
  int port_ = 0;
  pid_t pid_ = -1;
  std::string dir_;
  redisContext* ctx_ = nullptr;
  size_t pending_ = 0;
  size_t base_memory_ = 0;
};
#endif

int Main(int argc, char** argv) {
  std::string system = "presence-handle", csv, redis_server = "redis-server";
  size_t devices = 100000;
  int seconds = 3;
  int churn_seconds = 0;
  uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char* name) -> const char* {
      if (std::strcmp(argv[i], name) == 0 && i + 1 < argc) return argv[++i];
      return nullptr;
    };
    if (const char* v = arg("--system")) {
      system = v;
    } else if (const char* v = arg("--devices")) {
      devices = static_cast<size_t>(std::atof(v));
    } else if (const char* v = arg("--seconds")) {
      seconds = std::atoi(v);
    } else if (const char* v = arg("--churn-seconds")) {
      churn_seconds = std::atoi(v);
    } else if (const char* v = arg("--csv")) {
      csv = v;
    } else if (const char* v = arg("--redis-server")) {
      redis_server = v;
    } else if (const char* v = arg("--seed")) {
      seed = std::strtoull(v, nullptr, 10);
    } else {
      std::fprintf(stderr,
                   "usage: compare_bench --system presence-handle|presence-many|presence-keyed|presence-keyed-many|presence-phi|host-only|naive|redis "
                   "[--devices N] [--seconds S] [--churn-seconds S] [--csv FILE] [--redis-server PATH]\n");
      return 2;
    }
  }
  if (churn_seconds < 0 || churn_seconds > 250) {
    // A reconnect in second s takes session 2 + s, kept in a byte.
    std::fprintf(stderr, "compare_bench: --churn-seconds must be 0 to 250\n");
    return 2;
  }
  devices = std::max<size_t>(2, devices / 2 * 2);
  Ids ids;
  ids.users.reserve(devices / 2);
  for (size_t u = 0; u < devices / 2; ++u) ids.users.push_back(absl::StrCat("u", u));
  std::vector<uint32_t> order(devices);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));

  const size_t heap0 = HeapInUse();
  std::unique_ptr<System> sys;
  if (system == "presence-handle" || system == "presence-many" || system == "presence-keyed" ||
      system == "presence-keyed-many" || system == "presence-phi") {
    const bool keyed = system == "presence-keyed" || system == "presence-keyed-many";
    const bool many = system == "presence-many" || system == "presence-keyed-many";
    sys = std::make_unique<PresenceSystem>(ids, devices, keyed, system == "presence-phi", many);
  } else if (system == "host-only") {
    sys = std::make_unique<HostOnlySystem>(devices);
  } else if (system == "naive") {
    sys = std::make_unique<NaiveSystem>(ids, devices);
  } else if (system == "redis") {
#ifdef PRESENCE_HAVE_HIREDIS
    sys = std::make_unique<RedisSystem>(ids, devices, redis_server);
#else
    std::fprintf(stderr, "compare_bench: built without hiredis; no redis leg\n");
    return 3;
#endif
  } else {
    std::fprintf(stderr, "compare_bench: unknown system %s\n", system.c_str());
    return 2;
  }
  int64_t now = 1'000'000;
  sys->ConnectAll(now);
  const size_t bytes = sys->in_process() ? HeapInUse() - heap0 : sys->ServerMemory();

  // Simulated seconds: every device once, a tick every tenth.
  const size_t slice = (devices + 9) / 10;
  const double server_cpu0 = sys->ServerCpu();
  const double wall0 = WallSeconds(), cpu0 = CpuSeconds();
  const double engine_cpu0 = sys->EngineCpu();
  double tick_cpu = 0;
  for (int s = 0; s < seconds; ++s) {
    for (size_t i = 0; i < devices; ++i) {
      if (i % slice == 0) {
        now += 100;
        const double t0 = CpuSeconds();
        sys->Tick(now);
        tick_cpu += CpuSeconds() - t0;
      }
      sys->Beat(order[i], now);
    }
  }
  sys->Flush();
  const double wall = WallSeconds() - wall0, cpu = CpuSeconds() - cpu0;
  const double server_cpu = sys->ServerCpu() - server_cpu0;
  const double engine_cpu = sys->EngineCpu() - engine_cpu0;
  const double beats = double(devices) * seconds;
  const double bytes_per_device = double(bytes) / double(devices);

  // Churn (untimed): simulated seconds in which every device beats once and
  // 1% of them reconnect with a new session, then the memory once more: a
  // steady population must not grow.
  const size_t churn_per_s = std::max<size_t>(1, devices / 100);
  size_t churned = 0;
  for (int s = 0; s < churn_seconds; ++s) {
    for (size_t i = 0; i < devices; ++i) {
      if (i % slice == 0) {
        now += 100;
        sys->Tick(now);
      }
      if (i < churn_per_s) {
        sys->Reconnect(order[churned++ % devices], 2 + static_cast<uint64_t>(s), now);
      } else {
        sys->Beat(order[i], now);
      }
    }
  }
  sys->Flush();
  const double churn_bytes_per_device =
      churn_seconds == 0 ? 0
                         : double(sys->in_process() ? HeapInUse() - heap0 : sys->ServerMemory()) /
                               double(devices);
  std::printf("%-16s devices %10zu  %12.0f beats/s (wall)  %12.0f beats/CPU-s  %7.2f bytes/device"
              "  %.3f CPU-s per simulated s (ticks %.3f)%s%s%s\n",
              system.c_str(), devices, beats / wall, beats / cpu, bytes_per_device, cpu / seconds,
              tick_cpu / seconds,
              engine_cpu == 0 ? ""
                              : absl::StrCat("  (in the engine's calls ",
                                             absl::SixDigits(engine_cpu / seconds), ")")
                                    .c_str(),
              sys->in_process() ? "" : absl::StrCat("  (+ redis-server ", server_cpu / seconds,
                                                    " CPU-s per simulated s)")
                                            .c_str(),
              churn_seconds == 0 ? ""
                                 : absl::StrCat("  after ", churn_seconds, " s of churn: ",
                                                absl::SixDigits(churn_bytes_per_device),
                                                " bytes/device")
                                       .c_str());
  if (!csv.empty()) {
    FILE* f = std::fopen(csv.c_str(), "a");
    if (f == nullptr) return 1;
    std::fprintf(f, "%s,%zu,%.0f,%.0f,%.2f,%.4f,%.4f,%.2f\n", system.c_str(), devices,
                 beats / wall, beats / cpu, bytes_per_device, cpu / seconds, server_cpu / seconds,
                 churn_bytes_per_device);
    std::fclose(f);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
