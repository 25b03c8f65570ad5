// Throughput of the Kafka bus against librdkafka's mock cluster (in this
// process, on loopback): publishing one by one, from several threads, and
// in batches; reading in slices of various sizes; and an engine consuming
// the bus. Results and commands: benchmarks/RESULTS.md, "Kafka bus (issue 6)".
//
// The mock cluster keeps the log in memory and answers at once, so these
// figures measure the client side (librdkafka and the adapter), not a
// broker's disk or network.
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include "adapters/kafka/tests/mock_kafka.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/kafka_bus.h"
#include "presence/store.h"
#include "presence/wire.h"

namespace presence {
namespace {

using kafka_testing::MockKafka;

// A real signal's encoding, as a gateway publishes it (about 40 bytes).
std::string SignalPayload(const std::string& user, int64_t at_ms) {
  Signal s;
  s.user_id = user;
  s.device_id = "web-1";
  s.session_id = 1;
  s.platform = Platform::kWeb;
  s.timestamp_ms = at_ms;
  return EncodeSignal(s);
}

std::unique_ptr<KafkaBus> NewBus(uint32_t partitions) {
  KafkaBusOptions o = MockKafka::Shared().NewTopicOptions(static_cast<int>(partitions));
  return KafkaBus::Create(o).value();
}

std::vector<std::string> Users(int n) {
  std::vector<std::string> users;
  for (int i = 0; i < n; ++i) users.push_back("user-" + std::to_string(i));
  return users;
}

// One Publish at a time per thread, each waiting for its delivery report.
void BM_PublishOneByOne(benchmark::State& state) {
  static KafkaBus* const bus = NewBus(16).release();  // shared by the threads
  const auto users = Users(1000);
  const std::string payload = SignalPayload("user-1", 1'000'000);
  size_t i = static_cast<size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    auto off = bus->Publish(BusRecordType::kSignal, users[i++ % users.size()], payload);
    if (!off.ok()) state.SkipWithError(off.status().ToString().c_str());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PublishOneByOne)->UseRealTime()->Threads(1)->Threads(4)->Threads(16);

// PublishBatch of range(0) records: produced together, waited for once.
void BM_PublishBatch(benchmark::State& state) {
  auto bus = NewBus(16);
  const auto users = Users(1000);
  const std::string payload = SignalPayload("user-1", 1'000'000);
  std::vector<KafkaBus::Message> batch;
  for (int64_t k = 0; k < state.range(0); ++k) {
    batch.push_back({BusRecordType::kSignal, users[static_cast<size_t>(k) % users.size()], payload});
  }
  for (auto _ : state) {
    auto offs = bus->PublishBatch(batch);
    if (!offs.ok()) state.SkipWithError(offs.status().ToString().c_str());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PublishBatch)->UseRealTime()->Arg(10)->Arg(100)->Arg(1000)->Arg(10000);

// Read(partition, offset, range(0)) over a partition of 50,000 records,
// continuing where the previous read stopped (the engine's pattern).
void BM_ReadSequential(benchmark::State& state) {
  constexpr int kRecords = 50'000;
  static std::unique_ptr<KafkaBus> bus;
  if (bus == nullptr) {
    bus = NewBus(1);
    const std::string payload = SignalPayload("user-1", 1'000'000);
    const auto users = Users(1000);
    std::vector<KafkaBus::Message> batch;
    for (int k = 0; k < 10'000; ++k) batch.push_back({BusRecordType::kSignal, users[k % 1000], payload});
    for (int k = 0; k < kRecords / 10'000; ++k) (void)bus->PublishBatch(batch).value();
  }
  const size_t max = static_cast<size_t>(state.range(0));
  uint64_t offset = 0;
  int64_t records = 0;
  for (auto _ : state) {
    if (offset >= kRecords) offset = 0;  // wraps around: one seek
    auto recs = bus->Read(0, offset, max);
    if (!recs.ok() || recs->empty()) {
      state.SkipWithError(recs.ok() ? "read nothing" : recs.status().ToString().c_str());
      break;
    }
    offset += recs->size();
    records += static_cast<int64_t>(recs->size());
  }
  state.SetItemsProcessed(records);
  state.counters["records_per_read"] =
      benchmark::Counter(static_cast<double>(records) / static_cast<double>(state.iterations()));
}
BENCHMARK(BM_ReadSequential)->UseRealTime()->Arg(1)->Arg(64)->Arg(1000)->Arg(4096);

// Read at a random offset each time: every read seeks.
void BM_ReadRandom(benchmark::State& state) {
  static std::unique_ptr<KafkaBus> bus;
  constexpr int kRecords = 10'000;
  if (bus == nullptr) {
    bus = NewBus(1);
    const std::string payload = SignalPayload("user-1", 1'000'000);
    std::vector<KafkaBus::Message> batch(kRecords, {BusRecordType::kSignal, "user-1", payload});
    (void)bus->PublishBatch(batch).value();
  }
  uint64_t x = 88172645463325252ull;
  for (auto _ : state) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    auto recs = bus->Read(0, x % kRecords, 10);
    if (!recs.ok()) state.SkipWithError(recs.status().ToString().c_str());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ReadRandom)->UseRealTime()->Unit(benchmark::kMicrosecond);

// An engine consuming signals from the bus (16 partitions): signals
// applied per second, Kafka reads included. Each iteration publishes 10,000
// signals in one batch and ticks (neither timed), then consumes them.
void BM_EngineConsumeBus(benchmark::State& state) {
  auto bus = NewBus(16);
  auto store = NewMemoryStore();
  ManualClock clock(1'000'000);
  Options o;
  o.clock = &clock;
  o.bus = bus.get();
  o.store = store.get();
  auto engine = Engine::Create(o).value();
  const auto users = Users(10'000);
  std::vector<std::string> payloads(users.size());
  int64_t consumed = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (size_t k = 0; k < users.size(); ++k) payloads[k] = SignalPayload(users[k], clock.NowMs());
    std::vector<KafkaBus::Message> batch;
    for (size_t k = 0; k < users.size(); ++k) batch.push_back({BusRecordType::kSignal, users[k], payloads[k]});
    (void)bus->PublishBatch(batch).value();
    state.ResumeTiming();
    size_t got = 0;
    while (got < batch.size()) {
      auto n = engine->ConsumeBus(4096);
      if (!n.ok()) {
        state.SkipWithError(n.status().ToString().c_str());
        return;
      }
      got += *n;  // (also counts the change events it skips)
    }
    consumed += static_cast<int64_t>(batch.size());
    state.PauseTiming();
    clock.Advance(100);
    engine->Tick();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(consumed);
}
BENCHMARK(BM_EngineConsumeBus)->UseRealTime()->Unit(benchmark::kMillisecond);

// Engine::Tick when range(0) users just came online: it writes them to the
// store, then publishes each change event to the bus with Bus::Publish, one
// at a time (the Bus interface has no batch call), each waiting for Kafka.
void BM_EngineTickPublishesChanges(benchmark::State& state) {
  auto bus = NewBus(16);
  const auto users = Users(static_cast<int>(state.range(0)));
  int64_t published = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto store = NewMemoryStore();
    ManualClock clock(1'000'000);
    Options o;
    o.clock = &clock;
    o.bus = bus.get();
    o.store = store.get();
    auto engine = Engine::Create(o).value();
    for (const auto& u : users) {
      Signal s;
      s.user_id = u;
      s.device_id = "web-1";
      s.session_id = 1;
      (void)engine->Signal(s);
    }
    clock.Advance(100);
    state.ResumeTiming();
    published += static_cast<int64_t>(engine->Tick());
    state.PauseTiming();
    engine.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(published);
}
BENCHMARK(BM_EngineTickPublishesChanges)->UseRealTime()->Unit(benchmark::kMillisecond)->Arg(1000);

}  // namespace
}  // namespace presence

BENCHMARK_MAIN();
