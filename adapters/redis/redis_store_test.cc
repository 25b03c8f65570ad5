// presence::RedisStore against a real redis-server (started by this binary):
// the conformance suite, the documented key layout, the server-side version
// rule under racing writers, pipelining, script reloads, sweeps, and an
// engine writing through while Redis crashes and restarts.
#include "presence/redis_store.h"

#include <hiredis/hiredis.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "adapters/testing/servers.h"
#include "adapters/testing/write_through_check.h"
#include "gtest/gtest.h"
#include "presence/v1/presence.pb.h"
#include "tests/conformance/store_conformance.h"

namespace presence {
namespace {

using conformance::Device;
using conformance::Loaded;
using conformance::User;
using testing_servers::MetricValue;
using testing_servers::RedisServer;

RedisServer* Server() {
  return testing_servers::SharedServer<RedisServer>([] { return RedisServer::Start(); });
}

std::atomic<int> prefixes{0};

RedisStoreOptions OptionsFor(const std::string& prefix) {
  RedisStoreOptions o;
  o.port = Server()->port();
  o.key_prefix = prefix;
  return o;
}

std::unique_ptr<RedisStore> OpenStore(const std::string& prefix) {
  if (Server() == nullptr) return nullptr;
  auto s = RedisStore::Open(OptionsFor(prefix));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

// Each test case gets its own prefix on the shared server; Reopen keeps it.
struct RedisStoreFactory {
  static constexpr bool kDurable = true;
  std::string prefix = absl::StrCat("conformance-", prefixes.fetch_add(1), ":");
  std::unique_ptr<Store> Open() {
    if (Server() == nullptr) return std::make_unique<testing_servers::NoServerStore>();
    return OpenStore(prefix);
  }
};

}  // namespace

namespace conformance {
INSTANTIATE_TYPED_TEST_SUITE_P(Redis, StoreConformance, ::testing::Types<RedisStoreFactory>);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(HistoryConformance);  // Redis keeps no history
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(BusConformance);
}  // namespace conformance

namespace {

// Fails the test at once when there is no server.
class RedisStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NE(Server(), nullptr); }
};

// A plain hiredis connection, to look at the keys behind the store's back.
class Raw {
 public:
  Raw() : ctx_(redisConnect("127.0.0.1", Server()->port())) {}
  ~Raw() { redisFree(ctx_); }
  // Runs one command; returns its reply as text ("(nil)", integers in
  // decimal, arrays joined with '|').
  std::string Do(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
    if (r == nullptr) return "(no reply)";
    std::string out = Text(r);
    freeReplyObject(r);
    return out;
  }

