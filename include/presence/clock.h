// File: presence/clock.h
//
// presence::Clock is the engine's only source of time (docs/design.md section 5).
// Everything time-dependent in the library (liveness, grace, dwell, override
// expiry, freshness) reads it, so a ManualClock makes tests and simulations
// deterministic:
//
//   presence::ManualClock clock(1'000'000);
//   presence::Options opts;
//   opts.clock = &clock;
//   auto engine = presence::Engine::Create(opts).value();
//   ...
//   clock.Advance(4'000);
//   engine->Tick();  // timers up to the new time fire here
//
// Thread safety: NowMs() may be called from any thread at any time; both
// implementations here are safe for that.
#ifndef PRESENCE_CLOCK_H_
#define PRESENCE_CLOCK_H_

#include <atomic>
#include <cstdint>

#include "presence/export.h"

namespace presence {

// presence::Clock gives the current time in milliseconds. The epoch is the
// implementation's; the value should not go backwards.
class PRESENCE_EXPORT Clock {
 public:
  virtual ~Clock();
  virtual int64_t NowMs() const = 0;
};

// presence::SystemClock() is a process-wide clock on the system's real time
// (CLOCK_REALTIME_COARSE, in ms since the Unix epoch, a few ms of resolution).
// If the system time is set back, it steps back too; the engine then fires no
// timer until time passes the point it had reached. It is never destroyed.
PRESENCE_EXPORT Clock* SystemClock();

// presence::ManualClock only moves when told to.
class PRESENCE_EXPORT ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ms = 1) : now_(start_ms) {}
  int64_t NowMs() const override { return now_.load(std::memory_order_acquire); }
  // Moves time forward by delta_ms (negative values are ignored).
  void Advance(int64_t delta_ms);
  // Sets the time; a value earlier than the current one is ignored.
  void Set(int64_t now_ms);

 private:
  std::atomic<int64_t> now_;
};

}  // namespace presence

#endif  // PRESENCE_CLOCK_H_
