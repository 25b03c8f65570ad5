// presence::PostgresStore against a real PostgreSQL (started by this binary):
// the Store and HistoryStore conformance suites, the documented schema, one
// transaction per batch, the server-side version rule under racing writers,
// TTL sweeps and retention, and an engine writing through while PostgreSQL
// crashes and restarts.
#include "presence/postgres_store.h"

#include <libpq-fe.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "adapters/testing/servers.h"
#include "adapters/testing/write_through_check.h"
#include "gtest/gtest.h"
#include "tests/conformance/store_conformance.h"

namespace presence {
namespace {

using conformance::At;
using conformance::Device;
using conformance::Loaded;
using conformance::User;
using testing_servers::MetricValue;
using testing_servers::PostgresServer;

// fsync=off: these tests crash the server process, never the machine, and a
// commit has written its WAL to the OS before it returns (synchronous_commit
// stays on), so nothing acknowledged can be lost; with fsync on this disk,
// the binary takes 4 times as long.
PostgresServer* Server() {
  return testing_servers::SharedServer<PostgresServer>(
      [] { return PostgresServer::Start({"fsync=off"}); });
}

std::atomic<int> prefixes{0};

PostgresStoreOptions OptionsFor(const std::string& prefix) {
  PostgresStoreOptions o;
  o.conninfo = Server()->conninfo();
  o.table_prefix = prefix;
  return o;
}

std::unique_ptr<PostgresStore> OpenStore(const std::string& prefix) {
  if (Server() == nullptr) return nullptr;
  auto s = PostgresStore::Open(OptionsFor(prefix));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

// The conformance suites own what their factory returns: these own the
// PostgresStore behind the Store or HistoryStore.
class OwningStore final : public Store {
 public:
  explicit OwningStore(std::unique_ptr<PostgresStore> pg) : pg_(std::move(pg)) {}
  absl::Status Write(const StoreBatch& b) override { return pg_->store()->Write(b); }
  absl::Status Load(StoreVisitor* v) override { return pg_->store()->Load(v); }

 private:
  std::unique_ptr<PostgresStore> pg_;
};

class OwningHistory final : public HistoryStore {
 public:
  explicit OwningHistory(std::unique_ptr<PostgresStore> pg) : pg_(std::move(pg)) {}
  absl::Status Append(absl::Span<const Transition> t) override { return h()->Append(t); }
  absl::StatusOr<std::vector<Transition>> Query(absl::string_view user_id, int64_t from_ms,
                                                int64_t to_ms) override {
    return h()->Query(user_id, from_ms, to_ms);
  }
  absl::StatusOr<std::optional<Transition>> LastBefore(absl::string_view user_id,
                                                       int64_t before_ms) override {
    return h()->LastBefore(user_id, before_ms);
  }
  absl::Status AppendDevices(absl::Span<const DeviceTransition> t) override {
    return h()->AppendDevices(t);
  }
  absl::StatusOr<std::vector<DeviceTransition>> QueryDevice(absl::string_view user_id,
                                                            absl::string_view device_id,
                                                            int64_t from_ms,
                                                            int64_t to_ms) override {
    return h()->QueryDevice(user_id, device_id, from_ms, to_ms);
  }
  absl::Status Erase(absl::string_view user_id) override { return h()->Erase(user_id); }
  absl::Status DropBefore(int64_t before_ms) override { return h()->DropBefore(before_ms); }

 private:
  HistoryStore* h() { return pg_->history(); }
  std::unique_ptr<PostgresStore> pg_;
};

class NoServerHistory final : public HistoryStore {
 public:
  absl::Status Append(absl::Span<const Transition>) override { return Down(); }
  absl::StatusOr<std::vector<Transition>> Query(absl::string_view, int64_t, int64_t) override {
    return Down();
  }
  absl::StatusOr<std::optional<Transition>> LastBefore(absl::string_view, int64_t) override {
    return Down();
  }
  absl::Status AppendDevices(absl::Span<const DeviceTransition>) override { return Down(); }
  absl::StatusOr<std::vector<DeviceTransition>> QueryDevice(absl::string_view, absl::string_view,
                                                            int64_t, int64_t) override {
    return Down();
  }
  absl::Status Erase(absl::string_view) override { return Down(); }
  absl::Status DropBefore(int64_t) override { return Down(); }

 private:
  static absl::Status Down() { return absl::UnavailableError("no server"); }
};

// Each test case gets its own tables in the shared database; Reopen keeps them.
struct PostgresStoreFactory {
  static constexpr bool kDurable = true;
  std::string prefix = absl::StrCat("conf", prefixes.fetch_add(1), "_");
  std::unique_ptr<Store> Open() {
    auto pg = OpenStore(prefix);
    if (pg == nullptr) return std::make_unique<testing_servers::NoServerStore>();
    return std::make_unique<OwningStore>(std::move(pg));
  }
};
struct PostgresHistoryFactory {
  static constexpr bool kDurable = true;
  std::string prefix = absl::StrCat("hist", prefixes.fetch_add(1), "_");
  std::unique_ptr<HistoryStore> Open() {
    auto pg = OpenStore(prefix);
    if (pg == nullptr) return std::make_unique<NoServerHistory>();
    return std::make_unique<OwningHistory>(std::move(pg));
  }
};

}  // namespace

namespace conformance {
INSTANTIATE_TYPED_TEST_SUITE_P(Postgres, StoreConformance, ::testing::Types<PostgresStoreFactory>);
INSTANTIATE_TYPED_TEST_SUITE_P(Postgres, HistoryConformance,
                               ::testing::Types<PostgresHistoryFactory>);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(BusConformance);  // Kafka is another adapter
}  // namespace conformance

namespace {

// Fails the test at once when there is no server.
class PostgresStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NE(Server(), nullptr); }
};

// A plain libpq connection, to look at the tables behind the store's back.
class Sql {
 public:
  Sql() : conn_(PQconnectdb(Server()->conninfo().c_str())) {}
  ~Sql() { PQfinish(conn_); }
  // Runs `sql`; its rows, each as its values joined with '|'.
  std::vector<std::string> Rows(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    std::vector<std::string> out;
    const ExecStatusType s = PQresultStatus(r);
    EXPECT_TRUE(s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK) << sql << ": " << PQresultErrorMessage(r);
    for (int i = 0; i < PQntuples(r); ++i) {
      std::vector<std::string> cols;
      for (int c = 0; c < PQnfields(r); ++c) cols.push_back(PQgetvalue(r, i, c));
      out.push_back(absl::StrJoin(cols, "|"));
    }
    PQclear(r);
    return out;
  }
  std::string One(const std::string& sql) {
    auto rows = Rows(sql);
    return rows.empty() ? "(none)" : rows[0];
  }

