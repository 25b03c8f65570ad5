// Device liveness and activity: docs/design.md rules 1, 2 and 6, in one place.
//
// A device in phase LIVE is live through source i while its last signal from
// i is younger than i's offline_after (or what the adaptive detector answers,
// clamped to [floor, offline_after]); it is live while any source is. It is
// SUSPECT when every live source has been silent for longer than its
// interval; with probing (rule 9) it is probed from when every live source
// has been silent past its interval plus the probe margin. In GRACE (after an abrupt disconnect) it stays live, with the
// activity it had, until its grace ends. It counts as ONLINE when its highest-
// precedence live source last said ACTIVE (an INFERRED source only if the
// options allow), else AWAY.
#ifndef PRESENCE_SRC_CORE_LIVENESS_H_
#define PRESENCE_SRC_CORE_LIVENESS_H_

#include <cstdint>
#include <limits>

#include "presence/detector.h"
#include "presence/options.h"
#include "src/core/device.h"

namespace presence::internal {

struct LivenessPolicy {
  int64_t interval_ms[kSourceCount];
  int64_t offline_after_ms[kSourceCount];
  bool inferred_can_be_online = false;
  OfflineDetector* detector = nullptr;
  int64_t detector_floor_ms = 0;
  // Push/pull checks (rule 9): probing is on when the engine has a prober.
  bool probing = false;
  int64_t probe_margin_ms = 0;

  explicit LivenessPolicy(const Options& o);
  // How long source `i` of a device may be silent: its offline_after, or
  // when a detector watches it (`watched`: dflag::kAdaptive under the lock,
  // fast::kWatched without) `learned`, the answer kept for its record
  // (DeviceTable::Learned; 0: none yet), never for INFERRED. Any thread.
  int64_t OfflineAfter(uint32_t learned, int i, bool watched) const;
  // Rule 6: tells the detector that source `i` of the watched device keyed
  // `device_key` signalled at `now_ms`, and keeps its answer, clamped to
  // [floor, offline_after], in `learned`. INFERRED is not told. Any thread.
  void Observe(std::atomic<uint32_t>& learned, uint64_t device_key, int i, int64_t now_ms) const;
};

struct DeviceView {
  bool live = false;
  bool online = false;   // meaningful when live
  bool suspect = false;  // live, but every live source is overdue
  uint32_t live_bits = 0;  // fast::LiveBit(i) for each live source
  int64_t deadline_ms = std::numeric_limits<int64_t>::max();  // when this view next changes
  int64_t last_signal_ms = 0;  // latest signal of any source in this session (0: none)
  // With probing (rule 9), for a live device in phase LIVE: when it is
  // silent enough to be probed (every live source silent past its interval
  // plus the probe margin), and the source a probe's answer counts as (the
  // highest-precedence live source). Otherwise the far future and -1.
  int64_t quiet_at_ms = std::numeric_limits<int64_t>::max();
  int probe_source = -1;
};

// Rule 2: whether a device whose live sources are `live_bits` counts ONLINE,
// given its fast bits (which hold each source's last activity).
bool CountsOnline(uint32_t live_bits, uint32_t fast_bits, const LivenessPolicy& policy);

// `learned`: the detector's answer kept for the record (DeviceTable::LearnedValue),
// read when the device is watched.
DeviceView EvaluateDevice(const Device& d, int64_t now_ms, const LivenessPolicy& policy,
                          uint32_t learned);

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_LIVENESS_H_
