// What the adapter consumers share: an engine that writes through to a
// store, and a visitor that finds a user's record in a store.
#ifndef PRESENCE_INSTALL_CONSUMER_ADAPTERS_H_
#define PRESENCE_INSTALL_CONSUMER_ADAPTERS_H_

#include <cstdio>
#include <memory>
#include <string>

#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/store.h"

namespace consumer {

inline int Fail(const char* who, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", who, what.c_str());
  return 1;
}

class FindUser : public presence::StoreVisitor {
 public:
  explicit FindUser(std::string user) : user_(std::move(user)) {}
  void OnUser(const presence::UserRecord& u) override { found |= u.user_id == user_; }
  void OnDevice(const presence::DeviceRecord&) override {}
  void OnOffset(const presence::CommittedOffset&) override {}
  bool found = false;

 private:
  std::string user_;
};

// alice connects to an engine over `store` and is published: her record is
// then in the store. Returns an error message, empty on success.
inline std::string WriteThrough(presence::Store* store) {
  presence::ManualClock clock(1'000'000);
  presence::Options o;
  o.clock = &clock;
  o.store = store;
  auto engine = presence::Engine::Create(o);
  if (!engine.ok()) return "Engine::Create: " + std::string(engine.status().message());
  presence::Signal s;
  s.user_id = "alice";
  s.device_id = "laptop";
  s.session_id = 1;
  s.platform = presence::Platform::kDesktop;
  if (!(*engine)->Signal(s).ok()) return "Signal failed";
  clock.Advance(100);
  if ((*engine)->Tick() != 1) return "the tick published nothing (store write failed?)";
  FindUser find("alice");
  if (absl::Status st = store->Load(&find); !st.ok()) return "Load: " + std::string(st.message());
  if (!find.found) return "alice's record is not in the store";
  return "";
}

}  // namespace consumer

#endif  // PRESENCE_INSTALL_CONSUMER_ADAPTERS_H_
