// Fuzz target: the C++ engine and fan-out API driven by a byte stream that
// encodes calls (each byte picks an operation, the following bytes its
// arguments, ids and enum values included, so invalid ones come too). Any
// sequence must leave the engine answering statuses, never crashing, and
// its published versions growing.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/fanout.h"

namespace {

class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool empty() const { return p_ >= end_; }
  uint8_t U8() { return p_ < end_ ? *p_++ : 0; }
  uint64_t U64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | U8();
    return v;
  }
  // An id: usually one of a few short names, sometimes raw bytes (empty or
  // too long included).
  std::string Id(const char* prefix) {
    const uint8_t b = U8();
    if (b < 200) return std::string(prefix) + std::to_string(b % 6);
    std::string raw;
    const size_t n = U8() % 140;
    for (size_t i = 0; i < n && !empty(); ++i) raw.push_back(static_cast<char>(U8()));
    return raw;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

struct Versions : presence::ChangeListener {
  std::map<std::string, uint64_t> last;
  void OnChanges(absl::Span<const presence::ChangeEvent> events) override {
    for (const auto& e : events) {
      if (e.version <= last[e.user_id]) std::abort();
      last[e.user_id] = e.version;
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace presence;
  ManualClock clock(1'000'000);
  Versions versions;
  Options o;
  o.clock = &clock;
  o.listener = &versions;
  o.shards = 2;
  auto engine = Engine::Create(o).value();
  FanoutOptions fo;
  fo.max_outbox_batches = 4;
  auto fanout = Fanout::Create(engine.get(), fo).value();
  std::vector<DeviceHandle> handles;
  std::vector<SubscriberId> subs;
  Bytes in(data, size);
  while (!in.empty()) {
    const std::string user = in.Id("u"), device = in.Id("d");
    Signal s;
    s.user_id = user;
    s.device_id = device;
    switch (in.U8() % 16) {
      case 0:
      case 1: {
        s.session_id = in.U8() % 4;
        s.platform = static_cast<Platform>(in.U8() % 7);
        s.source = static_cast<Source>(in.U8() % 5);
        s.activity = static_cast<Activity>(in.U8() % 4);
        s.timestamp_ms = in.U8() < 20 ? static_cast<int64_t>(in.U64()) : 0;
        auto h = engine->Connect(s);
        if (h.ok()) handles.push_back(*h);
        (void)engine->Signal(s);
        break;
      }
      case 2:
        (void)engine->Beat(handles.empty() || in.U8() < 10 ? DeviceHandle{in.U64()}
                                                            : handles[in.U8() % handles.size()],
                           static_cast<Activity>(in.U8() % 4), static_cast<Source>(in.U8() % 5));
        break;
      case 3:
        if (!handles.empty()) {
          (void)engine->Disconnect(handles[in.U8() % handles.size()],
                                   static_cast<DisconnectKind>(in.U8() % 4));
        }
        break;
      case 4:
        (void)engine->DisconnectDevice(user, device, in.U8() % 4,
                                       static_cast<DisconnectKind>(in.U8() % 4));
        break;
      case 5:
        (void)engine->SetOverride(user, static_cast<OverrideState>(in.U8() % 6),
                                  in.U8() < 100 ? clock.NowMs() + in.U8() * 100 : 0);
        break;
      case 6:
        (void)engine->RevokeOverride(user, in.U8());
        (void)engine->ClearOverrides(in.Id("u"));
        break;
      case 7:
        clock.Advance(in.U8() * (in.U8() < 30 ? 1000 : 10));
        engine->Tick();
        break;
      case 8: {
        auto id = fanout->Subscribe({in.U8() < 128 ? user : std::string(), nullptr});
        if (id.ok()) subs.push_back(*id);
        break;
      }
      case 9:
        if (!subs.empty()) {
          const absl::string_view ids[] = {user, device};
          (void)fanout->AddUsers(subs[in.U8() % subs.size()], ids);
        }
        break;
      case 10: {
        const absl::string_view ids[] = {user};
        (void)fanout->AddMembers(in.Id("t"), ids);
        if (!subs.empty()) (void)fanout->Join(subs[in.U8() % subs.size()], in.Id("t"));
        break;
      }
      case 11:
        if (!subs.empty()) {
          Batch b;
          (void)fanout->Poll(subs[in.U8() % subs.size()], &b);
          (void)fanout->Resume(subs[in.U8() % subs.size()], in.U8());
        }
        break;
      case 12:
        if (!subs.empty()) {
          const absl::string_view ids[] = {user};
          (void)fanout->RemoveUsers(subs[in.U8() % subs.size()], ids);
          (void)fanout->RemoveMembers(in.Id("t"), ids);
          (void)fanout->Leave(subs[in.U8() % subs.size()], in.Id("t"));
        }
        break;
      case 13:
        if (!subs.empty()) (void)fanout->Close(subs[in.U8() % subs.size()]);
        break;
      case 14: {
        const absl::string_view ids[] = {user, device};
        (void)engine->Get(ids, in.Id("u"));
        (void)engine->GetPublished(ids);
        break;
      }
      default:
        (void)engine->RevokeOverridesSetBetween(clock.NowMs() - in.U8() * 1000, clock.NowMs());
        (void)engine->Erase(user);
        break;
    }
  }
  engine->Tick();
  return 0;
}
