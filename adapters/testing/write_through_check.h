// The adapters' fault test, shared by presence_redis and presence_postgres:
// an engine writes through to a real server that crashes mid-stream and is
// restarted. The engine must surface the failures (presence_store_errors_total),
// publish nothing that is not durable, retry, and lose nothing: what was
// acknowledged before the crash is there after it, and once the engine has
// caught up the server holds exactly the records the engine wrote (checked
// field for field against an in-memory store that got every batch), which a
// new engine rebuilt from the server agrees with.
#ifndef PRESENCE_ADAPTERS_TESTING_WRITE_THROUGH_CHECK_H_
#define PRESENCE_ADAPTERS_TESTING_WRITE_THROUGH_CHECK_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "presence/store.h"
#include "tests/conformance/loaded.h"
#include "tests/test_util.h"

namespace presence::testing_servers {

// Every field, for comparisons with readable failures.
inline std::string Describe(const UserRecord& u) {
  std::vector<std::string> o;
  for (const OverrideInfo& x : u.overrides) {
    o.push_back(absl::StrCat(x.id, "/", static_cast<int>(x.state), "/", x.set_at_ms, "/", x.until_ms));
  }
  return absl::StrCat("user v", u.version, " sv", u.state_version, " state ", static_cast<int>(u.state),
                      "/", static_cast<int>(u.self_state), " seen ", u.last_seen_ms, " pub ",
                      u.published_at_ms, " overrides [", absl::StrJoin(o, " "), "]");
}
inline std::string Describe(const DeviceRecord& d) {
  return absl::StrCat("device v", d.version, " session ", d.session_id, " platform ",
                      static_cast<int>(d.platform), " signals ", d.last_signal_ms[0], "/",
                      d.last_signal_ms[1], "/", d.last_signal_ms[2], " activity ",
                      static_cast<int>(d.activity[0]), static_cast<int>(d.activity[1]),
                      static_cast<int>(d.activity[2]), d.closed ? " closed" : " open", " gw ",
                      d.gateway);
}

// Everything a store holds, one line per record, in key order.
inline std::vector<std::string> Contents(Store* store) {
  conformance::Loaded l;
  const absl::Status st = store->Load(&l);
  EXPECT_TRUE(st.ok()) << st;
  std::vector<std::string> out;
  for (const auto& [id, u] : l.users) out.push_back(absl::StrCat(id, ": ", Describe(u)));
  for (const auto& [key, d] : l.devices) {
    out.push_back(absl::StrCat(key.first, "/", key.second, ": ", Describe(d)));
  }
  for (const auto& [p, off] : l.offsets) out.push_back(absl::StrCat("offset ", p, " ", off));
  return out;
}

// A Store that also gives every batch to an in-memory reference.
class MirroredStore final : public Store {
 public:
  explicit MirroredStore(Store* real) : real_(real) {}
  absl::Status Write(const StoreBatch& batch) override {
    EXPECT_TRUE(reference_->Write(batch).ok());
    return real_->Write(batch);
  }
  absl::Status Load(StoreVisitor* visitor) override { return real_->Load(visitor); }
  Store* reference() { return reference_.get(); }

