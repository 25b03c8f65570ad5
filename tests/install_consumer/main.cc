// Uses an installed presence the way a host application would: creates an
// engine on a manual clock, connects a device, ticks, and checks that the
// user is ONLINE and that the change was published. Exit code 0 on success.
#include <cstdio>
#include <cstring>
#include <memory>

#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/listener.h"
#include "presence/version.h"

namespace {

class CountingListener : public presence::ChangeListener {
 public:
  void OnChanges(absl::Span<const presence::ChangeEvent> events) override {
    count += events.size();
  }
  size_t count = 0;
};

int Fail(const char* what) {
  std::fprintf(stderr, "consumer: %s\n", what);
  return 1;
}

}  // namespace

int main() {
  if (std::strcmp(presence::VersionString(), PRESENCE_VERSION_STRING) != 0) {
    return Fail("headers and library disagree on the version");
  }
  presence::ManualClock clock(1'000'000);
  CountingListener listener;
  presence::Options options;
  options.clock = &clock;
  options.listener = &listener;
  absl::StatusOr<std::unique_ptr<presence::Engine>> engine = presence::Engine::Create(options);
  if (!engine.ok()) return Fail("Engine::Create failed");

  presence::Signal s;
  s.user_id = "alice";
  s.device_id = "laptop";
  s.session_id = 1;
  s.platform = presence::Platform::kDesktop;
  absl::StatusOr<presence::DeviceHandle> handle = (*engine)->Connect(s);
  if (!handle.ok()) return Fail("Connect failed");
  clock.Advance(100);
  (*engine)->Tick();

  if ((*engine)->GetOne("alice").state != presence::State::kOnline) return Fail("alice is not ONLINE");
  if (listener.count != 1) return Fail("expected one published change");
  std::printf("consumer: presence %s, alice is online\n", presence::VersionString());
  return 0;
}