 private:
  PGconn* conn_;
};

TEST_F(PostgresStoreTest, TablesFollowTheDocumentedSchema) {
  auto pg = OpenStore("schema_");
  ASSERT_NE(pg, nullptr);
  StoreBatch b;
  UserRecord u = User("alice", 5);
  u.overrides = {OverrideInfo{7, OverrideState::kInvisible, 40, 0},
                 OverrideInfo{9, OverrideState::kDnd, 45, 900}};
  b.users.push_back(u);
  DeviceRecord phone = Device("alice", "phone", 6);  // app signal at 60, idle
  phone.last_signal_ms = {30, 60, 0};
  b.devices.push_back(phone);
  DeviceRecord web = Device("alice", "web", 7);
  web.closed = true;
  b.devices.push_back(web);
  b.offsets.push_back({3, 42});
  ASSERT_TRUE(pg->store()->Write(b).ok());

  Sql sql;
  EXPECT_EQ(absl::StrJoin(sql.Rows("SELECT column_name FROM information_schema.columns WHERE "
                                   "table_name = 'schema_devices' ORDER BY ordinal_position"),
                          ","),
            "user_id,device_id,state,last_seen,session_id,precedence,version,platform,"
            "last_inferred_ms,last_app_ms,last_manual_ms,inferred_activity,app_activity,"
            "manual_activity,closed,gateway");
  // The presence table's derived columns: the phone's best source is the
  // app (precedence 2), which said idle: AWAY (2); the closed web: OFFLINE.
  EXPECT_EQ(sql.One("SELECT encode(device_id, 'escape'), state, last_seen, precedence, version "
                    "FROM schema_devices ORDER BY device_id"),
            "phone|2|60|2|6");
  EXPECT_EQ(sql.One("SELECT state, precedence, closed FROM schema_devices WHERE device_id = "
                    "'web'::bytea"),
            "1|2|t");
  EXPECT_EQ(sql.One("SELECT version, state, override_ids, override_states, override_until FROM "
                    "schema_users"),
            "5|3|{7,9}|{4,3}|{0,900}");
  EXPECT_EQ(sql.One("SELECT bus_partition, next_offset FROM schema_offsets"), "3|42");
  EXPECT_EQ(sql.One("SELECT indexdef FROM pg_indexes WHERE indexname = 'schema_history_window'"),
            "CREATE INDEX schema_history_window ON public.schema_history USING btree (user_id, "
            "at_ms, version)");
  // Erasure: the rows go, the floor stays.
  StoreBatch e;
  e.erasures.push_back({"alice", 8});
  ASSERT_TRUE(pg->store()->Write(e).ok());
  EXPECT_EQ(sql.One("SELECT count(*) FROM schema_devices"), "0");
  EXPECT_EQ(sql.One("SELECT floor_version FROM schema_erasures"), "8");
}

TEST_F(PostgresStoreTest, ABatchIsOneTransactionInOneRoundTrip) {
  auto pg = OpenStore("txn_");
  ASSERT_NE(pg, nullptr);
  StoreBatch b;  // more rows than one statement takes
  for (int i = 0; i < 1200; ++i) {
    b.users.push_back(User(absl::StrCat("u", i), 10));
    b.devices.push_back(Device(absl::StrCat("u", i), "web", 10));
  }
  b.erasures.push_back({"someone", 3});
  b.offsets = {{0, 5}};
  const double before = MetricValue(pg->RenderMetrics(), "presence_postgres_round_trips_total");
  ASSERT_TRUE(pg->store()->Write(b).ok());
  EXPECT_EQ(MetricValue(pg->RenderMetrics(), "presence_postgres_round_trips_total"), before + 1);

  // All or nothing: when its last statement fails, none of it stays.
  Sql sql;
  sql.Rows("DROP TABLE txn_offsets");
  StoreBatch next;
  next.users.push_back(User("late", 20));
  next.users.push_back(User("u1", 20, State::kDnd));
  next.offsets = {{0, 6}};
  const absl::Status failed = pg->store()->Write(next);
  EXPECT_TRUE(absl::IsInternal(failed)) << failed;
  EXPECT_EQ(sql.One("SELECT count(*) FROM txn_users WHERE user_id = 'late'::bytea"), "0");
  EXPECT_EQ(sql.One("SELECT version FROM txn_users WHERE user_id = 'u1'::bytea"), "10");
  // The connection is still usable, and the next write goes through.
  ASSERT_TRUE(OpenStore("txn_") != nullptr);  // creates the table again
  ASSERT_TRUE(pg->store()->Write(next).ok());
  EXPECT_EQ(sql.One("SELECT version FROM txn_users WHERE user_id = 'u1'::bytea"), "20");
}

// Two stores (two engines) race on the same records with interleaved
// versions: the guard runs in the server, so the greatest version wins
// whatever the arrival order.
TEST_F(PostgresStoreTest, RacingWritersNeverOverwriteANewerRecord) {
  auto a = OpenStore("race_");
  auto b = OpenStore("race_");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      PostgresStore* s = t % 2 ? a.get() : b.get();
      for (int i = 0; i < 50; ++i) {
        const uint64_t v = 1000 + ((i * 4 + t) * 79) % 200;  // a permutation of 1000..1199
        StoreBatch batch;
        batch.users.push_back(User("alice", v));
        batch.devices.push_back(Device("alice", "web", v, v));
        const absl::Status st = s->store()->Write(batch);
        EXPECT_TRUE(st.ok()) << st;
      }
    });
  }
  for (auto& th : threads) th.join();
  Loaded l;
  ASSERT_TRUE(a->store()->Load(&l).ok());
  EXPECT_EQ(l.users.at("alice").version, 1199u);
  EXPECT_EQ(l.devices.begin()->second.session_id, 1199u);
}

