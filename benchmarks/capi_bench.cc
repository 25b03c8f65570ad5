// The cost of the C ABI (issue 4): one heartbeat on a device handle through
// presence_engine_beat (include/presence/c.h) against the C++ call
// Engine::Beat, side by side, on the same engine and the same handles.
// Target: at most 10 ns of overhead per call.
//
// Cases, each at 10^4 devices (everything in cache: the call itself is most
// of the cost) and 10^6 devices (the memory system is most of it):
//   Beat/cxx            engine->Beat(handle)
//   Beat/c              presence_engine_beat(engine, handle, ACTIVE, APP, &err)
//   Beat/c_via_pointer  the same through a function pointer the compiler
//                       cannot see through, as a binding calls it (ctypes,
//                       cgo and dlsym all call through a pointer, and a call
//                       into libpresence.so goes through the PLT).
// The benchmark links the static library, which holds the C ABI too: one
// process cannot load libpresence.so beside a second copy of the engine (both
// would register presence.proto with the one libprotobuf).
//
// Every engine runs on a ManualClock; one round of heartbeats over all
// devices is one simulated second (advanced, with a Tick, outside the timed
// region), so every device stays live and every Beat takes the lock-free path.
//
//   capi_bench                 everything
//   capi_bench --smoke         the 10^4 cases, briefly (CI)
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "capi/c_internal.h"
#include "presence/c.h"
#include "presence/engine.h"

namespace {

constexpr size_t kChunk = 1000;  // heartbeats per benchmark iteration
constexpr int64_t kRoundMs = 1000;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "capi_bench: %s\n", what.c_str());
  std::abort();
}

// N devices (4 per user) connected through the C ABI on a manual clock.
struct World {
  explicit World(size_t n) {
    char* err = nullptr;
    if (presence_clock_manual_new(&clock, 1'000'000, &err) != PRESENCE_OK) Die(err);
    presence_engine_options_t o = PRESENCE_ENGINE_OPTIONS_INIT;
    o.clock = clock;
    if (presence_engine_new(&engine, &o, &err) != PRESENCE_OK) Die(err);
    handles.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const std::string user = absl::StrCat("user-", i / 4);
      const std::string device = absl::StrCat("dev-", i % 4);
      presence_signal_t s = PRESENCE_SIGNAL_INIT;
      s.user_id = user.data();
      s.user_id_len = user.size();
      s.device_id = device.data();
      s.device_id_len = device.size();
      s.session_id = 1;
      s.platform = PRESENCE_PLATFORM_WEB;
      uint64_t h = 0;
      if (presence_engine_connect(&h, engine, &s, &err) != PRESENCE_OK) Die(err);
      handles.push_back(h);
    }
    NextRound();
  }
  ~World() {
    presence_engine_destroy(engine);
    presence_clock_destroy(clock);
  }

  void NextRound() {
    char* err = nullptr;
    if (presence_clock_advance(clock, kRoundMs, &err) != PRESENCE_OK) Die(err);
    if (presence_engine_tick(nullptr, engine, &err) != PRESENCE_OK) Die(err);
  }

  presence::Engine& cxx() { return *engine->rep; }

  presence_clock_t* clock = nullptr;
  presence_engine_t* engine = nullptr;
  std::vector<uint64_t> handles;
};

World& GetWorld(size_t n) {
  static std::unique_ptr<World> small, large;
  std::unique_ptr<World>& w = n <= 10'000 ? small : large;
  if (w == nullptr || w->handles.size() != n) w = std::make_unique<World>(n);
  return *w;
}

enum class Via { kCxx, kC, kCViaPointer };

using BeatFn = int (*)(presence_engine_t*, uint64_t, int, int, char**);
BeatFn volatile g_beat = &presence_engine_beat;

void BM_Beat(benchmark::State& state, size_t n, Via via) {
  World& w = GetWorld(n);
  presence::Engine& engine = w.cxx();
  presence_engine_t* ce = w.engine;
  // Read from a volatile, so the compiler cannot turn the indirect call
  // back into a direct one.
  const BeatFn beat = g_beat;
  char* err = nullptr;
  size_t pos = 0;
  int64_t errors = 0;
  for (auto _ : state) {
    const uint64_t* h = w.handles.data() + pos;
    switch (via) {
      case Via::kCxx:
        for (size_t k = 0; k < kChunk; ++k) {
          if (!engine.Beat(presence::DeviceHandle{h[k]}).ok()) ++errors;
        }
        break;
      case Via::kC:
        for (size_t k = 0; k < kChunk; ++k) {
          if (presence_engine_beat(ce, h[k], PRESENCE_ACTIVITY_ACTIVE, PRESENCE_SOURCE_APP,
                                   &err) != PRESENCE_OK) {
            ++errors;
            presence_free(err);
          }
        }
        break;
      case Via::kCViaPointer:
        for (size_t k = 0; k < kChunk; ++k) {
          if (beat(ce, h[k], PRESENCE_ACTIVITY_ACTIVE, PRESENCE_SOURCE_APP, &err) !=
              PRESENCE_OK) {
            ++errors;
            presence_free(err);
          }
        }
        break;
    }
    pos += kChunk;
    if (pos >= n) {  // one simulated second: every device beat once
      state.PauseTiming();
      pos = 0;
      w.NextRound();
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kChunk));
  state.counters["per_beat"] = benchmark::Counter(
      static_cast<double>(state.iterations() * kChunk),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["errors"] = static_cast<double>(errors);
}

void RegisterAll() {
  for (size_t n : {size_t{10'000}, size_t{1'000'000}}) {
    // Side by side; --benchmark_repetitions=N
    // --benchmark_enable_random_interleaving=true spreads a drift of the
    // machine over all three alike.
    for (auto [name, via] : {std::pair{"cxx", Via::kCxx}, std::pair{"c", Via::kC},
                             std::pair{"c_via_pointer", Via::kCViaPointer}}) {
      benchmark::RegisterBenchmark(absl::StrCat("Beat/", name, "/devices:", n).c_str(),
                                   [n, via = via](benchmark::State& s) { BM_Beat(s, n, via); });
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  // --smoke: the 10^4 cases only, briefly (CI). Later flags override.
  std::vector<char*> args;
  std::string filter = "--benchmark_filter=devices:10000$";
  std::string min_time = "--benchmark_min_time=0.01";
  args.push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) {
      args.push_back(filter.data());
      args.push_back(min_time.data());
    }
  }
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") != 0) args.push_back(argv[i]);
  }
  int args_count = static_cast<int>(args.size());
  RegisterAll();
  benchmark::Initialize(&args_count, args.data());
  if (benchmark::ReportUnrecognizedArguments(args_count, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
