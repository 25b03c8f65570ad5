// File: presence/listener.h
//
// presence::ChangeListener receives the user changes that the engine publishes
// (DESIGN.md section 3, before any fan-out).
//
// THREADING: Engine::Tick() calls OnChanges (when there are changes) and then
// OnTick (always) on the thread that called Tick, after it released every
// internal lock. The listener may call any query or signal method of the
// engine (Get, Signal, Beat, ...), but not Tick itself. Events for one user
// arrive in version order, each version exactly once.
//
// LIFESPAN AND OWNERSHIP: the host owns the listener; it must outlive the
// engine. The span and its events are valid only during the call.
#ifndef PRESENCE_LISTENER_H_
#define PRESENCE_LISTENER_H_

#include <cstdint>

#include "absl/types/span.h"
#include "presence/export.h"
#include "presence/types.h"

namespace presence {

class PRESENCE_EXPORT ChangeListener {
 public:
  virtual ~ChangeListener();
  virtual void OnChanges(absl::Span<const ChangeEvent> events) = 0;
  // Called at the end of every Tick, with the time the tick ran at; a
  // listener that batches (the fan-out tier) flushes here.
  virtual void OnTick(int64_t now_ms) { (void)now_ms; }
};

}  // namespace presence

#endif  // PRESENCE_LISTENER_H_