TEST_F(PostgresStoreTest, SweepRemovesUsersLongGoneAndKeepsTheRest) {
  auto pg = OpenStore("sweep_");
  ASSERT_NE(pg, nullptr);
  StoreBatch b;
  b.users.push_back(User("old-closed", 10));  // last_seen 100
  DeviceRecord closed = Device("old-closed", "web", 10);
  closed.closed = true;
  b.devices.push_back(closed);
  b.users.push_back(User("old-alone", 11));
  b.users.push_back(User("old-but-open", 12));  // an open device: kept
  b.devices.push_back(Device("old-but-open", "web", 12));
  b.users.push_back(User("old-but-recent-device", 13));  // a device seen since: kept
  DeviceRecord recent = Device("old-but-recent-device", "web", 300);
  recent.closed = true;
  b.devices.push_back(recent);
  b.users.push_back(User("recent", 500));
  ASSERT_TRUE(pg->store()->Write(b).ok());
  StoreBatch e;
  e.erasures.push_back({"old-alone", 20});
  e.users.push_back(User("old-alone", 21));
  ASSERT_TRUE(pg->store()->Write(e).ok());

  auto swept = pg->SweepSeenBefore(1000);
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 2u);
  Loaded l;
  ASSERT_TRUE(pg->store()->Load(&l).ok());
  EXPECT_EQ(l.users.count("old-closed"), 0u);
  EXPECT_EQ(l.users.count("old-alone"), 0u);
  EXPECT_EQ(l.users.count("old-but-open"), 1u);
  EXPECT_EQ(l.users.count("old-but-recent-device"), 1u);
  EXPECT_EQ(l.users.count("recent"), 1u);
  EXPECT_EQ(l.devices.size(), 2u);
  StoreBatch late;  // the floor outlived the sweep
  late.users.push_back(User("old-alone", 15));
  ASSERT_TRUE(pg->store()->Write(late).ok());
  Loaded again;
  ASSERT_TRUE(pg->store()->Load(&again).ok());
  EXPECT_EQ(again.users.count("old-alone"), 0u);
}

