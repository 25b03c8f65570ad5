// docs/design.md rule 8 through the C ABI (include/presence/c.h only): two
// engines with file stores (so that they have a history) run the same random
// workload, except that in the second a hidden user connects devices, beats,
// idles and disconnects under an invisible override. Every C answer another
// viewer gets must be the same bytes in both: presence_engine_get and
// get_published (the structs, past the id pointer), history_as,
// time_in_states_as, last_seen_as, and the batches polled from the fan-out
// of subscribers the hidden user does not own.
#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "presence/c.h"
#include "presence/v1/presence.pb.h"

namespace {

constexpr const char kHidden[] = "hidden";

// One world, through the C ABI only.
struct CWorld {
  explicit CWorld(const std::string& dir) {
    EXPECT_EQ(presence_clock_manual_new(&clock, 1'000'000, nullptr), PRESENCE_OK);
    presence_engine_options_t o;
    EXPECT_EQ(presence_engine_options_init(&o, PRESENCE_ENGINE_OPTIONS_VERSION, nullptr),
              PRESENCE_OK);
    o.clock = clock;
    o.shards = 1;
    o.store = PRESENCE_STORE_FILE;
    o.file_dir = dir.data();
    o.file_dir_len = dir.size();
    EXPECT_EQ(presence_engine_new(&engine, &o, nullptr), PRESENCE_OK);
    presence_fanout_options_t fo;
    EXPECT_EQ(presence_fanout_options_init(&fo, PRESENCE_FANOUT_OPTIONS_VERSION, nullptr),
              PRESENCE_OK);
    fo.rate_per_sec = 0;
    EXPECT_EQ(presence_fanout_new(&fanout, engine, &fo, nullptr), PRESENCE_OK);
  }
  ~CWorld() {
    presence_fanout_destroy(fanout);
    presence_engine_destroy(engine);
    presence_clock_destroy(clock);
  }
  presence_clock_t* clock = nullptr;
  presence_engine_t* engine = nullptr;
  presence_fanout_t* fanout = nullptr;
  std::vector<uint64_t> handles;  // the hidden user's (world b only)
};

presence_signal_t Sig(const std::string& user, const std::string& device, uint64_t session,
                      int activity) {
  presence_signal_t s = PRESENCE_SIGNAL_INIT;
  s.user_id = user.data();
  s.user_id_len = user.size();
  s.device_id = device.data();
  s.device_id_len = device.size();
  s.session_id = session;
  s.activity = activity;
  return s;
}

// The bytes of a get answer past its id pointer, for every id.
std::string GetBytes(presence_engine_t* e, bool published, const std::vector<std::string>& ids,
                     const char* viewer) {
  std::vector<presence_bytes_t> b;
  for (const std::string& id : ids) b.push_back({id.data(), id.size()});
  presence_user_presence_t* out = nullptr;
  const size_t vlen = viewer == nullptr ? 0 : std::strlen(viewer);
  const int rc = published ? presence_engine_get_published(&out, e, b.data(), b.size(), viewer,
                                                           vlen, nullptr)
                           : presence_engine_get(&out, e, b.data(), b.size(), viewer, vlen, nullptr);
  std::string bytes = absl::StrCat(rc, ":");
  for (size_t i = 0; i < ids.size() && out != nullptr; ++i) {
    const char* p = reinterpret_cast<const char*>(&out[i]) + offsetof(presence_user_presence_t, user_id_len);
    bytes.append(p, sizeof(presence_user_presence_t) - offsetof(presence_user_presence_t, user_id_len));
  }
  presence_free(out);
  return bytes;
}

// The history answers, the per-device audit's included, as bytes.
std::string HistoryBytes(presence_engine_t* e, const std::string& user, const char* viewer,
                         int64_t now) {
  const size_t vlen = viewer == nullptr ? 0 : std::strlen(viewer);
  presence_transition_t* t = nullptr;
  size_t n = 0;
  const int rc = presence_engine_history_as(&t, &n, e, user.data(), user.size(), 0, now, viewer,
                                            vlen, nullptr);
  std::string bytes = absl::StrCat(rc, ":", n, ":");
  if (t != nullptr) bytes.append(reinterpret_cast<const char*>(t), n * sizeof(*t));
  presence_free(t);
  presence_state_durations_t d;
  bytes += absl::StrCat(presence_engine_time_in_states_as(&d, e, user.data(), user.size(),
                                                          now - 20000, now, viewer, vlen, nullptr),
                        ":");
  bytes.append(reinterpret_cast<const char*>(&d), sizeof(d));
  int64_t last = 0;
  bytes += absl::StrCat(":", presence_engine_last_seen_as(&last, e, user.data(), user.size(),
                                                          viewer, vlen, nullptr),
                        ":", last);
  // Each device's audit (the hidden user's devices are h0 to h2).
  for (const char* device : {"d0", "h0", "h1", "h2"}) {
    presence_device_transition_t* dt = nullptr;
    bytes += absl::StrCat(":", presence_engine_device_history(&dt, &n, e, user.data(), user.size(),
                                                              device, std::strlen(device), 0, now,
                                                              viewer, vlen, nullptr),
                          ":", n);
    if (dt != nullptr) bytes.append(reinterpret_cast<const char*>(dt), n * sizeof(*dt));
    presence_free(dt);
  }
  return bytes;
}

// A polled batch with each list and section in user order (the order of a
// batch's entries carries nothing; see tests/two_worlds.h).
std::string Canonical(const char* data, size_t len) {
  presence::v1::DiffBatch m;
  if (!m.ParseFromArray(data, static_cast<int>(len))) return "undecodable";
  auto sort_users = [](google::protobuf::RepeatedPtrField<presence::v1::UserState>* users) {
    std::sort(users->begin(), users->end(),
              [](const auto& x, const auto& y) { return x.user_id() < y.user_id(); });
  };
  sort_users(m.mutable_users());
  for (auto& sec : *m.mutable_topics()) sort_users(sec.mutable_users());
  return m.SerializeAsString();
}

TEST(NoninterferenceC, TheCAnswersOthersGetAreTheSameBytes) {
  const std::filesystem::path root =
      std::filesystem::temp_directory_path() / absl::StrCat("presence-nic-", getpid());
  const std::string hidden = kHidden;  // signals view the bytes of their ids
  const std::vector<std::string> users = {"u0", "u1", "u2", hidden};
  const std::vector<std::string> visible = {"u0", "u1", "u2"};
  int hidden_actions = 0;
  for (uint64_t seed = 1; seed <= 60 && !HasFailure(); ++seed) {
    std::mt19937_64 rng(seed);
    auto pick = [&](uint32_t n) { return static_cast<uint32_t>(rng() % n); };
    std::filesystem::remove_all(root);
    CWorld a((root / "a").string()), b((root / "b").string());
    auto both = [&](auto f) {
      f(a);
      f(b);
    };
    auto tick = [&](int64_t ms) {
      both([&](CWorld& w) {
        presence_clock_advance(w.clock, ms, nullptr);
        presence_engine_tick(nullptr, w.engine, nullptr);
      });
    };
    // Everyone is seen, the hidden user goes invisible, others watch it.
    const std::string d0 = "d0", h0 = "h0";
    for (const std::string& u : users) {
      const presence_signal_t s = Sig(u, u == kHidden ? h0 : d0, 1, PRESENCE_ACTIVITY_ACTIVE);
      both([&](CWorld& w) {
        uint64_t h = 0;
        presence_engine_connect(&h, w.engine, &s, nullptr);
        if (u == kHidden) w.handles.push_back(h);
      });
    }
    tick(100);
    tick(1500);
    both([&](CWorld& w) {
      presence_engine_set_override(nullptr, w.engine, kHidden, std::strlen(kHidden),
                                   PRESENCE_OVERRIDE_INVISIBLE, 0, 0, nullptr);
    });
    std::vector<uint64_t> subs;
    for (const char* owner : {"", "u0", "u1"}) {
      uint64_t ids[2];
      int i = 0;
      both([&](CWorld& w) {
        presence_subscriber_options_t so;
        presence_subscriber_options_init(&so, PRESENCE_SUBSCRIBER_OPTIONS_VERSION, nullptr);
        so.owner_user_id = owner;
        so.owner_user_id_len = std::strlen(owner);
        presence_fanout_subscribe(&ids[i], w.fanout, &so, nullptr);
        const presence_bytes_t watch[] = {{kHidden, std::strlen(kHidden)}, {"u2", 2}};
        presence_fanout_add_users(w.fanout, ids[i], watch, 2, nullptr);
        ++i;
      });
      ASSERT_EQ(ids[0], ids[1]);
      subs.push_back(ids[0]);
    }
    for (int step = 0; step < 120; ++step) {
      const uint32_t r = pick(10);
      if (r < 4) {  // the hidden user, in world b only
        const std::string d = absl::StrCat("h", pick(3));
        switch (pick(4)) {
          case 0: {
            const presence_signal_t s = Sig(hidden, d, 2 + step, PRESENCE_ACTIVITY_ACTIVE);
            uint64_t h = 0;
            if (presence_engine_connect(&h, b.engine, &s, nullptr) == PRESENCE_OK) {
              b.handles.push_back(h);
              ++hidden_actions;
            }
            break;
          }
          case 1:
          case 2: {
            const int activity = pick(2) ? PRESENCE_ACTIVITY_ACTIVE : PRESENCE_ACTIVITY_IDLE;
            hidden_actions += presence_engine_beat(b.engine, b.handles[pick(b.handles.size())],
                                                   activity, PRESENCE_SOURCE_APP,
                                                   nullptr) == PRESENCE_OK;
            break;
          }
          case 3:
            hidden_actions += presence_engine_disconnect(
                                  b.engine, b.handles[pick(b.handles.size())],
                                  pick(2) ? PRESENCE_DISCONNECT_CLEAN : PRESENCE_DISCONNECT_ABRUPT,
                                  nullptr) == PRESENCE_OK;
            break;
        }
      } else if (r < 7) {  // a visible user, in both
        const std::string& u = visible[pick(visible.size())];
        const presence_signal_t s =
            Sig(u, d0, 1, pick(3) ? PRESENCE_ACTIVITY_ACTIVE : PRESENCE_ACTIVITY_IDLE);
        both([&](CWorld& w) { presence_engine_signal(w.engine, &s, nullptr); });
      } else {
        tick(1 + pick(3000));
      }
      // Everything others read.
      int64_t now = 0;
      presence_engine_now(&now, a.engine, nullptr);
      for (const char* viewer : {static_cast<const char*>(nullptr), "u0"}) {
        const std::string where = absl::StrCat("seed ", seed, " step ", step, " viewer ",
                                               viewer == nullptr ? "none" : viewer);
        ASSERT_EQ(GetBytes(a.engine, false, users, viewer), GetBytes(b.engine, false, users, viewer))
            << where << ": presence_engine_get";
        ASSERT_EQ(GetBytes(a.engine, true, users, viewer), GetBytes(b.engine, true, users, viewer))
            << where << ": presence_engine_get_published";
        for (const std::string& u : users) {
          ASSERT_EQ(HistoryBytes(a.engine, u, viewer, now), HistoryBytes(b.engine, u, viewer, now))
              << where << ": history, time in states, last seen of " << u;
        }
      }
      for (uint64_t s : subs) {
        for (;;) {
          uint8_t ha = 0, hb = 0;
          char *ba = nullptr, *bb = nullptr;
          size_t la = 0, lb = 0;
          presence_fanout_poll(&ha, &ba, &la, a.fanout, s, nullptr);
          presence_fanout_poll(&hb, &bb, &lb, b.fanout, s, nullptr);
          const std::string ca = ha ? Canonical(ba, la) : "", cb = hb ? Canonical(bb, lb) : "";
          presence_free(ba);
          presence_free(bb);
          ASSERT_EQ(ha, hb) << "seed " << seed << " step " << step << ": subscriber " << s;
          ASSERT_EQ(ca, cb) << "seed " << seed << " step " << step << ": subscriber " << s;
          if (!ha) break;
        }
      }
    }
  }
  std::filesystem::remove_all(root);
  EXPECT_GT(hidden_actions, 60 * 20);  // the worlds really differed
}

}  // namespace
