// Benchmarks of the file store (issue 5: durable state).
//
// What is measured:
//   * Write/<policy>/batch:<n>: Store::Write of n user records per call,
//     write-through to the log, for each sync policy (kEveryWrite pays one
//     fdatasync per call, or per group of concurrent calls).
//   * WriteThreads/every_write: 4 threads writing one record per call under
//     kEveryWrite, to show group commit.
//   * Recovery/<source>: FileStore::Open of a folder holding 10^6 records
//     (500,000 users and 500,000 devices), replayed from the log (frames of 100
//     records, or of 1 record) or loaded from a snapshot; and 10^6 history
//     transitions. Target: 2 million records per second.
//   * RecoveryWithEngine/<source>: the same open, and an Engine created on the
//     store, which loads every user and device into its shards (the devices
//     are alive: the engine's clock is at their last signal).
//   * HistoryQuery, HistoryLastBefore: HistoryStore::Query of a window holding
//     10 transitions, and LastBefore, on 10^6 transitions of 10^4 users.
//
// Folders are made under $TMPDIR (default /tmp) and removed at exit. Results
// and command lines: RESULTS.md, "Durable state (issue 5)".
//
// Run everything:  store_bench            (about a minute, plus the setup)
// Smoke:           store_bench --smoke    (small folders, 10 ms per case)
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/file_store.h"
#include "tests/file_store_test.h"

