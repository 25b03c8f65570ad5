#include "src/core/liveness.h"

#include <algorithm>

namespace presence::internal {

LivenessPolicy::LivenessPolicy(const Options& o)
    : interval_ms{o.inferred.interval_ms, o.app.interval_ms, o.manual.interval_ms},
      offline_after_ms{o.inferred.offline_after_ms, o.app.offline_after_ms,
                       o.manual.offline_after_ms},
      inferred_can_be_online(o.inferred_can_be_online),
      detector(o.detector),
      detector_floor_ms(o.detector_floor_ms),
      probing(o.prober != nullptr),
      probe_margin_ms(o.probe_margin_ms) {}

int64_t LivenessPolicy::OfflineAfter(uint32_t learned, int i, bool watched) const {
  const int64_t fixed = offline_after_ms[i];
  // The detector learns a device's heartbeats (APP and MANUAL); a source
  // that decays on its own slow clock (INFERRED, rule 1) keeps its bound.
  if (!watched || i == SourceIndex(Source::kInferred)) return fixed;
  return learned == 0 ? fixed : std::min<int64_t>(learned, fixed);
}

void LivenessPolicy::Observe(std::atomic<uint32_t>& learned, uint64_t device_key, int i,
                             int64_t now_ms) const {
  if (i == SourceIndex(Source::kInferred)) return;
  const int64_t fixed = offline_after_ms[i];
  const int64_t answer =
      detector->Observe(device_key, static_cast<Source>(i + 1), now_ms, fixed);
  // At least 1 ms: 0 in the record means no answer yet.
  const int64_t low = std::max<int64_t>(1, std::min(detector_floor_ms, fixed));
  learned.store(static_cast<uint32_t>(std::clamp(answer, low, fixed)), std::memory_order_relaxed);
}

bool CountsOnline(uint32_t live_bits, uint32_t fast_bits, const LivenessPolicy& policy) {
  for (int i = kSourceCount - 1; i >= 0; --i) {
    if (!(live_bits & fast::LiveBit(i))) continue;
    if (i == SourceIndex(Source::kInferred) && !policy.inferred_can_be_online) return false;
    return fast_bits & fast::ActiveBit(i);
  }
  return false;
}

DeviceView EvaluateDevice(const Device& d, int64_t now_ms, const LivenessPolicy& policy,
                          uint32_t learned) {
  DeviceView v;
  for (int i = 0; i < kSourceCount; ++i) {
    if (d.has_seen(i)) {
      v.last_signal_ms = std::max(
          v.last_signal_ms, Expand32(d.seen[i].load(std::memory_order_relaxed), now_ms));
    }
  }
  const uint32_t bits = d.bits();
  switch (d.phase) {
    case Phase::kFree:
    case Phase::kDead:
      return v;
    case Phase::kGrace: {
      const int64_t end = Expand32(d.due, now_ms);
      if (now_ms < end) {
        v.live = true;
        v.online = d.flags & dflag::kGraceOnline;
        v.deadline_ms = end;
      }
      return v;
    }
    case Phase::kLive:
      break;
  }
  const bool watched = d.flags & dflag::kAdaptive;
  bool all_overdue = true;
  int64_t quiet_at = std::numeric_limits<int64_t>::min();
  for (int i = 0; i < kSourceCount; ++i) {
    if (!d.has_seen(i)) continue;
    const int64_t last = Expand32(d.seen[i].load(std::memory_order_relaxed), now_ms);
    const int64_t end = last + policy.OfflineAfter(learned, i, watched);
    if (now_ms >= end) continue;
    v.live_bits |= fast::LiveBit(i);
    v.deadline_ms = std::min(v.deadline_ms, end);
    if (now_ms - last <= policy.interval_ms[i]) all_overdue = false;
    quiet_at = std::max(quiet_at, last + policy.interval_ms[i] + policy.probe_margin_ms);
    v.probe_source = i;  // the last one live is the highest in precedence
  }
  if (v.live_bits == 0) return v;
  v.live = true;
  v.suspect = all_overdue;
  if (policy.probing) {
    v.quiet_at_ms = quiet_at;
  } else {
    v.probe_source = -1;
  }
  v.online = CountsOnline(v.live_bits, bits, policy);
  return v;
}

}  // namespace presence::internal
