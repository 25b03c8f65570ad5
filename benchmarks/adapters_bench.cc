// Write-through throughput of the real adapters (issue 6): Redis
// (presence_redis) and PostgreSQL (presence_postgres), batched against one
// record at a time. It starts its own servers (adapters/testing/servers.h)
// on loopback, with durable settings: redis-server with the AOF on
// (appendfsync everysec, or always with --redis-fsync=always), PostgreSQL
// with its defaults (fsync on, synchronous_commit on; --postgres-fsync=off
// shows what the SQL costs without the disk).
//
// What is measured (records are a user record and a device record per user,
// as the engine writes them):
//   * store: Store::Write throughput, records per second, for batches of
//     1 record (one by one), 10, 100 and 1000 user+device pairs, with 1
//     writing thread and with 4.
//   * engine: Engine::Tick after U users connected: the tick writes every
//     record through (16 shards: 16 batches) before it publishes; the rate is
//     records made durable per second of Tick. "one by one" is the same
//     engine over a wrapper that splits each batch into single-record writes,
//     which is what a write-through without batching costs.
// One-by-one runs stop after --seconds (default 5) and report the rate so far.
// Beside the rate (wall clock), each row gives the CPU time spent per record
// by this process and by the server (redis-server, or the postmaster and its
// backends): on a shared machine the rate follows the load, the CPU per
// record much less.
//
// Results and commands: benchmarks/RESULTS.md, "Adapters (issue 6)".
//
//   adapters_bench [--users=N] [--seconds=S] [--only=redis|postgres]
//                  [--redis-fsync=everysec|always] [--postgres-fsync=on|off]
//                  [--smoke]
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "adapters/testing/servers.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/store.h"
#ifdef PRESENCE_BENCH_REDIS
#include "presence/redis_store.h"
#endif
#ifdef PRESENCE_BENCH_POSTGRES
#include "presence/postgres_store.h"
#endif

namespace presence {
namespace {

struct Flags {
  int users = 20000;
  double seconds = 5;
  std::string only;
  std::string redis_fsync = "everysec";
  std::string postgres_fsync = "on";
  bool smoke = false;
};

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

UserRecord MakeUser(int i, uint64_t version) {
  UserRecord u;
  u.user_id = absl::StrCat("user-", 10'000'000 + i);
  u.version = version;
  u.state_version = version;
  u.state = State::kOnline;
  u.self_state = State::kOnline;
  u.last_seen_ms = 1'700'000'000'000 + static_cast<int64_t>(version);
  u.published_at_ms = u.last_seen_ms;
  return u;
}

DeviceRecord MakeDevice(int i, uint64_t version) {
  DeviceRecord d;
  d.user_id = absl::StrCat("user-", 10'000'000 + i);
  d.device_id = "web-1";
  d.session_id = 1;
  d.platform = Platform::kWeb;
  d.last_signal_ms = {0, 1'700'000'000'000 + static_cast<int64_t>(version), 0};
  d.gateway = "gw-01";
  d.version = version;
  return d;
}

// CPU seconds of this process (all threads).
double OwnCpu() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// CPU seconds of process `root` and of its children (from /proc).
double ServerCpu(pid_t root) {
  if (root <= 0) return 0;
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  double total = 0;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return 0;
  while (dirent* e = readdir(proc)) {
    const int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/stat").c_str(), "r");
    if (f == nullptr) continue;
    char buf[1024];
    const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    // Fields after the command (which may hold spaces): state ppid ... utime(14) stime(15).
    const char* p = std::strrchr(buf, ')');
    if (p == nullptr) continue;
    char state = 0;
    int ppid = 0;
    unsigned long utime = 0, stime = 0;
    if (std::sscanf(p + 2, "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &state, &ppid,
                    &utime, &stime) != 4) {
      continue;
    }
    if (pid == root || ppid == root) total += static_cast<double>(utime + stime) / tick;
  }
  closedir(proc);
  return total;
}

pid_t g_server = -1;  // the server being measured

struct Rate {
  double per_second = 0;
  double client_us = 0;  // CPU per record
  double server_us = 0;
};

std::string Show(const Rate& r) {
  return absl::StrFormat("%.0f | %.1f | %.1f", r.per_second, r.client_us, r.server_us);
}

// Opens a fresh, empty store (a new key or table prefix) for each run.
using Opener = std::function<std::unique_ptr<Store>(const std::string& tag)>;

// Store::Write from `threads` threads, each writing its share of `users`
// users (user + device record) in batches of `pairs` users; pairs == 0: one
// record per Write. Stops after `seconds`. Returns records per second.
Rate StoreRate(Store* store, int users, int pairs, int threads, double seconds) {
  std::vector<std::thread> workers;
  std::vector<long> written(threads, 0);
  const double cpu0 = OwnCpu(), server0 = ServerCpu(g_server);
  const double start = Now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const int from = users * t / threads, to = users * (t + 1) / threads;
      int i = from;
      while (i < to && Now() - start < seconds) {
        StoreBatch b;
        if (pairs == 0) {
          static thread_local bool device_next = false;
          if (device_next) {
            b.devices.push_back(MakeDevice(i++, 100));
          } else {
            b.users.push_back(MakeUser(i, 100));
          }
          device_next = !device_next;
        } else {
          for (int n = 0; n < pairs && i < to; ++n, ++i) {
            b.users.push_back(MakeUser(i, 100));
            b.devices.push_back(MakeDevice(i, 100));
          }
        }
        const absl::Status st = store->Write(b);
        if (!st.ok()) {
          std::fprintf(stderr, "write failed: %s\n", st.ToString().c_str());
          std::exit(1);
        }
        written[t] += static_cast<long>(b.users.size() + b.devices.size());
      }
    });
  }
  for (auto& w : workers) w.join();
  const double elapsed = Now() - start;
  long total = 0;
  for (long n : written) total += n;
  const double records = static_cast<double>(total);
  return {records / elapsed, (OwnCpu() - cpu0) * 1e6 / records,
          (ServerCpu(g_server) - server0) * 1e6 / records};
}

