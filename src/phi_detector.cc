#include "presence/phi_detector.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace presence {

namespace {

constexpr double kMaxThreshold = 15.0;
constexpr double kMaxPhi = 300.0;

// P(Z > z) for a standard normal Z.
double UpperTail(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

// The z with UpperTail(z) = 10^-phi, by bisection (UpperTail is decreasing).
double QuantileForPhi(double phi) {
  const double p = std::pow(10.0, -phi);
  double lo = -10.0, hi = 10.0;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (UpperTail(mid) > p) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return 0.5 * (lo + hi);
}

PhiDetectorOptions Sanitize(PhiDetectorOptions o) {
  if (!(o.threshold > 0)) o.threshold = PhiDetectorOptions().threshold;
  o.threshold = std::min(o.threshold, kMaxThreshold);
  o.min_samples = std::max(o.min_samples, 1);
  if (!(o.alpha > 0 && o.alpha <= 1)) o.alpha = PhiDetectorOptions().alpha;
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

// 24 bytes per device (32 with its key in the hash table).
struct Learned {
  int64_t last_ms = 0;   // time of the latest observed signal
  double mean = 0;       // of the learned intervals, ms
  float var = 0;         // of the learned intervals, ms^2
  uint32_t samples = 0;  // intervals learned (saturates)
};

}  // namespace

struct PhiAccrualDetector::Impl {
  struct alignas(64) Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<uint64_t, Learned> devices ABSL_GUARDED_BY(mu);
  };
  explicit Impl(int n) : shards(static_cast<size_t>(n)) {}
  Shard& For(uint64_t key) { return shards[Mix(key) & (shards.size() - 1)]; }
  const Shard& For(uint64_t key) const { return shards[Mix(key) & (shards.size() - 1)]; }
  std::vector<Shard> shards;
};

PhiAccrualDetector::PhiAccrualDetector(const PhiDetectorOptions& options)
    : options_(Sanitize(options)),
      z_(QuantileForPhi(options_.threshold)),
      impl_(std::make_unique<Impl>(options_.shards)) {}

PhiAccrualDetector::~PhiAccrualDetector() = default;

void PhiAccrualDetector::Observe(uint64_t device_key, int64_t now_ms) {
  Impl::Shard& s = impl_->For(device_key);
  absl::MutexLock lock(&s.mu);
  auto [it, inserted] = s.devices.try_emplace(device_key);
  Learned& l = it->second;
  if (inserted) {
    l.last_ms = now_ms;
    return;
  }
  const int64_t interval = now_ms - l.last_ms;
  if (interval <= 0) return;  // same instant (another source), or out of order
  l.last_ms = now_ms;
  if (interval > options_.max_interval_ms) return;  // away and back: not a heartbeat gap
  const double x = static_cast<double>(interval);
  if (l.samples < 0xffffffffu) ++l.samples;
  // Running mean and variance while few samples are known, then exponentially
  // weighted (West's incremental form).
  const double a = std::max(options_.alpha, 1.0 / l.samples);
  const double diff = x - l.mean;
  const double incr = a * diff;
  l.mean += incr;
  l.var = static_cast<float>((1.0 - a) * (l.var + diff * incr));
}

int64_t PhiAccrualDetector::OfflineAfterMs(uint64_t device_key, int64_t last_signal_ms,
                                           int64_t fixed_offline_after_ms) {
  (void)last_signal_ms;  // the answer is a length of silence, the same from any start
  if (fixed_offline_after_ms > options_.adaptive_bound_limit_ms) return fixed_offline_after_ms;
  const Impl::Shard& s = impl_->For(device_key);
  double mean, var;
  {
    absl::MutexLock lock(&s.mu);
    auto it = s.devices.find(device_key);
    if (it == s.devices.end() || it->second.samples < static_cast<uint32_t>(options_.min_samples)) {
      return fixed_offline_after_ms;
    }
    mean = it->second.mean;
    var = it->second.var;
  }
  const double sd = std::max(std::sqrt(std::max(var, 0.0)), double(options_.min_std_dev_ms));
  const double t = mean + z_ * sd + double(options_.acceptable_pause_ms);
  if (!(t < double(fixed_offline_after_ms))) return fixed_offline_after_ms;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(t)));
}

void PhiAccrualDetector::Forget(uint64_t device_key) {
  Impl::Shard& s = impl_->For(device_key);
  absl::MutexLock lock(&s.mu);
  s.devices.erase(device_key);
}

double PhiAccrualDetector::Phi(uint64_t device_key, int64_t last_signal_ms, int64_t now_ms) const {
  const DeviceStats st = Stats(device_key);
  if (!st.known || st.samples < static_cast<uint32_t>(options_.min_samples)) return 0;
  const double sd = std::max(st.std_dev_ms, double(options_.min_std_dev_ms));
  const double t = double(now_ms - last_signal_ms) - double(options_.acceptable_pause_ms);
  const double tail = UpperTail((t - st.mean_ms) / std::max(sd, 1e-9));
  if (tail <= 0) return kMaxPhi;
  return std::min(kMaxPhi, -std::log10(tail));
}

PhiAccrualDetector::DeviceStats PhiAccrualDetector::Stats(uint64_t device_key) const {
  const Impl::Shard& s = impl_->For(device_key);
  absl::MutexLock lock(&s.mu);
  DeviceStats out;
  auto it = s.devices.find(device_key);
  if (it == s.devices.end()) return out;
  out.known = true;
  out.samples = it->second.samples;
  out.mean_ms = it->second.mean;
  out.std_dev_ms = std::sqrt(std::max(double(it->second.var), 0.0));
  return out;
}

size_t PhiAccrualDetector::size() const {
  size_t n = 0;
  for (const Impl::Shard& s : impl_->shards) {
    absl::MutexLock lock(&s.mu);
    n += s.devices.size();
  }
  return n;
}

}  // namespace presence