namespace presence {
namespace {

using testing_fs::TempDir;

bool g_smoke = false;
size_t RecoveryRecords() { return g_smoke ? 20'000 : 1'000'000; }

UserRecord MakeUser(const std::string& id, uint64_t version) {
  UserRecord u;
  u.user_id = id;
  u.version = version;
  u.state_version = version;
  u.state = State::kOnline;
  u.self_state = State::kOnline;
  u.last_seen_ms = 1'700'000'000'000 + static_cast<int64_t>(version);
  u.published_at_ms = u.last_seen_ms;
  return u;
}

DeviceRecord MakeDevice(const std::string& user, uint64_t version) {
  DeviceRecord d;
  d.user_id = user;
  d.device_id = "web-1";
  d.session_id = version;
  d.platform = Platform::kWeb;
  d.last_signal_ms = {0, 1'700'000'000'000 + static_cast<int64_t>(version), 0};
  d.gateway = "gw-01";
  d.version = version;
  return d;
}

std::string UserId(uint64_t i) { return absl::StrCat("user-", 10'000'000 + i); }

std::unique_ptr<FileStore> MustOpen(const std::string& dir, const FileStoreOptions& o) {
  auto fs = FileStore::Open(dir, o);
  if (!fs.ok()) {
    std::fprintf(stderr, "open %s: %s\n", dir.c_str(), fs.status().ToString().c_str());
    std::abort();
  }
  return std::move(*fs);
}

// ---- Write-through throughput ----------------------------------------------------

void BM_Write(benchmark::State& state, SyncPolicy policy) {
  const int batch = static_cast<int>(state.range(0));
  TempDir dir;
  FileStoreOptions o;
  o.sync = policy;
  o.compact_after_bytes = 0;  // the write path alone
  auto fs = MustOpen(dir.path(), o);
  uint64_t version = 1;
  StoreBatch b;
  for (int i = 0; i < batch; ++i) b.users.push_back(MakeUser(UserId(i), 0));
  for (auto _ : state) {
    for (UserRecord& u : b.users) u.version = version++;
    if (!fs->store()->Write(b).ok()) state.SkipWithError("write failed");
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["calls_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_Write, every_write, SyncPolicy::kEveryWrite)
    ->ArgName("batch")->Arg(1)->Arg(100)->UseRealTime();
BENCHMARK_CAPTURE(BM_Write, interval_100ms, SyncPolicy::kInterval)
    ->ArgName("batch")->Arg(1)->Arg(100)->UseRealTime();
BENCHMARK_CAPTURE(BM_Write, never, SyncPolicy::kNever)
    ->ArgName("batch")->Arg(1)->Arg(100)->UseRealTime();

// Several threads, one record per call, kEveryWrite: group commit.
std::unique_ptr<TempDir> g_threads_dir;
std::unique_ptr<FileStore> g_threads_fs;
void ThreadsSetup(const benchmark::State&) {
  g_threads_dir = std::make_unique<TempDir>();
  FileStoreOptions o;
  o.compact_after_bytes = 0;
  g_threads_fs = MustOpen(g_threads_dir->path(), o);
}
void ThreadsTeardown(const benchmark::State&) {
  g_threads_fs.reset();
  g_threads_dir.reset();
}
void BM_WriteThreads(benchmark::State& state) {
  StoreBatch b;
  b.users.push_back(MakeUser(UserId(state.thread_index()), 0));
  uint64_t version = 1;
  for (auto _ : state) {
    b.users[0].version = version++;
    if (!g_threads_fs->store()->Write(b).ok()) state.SkipWithError("write failed");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_WriteThreads)
    ->Name("WriteThreads/every_write/batch:1")
    ->Setup(ThreadsSetup)
    ->Teardown(ThreadsTeardown)
    ->Threads(1)
    ->Threads(4)
    ->Threads(16)
    ->UseRealTime();

// ---- Recovery -------------------------------------------------------------------

enum class Source { kLog100, kLog1, kSnapshot, kHistory };

// One folder per source, built once.
struct Prepared {
  std::unique_ptr<TempDir> dir;
  uint64_t records = 0;
  uint64_t bytes = 0;
};

uint64_t FolderBytes(const std::string& dir) {
  uint64_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.is_regular_file()) n += e.file_size();
  }
  return n;
}

const Prepared& PreparedFolder(Source source) {
  static std::map<Source, Prepared>* folders = new std::map<Source, Prepared>();
  auto it = folders->find(source);
  if (it != folders->end()) return it->second;
  Prepared p;
  p.dir = std::make_unique<TempDir>();
  FileStoreOptions o;
  o.sync = SyncPolicy::kNever;
  o.compact_after_bytes = 0;
  auto fs = MustOpen(p.dir->path(), o);
  const size_t n = RecoveryRecords();
  if (source == Source::kHistory) {
    std::vector<Transition> batch;
    for (size_t i = 0; i < n; ++i) {
      Transition t;
      t.user_id = UserId(i % 10'000);
      t.version = i + 1;
      t.at_ms = 1'700'000'000'000 + static_cast<int64_t>(i);
      t.state = i % 2 ? State::kOnline : State::kAway;
      t.self_state = t.state;
      t.trace_id = i;
      t.last_seen_ms = t.at_ms;
      batch.push_back(std::move(t));
      if (batch.size() == 100) {
        if (!fs->history()->Append(batch).ok()) std::abort();
        batch.clear();
      }
    }
    p.records = n;
  } else {
    const bool one_per_call = source == Source::kLog1;
    StoreBatch b;
    for (size_t i = 0; i < n / 2; ++i) {
      if (one_per_call) {
        StoreBatch u, d;
        u.users.push_back(MakeUser(UserId(i), i + 1));
        d.devices.push_back(MakeDevice(UserId(i), i + 1));
        if (!fs->store()->Write(u).ok() || !fs->store()->Write(d).ok()) std::abort();
        continue;
      }
      b.users.push_back(MakeUser(UserId(i), i + 1));
      b.devices.push_back(MakeDevice(UserId(i), i + 1));
      if (b.users.size() == 50) {
        if (!fs->store()->Write(b).ok()) std::abort();
        b = StoreBatch{};
      }
    }
    if (!b.empty() && !fs->store()->Write(b).ok()) std::abort();
    p.records = n / 2 * 2;
    if (source == Source::kSnapshot && !fs->Compact().ok()) std::abort();
  }
  fs.reset();
  p.bytes = FolderBytes(p.dir->path());
  return folders->emplace(source, std::move(p)).first->second;
}

void BM_Recovery(benchmark::State& state, Source source) {
  const Prepared& p = PreparedFolder(source);
  FileStoreOptions o;
  o.compact_after_bytes = 0;
  uint64_t recovered = 0;
  for (auto _ : state) {
    auto fs = MustOpen(p.dir->path(), o);
    recovered = fs->recovery().records_recovered;
    state.PauseTiming();
    fs.reset();  // closing (freeing 10^6 records) is not recovery
    state.ResumeTiming();
  }
  if (recovered != p.records) {
    state.SkipWithError(absl::StrCat("recovered ", recovered, " of ", p.records).c_str());
  }
  state.SetItemsProcessed(state.iterations() * p.records);
  state.counters["records"] = static_cast<double>(p.records);
  state.counters["folder_MiB"] = static_cast<double>(p.bytes) / (1 << 20);
}
BENCHMARK_CAPTURE(BM_Recovery, log_frames_of_100, Source::kLog100)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Recovery, log_frames_of_1, Source::kLog1)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Recovery, snapshot, Source::kSnapshot)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Recovery, history_log, Source::kHistory)
    ->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_RecoveryWithEngine(benchmark::State& state, Source source) {
  const Prepared& p = PreparedFolder(source);
  FileStoreOptions o;
  o.compact_after_bytes = 0;
  ManualClock clock(1'700'000'000'000 + static_cast<int64_t>(p.records));
  size_t devices = 0;
  for (auto _ : state) {
    auto fs = MustOpen(p.dir->path(), o);
    Options eo;
    eo.clock = &clock;
    eo.store = fs->store();
    auto engine = Engine::Create(eo);
    if (!engine.ok()) {
      state.SkipWithError(engine.status().ToString().c_str());
      return;
    }
    state.PauseTiming();
    devices = (*engine)->GetSizes().live_devices;
    engine->reset();  // closing is not recovery
    fs.reset();
    state.ResumeTiming();
  }
  if (devices != p.records / 2) {
    state.SkipWithError(absl::StrCat("the engine holds ", devices, " devices of ", p.records / 2).c_str());
  }
  state.SetItemsProcessed(state.iterations() * p.records);
  state.counters["records"] = static_cast<double>(p.records);
}
BENCHMARK_CAPTURE(BM_RecoveryWithEngine, log_frames_of_100, Source::kLog100)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_RecoveryWithEngine, snapshot, Source::kSnapshot)
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- History queries ------------------------------------------------------------

FileStore* HistoryStoreFor() {
  static FileStore* fs = [] {
    const Prepared& p = PreparedFolder(Source::kHistory);
    FileStoreOptions o;
    o.compact_after_bytes = 0;
    return MustOpen(p.dir->path(), o).release();  // kept open to the end
  }();
  return fs;
}

void BM_HistoryQuery(benchmark::State& state) {
  FileStore* fs = HistoryStoreFor();
  const size_t n = RecoveryRecords();
  const uint64_t users = 10'000;
  uint64_t i = 0, found = 0;
  for (auto _ : state) {
    const uint64_t u = (i++ * 7919) % users;
    // Transition k of user u is at 1.7e12 + u + k * users: a window of 10 of them.
    const int64_t from = 1'700'000'000'000 + static_cast<int64_t>(u + (i % 50) * users);
    auto q = fs->history()->Query(UserId(u), from, from + 10 * users - 1);
    found += q.ok() ? q->size() : 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["per_query"] = static_cast<double>(found) / state.iterations();
  state.counters["transitions"] = static_cast<double>(n);
}
BENCHMARK(BM_HistoryQuery)->Name("HistoryQuery/window_of_10");

void BM_HistoryLastBefore(benchmark::State& state) {
  FileStore* fs = HistoryStoreFor();
  uint64_t i = 0, found = 0;
  for (auto _ : state) {
    const uint64_t u = (i++ * 7919) % 10'000;
    auto q = fs->history()->LastBefore(UserId(u), 1'700'000'000'000 + 500'000);
    found += q.ok() && q->has_value();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["found"] = static_cast<double>(found) / state.iterations();
}
BENCHMARK(BM_HistoryLastBefore)->Name("HistoryLastBefore");

}  // namespace
}  // namespace presence

int main(int argc, char** argv) {
  std::vector<char*> args;
  std::string min_time = "--benchmark_min_time=0.01";
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) {
      presence::g_smoke = true;
      args.insert(args.begin() + 1, min_time.data());
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
