// Benchmarks of the core engine (issue: core engine).
//
// What is measured, and the targets it is held to (one core, 10^6 devices):
//   * heartbeat on a handle (Engine::Beat), sequential and random order:
//     >= 50 million per second;
//   * keyed heartbeat (Engine::Signal, Engine::SignalBatch), random order:
//     >= 10 million per second;
//   * connect + clean disconnect churn, steady state;
//   * the expiry sweep (the Tick that marks N devices dead), and the Tick
//     cost of N live devices that keep beating (lazy timer rechecks);
//   * bytes per tracked device, measured with mallinfo2(): at most 64 bytes
//     per device beyond the bytes of its ids.
// Also: the Tick while users are held back by min_dwell (TickDwellHeld), and
// the heap the timer wheel keeps after repeated bursts (TimerWheelBursts).
// Plus "Model/..." cases that run no engine code: a 48-byte record array
// touched like the heartbeat fast path, with and without an atomic
// read-modify-write per touch, and a dependent random walk (one memory
// latency per item), to isolate what the memory system costs.
//
// Every engine runs on a ManualClock: the clock read is one load and time
// only moves when a benchmark moves it (outside the timed region, unless the
// Tick is what is measured). A heartbeat round of N devices is one simulated
// second, so every device beats once per second and stays live.
//
// Run everything:       engine_bench   (about 3 minutes, 3.3 GB peak RSS)
// CI smoke (10^4 only): engine_bench --smoke
//   which is shorthand for --benchmark_filter='devices:10000(/|$)'
//   --benchmark_min_time=0.01; flags given after --smoke win.
// Abseil Mutex deadlock detection off: --mutex_deadlock_detection=ignore
// The 10^7 cases build a shared engine once (a few seconds) and run a fixed,
// small number of iterations. Results and command lines: RESULTS.md.
#include <malloc.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "benchmark/benchmark.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/options.h"
#include "presence/types.h"
#include "src/core/device.h"

namespace {

using presence::Activity;
using presence::DeviceHandle;
using presence::DisconnectKind;
using presence::Engine;
using presence::ManualClock;
using presence::Options;
using presence::Platform;
using presence::Source;

constexpr int64_t kStartMs = 1'000'000;
constexpr size_t kChunk = 1000;          // operations per benchmark iteration
constexpr size_t kConnectsPerMs = 4096;  // population rate: ~4 million connects per second
constexpr int64_t kBeatIntervalMs = 1000;
constexpr int64_t kOfflineAfterMs = 4000;  // Options().app.offline_after_ms

// Ids: "user-" + 8 hex digits (13 bytes) and "dev-" + 1 digit (5 bytes).
constexpr size_t kUserIdBytes = 13;
constexpr size_t kDeviceIdBytes = 5;
constexpr size_t kIdBytes = kUserIdBytes + kDeviceIdBytes;

void FormatUser(uint64_t u, char* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::memcpy(out, "user-", 5);
  for (int i = 0; i < 8; ++i) out[5 + i] = kHex[(u >> (28 - 4 * i)) & 15];
}
void FormatDevice(int d, char* out) {
  std::memcpy(out, "dev-", 4);
  out[4] = static_cast<char>('0' + d);
}
// Writes the ids of device number i (user i / dpu, device i % dpu) to out.
void FormatIds(size_t i, int dpu, char* out) {
  FormatUser(i / dpu, out);
  FormatDevice(static_cast<int>(i % dpu), out + kUserIdBytes);
}

presence::Signal MakeSignal(const char* ids, uint64_t session) {
  presence::Signal s;
  s.user_id = absl::string_view(ids, kUserIdBytes);
  s.device_id = absl::string_view(ids + kUserIdBytes, kDeviceIdBytes);
  s.session_id = session;
  s.platform = Platform::kWeb;
  s.source = Source::kApp;
  s.activity = Activity::kActive;
  return s;
}

// Bytes the process holds from malloc, on every arena, mmapped blocks included.
size_t HeapBytes() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

// The manual timings (Ticks) use this thread's CPU time, like Google
// Benchmark's own CPU column: the machine is shared, and wall time would
// count the time this thread waited for a core.
double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "engine_bench: %s\n", what.c_str());
  std::abort();
}