TEST_F(PostgresStoreTest, RetentionDeletesInBoundedTransactions) {
  auto pg = OpenStore("retention_");
  ASSERT_NE(pg, nullptr);
  std::vector<Transition> all;
  for (int i = 0; i < 12000; ++i) {
    all.push_back(At(absl::StrCat("u", i % 100), 1 + i / 100, i, State::kOnline));
  }
  ASSERT_TRUE(pg->history()->Append(all).ok());
  ASSERT_TRUE(pg->history()->DropBefore(11500).ok());  // more than one delete of 10000
  Sql sql;
  EXPECT_EQ(sql.One("SELECT count(*), min(at_ms) FROM retention_history"), "500|11500");
}

TEST_F(PostgresStoreTest, LoadSkipsAndCountsRowsItCannotDecode) {
  auto pg = OpenStore("corrupt_");
  ASSERT_NE(pg, nullptr);
  StoreBatch b;
  b.users.push_back(User("alice", 5));
  b.users.push_back(User("bob", 5));
  ASSERT_TRUE(pg->store()->Write(b).ok());
  Sql sql;
  sql.Rows("UPDATE corrupt_users SET state = 9 WHERE user_id = 'bob'::bytea");
  Loaded l;
  ASSERT_TRUE(pg->store()->Load(&l).ok());
  EXPECT_EQ(l.users.count("alice"), 1u);
  EXPECT_EQ(l.users.count("bob"), 0u);
  EXPECT_EQ(MetricValue(pg->RenderMetrics(), "presence_postgres_records_dropped_total"), 1);
}

TEST_F(PostgresStoreTest, OpenChecksTheOptionsAndTheServer) {
  for (const char* bad : {"", "Presence_", "1x_", "a-b", "x; DROP TABLE y"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(PostgresStore::Open(OptionsFor(bad)).status())) << bad;
  }
  PostgresStoreOptions o = OptionsFor("x_");
  o.connections = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(PostgresStore::Open(o).status()));
  o = OptionsFor("x_");
  o.conninfo = absl::StrCat("host=127.0.0.1 port=", testing_servers::FreePort().value(),
                            " user=presence dbname=postgres connect_timeout=2");
  EXPECT_TRUE(absl::IsUnavailable(PostgresStore::Open(o).status()));
}

// Its own suite, defined last, so that it runs last in this binary (gtest
// runs suites in the order they are defined): it restarts the shared server.
using PostgresStoreFault = PostgresStoreTest;

TEST_F(PostgresStoreFault, AnEngineWritingThroughSurvivesAPostgresCrash) {
  auto pg = OpenStore("fault_");
  ASSERT_NE(pg, nullptr);
  testing_servers::CheckWriteThroughAcrossACrash(
      pg->store(), [] { Server()->Kill(); }, [] { return Server()->Restart(); });
  const std::string m = pg->RenderMetrics();
  EXPECT_GT(MetricValue(m, "presence_postgres_call_errors_total"), 0);
  EXPECT_GT(MetricValue(m, "presence_postgres_connection_errors_total"), 0);
}

}  // namespace
}  // namespace presence