 private:
  Store* real_;
  std::unique_ptr<Store> reference_ = NewMemoryStore();
};

inline double MetricValue(const std::string& text, const std::string& name) {
  const std::string key = "\n" + name + " ";
  const size_t at = text.find(key);
  if (at == std::string::npos) return -1;
  double v = -1;
  const size_t end = text.find('\n', at + key.size());
  if (!absl::SimpleAtod(text.substr(at + key.size(), end - at - key.size()), &v)) return -1;
  return v;
}

// The server a test binary shares, started by `start` on its first use and
// stopped at exit. When it cannot start, every test that asks for it fails
// with the reason (a failure, never a skip) and gets nullptr.
template <typename Server, typename Start>
Server* SharedServer(const Start& start) {
  static absl::StatusOr<std::unique_ptr<Server>> server = start();
  if (!server.ok()) {
    ADD_FAILURE() << "cannot start the server for these tests: " << server.status();
    return nullptr;
  }
  return server->get();
}

// What a conformance factory returns when there is no server: every call
// fails, so every test fails (after SharedServer said why).
class NoServerStore final : public Store {
 public:
  absl::Status Write(const StoreBatch&) override { return absl::UnavailableError("no server"); }
  absl::Status Load(StoreVisitor*) override { return absl::UnavailableError("no server"); }
};

// `store` must be empty; `crash` kills its server, `restart` starts it again
// on the same data.
inline void CheckWriteThroughAcrossACrash(Store* store, const std::function<void()>& crash,
                                          const std::function<absl::Status()>& restart) {
  using testing::TestEngine;
  MirroredStore mirror(store);
  Options o;
  o.store = &mirror;
  TestEngine t(o);
  std::vector<std::string> users;
  for (int i = 0; i < 40; ++i) users.push_back(absl::StrCat("user-", i));
  std::map<std::string, std::vector<std::string>> live;  // user -> its devices that signal
  for (int i = 0; i < 40; ++i) {
    live[users[i]].push_back("web");
    if (i % 2 == 0) live[users[i]].push_back("phone");
  }
  auto signal_all = [&] {
    for (const auto& [user, devices] : live) {
      for (const std::string& device : devices) {
        Signal s = TestEngine::Sig(user, device);
        s.platform = device == "phone" ? Platform::kMobile : Platform::kWeb;
        s.gateway = "gw-1";
        s.timestamp_ms = t.clock.NowMs();
        ASSERT_TRUE(t.engine->Signal(s).ok());
      }
    }
  };
  auto run = [&](int64_t ms) {
    for (int64_t at = 0; at < ms; at += 500) {
      signal_all();
      t.Run(500);
    }
  };

  // Healthy: everyone comes online, and it is all in the store.
  run(1500);
  ASSERT_EQ(t.listener.Take().size(), users.size());
  const std::vector<std::string> before_crash = Contents(mirror.reference());
  ASSERT_EQ(Contents(store), before_crash);

  // The server crashes; meanwhile users change: overrides, a clean
  // disconnect, newcomers, an erasure.
  crash();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(t.engine->SetOverride(users[i], OverrideState::kDnd).ok());
  }
  for (int i = 5; i < 10; ++i) {
    Signal s = TestEngine::Sig(users[i], "web");
    s.timestamp_ms = t.clock.NowMs();
    s.source = Source::kApp;
    auto h = t.engine->Connect(s);
    ASSERT_TRUE(h.ok());
    ASSERT_TRUE(t.engine->Disconnect(*h, DisconnectKind::kClean).ok());
    auto& devices = live[users[i]];
    devices.erase(std::remove(devices.begin(), devices.end(), "web"), devices.end());
    if (devices.empty()) live.erase(users[i]);
  }
  for (int i = 40; i < 50; ++i) {
    users.push_back(absl::StrCat("user-", i));
    live[users.back()].push_back("web");
  }
  ASSERT_TRUE(t.engine->Erase(users[10]).ok());
  live.erase(users[10]);
  run(1500);
  EXPECT_TRUE(t.listener.events().empty()) << "published while the store was down";
  EXPECT_GT(MetricValue(t.engine->RenderMetrics(), "presence_store_errors_total"), 0);

  // Back: what was acknowledged before the crash survived it.
  ASSERT_TRUE(restart().ok());
  EXPECT_EQ(Contents(store), before_crash);

  // The engine retries and catches up (past the dwell).
  run(3000);
  std::map<std::string, State> published;
  for (const ChangeEvent& e : t.listener.Take()) published[e.user_id] = e.state;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(published[users[i]], State::kDnd) << users[i];
  for (int i = 40; i < 50; ++i) EXPECT_EQ(published[users[i]], State::kOnline) << users[i];
  for (int i = 5; i < 10; ++i) {
    const State expect = i % 2 == 0 ? State::kOnline : State::kOffline;  // even ones keep a phone
    EXPECT_EQ(t.StateOf(users[i]), expect) << users[i];
  }

  // The server holds exactly what the engine wrote...
  const std::vector<std::string> held = Contents(store);
  EXPECT_EQ(held, Contents(mirror.reference()));
  // ...which agrees with what the engine published...
  conformance::Loaded l;
  ASSERT_TRUE(store->Load(&l).ok());
  EXPECT_EQ(l.users.count(users[10]), 0u);
  std::vector<absl::string_view> ids;
  for (const std::string& u : users) {
    if (u != users[10]) ids.push_back(u);
  }
  const std::vector<UserPresence> pub = t.engine->GetPublished(ids);
  for (size_t i = 0; i < ids.size(); ++i) {
    SCOPED_TRACE(std::string(ids[i]));
    ASSERT_EQ(l.users.count(std::string(ids[i])), 1u);
    const UserRecord& r = l.users.at(std::string(ids[i]));
    EXPECT_EQ(r.state, pub[i].state);
    EXPECT_EQ(r.state_version, pub[i].version);
  }
  // ...and a new engine rebuilt from the server sees what this one sees.
  const std::vector<UserPresence> now = t.engine->Get(ids);
  Options ob;
  ob.store = store;
  ob.clock = &t.clock;
  auto rebuilt = Engine::Create(ob);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  const std::vector<UserPresence> again = (*rebuilt)->Get(ids);
  for (size_t i = 0; i < ids.size(); ++i) {
    SCOPED_TRACE(std::string(ids[i]));
    EXPECT_EQ(again[i].state, now[i].state);
    EXPECT_EQ(again[i].devices, now[i].devices);
    EXPECT_EQ(again[i].has_override, now[i].has_override);
  }
}

}  // namespace presence::testing_servers

#endif  // PRESENCE_ADAPTERS_TESTING_WRITE_THROUGH_CHECK_H_
