// File: presence/phi_detector.h
//
// presence::PhiAccrualDetector is an OfflineDetector (presence/detector.h)
// after Hayashibara, Defago, Yared and Katayama, "The phi accrual failure
// detector" (SRDS 2004): docs/design.md rule 6.
//
// For each device it keeps exponentially weighted statistics of the
// heartbeat inter-arrival times (48 bytes per device, no window of samples):
// the mean and variance of a single interval, and a histogram of loss runs
// (an interval that spans k + 1 expected heartbeats lost k in a row; runs of
// 0..4 and 5 or more are counted, longer ones extrapolated geometrically).
// Its model of the silence before the next heartbeat is the classic normal
// one, widened by those runs: the next heartbeat to arrive is the (k+1)-th
// one due with probability P(run = k), so
//
//   P(silence > t) = sum_k P(run = k) Q((t - (k+1) mean) / sd)
//   phi(t)         = -log10 P(silence > t)
//
// (Q: the standard normal upper tail). Bursty loss shows as long runs, so a
// device on a bursty link is given the longer timeout its bursts need, and one
// on a clean link a shorter one. The device is declared DEAD when phi reaches
// `threshold`: after the t where P(silence > t) = 10^-threshold. With
// model_loss = false that is the textbook mean + z * sd, z the normal
// quantile of 1 - 10^-threshold (phi 1 -> z 1.28, phi 3 -> 3.09, phi 8 ->
// 5.61). Read 10^-threshold as the chance, per heartbeat interval, of a false
// suspicion: about 3600 * 10^-threshold false offlines per device-hour at one
// heartbeat a second, as far as the model holds.
// The answer is computed when a signal is observed, and Observe returns it
// (the engine keeps it in the device's record; OfflineAfterMs looks it up).
// The engine then clamps it to [Options::detector_floor_ms, the
// source's offline_after_ms], so the detector can only detect sooner than the
// fixed bound, and never sooner than the floor.
//
// What it answers before it knows enough: until a device has contributed
// `min_samples` inter-arrival times, OfflineAfterMs answers the fixed bound it
// is given (fixed_offline_after_ms), so a new device behaves exactly as with
// fixed thresholds. Intervals longer than `max_interval_ms` (the device was
// away, then came back) are not learned; they only restart the interval.
//
// Sources. The seam names the source of each signal: APP and MANUAL feed one
// set of statistics per device (both are the client's heartbeats); an
// INFERRED signal (the engine never passes one) is not learned and gets its
// fixed bound. So does any source whose fixed bound is above
// `adaptive_bound_limit_ms`, so a device kept alive by mobile background
// signals still decays on its own clock (docs/design.md rule 1).
//
// When it pays (benchmarks/RESULTS.md, "Detection quality (issue 7)"): where
// links differ between devices, or over minutes, it has about half the false
// offlines of a fixed threshold at the same mean detection time; on uniform
// links with short bursts it gains nothing. Mobile devices that hand over
// between networks go silent for seconds on healthy links: keep them on the
// fixed bound. A device under a detector takes the shard lock on every
// heartbeat (the engine's lock-free path is for fixed thresholds only).
//
// Example:
//
//   presence::PhiAccrualDetector detector;          // phi 6, 5 samples
//   presence::Options opts;
//   opts.detector = &detector;
//   opts.detector_platforms = (1u << static_cast<int>(presence::Platform::kWeb)) |
//                             (1u << static_cast<int>(presence::Platform::kDesktop));
//   auto engine = presence::Engine::Create(opts).value();
//
// THREAD SAFETY: all methods may be called from any number of threads at once.
// Devices are spread by a hash of their key over `shards` tables, each behind
// its own mutex; a call holds one of those mutexes for a hash-table lookup and
// a few arithmetic operations, and never calls out.
//
// LIFESPAN: the host owns it; it must outlive every engine that uses it. One
// detector may serve several engines only if their device keys cannot collide
// (device keys are unique within one engine), so give each engine its own.
#ifndef PRESENCE_PHI_DETECTOR_H_
#define PRESENCE_PHI_DETECTOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "presence/detector.h"
#include "presence/export.h"

