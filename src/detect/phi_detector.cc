#include "presence/phi_detector.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "src/core/mutex.h"

namespace presence {

namespace {

constexpr double kMaxThreshold = 15.0;
constexpr double kMaxPhi = 300.0;

// P(Z > z) for a standard normal Z.
double UpperTail(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

// The z with UpperTail(z) = q, for q in (0, 1): Acklam's rational
// approximation of the normal quantile (relative error below 1.2e-9).
double UpperQuantile(double q) {
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                                 -2.759285104469687e+02, 1.383577518672690e+02,
                                 -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                                 -1.556989798598866e+02, 6.680131188771972e+01,
                                 -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                                 -2.400758277161838e+00, -2.549732539343734e+00,
                                 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                                 2.445134137142996e+00, 3.754408661907416e+00};
  const double p = std::min(std::max(1.0 - q, 1e-300), 1.0 - 1e-16);  // lower-tail probability
  double x;
  if (p < 0.02425) {
    const double r = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) /
        ((((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1);
  } else if (p <= 1 - 0.02425) {
    const double r0 = p - 0.5, r = r0 * r0;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * r0 /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const double r = std::sqrt(-2 * std::log(std::max(q, 1e-300)));
    x = -(((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) /
        ((((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1);
  }
  return x;
}

PhiDetectorOptions Sanitize(PhiDetectorOptions o) {
  const PhiDetectorOptions def;
  if (!(o.threshold > 0)) o.threshold = def.threshold;
  o.threshold = std::min(o.threshold, kMaxThreshold);
  o.min_samples = std::max(o.min_samples, 1);
  if (!(o.alpha > 0 && o.alpha <= 1)) o.alpha = def.alpha;
  if (!(o.loss_alpha > 0 && o.loss_alpha <= 1)) o.loss_alpha = def.loss_alpha;
  if (!(o.prior_loss >= 0 && o.prior_loss < 1)) o.prior_loss = def.prior_loss;
  if (!(o.prior_weight >= 0)) o.prior_weight = def.prior_weight;
  o.min_std_dev_ms = std::max<int64_t>(o.min_std_dev_ms, 0);
  o.acceptable_pause_ms = std::max<int64_t>(o.acceptable_pause_ms, 0);
  o.max_interval_ms = std::max<int64_t>(o.max_interval_ms, 1);
  int n = 1;
  while (n < o.shards && n < 4096) n <<= 1;
  o.shards = n;
  return o;
}

// splitmix64's finalizer: spreads device keys (shard << 32 | index) evenly.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// Lengths of loss runs that the histogram tells apart: 0 .. kRuns - 2 lost
// heartbeats exactly, and kRuns - 1 or more.
constexpr int kRuns = 6;
constexpr int kMaxRun = 64;

// 48 bytes per device (56 with its key in the hash table).
struct Learned {
  int64_t last_ms = 0;    // time of the latest observed signal
  float mean = 0;         // of a single interval, ms
  float var = 0;          // of a single interval, ms^2
  float runs[kRuns] = {};  // decayed count of intervals that lost k heartbeats
  float timeout = 0;      // silence at which phi reaches the threshold, ms
  uint32_t samples = 0;   // intervals learned (saturates)
};

// The loss-run distribution of one device, with its prior.
class Runs {
 public:
  Runs(const Learned& l, const PhiDetectorOptions& o) : model_(o.model_loss) {
    if (!model_) return;
    const double w = o.prior_weight, p0 = o.prior_loss;
    double total = w, above = 0;
    for (int k = 0; k < kRuns; ++k) total += l.runs[k];
    // tail_[k] = P(run >= k) for k < kRuns.
    double prior = w;  // w * p0^k
    for (int k = kRuns - 1; k >= 0; --k) {
      above += l.runs[k];
      tail_[k] = above;
    }
    for (int k = 0; k < kRuns; ++k, prior *= p0) tail_[k] = (tail_[k] + prior) / total;
    tail_[0] = 1;
    ratio_ = tail_[kRuns - 2] > 0 ? std::clamp(tail_[kRuns - 1] / tail_[kRuns - 2], p0, 0.999) : p0;
  }
  // P(run >= k): the histogram up to kRuns - 1, then geometric.
  double Tail(int k) const {
    if (!model_) return k == 0 ? 1 : 0;
    if (k < kRuns) return tail_[k];
    return tail_[kRuns - 1] * std::pow(ratio_, k - (kRuns - 1));
  }
  double At(int k) const { return Tail(k) - Tail(k + 1); }

 private:
  bool model_;
  double tail_[kRuns] = {};
  double ratio_ = 0;
};

double StdDev(const Learned& l, const PhiDetectorOptions& o) {
  return std::max(std::sqrt(std::max(double(l.var), 0.0)), double(o.min_std_dev_ms));
}

// The silence t at which P(silence > t) = target, by the approximation that
// for t between m and m + 1 intervals only the term of m - 1 lost heartbeats
// is in its transition, and every longer run has not arrived yet:
//   P(silence > t) ~ P(run >= m) + P(run = m - 1) Q((t - m mean) / sd),
// with m the fewest lost heartbeats in a row less likely than the target.
double Timeout(const Learned& l, const PhiDetectorOptions& o, double target) {
  const double mean = l.mean, sd = StdDev(l, o);
  const Runs runs(l, o);
  int m = 1;
  while (runs.Tail(m) >= target && m < kMaxRun) ++m;
  const double ratio = std::clamp((target - runs.Tail(m)) / std::max(runs.At(m - 1), 1e-300),
                                  1e-300, 1 - 1e-12);
  const double t = m * mean + sd * UpperQuantile(ratio);
  return std::max(t, std::max(1.0, (m - 1) * mean));
}

// P(silence > t), summed over the number of heartbeats lost.
double SilenceTail(const Learned& l, const PhiDetectorOptions& o, double t) {
  const double mean = l.mean, sd = std::max(StdDev(l, o), 1e-9);
  const Runs runs(l, o);
  double sum = runs.Tail(kMaxRun);
  for (int k = 0; k < kMaxRun; ++k) sum += runs.At(k) * UpperTail((t - (k + 1) * mean) / sd);
  return sum;
}

// The share of heartbeats lost: E[run] / (1 + E[run]).
double LossShare(const Learned& l, const PhiDetectorOptions& o) {
  const Runs runs(l, o);
  double e = 0;
  for (int k = 1; k < kMaxRun; ++k) e += runs.Tail(k);
  return e / (1 + e);
}

}  // namespace

struct PhiAccrualDetector::Impl {
  struct alignas(64) Shard {
    mutable internal::Mutex mu;
    absl::flat_hash_map<uint64_t, Learned> devices ABSL_GUARDED_BY(mu);
  };
  explicit Impl(int n) : shards(static_cast<size_t>(n)) {}
  Shard& For(uint64_t key) { return shards[Mix(key) & (shards.size() - 1)]; }
  const Shard& For(uint64_t key) const { return shards[Mix(key) & (shards.size() - 1)]; }
  std::vector<Shard> shards;
};

namespace {

// What a device with what `l` holds gets: its learned timeout, or the
// fixed bound while too little is known, for a long bound, or when shorter.
int64_t AnswerOf(const Learned& l, const PhiDetectorOptions& o, int64_t fixed_offline_after_ms) {
  if (fixed_offline_after_ms > o.adaptive_bound_limit_ms ||
      l.samples < static_cast<uint32_t>(o.min_samples) ||
      !(l.timeout < double(fixed_offline_after_ms))) {
    return fixed_offline_after_ms;
  }
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(l.timeout)));
}

}  // namespace

PhiAccrualDetector::PhiAccrualDetector(const PhiDetectorOptions& options)
    : options_(Sanitize(options)),
      target_(std::pow(10.0, -options_.threshold)),
      z_(UpperQuantile(target_)),
      impl_(std::make_unique<Impl>(options_.shards)) {}

PhiAccrualDetector::~PhiAccrualDetector() = default;

int64_t PhiAccrualDetector::Observe(uint64_t device_key, Source source, int64_t now_ms,
                                    int64_t fixed_offline_after_ms) {
  if (source == Source::kInferred) return fixed_offline_after_ms;  // its own slow clock
  Impl::Shard& s = impl_->For(device_key);
  internal::MutexLock lock(&s.mu);
  auto [it, inserted] = s.devices.try_emplace(device_key);
  Learned& l = it->second;
  if (inserted) {
    l.last_ms = now_ms;
    return fixed_offline_after_ms;
  }
  const int64_t interval = now_ms - l.last_ms;
  // Same instant (another source), out of order, or away and back: not a
  // heartbeat gap, nothing learned.
  if (interval <= 0) return AnswerOf(l, options_, fixed_offline_after_ms);
  l.last_ms = now_ms;
  if (interval > options_.max_interval_ms) return AnswerOf(l, options_, fixed_offline_after_ms);
  const double x = static_cast<double>(interval);
  // Heartbeats lost within this interval, judged against the mean so far.
  int64_t lost = 0;
  if (options_.model_loss && l.samples > 0 && l.mean > 0) {
    lost = std::max<int64_t>(0, std::llround(x / l.mean) - 1);
  }
  if (l.samples < 0xffffffffu) ++l.samples;
  if (lost == 0) {
    // Running mean and variance of a single interval while few samples are
    // known, then exponentially weighted (West's incremental form).
    const double a = std::max(options_.alpha, 1.0 / l.samples);
    const double diff = x - l.mean;
    const double incr = a * diff;
    l.mean = static_cast<float>(l.mean + incr);
    l.var = static_cast<float>((1.0 - a) * (l.var + diff * incr));
  }
  if (options_.model_loss) {
    const float keep = static_cast<float>(1.0 - options_.loss_alpha);
    for (float& c : l.runs) c *= keep;
    l.runs[std::min<int64_t>(lost, kRuns - 1)] += 1;
  }
  l.timeout = static_cast<float>(Timeout(l, options_, target_) +
                                 double(options_.acceptable_pause_ms));
  return AnswerOf(l, options_, fixed_offline_after_ms);
}

int64_t PhiAccrualDetector::OfflineAfterMs(uint64_t device_key, int64_t last_signal_ms,
                                           int64_t fixed_offline_after_ms) const {
  (void)last_signal_ms;  // the answer is a length of silence, the same from any start
  const Impl::Shard& s = impl_->For(device_key);
  internal::MutexLock lock(&s.mu);
  auto it = s.devices.find(device_key);
  if (it == s.devices.end()) return fixed_offline_after_ms;
  return AnswerOf(it->second, options_, fixed_offline_after_ms);
}

void PhiAccrualDetector::Forget(uint64_t device_key) {
  Impl::Shard& s = impl_->For(device_key);
  internal::MutexLock lock(&s.mu);
  s.devices.erase(device_key);
}

double PhiAccrualDetector::Phi(uint64_t device_key, int64_t last_signal_ms, int64_t now_ms) const {
  const Impl::Shard& s = impl_->For(device_key);
  Learned l;
  {
    internal::MutexLock lock(&s.mu);
    auto it = s.devices.find(device_key);
    if (it == s.devices.end()) return 0;
    l = it->second;
  }
  if (l.samples < static_cast<uint32_t>(options_.min_samples)) return 0;
  const double t = double(now_ms - last_signal_ms) - double(options_.acceptable_pause_ms);
  const double tail = SilenceTail(l, options_, t);
  if (tail <= 0) return kMaxPhi;
  return std::min(kMaxPhi, -std::log10(tail));
}

PhiAccrualDetector::DeviceStats PhiAccrualDetector::Stats(uint64_t device_key) const {
  const Impl::Shard& s = impl_->For(device_key);
  internal::MutexLock lock(&s.mu);
  DeviceStats out;
  auto it = s.devices.find(device_key);
  if (it == s.devices.end()) return out;
  const Learned& l = it->second;
  out.known = true;
  out.samples = l.samples;
  out.mean_ms = l.mean;
  out.std_dev_ms = std::sqrt(std::max(double(l.var), 0.0));
  out.loss = LossShare(l, options_);
  out.timeout_ms = l.timeout;
  return out;
}

size_t PhiAccrualDetector::size() const {
  size_t n = 0;
  for (const Impl::Shard& s : impl_->shards) {
    internal::MutexLock lock(&s.mu);
    n += s.devices.size();
  }
  return n;
}

}  // namespace presence