// A Store that writes each record of a batch on its own.
class OneByOne final : public Store {
 public:
  explicit OneByOne(Store* inner) : inner_(inner) {}
  absl::Status Write(const StoreBatch& batch) override {
    for (const auto& e : batch.erasures) {
      StoreBatch one;
      one.erasures.push_back(e);
      if (auto st = inner_->Write(one); !st.ok()) return st;
    }
    for (const auto& u : batch.users) {
      StoreBatch one;
      one.users.push_back(u);
      if (auto st = inner_->Write(one); !st.ok()) return st;
    }
    for (const auto& d : batch.devices) {
      StoreBatch one;
      one.devices.push_back(d);
      if (auto st = inner_->Write(one); !st.ok()) return st;
    }
    for (const auto& o : batch.offsets) {
      StoreBatch one;
      one.offsets.push_back(o);
      if (auto st = inner_->Write(one); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  absl::Status Load(StoreVisitor* v) override { return inner_->Load(v); }

 private:
  Store* inner_;
};

// U users connect; one Tick writes them all through. Returns records per
// second of Tick, and the records written.
std::pair<Rate, long> EngineRate(Store* store, int users) {
  struct Counter final : Store {
    Store* inner;
    long records = 0;
    absl::Status Write(const StoreBatch& b) override {
      records += static_cast<long>(b.users.size() + b.devices.size());
      return inner->Write(b);
    }
    absl::Status Load(StoreVisitor* v) override { return inner->Load(v); }
  } counter;
  counter.inner = store;
  ManualClock clock(1'700'000'000'000);
  Options o;
  o.clock = &clock;
  o.store = &counter;
  auto engine = Engine::Create(o);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine: %s\n", engine.status().ToString().c_str());
    std::exit(1);
  }
  for (int i = 0; i < users; ++i) {
    const std::string user = absl::StrCat("user-", 10'000'000 + i);
    Signal s;
    s.user_id = user;
    s.device_id = "web-1";
    s.session_id = 1;
    s.platform = Platform::kWeb;
    s.gateway = "gw-01";
    if (!(*engine)->Signal(s).ok()) std::exit(1);
  }
  clock.Advance(100);
  const double cpu0 = OwnCpu(), server0 = ServerCpu(g_server);
  const double start = Now();
  const size_t published = (*engine)->Tick();
  const double elapsed = Now() - start;
  const double cpu = OwnCpu() - cpu0, server = ServerCpu(g_server) - server0;
  if (published != static_cast<size_t>(users)) {
    std::fprintf(stderr, "published %zu of %d (store errors?)\n", published, users);
    std::exit(1);
  }
  const double records = static_cast<double>(counter.records);
  return {Rate{records / elapsed, cpu * 1e6 / records, server * 1e6 / records}, counter.records};
}

void Run(const std::string& name, const Opener& open, const Flags& f) {
  int run = 0;
  auto fresh = [&] { return open(absl::StrCat("b", run++)); };
  std::printf("\n### %s\n\n", name.c_str());
  std::printf(
      "| what | batch (user+device pairs) | threads | records/s | client CPU us/record | server "
      "CPU us/record |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
  const int users = f.smoke ? 200 : f.users;
  const double secs = f.smoke ? 0.5 : f.seconds;
  for (int threads : {1, 4}) {
    for (int pairs : {0, 10, 100, 1000}) {
      auto store = fresh();
      const Rate rate = StoreRate(store.get(), users, pairs, threads, secs);
      std::printf("| store | %s | %d | %s |\n", pairs == 0 ? "1 record" : absl::StrCat(pairs).c_str(),
                  threads, Show(rate).c_str());
      std::fflush(stdout);
    }
  }
  {
    auto store = fresh();
    auto [rate, records] = EngineRate(store.get(), users);
    std::printf("| engine Tick, batched (16 shards) | %ld records | 1 | %s |\n", records,
                Show(rate).c_str());
  }
  {
    auto store = fresh();
    OneByOne slow(store.get());
    // Fewer users: one by one is slow, and a Tick cannot stop half way.
    const int n = std::max(16, static_cast<int>(users / (f.smoke ? 1 : 20)));
    auto [rate, records] = EngineRate(&slow, n);
    std::printf("| engine Tick, one by one | %ld records | 1 | %s |\n", records, Show(rate).c_str());
  }
  std::fflush(stdout);
}

}  // namespace
}  // namespace presence

int main(int argc, char** argv) {
  using namespace presence;
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      const size_t n = std::strlen(name);
      return a.compare(0, n, name) == 0 ? a.c_str() + n : nullptr;
    };
    if (const char* v = value("--users=")) {
      f.users = std::atoi(v);
    } else if (const char* v = value("--seconds=")) {
      f.seconds = std::atof(v);
    } else if (const char* v = value("--only=")) {
      f.only = v;
    } else if (const char* v = value("--redis-fsync=")) {
      f.redis_fsync = v;
    } else if (const char* v = value("--postgres-fsync=")) {
      f.postgres_fsync = v;
    } else if (a == "--smoke") {
      f.smoke = true;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--users=N] [--seconds=S] [--only=redis|postgres] "
                   "[--redis-fsync=everysec|always] [--postgres-fsync=on|off] [--smoke]\n",
                   argv[0]);
      return 2;
    }
  }
