// File: presence/detector.h
//
// presence::OfflineDetector is the seam for adaptive failure detection
// (docs/design.md rule 6). By default a device is DEAD after a fixed silence per
// source (SourcePolicy::offline_after_ms). A detector installed through
// Options::detector instead learns each device's heartbeat inter-arrival times
// and may declare it dead sooner when the silence is improbable.
//
// The engine tells a detector of a device's heartbeat sources (APP and
// MANUAL) only, naming the source: INFERRED signals decay on their own slow
// clock (docs/design.md rule 1), so they are neither observed nor
// shortened, whatever the detector would answer.
//
// The engine bounds whatever a detector answers: never later than the fixed
// offline_after_ms of the source, never sooner than
// Options::detector_floor_ms, so a detector can only detect sooner, and a
// jittery link does not flap.
//
// The engine keeps a detector's latest answer in the device's record and
// reads it there; the detector is called only when the device signals. So a
// heartbeat on a handle keeps its lock-free path (Engine::Beat takes no lock
// of the engine) under a detector too.
//
// THREAD SAFETY: the engine calls a detector from many threads at once:
// with the lock of the shard that owns the device held (keyed signals), or
// with no lock of the engine (heartbeats on handles, so two heartbeats of
// one device may race). Implementations must be thread-safe, must not block
// for long, and must not call back into the engine.
//
// LIFESPAN AND OWNERSHIP: the host owns the detector; it must outlive every
// engine that uses it.
#ifndef PRESENCE_DETECTOR_H_
#define PRESENCE_DETECTOR_H_

#include <cstdint>

#include "presence/export.h"
#include "presence/types.h"

namespace presence {

class PRESENCE_EXPORT OfflineDetector {
 public:
  virtual ~OfflineDetector();

  // Records that the device identified by `device_key` signalled from
  // `source` (kApp or kManual) at `now_ms`, and answers how long a silence
  // after that signal makes the device DEAD. device_key is unique for the
  // life of one device record in one engine. `fixed_offline_after_ms` is the
  // source's configured bound; the engine clamps the answer to
  // [Options::detector_floor_ms, fixed_offline_after_ms] and keeps it until
  // the device's next signal.
  virtual int64_t Observe(uint64_t device_key, Source source, int64_t now_ms,
                          int64_t fixed_offline_after_ms) = 0;

  // The device record is gone, or is about to serve another device: drop
  // whatever was learned about it.
  virtual void Forget(uint64_t device_key) = 0;
};

}  // namespace presence

#endif  // PRESENCE_DETECTOR_H_
