#include "presence/clock.h"

#include <time.h>

#include "presence/detector.h"
#include "presence/listener.h"
#include "presence/prober.h"

namespace presence {

Clock::~Clock() = default;
ChangeListener::~ChangeListener() = default;
OfflineDetector::~OfflineDetector() = default;
Prober::~Prober() = default;

namespace {

// CLOCK_REALTIME_COARSE: a few ms of resolution, a fraction of the cost of a
// precise read, which matters because every heartbeat reads the clock.
class SystemClockImpl final : public Clock {
 public:
  int64_t NowMs() const override {
    timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
  }
};

}  // namespace

Clock* SystemClock() {
  static SystemClockImpl* clock = new SystemClockImpl();
  return clock;
}

void ManualClock::Advance(int64_t delta_ms) {
  if (delta_ms > 0) now_.fetch_add(delta_ms, std::memory_order_acq_rel);
}

void ManualClock::Set(int64_t now_ms) {
  int64_t cur = now_.load(std::memory_order_acquire);
  while (now_ms > cur && !now_.compare_exchange_weak(cur, now_ms, std::memory_order_acq_rel)) {
  }
}

}  // namespace presence
