// Helpers shared by the engine tests: an engine on a manual clock that records
// every published change.
#ifndef PRESENCE_TESTS_TEST_UTIL_H_
#define PRESENCE_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/listener.h"

namespace presence::testing {

class RecordingListener : public ChangeListener {
 public:
  void OnChanges(absl::Span<const ChangeEvent> events) override {
    for (const ChangeEvent& e : events) events_.push_back(e);
  }
  std::vector<ChangeEvent> Take() { return std::exchange(events_, {}); }
  std::vector<ChangeEvent> For(absl::string_view user) const {
    std::vector<ChangeEvent> out;
    for (const auto& e : events_) {
      if (e.user_id == user) out.push_back(e);
    }
    return out;
  }
  const std::vector<ChangeEvent>& events() const { return events_; }

 private:
  std::vector<ChangeEvent> events_;
};

// An engine on a ManualClock starting at t = 1,000,000 ms.
struct TestEngine {
  explicit TestEngine(Options o = Options()) {
    o.clock = &clock;
    o.listener = &listener;
    engine = Engine::Create(o).value();
  }
  // Advances the clock by `ms` in steps of `step` ms, ticking after each.
  void Run(int64_t ms, int64_t step = 100) {
    for (int64_t t = 0; t < ms; t += step) {
      clock.Advance(std::min(step, ms - t));
      engine->Tick();
    }
  }
  State StateOf(absl::string_view user, absl::string_view viewer = {}) {
    return engine->GetOne(user, viewer).state;
  }
  static Signal Sig(absl::string_view user, absl::string_view device, uint64_t session = 1,
                    Source source = Source::kApp, Activity activity = Activity::kActive) {
    Signal s;
    s.user_id = user;
    s.device_id = device;
    s.session_id = session;
    s.platform = Platform::kWeb;
    s.source = source;
    s.activity = activity;
    return s;
  }

  ManualClock clock{1'000'000};
  RecordingListener listener;
  std::unique_ptr<Engine> engine;
};

// The bytes the engine charges to its memory budget, from its metrics (-1
// when they do not say).
inline int64_t Charged(Engine& engine) {
  const std::string metrics = engine.RenderMetrics();
  const std::string name = "\npresence_memory_charged_bytes ";
  const size_t at = metrics.find(name);
  if (at == std::string::npos) return -1;
  return std::strtoll(metrics.c_str() + at + name.size(), nullptr, 10);
}

}  // namespace presence::testing

#endif  // PRESENCE_TESTS_TEST_UTIL_H_
