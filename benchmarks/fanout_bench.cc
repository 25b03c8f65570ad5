// Benchmarks of the fan-out tier (issue: diff batcher and fan-out).
//
//   BM_Transitions   transitions per second through the reducer and the
//                    batcher: every user flips activity, Tick publishes and
//                    the fan-out batches for its list subscribers (timed
//                    without and with the signals that cause them).
//   BM_ListDiffs     user diffs delivered per second in list mode: 10^5
//                    users, 10^4 push subscribers watching 100 each (each
//                    subscriber's batch is encoded for it).
//   BM_TopicDiffs    user diffs delivered per second in topic mode: 10^5
//                    users in 100 topics of 10^3 members, 10^4 push
//                    subscribers (100 per topic).
//   In both, each subscriber's Sink copies every byte it is handed into its
//   own buffer, as a write to its socket would, and the figures count the
//   deliveries (user diffs) and the bytes copied per second.
//   BM_SubscriptionMemory   bytes per subscriber and per watched user.
//
// Each iteration flips every user once (a published change each, min_dwell
// 0), ticks once, and polls every subscriber dry (or, for push subscribers,
// the tick delivers to their sinks). Counters: items_per_second
// (transitions or user diffs), bytes_per_second and bytes_per_diff on the
// wire.
#include <malloc.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "benchmark/benchmark.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/fanout.h"

namespace presence {
namespace {

// A push subscriber's sink: copies each batch, header and parts, into the
// subscriber's own buffer, as a socket write copies into the socket's, and
// counts what it copied.
class CopySink : public Sink {
 public:
  void Deliver(SubscriberId subscriber, const Batch& batch) override {
    std::string& out = buffers_[subscriber];
    out.assign(batch.header);
    for (const auto& part : batch.parts) out.append(*part);
    diffs_ += batch.users;
    bytes_ += out.size();
  }
  // The subscriber's buffer exists before any delivery (no allocation of a
  // map node on the timed path).
  void Add(SubscriberId subscriber) { buffers_[subscriber].reserve(4096); }
  std::pair<size_t, size_t> Take() {
    const std::pair<size_t, size_t> r{diffs_, bytes_};
    diffs_ = bytes_ = 0;
    return r;
  }

 private:
  absl::flat_hash_map<SubscriberId, std::string> buffers_;
  size_t diffs_ = 0;
  size_t bytes_ = 0;
};

struct World {
  ManualClock clock{1'000'000};
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Fanout> fanout;
  std::vector<std::string> users;
  std::vector<DeviceHandle> handles;
  std::vector<SubscriberId> subs;
  bool idle = false;

  explicit World(size_t n_users, size_t resume_window = 4) {
    Options o;
    o.clock = &clock;
    o.min_dwell_ms = 0;
    engine = Engine::Create(o).value();
    FanoutOptions fo;
    fo.rate_per_sec = 0;          // measure the batcher, not the throttle
    fo.max_batch = 1 << 30;       // flush on the interval only
    fo.max_list_users = 1 << 20;
    fo.interval_mode_members = 1 << 20;
    fo.counts_only_members = 1 << 20;
    fo.max_outbox_batches = 1 << 20;
    fo.resume_window = resume_window;
    fanout = Fanout::Create(engine.get(), fo).value();
    for (size_t i = 0; i < n_users; ++i) {
      users.push_back("user-" + std::to_string(i));
      Signal s;
      s.user_id = users.back();
      s.device_id = "web";
      s.session_id = 1;
      s.platform = Platform::kWeb;
      handles.push_back(engine->Connect(s).value());
    }
    Step();
  }

  // Every user flips between ACTIVE and IDLE (a signal each, through the
  // shard lock); then one tick publishes the changes and the fan-out flushes.
  void Flip() {
    clock.Advance(100);
    const Activity a = idle ? Activity::kIdle : Activity::kActive;
    for (DeviceHandle h : handles) (void)engine->Beat(h, a);
    idle = !idle;
  }
  void Step() {
    Flip();
    engine->Tick();
  }