 private:
  static std::string Text(const redisReply* r) {
    switch (r->type) {
      case REDIS_REPLY_NIL:
        return "(nil)";
      case REDIS_REPLY_INTEGER:
        return absl::StrCat(r->integer);
      case REDIS_REPLY_ARRAY: {
        std::string out;
        for (size_t i = 0; i < r->elements; ++i) {
          if (i) out += "|";
          out += Text(r->element[i]);
        }
        return out;
      }
      default:
        return std::string(r->str, r->len);
    }
  }
  redisContext* ctx_;
};

TEST_F(RedisStoreTest, KeysFollowTheDocumentedLayout) {
  auto store = OpenStore("layout:");
  StoreBatch b;
  UserRecord u = User("alice", 5);
  u.last_seen_ms = 700;
  b.users.push_back(u);
  DeviceRecord phone = Device("alice", "phone", 6);
  phone.last_signal_ms = {0, 900, 0};
  b.devices.push_back(phone);
  DeviceRecord web = Device("alice", "web", 7);
  web.closed = true;
  b.devices.push_back(web);
  b.offsets.push_back({3, 42});
  ASSERT_TRUE(store->Write(b).ok());

  Raw raw;
  EXPECT_EQ(raw.Do({"TYPE", "layout:u:alice"}), "hash");
  EXPECT_EQ(raw.Do({"HLEN", "layout:u:alice"}), "3");
  const std::string user = raw.Do({"HGET", "layout:u:alice", "u"});
  EXPECT_EQ(user.substr(0, 21), "00000000000000000005u");
  EXPECT_EQ(raw.Do({"HGET", "layout:u:alice", "dphone"}).substr(0, 21), "00000000000000000006o");
  EXPECT_EQ(raw.Do({"HGET", "layout:u:alice", "dweb"}).substr(0, 21), "00000000000000000007c");
  // The rest is a presence.v1.UserRecord.
  v1::UserRecord p;
  ASSERT_TRUE(p.ParseFromString(user.substr(21)));
  EXPECT_EQ(p.state(), v1::STATE_ONLINE);
  EXPECT_EQ(p.last_seen_ms(), 700);
  EXPECT_EQ(p.state_version(), 5u);
  // The sorted set: the latest last_seen of any of the user's records.
  EXPECT_EQ(raw.Do({"ZSCORE", "layout:seen", "alice"}), "900");
  EXPECT_EQ(raw.Do({"HGET", "layout:offsets", "3"}), "00000000000000000042");

  // An erasure leaves only the floor, and takes the user out of the index.
  StoreBatch e;
  e.erasures.push_back({"alice", 8});
  ASSERT_TRUE(store->Write(e).ok());
  EXPECT_EQ(raw.Do({"HGETALL", "layout:u:alice"}), "f|00000000000000000008");
  EXPECT_EQ(raw.Do({"ZSCORE", "layout:seen", "alice"}), "(nil)");
  // A lower floor later does not lower it.
  e.erasures[0].floor = 3;
  ASSERT_TRUE(store->Write(e).ok());
  EXPECT_EQ(raw.Do({"HGET", "layout:u:alice", "f"}), "00000000000000000008");
}

TEST_F(RedisStoreTest, ABatchIsOneRoundTrip) {
  auto store = OpenStore("pipeline:");
  const double before = MetricValue(store->RenderMetrics(), "presence_redis_round_trips_total");
  StoreBatch b;
  for (int i = 0; i < 300; ++i) {
    b.users.push_back(User(absl::StrCat("u", i), 10));
    b.devices.push_back(Device(absl::StrCat("u", i), "web", 10));
    b.devices.push_back(Device(absl::StrCat("u", i), "phone", 10));
  }
  b.erasures.push_back({"gone-user", 5});
  b.offsets = {{0, 1}, {1, 2}};
  ASSERT_TRUE(store->Write(b).ok());
  EXPECT_EQ(MetricValue(store->RenderMetrics(), "presence_redis_round_trips_total"), before + 1);
  Loaded l;
  ASSERT_TRUE(store->Load(&l).ok());
  EXPECT_EQ(l.users.size(), 300u);
  EXPECT_EQ(l.devices.size(), 600u);
}

// Two stores (two engines) race on the same records with interleaved
// versions: the version check runs on the server, so the greatest version
// wins whatever the arrival order, for users and devices alike.
TEST_F(RedisStoreTest, RacingWritersNeverOverwriteANewerRecord) {
  auto a = OpenStore("race:");
  auto b = OpenStore("race:");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      RedisStore* s = t % 2 ? a.get() : b.get();
      for (int i = 0; i < 200; ++i) {
        const uint64_t v = 1000 + ((i * 4 + t) * 7919) % 800;  // a permutation of 1000..1799
        StoreBatch batch;
        batch.users.push_back(User("alice", v));
        batch.devices.push_back(Device("alice", "web", v, v));
        EXPECT_TRUE(s->Write(batch).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  Loaded l;
  ASSERT_TRUE(a->Load(&l).ok());
  EXPECT_EQ(l.users.at("alice").version, 1799u);
  EXPECT_EQ(l.devices.begin()->second.version, 1799u);
  EXPECT_EQ(l.devices.begin()->second.session_id, 1799u);
}

TEST_F(RedisStoreTest, ScriptsAreLoadedAgainWhenTheServerLostThem) {
  auto store = OpenStore("reload:");
  Raw raw;
  EXPECT_EQ(raw.Do({"SCRIPT", "FLUSH"}), "OK");
  StoreBatch b;
  b.users.push_back(User("alice", 3));
  ASSERT_TRUE(store->Write(b).ok());
  EXPECT_EQ(MetricValue(store->RenderMetrics(), "presence_redis_script_reloads_total"), 1);
  Loaded l;
  ASSERT_TRUE(store->Load(&l).ok());
  EXPECT_EQ(l.users.count("alice"), 1u);
}

TEST_F(RedisStoreTest, SweepRemovesUsersLongGoneAndKeepsTheRest) {
  auto store = OpenStore("sweep:");
  StoreBatch b;
  b.users.push_back(User("old-closed", 10));  // last_seen 100
  DeviceRecord closed = Device("old-closed", "web", 10);
  closed.closed = true;
  b.devices.push_back(closed);
  b.users.push_back(User("old-alone", 11));    // last_seen 110, no device
  b.users.push_back(User("old-but-open", 12));  // an open device: kept
  b.devices.push_back(Device("old-but-open", "web", 12));
  b.users.push_back(User("recent", 500));       // last_seen 5000
  ASSERT_TRUE(store->Write(b).ok());
  StoreBatch e;
  e.erasures.push_back({"old-alone", 20});
  e.users.push_back(User("old-alone", 21));  // back after an erasure
  ASSERT_TRUE(store->Write(e).ok());

  auto swept = store->SweepSeenBefore(1000);
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 2u);
  Loaded l;
  ASSERT_TRUE(store->Load(&l).ok());
  EXPECT_EQ(l.users.count("old-closed"), 0u);
  EXPECT_EQ(l.users.count("old-alone"), 0u);
  EXPECT_EQ(l.users.count("old-but-open"), 1u);
  EXPECT_EQ(l.users.count("recent"), 1u);
  EXPECT_EQ(l.devices.size(), 1u);
  // The floor outlived the sweep: an old write is still refused.
  StoreBatch late;
  late.users.push_back(User("old-alone", 15));
  ASSERT_TRUE(store->Write(late).ok());
  Loaded again;
  ASSERT_TRUE(store->Load(&again).ok());
  EXPECT_EQ(again.users.count("old-alone"), 0u);
  EXPECT_EQ(store->SweepSeenBefore(1000).value(), 0u);
}

TEST_F(RedisStoreTest, LoadSkipsAndCountsWhatItCannotDecode) {
  auto store = OpenStore("corrupt:");
  StoreBatch b;
  b.users.push_back(User("alice", 5));
  b.users.push_back(User("bob", 5));
  ASSERT_TRUE(store->Write(b).ok());
  Raw raw;
  raw.Do({"HSET", "corrupt:u:bob", "u", "00000000000000000009u\xff\xff\xff"});
  raw.Do({"HSET", "corrupt:u:bob", "dweb", "not a record"});
  Loaded l;
  ASSERT_TRUE(store->Load(&l).ok());
  EXPECT_EQ(l.users.count("alice"), 1u);
  EXPECT_EQ(l.users.count("bob"), 0u);
  EXPECT_TRUE(l.devices.empty());
  EXPECT_EQ(MetricValue(store->RenderMetrics(), "presence_redis_records_dropped_total"), 2);
}

TEST_F(RedisStoreTest, PrefixesKeepStoresApartEvenWithGlobCharacters) {
  auto a = OpenStore("a*[x]:");
  auto b = OpenStore("a");
  StoreBatch ba, bb;
  ba.users.push_back(User("one", 1));
  bb.users.push_back(User("two", 1));
  ASSERT_TRUE(a->Write(ba).ok());
  ASSERT_TRUE(b->Write(bb).ok());
  Loaded la, lb;
  ASSERT_TRUE(a->Load(&la).ok());
  ASSERT_TRUE(b->Load(&lb).ok());
  EXPECT_EQ(la.users.size(), 1u);
  EXPECT_EQ(la.users.count("one"), 1u);
  // "a" sees its own user; "a*[x]:u:one" does not start with "au:".
  EXPECT_EQ(lb.users.size(), 1u);
  EXPECT_EQ(lb.users.count("two"), 1u);
}

TEST_F(RedisStoreTest, OpenChecksTheOptionsAndTheServer) {
  RedisStoreOptions o = OptionsFor("");
  EXPECT_TRUE(absl::IsInvalidArgument(RedisStore::Open(o).status()));
  o = OptionsFor("x:");
  o.connections = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(RedisStore::Open(o).status()));
  o = OptionsFor("x:");
  o.port = testing_servers::FreePort().value();  // nobody listens there
  EXPECT_TRUE(absl::IsUnavailable(RedisStore::Open(o).status()));
}

// Its own suite, defined last, so that it runs last in this binary (gtest
// runs suites in the order they are defined): it restarts the shared server.
using RedisStoreFault = RedisStoreTest;

TEST_F(RedisStoreFault, AnEngineWritingThroughSurvivesARedisCrash) {
  auto store = OpenStore("fault:");
  ASSERT_NE(store, nullptr);
  testing_servers::CheckWriteThroughAcrossACrash(
      store.get(), [] { Server()->Kill(); }, [] { return Server()->Restart(); });
  const std::string m = store->RenderMetrics();
  EXPECT_GT(MetricValue(m, "presence_redis_write_errors_total"), 0);
  EXPECT_GT(MetricValue(m, "presence_redis_connection_errors_total"), 0);
}

}  // namespace
}  // namespace presence