std::unique_ptr<Engine> NewEngine(ManualClock* clock) {
  Options o;
  o.clock = clock;
  auto e = Engine::Create(o);
  if (!e.ok()) Die(e.status().ToString());
  return *std::move(e);
}

// Connects devices [0, n) with `dpu` devices per user, at ~4 million connects
// per simulated second, ticking every simulated ms (as a host would every
// flush), so that nothing piles up that a running engine would not hold.
void Populate(Engine& engine, ManualClock& clock, size_t n, int dpu,
              std::vector<DeviceHandle>* handles) {
  char ids[kIdBytes];
  for (size_t i = 0; i < n; ++i) {
    FormatIds(i, dpu, ids);
    auto h = engine.Connect(MakeSignal(ids, 1));
    if (!h.ok()) Die(h.status().ToString());
    if (handles != nullptr) handles->push_back(*h);
    if ((i + 1) % kConnectsPerMs == 0) {
      clock.Advance(1);
      engine.Tick();
    }
  }
  clock.Advance(1);
  engine.Tick();
}

std::vector<uint32_t> Permutation(size_t n, uint64_t seed) {
  std::vector<uint32_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint32_t>(i);
  std::mt19937_64 rng(seed);
  std::shuffle(p.begin(), p.end(), rng);
  return p;
}

// One simulated second of heartbeats spread as real ones are: `order[j]`
// beats in ms j * 1000 / n of the second, so every ms some devices beat and
// their deadlines spread over every timer slot. The clock moves 1 ms at a
// time; every 100 ms the engine Ticks, through `tick` (which may time it).
template <typename TickFn>
void SpreadSecond(Engine& engine, ManualClock& clock, const std::vector<DeviceHandle>& order,
                  TickFn&& tick) {
  const size_t n = order.size();
  for (size_t ms = 0; ms < 1000; ++ms) {
    for (size_t j = ms * n / 1000; j < (ms + 1) * n / 1000; ++j) {
      if (!engine.Beat(order[j]).ok()) Die("beat failed in SpreadSecond");
    }
    clock.Advance(1);
    if ((ms + 1) % 100 == 0) tick();
  }
}

// ---- The shared world: one engine with N devices, 4 per user ---------------

struct World {
  World(size_t n_, int dpu_) : n(n_), dpu(dpu_) {
    const double t0 = CpuSeconds();
    handles.reserve(n);
    const size_t h0 = HeapBytes();
    engine = NewEngine(&clock);
    const size_t h1 = HeapBytes();
    Populate(*engine, clock, n, dpu, &handles);
    const size_t h2 = HeapBytes();
    engine_fixed_bytes = static_cast<double>(h1 - h0);
    bytes_per_device = static_cast<double>(h2 - h1) / static_cast<double>(n);
    sorted = handles;
    std::sort(sorted.begin(), sorted.end(),
              [](DeviceHandle a, DeviceHandle b) { return a.value < b.value; });
    perm = Permutation(n, 42);
    shuffled.resize(n);
    for (size_t p = 0; p < n; ++p) shuffled[p] = handles[perm[p]];
    build_seconds = CpuSeconds() - t0;  // CPU seconds
  }

  // Keyed signals in the same random order as `shuffled`, their ids laid out
  // in that order so that the harness reads them sequentially.
  void EnsureSignals() {
    if (!signals.empty()) return;
    arena.resize(n * kIdBytes);
    signals.resize(n);
    for (size_t p = 0; p < n; ++p) {
      char* ids = arena.data() + p * kIdBytes;
      FormatIds(perm[p], dpu, ids);
      signals[p] = MakeSignal(ids, 1);
    }
  }

  // Makes every device live and fresh (last beat = now), with nothing
  // pending: reviving devices that an earlier benchmark let die.
  void Refresh() {
    clock.Advance(kBeatIntervalMs);
    for (DeviceHandle h : sorted) {
      if (!engine->Beat(h).ok()) Die("beat failed in Refresh");
    }
    last_beat_ms = clock.NowMs();
    engine->Tick();
    clock.Advance(kBeatIntervalMs);  // past min_dwell, so all is published
    engine->Tick();
  }