#ifdef PRESENCE_BENCH_REDIS
  if (f.only.empty() || f.only == "redis") {
    auto server = testing_servers::RedisServer::Start(f.redis_fsync);
    if (!server.ok()) {
      std::fprintf(stderr, "redis: %s\n", server.status().ToString().c_str());
      return 1;
    }
    const int port = (*server)->port();
    g_server = (*server)->pid();
    Run(absl::StrCat("Redis (appendonly yes, appendfsync ", f.redis_fsync, ")"),
        [&](const std::string& tag) -> std::unique_ptr<Store> {
          RedisStoreOptions o;
          o.port = port;
          o.key_prefix = tag + ":";
          auto s = RedisStore::Open(o);
          if (!s.ok()) {
            std::fprintf(stderr, "redis: %s\n", s.status().ToString().c_str());
            std::exit(1);
          }
          return std::move(*s);
        },
        f);
  }
#endif
#ifdef PRESENCE_BENCH_POSTGRES
  if (f.only.empty() || f.only == "postgres") {
    auto server = testing_servers::PostgresServer::Start({"fsync=" + f.postgres_fsync});
    if (!server.ok()) {
      std::fprintf(stderr, "postgres: %s\n", server.status().ToString().c_str());
      return 1;
    }
    const std::string conninfo = (*server)->conninfo();
    g_server = (*server)->pid();
    // The PostgresStore must outlive the Store it hands out.
    struct Owning final : Store {
      std::unique_ptr<PostgresStore> pg;
      absl::Status Write(const StoreBatch& b) override { return pg->store()->Write(b); }
      absl::Status Load(StoreVisitor* v) override { return pg->store()->Load(v); }
    };
    Run(absl::StrCat("PostgreSQL (fsync ", f.postgres_fsync, ", synchronous_commit on)"),
        [&](const std::string& tag) -> std::unique_ptr<Store> {
          PostgresStoreOptions o;
          o.conninfo = conninfo;
          o.table_prefix = tag + "_";
          auto s = PostgresStore::Open(o);
          if (!s.ok()) {
            std::fprintf(stderr, "postgres: %s\n", s.status().ToString().c_str());
            std::exit(1);
          }
          auto owning = std::make_unique<Owning>();
          owning->pg = std::move(*s);
          return owning;
        },
        f);
  }
#endif
  return 0;
}
