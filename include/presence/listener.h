// File: presence/listener.h
//
// presence::ChangeListener receives the user changes that the engine publishes
// (docs/design.md section 3, before any fan-out).
//
// THREADING: Engine::Tick() calls OnChanges (when there are changes) and then
// OnTick (always) on the thread that called Tick (or RevokePartitions, which
// ticks), with no lock of the engine held; one thread at a time calls the
// listeners of an engine. The listener may call every method of the engine
// (signals, handles, overrides, queries, Erase, RenderMetrics, partitions,
// Rebuild, AddListener, RemoveListener, ...) except Tick and the destructor;
// a fan-out's sinks run inside it and may call the same. Events for one user
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