  const size_t n;
  const int dpu;
  ManualClock clock{kStartMs};
  std::unique_ptr<Engine> engine;
  std::vector<DeviceHandle> handles;   // by device number
  std::vector<DeviceHandle> sorted;    // by handle value: memory order
  std::vector<DeviceHandle> shuffled;  // random order
  std::vector<uint32_t> perm;          // shuffled[p] == handles[perm[p]]
  std::vector<char> arena;
  std::vector<presence::Signal> signals;
  int64_t last_beat_ms = 0;
  bool swept = false;
  double first_sweep_retained = 0;
  double engine_fixed_bytes = 0;
  double bytes_per_device = 0;  // ids included
  double build_seconds = 0;
};

std::unique_ptr<World>& CurrentWorld() {
  static std::unique_ptr<World> world;
  return world;
}
void ReleaseWorld() { CurrentWorld().reset(); }
World& GetWorld(size_t n, int dpu) {
  auto& w = CurrentWorld();
  if (!w || w->n != n || w->dpu != dpu) {
    w.reset();  // free the old one first: the 10^7 world is large
    w = std::make_unique<World>(n, dpu);
  }
  return *w;
}

double IdBytesPerDevice(int dpu) {
  return static_cast<double>(kDeviceIdBytes) + static_cast<double>(kUserIdBytes) / dpu;
}

void WorldCounters(benchmark::State& state, const World& w) {
  state.counters["devices"] = static_cast<double>(w.n);
  state.counters["build_s"] = w.build_seconds;
}

// ---- Heartbeat on a handle ----------------------------------------------------

// `many`: the chunk goes through one Engine::BeatMany call instead of a loop
// of Beat calls.
void BM_HandleBeat(benchmark::State& state, size_t n, bool random, bool many) {
  World& w = GetWorld(n, 4);
  w.Refresh();
  const std::vector<DeviceHandle>& order = random ? w.shuffled : w.sorted;
  Engine& engine = *w.engine;
  size_t pos = 0;
  int64_t errors = 0;
  for (auto _ : state) {
    const DeviceHandle* h = order.data() + pos;
    if (many) {
      presence::BatchResult r = engine.BeatMany(absl::MakeConstSpan(h, kChunk));
      errors += static_cast<int64_t>(kChunk - r.applied);
    } else {
      for (size_t k = 0; k < kChunk; ++k) {
        if (!engine.Beat(h[k]).ok()) ++errors;
      }
    }
    pos += kChunk;
    if (pos >= n) {  // one simulated second: every device beat once
      state.PauseTiming();
      pos = 0;
      w.clock.Advance(kBeatIntervalMs);
      engine.Tick();
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kChunk));
  state.counters["errors"] = static_cast<double>(errors);
  state.counters["live_devices"] = static_cast<double>(engine.GetSizes().live_devices);
  WorldCounters(state, w);
}

// ---- Keyed heartbeat ----------------------------------------------------------

void BM_KeyedSignal(benchmark::State& state, size_t n) {
  World& w = GetWorld(n, 4);
  w.EnsureSignals();
  w.Refresh();
  Engine& engine = *w.engine;
  const presence::Signal* sig = w.signals.data();
  size_t pos = 0;
  int64_t errors = 0;
  for (auto _ : state) {
    for (size_t k = 0; k < kChunk; ++k) {
      if (!engine.Signal(sig[pos + k]).ok()) ++errors;
    }
    pos += kChunk;
    if (pos >= n) {
      state.PauseTiming();
      pos = 0;
      w.clock.Advance(kBeatIntervalMs);
      engine.Tick();
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kChunk));
  state.counters["errors"] = static_cast<double>(errors);
  WorldCounters(state, w);
}