  // Polls every subscriber dry; returns user entries and bytes delivered.
  std::pair<size_t, size_t> Drain() {
    size_t diffs = 0, bytes = 0;
    Batch b;
    for (SubscriberId s : subs) {
      while (fanout->Poll(s, &b).value()) {
        diffs += b.users;
        bytes += b.ByteSize();
      }
    }
    return {diffs, bytes};
  }
};

void BM_Transitions(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  World w(n);
  // 1000 list subscribers, each watching 10 random users: a batcher to feed.
  std::mt19937_64 rng(1);
  for (int i = 0; i < 1000; ++i) {
    w.subs.push_back(w.fanout->Subscribe().value());
    std::vector<absl::string_view> ids;
    for (int j = 0; j < 10; ++j) ids.push_back(w.users[rng() % n]);
    (void)w.fanout->AddUsers(w.subs.back(), ids);
  }
  w.Step();
  w.Drain();
  const bool with_signals = state.range(1) != 0;
  size_t transitions = 0;
  for (auto _ : state) {
    if (!with_signals) state.PauseTiming();
    w.Flip();
    if (!with_signals) state.ResumeTiming();
    transitions += w.engine->Tick();
    state.PauseTiming();
    w.Drain();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<int64_t>(transitions));
}

// Times the tick and the deliveries (the signals that cause the changes are
// not timed: BM_Transitions has them).
void RunDeliveries(benchmark::State& state, World& w, CopySink& sink) {
  w.Step();
  sink.Take();
  size_t diffs = 0, bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    w.Flip();
    state.ResumeTiming();
    w.engine->Tick();
    auto [d, b] = sink.Take();
    diffs += d;
    bytes += b;
  }
  state.SetItemsProcessed(static_cast<int64_t>(diffs));
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["bytes_per_diff"] = diffs ? double(bytes) / double(diffs) : 0;
}

void BM_ListDiffs(benchmark::State& state) {
  const size_t n_users = 100000, subs = static_cast<size_t>(state.range(0)), per = 100;
  World w(n_users);
  CopySink sink;
  SubscriberOptions so;
  so.sink = &sink;
  std::mt19937_64 rng(2);
  for (size_t i = 0; i < subs; ++i) {
    w.subs.push_back(w.fanout->Subscribe(so).value());
    sink.Add(w.subs.back());
    std::vector<absl::string_view> ids;
    for (size_t j = 0; j < per; ++j) ids.push_back(w.users[rng() % n_users]);
    (void)w.fanout->AddUsers(w.subs.back(), ids);
  }
  RunDeliveries(state, w, sink);
}

void BM_TopicDiffs(benchmark::State& state) {
  const size_t members = 1000, subs = static_cast<size_t>(state.range(0));
  const size_t topics = 100;
  World w(members * topics);
  CopySink sink;
  SubscriberOptions so;
  so.sink = &sink;
  for (size_t t = 0; t < topics; ++t) {
    std::vector<absl::string_view> ids;
    for (size_t j = 0; j < members; ++j) ids.push_back(w.users[t * members + j]);
    (void)w.fanout->AddMembers("topic-" + std::to_string(t), ids);
  }
  for (size_t i = 0; i < subs; ++i) {
    w.subs.push_back(w.fanout->Subscribe(so).value());
    sink.Add(w.subs.back());
    (void)w.fanout->Join(w.subs.back(), "topic-" + std::to_string(i % topics));
  }
  RunDeliveries(state, w, sink);
}

// Second argument: the resume window in batches (1: the subscription's own
// state, plus its last batch; 64: the default, bounded by 32 KiB).
void BM_SubscriptionMemory(benchmark::State& state) {
  const size_t subs = static_cast<size_t>(state.range(0)), per = 100, n_users = 100000;
  for (auto _ : state) {
    World w(n_users, static_cast<size_t>(state.range(1)));
    std::mt19937_64 rng(3);
    const size_t before = mallinfo2().uordblks;
    for (size_t i = 0; i < subs; ++i) {
      w.subs.push_back(w.fanout->Subscribe().value());
      std::vector<absl::string_view> ids;
      for (size_t j = 0; j < per; ++j) ids.push_back(w.users[rng() % n_users]);
      (void)w.fanout->AddUsers(w.subs.back(), ids);
    }
    for (int i = 0; i < 3; ++i) {  // a few rounds of diffs fill the resume window
      w.Step();
      w.Drain();
    }
    const size_t after = mallinfo2().uordblks;
    state.counters["bytes_per_subscriber"] = double(after - before) / double(subs);
    state.counters["bytes_per_watched_user"] = double(after - before) / double(subs * per);
  }
}

// Second argument 0: only Tick is timed (reducer, publish, batcher); 1: the
// signals that cause the transitions are timed too.
BENCHMARK(BM_Transitions)->Args({100000, 0})->Args({100000, 1})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ListDiffs)->Arg(10000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TopicDiffs)->Arg(10000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SubscriptionMemory)
    ->Args({10000, 1})
    ->Args({10000, 64})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace presence

BENCHMARK_MAIN();
