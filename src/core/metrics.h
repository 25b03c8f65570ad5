// Counters and the publish-latency histogram behind Engine::RenderMetrics
// (docs/design.md section 7), and the Prometheus text writer they share.
#ifndef PRESENCE_SRC_CORE_METRICS_H_
#define PRESENCE_SRC_CORE_METRICS_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "presence/clock.h"
#include "presence/types.h"

namespace presence::internal {

enum class DropReason : uint8_t {
  kStaleSession = 0,    // a signal from an older or closed session
  kStaleTimestamp = 1,  // older than one already applied from the same session
  kInvalid = 2,         // failed validation
  kClosedHandle = 3,    // a beat or disconnect on a closed or unknown handle
  kLimit = 4,           // a per-user limit or the memory budget was passed
  kRateLimited = 5,     // the device passed its signals-per-second limit
};
inline constexpr int kDropReasonCount = 6;
absl::string_view DropReasonName(DropReason r);

inline constexpr int kCauseCount = 6;

// Counters kept per shard, under the shard's lock.
struct ShardCounters {
  std::array<uint64_t, kSourceCount> accepted{};
  std::array<uint64_t, kDropReasonCount> dropped{};
  std::array<uint64_t, kCauseCount> transitions{};
  uint64_t false_offlines = 0;
  // Push/pull checks (docs/design.md rule 9).
  uint64_t probes_sent = 0;
  uint64_t probes_answered = 0;
  uint64_t probes_late = 0;       // answers that came after the engine stopped waiting
  uint64_t probes_given_up = 0;   // devices that died by timeout with probes unanswered
  uint64_t probes_throttled = 0;  // probes not sent: past the gateway's rate limit

  void Add(const ShardCounters& o);
};

// A fixed-bucket histogram of milliseconds.
class LatencyHistogram {
 public:
  static constexpr std::array<int64_t, 12> kBoundsMs = {1,   5,   10,   25,   50,   100,
                                                        250, 500, 1000, 2500, 5000, 10000};
  void Observe(int64_t ms);
  // Its header, then its samples.
  void Render(std::string* out, absl::string_view name, absl::string_view help) const;
  // Its samples only, each with `labels` (one family of several histograms).
  void RenderSamples(std::string* out, absl::string_view name, absl::string_view labels) const;
  uint64_t count() const { return count_; }

 private:
  std::array<uint64_t, kBoundsMs.size() + 1> buckets_{};  // last: +Inf
  uint64_t count_ = 0;
  int64_t sum_ = 0;
};

// Runs f() and observes how long it took on `clock`, in `histogram`.
template <typename F>
auto Timed(Clock* clock, LatencyHistogram* histogram, F&& f) {
  const int64_t start = clock->NowMs();
  auto result = f();
  histogram->Observe(clock->NowMs() - start);
  return result;
}

// What a tick observes (under the engine's tick lock): each published
// change's signal-to-publish latency, and the latency of every store write
// and bus publish, timed on the engine's clock.
struct TickObservations {
  Clock* clock;
  LatencyHistogram publish;
  LatencyHistogram store;
  LatencyHistogram bus_publish;
};

// Prometheus text helpers: a HELP and TYPE header, then samples.
void MetricHeader(std::string* out, absl::string_view name, absl::string_view type,
                  absl::string_view help);
void MetricSample(std::string* out, absl::string_view name, absl::string_view labels,
                  double value);
// A metric of one sample without labels: its header, then the sample.
void Metric(std::string* out, absl::string_view name, absl::string_view type,
            absl::string_view help, double value);

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_METRICS_H_