void BM_KeyedSignalBatch(benchmark::State& state, size_t n, size_t batch) {
  World& w = GetWorld(n, 4);
  w.EnsureSignals();
  w.Refresh();
  Engine& engine = *w.engine;
  size_t pos = 0;
  int64_t errors = 0, items = 0;
  for (auto _ : state) {
    const size_t m = std::min(batch, n - pos);
    const presence::BatchResult r =
        engine.SignalBatch(absl::MakeConstSpan(w.signals.data() + pos, m));
    errors += static_cast<int64_t>(m - r.applied);
    items += static_cast<int64_t>(m);
    pos += m;
    if (pos >= n) {
      state.PauseTiming();
      pos = 0;
      w.clock.Advance(kBeatIntervalMs);
      engine.Tick();
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(items);
  state.counters["errors"] = static_cast<double>(errors);
  state.counters["batch"] = static_cast<double>(batch);
  WorldCounters(state, w);
}

// ---- Tick with N live devices that keep beating ---------------------------------

// One iteration is one simulated second of spread heartbeats (SpreadSecond:
// every device beats once, untimed) with a Tick every 100 ms (timed, manual
// time). So the figure is the Tick cost per simulated second of N live
// devices: the lazy rechecks of their timers (each live device's timer fires
// about once per offline_after although it keeps beating).
void BM_TickLive(benchmark::State& state, size_t n) {
  World& w = GetWorld(n, 4);
  w.Refresh();
  Engine& engine = *w.engine;
  // Warm up past one offline_after, so the timers are spread as in steady state.
  for (int s = 0; s < 5; ++s) SpreadSecond(engine, w.clock, w.shuffled, [&] { engine.Tick(); });
  double tick_seconds = 0;
  size_t events = 0;
  for (auto _ : state) {
    double t = 0;
    SpreadSecond(engine, w.clock, w.shuffled, [&] {
      const double t0 = CpuSeconds();
      events += engine.Tick();
      t += CpuSeconds() - t0;
    });
    state.SetIterationTime(t);
    tick_seconds += t;
  }
  const double device_seconds = static_cast<double>(n) * static_cast<double>(state.iterations());
  state.SetItemsProcessed(static_cast<int64_t>(device_seconds));
  state.counters["tick_ns_per_device_per_sim_s"] = tick_seconds * 1e9 / device_seconds;
  state.counters["events"] = static_cast<double>(events);
  state.counters["live_devices"] = static_cast<double>(engine.GetSizes().live_devices);
  WorldCounters(state, w);
}

// ---- Expiry sweep ---------------------------------------------------------------

// Mean time of a Tick 1 ms after the previous one, on a world just Refreshed
// (no timer due for the next 3 s, nothing pending).
double IdleTickSeconds(World& w) {
  constexpr int kTicks = 50;
  const double t0 = CpuSeconds();
  for (int i = 0; i < kTicks; ++i) {
    w.clock.Advance(1);
    w.engine->Tick();
  }
  return (CpuSeconds() - t0) / kTicks;
}

// Each iteration: (untimed) every device beats at the same time T and all is
// published; the clock jumps to T + offline_after + 1 ms; (timed) the one Tick
// that finds every device dead and publishes every user offline.
void BM_ExpirySweep(benchmark::State& state, size_t n) {
  World& w = GetWorld(n, 4);
  Engine& engine = *w.engine;
  w.Refresh();
  const double idle_before = IdleTickSeconds(w);
  size_t events = 0;
  size_t live_after = 0;
  size_t heap_first = 0;  // after the first cycle of this run
  const size_t heap_start = HeapBytes();
  for (auto _ : state) {
    w.Refresh();  // revives what the last sweep killed
    w.clock.Set(w.last_beat_ms + kOfflineAfterMs + 1);
    const double t0 = CpuSeconds();
    events += engine.Tick();
    state.SetIterationTime(CpuSeconds() - t0);
    state.PauseTiming();
    live_after += engine.GetSizes().live_devices;
    if (heap_first == 0) {
      heap_first = HeapBytes();
      if (!w.swept) {  // the world's first mass death and revival
        w.swept = true;
        w.first_sweep_retained = static_cast<double>(heap_first) - static_cast<double>(heap_start);
      }
    }
    state.ResumeTiming();
  }
  const size_t heap_end = HeapBytes();
  w.Refresh();
  const double idle_after = IdleTickSeconds(w);
  const double dn = static_cast<double>(n);
  state.SetItemsProcessed(static_cast<int64_t>(n * state.iterations()));
  state.counters["events_per_sweep"] =
      static_cast<double>(events) / static_cast<double>(state.iterations());
  state.counters["live_after_sweep"] = static_cast<double>(live_after);
  // Heap the engine keeps after its first mass death and revival (event
  // vector, pending-user table, timer-wheel slots), per device...
  state.counters["retained_first_cycle_bytes_per_device"] = w.first_sweep_retained / dn;
  // ... and what each further cycle adds (the timer wheel's slot vectors).
  if (state.iterations() > 1) {
    state.counters["growth_per_cycle_bytes_per_device"] =
        (static_cast<double>(heap_end) - static_cast<double>(heap_first)) /
        static_cast<double>(state.iterations() - 1) / dn;
  }
  // A Tick 1 ms after the last, with no timer due and nothing to publish,
  // before the first mass transition and after the last: what every Tick pays
  // for what earlier bursts left behind.
  state.counters["idle_tick_us_before"] = idle_before * 1e6;
  state.counters["idle_tick_us_after"] = idle_after * 1e6;
  WorldCounters(state, w);
}

// ---- Timer wheel: heap after repeated bursts ------------------------------------------

// Every device beats in the same ms (a burst: a mass reconnect, a synchronised
// client fleet), then the engine runs 3 simulated seconds with a Tick every
// 100 ms, all devices staying live; repeat. Nothing is added to or removed
// from the engine, so a steady heap is expected. Counter: heap growth per
// cycle per device, over the run.
void BM_TimerWheelBursts(benchmark::State& state, size_t n) {
  World& w = GetWorld(n, 4);
  Engine& engine = *w.engine;
  w.Refresh();
  const size_t heap_start = HeapBytes();
  for (auto _ : state) {
    for (DeviceHandle h : w.sorted) {
      if (!engine.Beat(h).ok()) Die("beat failed in TimerWheelBursts");
    }
    for (int i = 0; i < 30; ++i) {
      w.clock.Advance(100);
      engine.Tick();
    }
  }
  const size_t heap_end = HeapBytes();
  const double dn = static_cast<double>(n);
  state.counters["growth_per_cycle_bytes_per_device"] =
      (static_cast<double>(heap_end) - static_cast<double>(heap_start)) /
      static_cast<double>(state.iterations()) / dn;
  state.counters["growth_total_bytes_per_device"] =
      (static_cast<double>(heap_end) - static_cast<double>(heap_start)) / dn;
  state.counters["live_devices"] = static_cast<double>(engine.GetSizes().live_devices);
  WorldCounters(state, w);
}

// ---- Tick while users are held back by min_dwell --------------------------------------

// n devices (4 per user) connect and are published online; right after, every
// device disconnects cleanly, within min_dwell (1 s) of its user's online
// publication, so every user's offline change is held back until the dwell
// ends. Each iteration is one Tick 10 ms after the previous (timed), while all
// users are still held. Counter tick_us_settled: the same Tick once the dwell
// ended and everything was published.
void BM_TickDwellHeld(benchmark::State& state, size_t n) {
  ReleaseWorld();
  ManualClock clock(kStartMs);
  std::unique_ptr<Engine> engine = NewEngine(&clock);
  std::vector<DeviceHandle> handles;
  handles.reserve(n);
  Populate(*engine, clock, n, 4, &handles);
  for (DeviceHandle h : handles) {
    if (!engine->Disconnect(h, DisconnectKind::kClean).ok()) Die("disconnect failed");
  }
  size_t events = 0;
  for (auto _ : state) {
    clock.Advance(10);
    const double t0 = CpuSeconds();
    events += engine->Tick();
    state.SetIterationTime(CpuSeconds() - t0);
  }
  state.counters["events_while_held"] = static_cast<double>(events);
  clock.Advance(1000);
  const size_t published = engine->Tick();
  double settled = 0;
  for (int i = 0; i < 50; ++i) {
    clock.Advance(10);
    const double t0 = CpuSeconds();
    engine->Tick();
    settled += CpuSeconds() - t0;
  }
  state.counters["held_users"] = static_cast<double>(published);
  state.counters["tick_us_settled"] = settled / 50 * 1e6;
  state.counters["devices"] = static_cast<double>(n);
}

// ---- Bytes per device -------------------------------------------------------------

void MemoryCounters(benchmark::State& state, size_t n, int dpu, double fixed, double per_device,
                    const char* suffix) {
  const double ids = IdBytesPerDevice(dpu);
  state.counters[absl::StrCat("bytes_per_device", suffix)] = per_device;
  state.counters[absl::StrCat("beyond_ids", suffix)] = per_device - ids;
  state.counters[absl::StrCat("target_met", suffix)] = per_device - ids <= 64.0 ? 1 : 0;
  state.counters["id_bytes_per_device"] = ids;
  state.counters["engine_fixed_bytes"] = fixed;
  state.counters["devices"] = static_cast<double>(n);
}

// Heap of an engine holding n devices (dpu per user): measured after the
// population (bytes_per_device), and again after 20 simulated seconds of
// every device beating once a second, spread over the second, with a Tick
// every 100 ms (bytes_per_device_steady). The engine's fixed cost (an empty engine: shard
// tables and timer wheels) is reported apart and not spread over devices.
void BM_BytesPerDevice(benchmark::State& state, size_t n, int dpu) {
  ReleaseWorld();
  for (auto _ : state) {
    std::vector<DeviceHandle> handles;
    handles.reserve(n);
    const size_t h0 = HeapBytes();
    ManualClock clock(kStartMs);
    std::unique_ptr<Engine> engine = NewEngine(&clock);
    const size_t h1 = HeapBytes();
    Populate(*engine, clock, n, dpu, &handles);
    const size_t h2 = HeapBytes();
    // 20 simulated seconds (past one turn of the 8.2 s timer wheel) of spread
    // heartbeats, a Tick every 100 ms.
    for (int sec = 0; sec < 20; ++sec) SpreadSecond(*engine, clock, handles, [&] { engine->Tick(); });
    const size_t h3 = HeapBytes();
    const double dn = static_cast<double>(n);
    MemoryCounters(state, n, dpu, static_cast<double>(h1 - h0), static_cast<double>(h2 - h1) / dn, "");
    MemoryCounters(state, n, dpu, static_cast<double>(h1 - h0), static_cast<double>(h3 - h1) / dn,
                   "_steady");
    state.counters["live_devices"] = static_cast<double>(engine->GetSizes().live_devices);
  }
}

// The 10^7 figure comes from the shared world's own build (no second build).
void BM_BytesPerDeviceWorld(benchmark::State& state, size_t n, int dpu) {
  World& w = GetWorld(n, dpu);
  for (auto _ : state) {
    MemoryCounters(state, n, dpu, w.engine_fixed_bytes, w.bytes_per_device, "");
  }
}

// ---- Connect / disconnect churn ------------------------------------------------------

// A pool of n devices (4 per user), each connected once and cleanly
// disconnected at once (so no user is ever published online and nothing
// piles up). Each operation reconnects one device (new session) and cleanly
// disconnects it again, in random order. Every 1000 operations the clock
// moves 1 ms and the engine Ticks, inside the timed region: the Tick is part
// of what churn costs (dirty users, timer entries).
void BM_Churn(benchmark::State& state, size_t n) {
  ReleaseWorld();
  ManualClock clock(kStartMs);
  std::unique_ptr<Engine> engine = NewEngine(&clock);
  {
    char ids[kIdBytes];
    for (size_t i = 0; i < n; ++i) {
      FormatIds(i, 4, ids);
      auto h = engine->Connect(MakeSignal(ids, 1));
      if (!h.ok() || !engine->Disconnect(*h, DisconnectKind::kClean).ok()) Die("churn setup failed");
      if ((i + 1) % kChunk == 0) {
        clock.Advance(1);
        engine->Tick();
      }
    }
    clock.Advance(1);
    engine->Tick();
  }
  const std::vector<uint32_t> perm = Permutation(n, 7);
  std::vector<char> arena(n * kIdBytes);
  std::vector<presence::Signal> sig(n);
  for (size_t p = 0; p < n; ++p) {
    FormatIds(perm[p], 4, arena.data() + p * kIdBytes);
    sig[p] = MakeSignal(arena.data() + p * kIdBytes, 2);
  }
  size_t pos = 0;
  int64_t errors = 0;
  for (auto _ : state) {
    for (size_t k = 0; k < kChunk; ++k) {
      presence::Signal& s = sig[pos + k];
      auto h = engine->Connect(s);
      if (!h.ok() || !engine->Disconnect(*h, DisconnectKind::kClean).ok()) ++errors;
      ++s.session_id;
    }
    clock.Advance(1);
    engine->Tick();
    pos += kChunk;
    if (pos >= n) pos = 0;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kChunk));
  state.counters["errors"] = static_cast<double>(errors);
  state.counters["devices"] = static_cast<double>(n);
  const Engine::Sizes sizes = engine->GetSizes();
  state.counters["device_records"] = static_cast<double>(sizes.devices);
  state.counters["live_devices"] = static_cast<double>(sizes.live_devices);
}

// ---- Model: the memory system alone -------------------------------------------------

// A record the size of presence::internal::Device, touched like the
// heartbeat fast path: load the generation word, compare, store a time. The
// counter variant adds, per touch, what the fast path adds: a relaxed
// fetch_add on a shared counter (a lock-prefixed instruction on x86). The
// load_store variant counts with a relaxed load and store instead (no lock
// prefix; valid for a single writer, e.g. a per-thread counter).
struct alignas(alignof(presence::internal::Device)) ModelRecord {
  std::atomic<uint32_t> seen[3];
  std::atomic<uint32_t> word;
  char rest[sizeof(presence::internal::Device) - 16];
};
static_assert(sizeof(ModelRecord) == sizeof(presence::internal::Device), "same size as Device");

enum class Count { kNone, kFetchAdd, kLoadStore };

void BM_Model(benchmark::State& state, size_t n, bool random, Count count) {
  ReleaseWorld();
  std::unique_ptr<ModelRecord[]> recs(new ModelRecord[n]);
  for (size_t i = 0; i < n; ++i) {
    for (auto& s : recs[i].seen) s.store(0, std::memory_order_relaxed);
    recs[i].word.store(0x141, std::memory_order_relaxed);
  }
  std::vector<uint32_t> order = random ? Permutation(n, 42) : std::vector<uint32_t>(n);
  if (!random) {
    for (size_t i = 0; i < n; ++i) order[i] = static_cast<uint32_t>(i);
  }
  alignas(64) std::atomic<uint64_t> counter{0};
  uint32_t t = 1;
  size_t pos = 0;
  for (auto _ : state) {
    const uint32_t* o = order.data() + pos;
    for (size_t k = 0; k < kChunk; ++k) {
      ModelRecord& r = recs[o[k]];
      if ((r.word.load(std::memory_order_acquire) & 0x47) == 0x41) {
        if (static_cast<int32_t>(t - r.seen[1].load(std::memory_order_relaxed)) > 0) {
          r.seen[1].store(t, std::memory_order_relaxed);
        }
        if (count == Count::kFetchAdd) {
          counter.fetch_add(1, std::memory_order_relaxed);
        } else if (count == Count::kLoadStore) {
          counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        }
      }
    }
    pos += kChunk;
    if (pos >= n) {
      pos = 0;
      ++t;
    }
  }
  benchmark::DoNotOptimize(counter.load());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kChunk));
  state.counters["devices"] = static_cast<double>(n);
}