namespace presence {

struct PhiDetectorOptions {
  // The suspicion level at which a device is declared DEAD. Higher: fewer
  // false offlines, later detection. Must be > 0; values above 15 are treated
  // as 15.
  double threshold = 6.0;
  // Inter-arrival times a device must contribute before the detector answers
  // anything but the fixed bound. At least 1.
  int min_samples = 5;
  // Weight of the newest interval in the exponentially weighted mean and
  // variance, in (0, 1]. 0.05 remembers about the last 40 intervals. Until a
  // device has 1/alpha samples the plain running mean and variance are used.
  double alpha = 0.05;
  // Floor on the standard deviation, so that a perfectly regular device does
  // not get a timeout barely above its interval.
  int64_t min_std_dev_ms = 100;
  // Model heartbeat loss (see above). false: the textbook normal model, which
  // takes a gap of two intervals for a many-sigma event.
  bool model_loss = true;
  // Weight of the newest interval in the decayed histogram of loss runs:
  // 0.01 remembers about the last 100 intervals, so a device that moves to a
  // worse network is trusted less within a minute or two.
  double loss_alpha = 0.01;
  // Prior: independent loss with this share, worth `prior_weight` intervals,
  // so that a device that has lost nothing yet is not taken to be lossless.
  double prior_loss = 0.01;
  double prior_weight = 20;
  // Added to every answer: a pause that is never suspicious (Akka's
  // acceptable-heartbeat-pause).
  int64_t acceptable_pause_ms = 0;
  // Intervals longer than this are not learned (the device was away).
  int64_t max_interval_ms = 10000;
  // Sources whose fixed bound is above this get their fixed bound unchanged.
  int64_t adaptive_bound_limit_ms = 30000;
  // Number of independently locked tables (rounded up to a power of two).
  int shards = 64;
};

class PRESENCE_EXPORT PhiAccrualDetector final : public OfflineDetector {
 public:
  explicit PhiAccrualDetector(const PhiDetectorOptions& options = PhiDetectorOptions());
  ~PhiAccrualDetector() override;
  PhiAccrualDetector(const PhiAccrualDetector&) = delete;
  PhiAccrualDetector& operator=(const PhiAccrualDetector&) = delete;

  // OfflineDetector. Observe answers what OfflineAfterMs answers right
  // after; a signal of INFERRED is not learned and gets the fixed bound.
  int64_t Observe(uint64_t device_key, Source source, int64_t now_ms,
                  int64_t fixed_offline_after_ms) override;
  void Forget(uint64_t device_key) override;

  // How long after `last_signal_ms` the device should be considered DEAD:
  // the learned timeout, or `fixed_offline_after_ms` while fewer than
  // min_samples intervals are known, or when that is shorter.
  int64_t OfflineAfterMs(uint64_t device_key, int64_t last_signal_ms,
                         int64_t fixed_offline_after_ms) const;

  // The suspicion level of a device silent since `last_signal_ms`, at
  // `now_ms`; 0 for a device with fewer than min_samples intervals.
  double Phi(uint64_t device_key, int64_t last_signal_ms, int64_t now_ms) const;

  // What the detector learned about one device.
  struct DeviceStats {
    bool known = false;
    uint32_t samples = 0;  // intervals learned
    double mean_ms = 0;     // of a single interval
    double std_dev_ms = 0;  // of a single interval, before the min_std_dev_ms floor
    double loss = 0;        // estimated share of heartbeats lost (prior included)
    double timeout_ms = 0;  // the silence at which phi reaches the threshold
  };
  DeviceStats Stats(uint64_t device_key) const;

  // Devices tracked now.
  size_t size() const;

  const PhiDetectorOptions& options() const { return options_; }
  // The normal quantile z for the configured threshold.
  double z() const { return z_; }

 private:
  struct Impl;
  const PhiDetectorOptions options_;
  const double target_;  // 10^-threshold
  const double z_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace presence

#endif  // PRESENCE_PHI_DETECTOR_H_
