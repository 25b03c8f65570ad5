// File: presence/detector.h
//
// presence::OfflineDetector is the seam for adaptive failure detection
// (docs/design.md rule 6). By default a device is DEAD after a fixed silence per
// source (SourcePolicy::offline_after_ms). A detector installed through
// Options::detector instead learns each device's heartbeat inter-arrival times
// and may declare it dead sooner when the silence is improbable.
//
// The engine asks a detector about a device's heartbeat sources (APP and
// MANUAL) only: INFERRED signals decay on their own slow clock (docs/design.md
// rule 1), so they are neither observed nor shortened.
//
// The engine bounds whatever a detector answers: never later than the fixed
// offline_after_ms of the source, never sooner than
// Options::detector_floor_ms, so a detector can only detect sooner, and a
// jittery link does not flap.
//
// THREAD SAFETY: the engine calls a detector from many threads at once (each
// call holds the lock of the shard that owns the device, and different shards
// run in parallel). Implementations must be thread-safe, must not block for
// long, and must not call back into the engine.
//
// LIFESPAN AND OWNERSHIP: the host owns the detector; it must outlive every
// engine that uses it.
#ifndef PRESENCE_DETECTOR_H_
#define PRESENCE_DETECTOR_H_

#include <cstdint>

#include "presence/export.h"

namespace presence {

class PRESENCE_EXPORT OfflineDetector {
 public:
  virtual ~OfflineDetector();

  // Records that the device identified by `device_key` signalled at `now_ms`.
  // device_key is unique for the life of one device record in one engine.
  virtual void Observe(uint64_t device_key, int64_t now_ms) = 0;

  // How long after `last_signal_ms` the device should be considered DEAD.
  // `fixed_offline_after_ms` is the configured bound; the engine clamps the
  // answer to [Options::detector_floor_ms, fixed_offline_after_ms].
  virtual int64_t OfflineAfterMs(uint64_t device_key, int64_t last_signal_ms,
                                 int64_t fixed_offline_after_ms) = 0;

  // The device record is gone; drop whatever was learned about it.
  virtual void Forget(uint64_t device_key) = 0;
};

}  // namespace presence

#endif  // PRESENCE_DETECTOR_H_