// Dependent loads: a random cycle through n 48-byte records, each load's
// address read by the one before. Time per item = one full memory latency
// at this footprint (TLB walk included), with no overlap.
struct ChaseRecord {
  uint32_t next;
  uint32_t pad[11];
};
static_assert(sizeof(ChaseRecord) == 48, "48 bytes, like Device");

void BM_ModelChase(benchmark::State& state, size_t n) {
  ReleaseWorld();
  std::vector<ChaseRecord> recs(n);
  const std::vector<uint32_t> p = Permutation(n, 42);
  for (size_t i = 0; i < n; ++i) recs[p[i]].next = p[(i + 1) % n];
  uint32_t at = p[0];
  for (auto _ : state) {
    for (size_t k = 0; k < kChunk; ++k) at = recs[at].next;
    benchmark::DoNotOptimize(at);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kChunk));
  state.counters["devices"] = static_cast<double>(n);
}

// ---- Registration ----------------------------------------------------------------------

std::string Name(const std::string& what, size_t n) { return absl::StrCat(what, "/devices:", n); }

void RegisterAll() {
  using benchmark::RegisterBenchmark;
  for (size_t n : {size_t{10'000}, size_t{1'000'000}, size_t{10'000'000}}) {
    const bool huge = n >= 10'000'000;
    // Fixed iteration counts at 10^7: a handle pass is 10^4 chunks; keyed
    // cases run a fifth of a pass (2 million signals).
    auto fix = [&](benchmark::internal::Benchmark* b, int64_t iters) {
      if (huge) b->Iterations(iters);
      return b;
    };
    for (bool many : {false, true}) {
      for (bool random : {false, true}) {
        const std::string name = absl::StrCat(many ? "HandleBeatMany/" : "HandleBeat/",
                                              random ? "random" : "sequential");
        fix(RegisterBenchmark(Name(name, n).c_str(),
                              [n, random, many](benchmark::State& s) {
                                BM_HandleBeat(s, n, random, many);
                              }),
            20'000);
      }
    }
    fix(RegisterBenchmark(Name("KeyedSignal/random", n).c_str(),
                          [n](benchmark::State& s) { BM_KeyedSignal(s, n); }),
        2'000);
    for (size_t batch : {size_t{256}, size_t{4096}}) {
      fix(RegisterBenchmark(Name(absl::StrCat("KeyedSignalBatch", batch, "/random"), n).c_str(),
                            [n, batch](benchmark::State& s) { BM_KeyedSignalBatch(s, n, batch); }),
          batch == 256 ? 8'000 : 500);
    }
    {
      auto* b = RegisterBenchmark(Name("TickLive", n).c_str(),
                                  [n](benchmark::State& s) { BM_TickLive(s, n); });
      b->UseManualTime()->Unit(benchmark::kMillisecond);
      if (n >= 1'000'000) b->Iterations(huge ? 2 : 5);
    }
    {
      auto* b = RegisterBenchmark(Name("ExpirySweep", n).c_str(),
                                  [n](benchmark::State& s) { BM_ExpirySweep(s, n); });
      b->UseManualTime()->Unit(benchmark::kMillisecond);
      if (n >= 1'000'000) b->Iterations(huge ? 2 : 5);
    }
    RegisterBenchmark(Name("TimerWheelBursts", n).c_str(),
                      [n](benchmark::State& s) { BM_TimerWheelBursts(s, n); })
        ->Iterations(huge ? 3 : n >= 1'000'000 ? 20 : 200);
    if (huge) {
      RegisterBenchmark(absl::StrCat(Name("BytesPerDevice", n), "/per_user:4").c_str(),
                        [n](benchmark::State& s) { BM_BytesPerDeviceWorld(s, n, 4); })
          ->Iterations(1);
    } else {
      for (int dpu : {4, 1}) {
        RegisterBenchmark(absl::StrCat(Name("BytesPerDevice", n), "/per_user:", dpu).c_str(),
                          [n, dpu](benchmark::State& s) { BM_BytesPerDevice(s, n, dpu); })
            ->Iterations(1);
      }
      RegisterBenchmark(Name("Churn/connect_disconnect", n).c_str(),
                        [n](benchmark::State& s) { BM_Churn(s, n); });
      RegisterBenchmark(Name("TickDwellHeld", n).c_str(),
                        [n](benchmark::State& s) { BM_TickDwellHeld(s, n); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond)
          ->Iterations(50);
    }
    fix(RegisterBenchmark(Name("Model/chase", n).c_str(),
                          [n](benchmark::State& s) { BM_ModelChase(s, n); }),
        5'000);
    for (bool random : {false, true}) {
      for (Count c : {Count::kNone, Count::kFetchAdd, Count::kLoadStore}) {
        const char* cn = c == Count::kNone ? "no_counter" : c == Count::kFetchAdd ? "fetch_add" : "load_store";
        fix(RegisterBenchmark(
                Name(absl::StrCat("Model/", random ? "random/" : "sequential/", cn), n).c_str(),
                [n, random, c](benchmark::State& s) { BM_Model(s, n, random, c); }),
            20'000);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  // --smoke: the 10^4 cases only, briefly (CI). Later flags override.
  std::vector<char*> args;
  std::string filter = "--benchmark_filter=devices:10000(/|$)";
  std::string min_time = "--benchmark_min_time=0.01";
  args.push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) {
      args.push_back(filter.data());
      args.push_back(min_time.data());
    }
  }
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) continue;
    if (std::strcmp(argv[i], "--mutex_deadlock_detection=ignore") == 0) {
      // The distribution's Abseil may be built without NDEBUG, which turns on
      // Mutex deadlock detection (a global graph update on every lock). This
      // flag turns it off, as a host may, to measure what it costs.
      absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
      continue;
    }
    args.push_back(argv[i]);
  }
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);
  RegisterAll();
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  ReleaseWorld();
  return 0;
}
