// presence::PostgresStore (presence/postgres_store.h): the schema, the
// version-guarded multi-row upserts sent as one pipelined transaction per
// batch, the history queries, and the retries that CockroachDB asks of its
// clients. Every statement is in the subset of SQL that PostgreSQL and
// CockroachDB share; docs/adapters.md lists what that subset is and why.
#include "presence/postgres_store.h"

#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "adapters/common/connection_pool.h"
#include "src/core/metrics.h"

namespace presence {

PostgresStore::~PostgresStore() = default;

namespace {

using internal::Metric;

// ---- Statements -------------------------------------------------------------------

// The parameters of one statement. Each Add returns its placeholder with an
// explicit cast ("$3::INT8"), so that statements type-check the same way on
// PostgreSQL and CockroachDB. BYTEA goes in binary, everything else in text.
class Params {
 public:
  std::string Bytes(absl::string_view v) { return Add(std::string(v), 1, "BYTEA"); }
  std::string Int(int64_t v) { return Add(absl::StrCat(v), 0, "INT8"); }
  std::string Small(int v) { return Add(absl::StrCat(v), 0, "INT2"); }
  std::string Bool(bool v) { return Add(v ? "t" : "f", 0, "BOOL"); }
  // An array literal such as "{1,2}".
  std::string Array(const std::vector<int64_t>& v, absl::string_view type) {
    return Add(absl::StrCat("{", absl::StrJoin(v, ","), "}"), 0, absl::StrCat(type, "[]"));
  }

  int size() const { return static_cast<int>(values_.size()); }
  // Valid while the Params lives and is not added to.
  std::vector<const char*> values() const {
    std::vector<const char*> out;
    for (const std::string& v : values_) out.push_back(v.data());
    return out;
  }
  std::vector<int> lengths() const {
    std::vector<int> out;
    for (const std::string& v : values_) out.push_back(static_cast<int>(v.size()));
    return out;
  }
  const std::vector<int>& formats() const { return formats_; }

 private:
  std::string Add(std::string v, int format, absl::string_view cast) {
    values_.push_back(std::move(v));
    formats_.push_back(format);
    return absl::StrCat("$", values_.size(), "::", cast);
  }
  std::vector<std::string> values_;
  std::vector<int> formats_;
};

struct Statement {
  std::string sql;
  Params params;
};

constexpr uint64_t kMaxInt8 = uint64_t{1} << 63;

// ---- Connections ------------------------------------------------------------------

struct ResultFree {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultFree>;

struct PgConnection {
  PGconn* conn = nullptr;
  std::string sqlstate;  // of the last failure ("" when none or not from the server)
  void Drop() {
    if (conn != nullptr) PQfinish(conn);
    conn = nullptr;
  }
  ~PgConnection() { Drop(); }
};

bool Retryable(const std::string& sqlstate) {
  return sqlstate == "40001" || sqlstate == "40P01";
}

// ---- Values read back (text format) ---------------------------------------------------

class Row {
 public:
  Row(const PGresult* r, int row) : r_(r), row_(row) {}
  bool ok() const { return ok_; }
  std::string Bytes(int col) {
    size_t n = 0;
    unsigned char* raw =
        PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(r_, row_, col)), &n);
    if (raw == nullptr) {
      ok_ = false;
      return "";
    }
    std::string out(reinterpret_cast<const char*>(raw), n);
    PQfreemem(raw);
    return out;
  }
  int64_t Int(int col) {
    int64_t v = 0;
    ok_ &= !PQgetisnull(r_, row_, col) && absl::SimpleAtoi(PQgetvalue(r_, row_, col), &v);
    return v;
  }
  uint64_t Unsigned(int col) { return static_cast<uint64_t>(Int(col)); }
  int Enum(int col, int lo, int hi) {
    const int64_t v = Int(col);
    ok_ &= v >= lo && v <= hi;
    return static_cast<int>(v);
  }
  bool Bool(int col) {
    const absl::string_view v = PQgetvalue(r_, row_, col);
    ok_ &= v == "t" || v == "f";
    return v == "t";
  }
  std::vector<int64_t> Array(int col) {
    absl::string_view v = PQgetvalue(r_, row_, col);
    std::vector<int64_t> out;
    if (v.size() < 2 || v.front() != '{' || v.back() != '}') {
      ok_ = false;
      return out;
    }
    v = v.substr(1, v.size() - 2);
    if (v.empty()) return out;
    for (absl::string_view part : absl::StrSplit(v, ',')) {
      int64_t x = 0;
      ok_ &= absl::SimpleAtoi(part, &x);
      out.push_back(x);
    }
    return out;
  }

 private:
  const PGresult* r_;
  int row_;
  bool ok_ = true;
};

// ---- Records <-> rows ---------------------------------------------------------------

template <typename To, typename From>
To As(From v) {
  return static_cast<To>(static_cast<int>(v));
}

// The highest source that signalled in the session (1 inferred, 2 app,
// 3 manual), 0 for none: the presence table's `precedence`.
int Precedence(const DeviceRecord& d) {
  for (int i = kSourceCount - 1; i >= 0; --i) {
    if (d.last_signal_ms[i] != 0) return i + 1;
  }
  return 0;
}

// The presence table's `state`, as of the write (docs/design.md rule 2, with the
// default that a device kept alive by inferred signals alone is AWAY).
State DeviceState(const DeviceRecord& d) {
  const int p = Precedence(d);
  if (d.closed || p == 0) return State::kOffline;
  if (p == static_cast<int>(Source::kInferred)) return State::kAway;
  return d.activity[p - 1] == Activity::kActive ? State::kOnline : State::kAway;
}

int64_t LatestSignal(const DeviceRecord& d) {
  return *std::max_element(d.last_signal_ms.begin(), d.last_signal_ms.end());
}

constexpr char kUserColumns[] =
    "user_id, version, state_version, state, self_state, last_seen, published_at, "
    "override_ids, override_states, override_set_at, override_until, public_version, "
    "hidden_last_seen";
constexpr char kDeviceColumns[] =
    "user_id, device_id, state, last_seen, session_id, precedence, version, platform, "
    "last_inferred_ms, last_app_ms, last_manual_ms, inferred_activity, app_activity, "
    "manual_activity, closed, gateway";
constexpr char kHistoryColumns[] =
    "user_id, version, at_ms, previous, state, self_state, cause, trace_id, last_seen, "
    "public_version, public_last_seen";

constexpr char kDeviceHistoryColumns[] = "user_id, device_id, session_id, at_ms, event, platform";

std::string DeviceHistoryRow(const DeviceTransition& t, Params* p) {
  return absl::StrCat("(", p->Bytes(t.user_id), ",", p->Bytes(t.device_id), ",",
                      p->Int(static_cast<int64_t>(t.session_id)), ",", p->Int(t.at_ms), ",",
                      p->Small(static_cast<int>(t.event)), ",",
                      p->Small(static_cast<int>(t.platform)), ")");
}

std::string UserRow(const UserRecord& u, Params* p) {
  std::vector<int64_t> ids, states, set_at, until;
  for (const OverrideInfo& o : u.overrides) {
    ids.push_back(static_cast<int64_t>(o.id));
    states.push_back(static_cast<int>(o.state));
    set_at.push_back(o.set_at_ms);
    until.push_back(o.until_ms);
  }
  return absl::StrCat(
      "(", p->Bytes(u.user_id), ",", p->Int(static_cast<int64_t>(u.version)), ",",
      p->Int(static_cast<int64_t>(u.state_version)), ",", p->Small(static_cast<int>(u.state)), ",",
      p->Small(static_cast<int>(u.self_state)), ",", p->Int(u.last_seen_ms), ",",
      p->Int(u.published_at_ms), ",", p->Array(ids, "INT8"), ",", p->Array(states, "INT2"), ",",
      p->Array(set_at, "INT8"), ",", p->Array(until, "INT8"), ",",
      p->Int(static_cast<int64_t>(u.public_version)), ",", p->Int(u.hidden_last_seen_ms), ")");
}

std::string DeviceRow(const DeviceRecord& d, Params* p) {
  return absl::StrCat(
      "(", p->Bytes(d.user_id), ",", p->Bytes(d.device_id), ",",
      p->Small(static_cast<int>(DeviceState(d))), ",", p->Int(LatestSignal(d)), ",",
      p->Int(static_cast<int64_t>(d.session_id)), ",", p->Small(Precedence(d)), ",",
      p->Int(static_cast<int64_t>(d.version)), ",", p->Small(static_cast<int>(d.platform)), ",",
      p->Int(d.last_signal_ms[0]), ",", p->Int(d.last_signal_ms[1]), ",",
      p->Int(d.last_signal_ms[2]), ",", p->Small(static_cast<int>(d.activity[0])), ",",
      p->Small(static_cast<int>(d.activity[1])), ",", p->Small(static_cast<int>(d.activity[2])),
      ",", p->Bool(d.closed), ",", p->Bytes(d.gateway), ")");
}

std::string HistoryRow(const Transition& t, Params* p) {
  return absl::StrCat("(", p->Bytes(t.user_id), ",", p->Int(static_cast<int64_t>(t.version)), ",",
                      p->Int(t.at_ms), ",", p->Small(static_cast<int>(t.previous)), ",",
                      p->Small(static_cast<int>(t.state)), ",",
                      p->Small(static_cast<int>(t.self_state)), ",",
                      p->Small(static_cast<int>(t.cause)), ",",
                      p->Int(static_cast<int64_t>(t.trace_id)), ",", p->Int(t.last_seen_ms), ",",
                      p->Int(static_cast<int64_t>(t.public_version)), ",",
                      p->Int(t.public_last_seen_ms), ")");
}

bool ReadUser(Row& r, UserRecord* u) {
  u->user_id = r.Bytes(0);
  u->version = r.Unsigned(1);
  u->state_version = r.Unsigned(2);
  u->state = As<State>(r.Enum(3, 1, 4));
  u->self_state = As<State>(r.Enum(4, 1, 4));
  u->last_seen_ms = r.Int(5);
  u->published_at_ms = r.Int(6);
  u->public_version = r.Unsigned(11);
  u->hidden_last_seen_ms = r.Int(12);
  const std::vector<int64_t> ids = r.Array(7), states = r.Array(8), set_at = r.Array(9),
                             until = r.Array(10);
  if (!r.ok() || states.size() != ids.size() || set_at.size() != ids.size() ||
      until.size() != ids.size()) {
    return false;
  }
  u->overrides.clear();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (states[i] < 1 || states[i] > 4) return false;
    u->overrides.push_back(OverrideInfo{static_cast<uint64_t>(ids[i]),
                                        As<OverrideState>(states[i]), set_at[i], until[i]});
  }
  return true;
}

// Columns from user_id: user_id, device_id, session_id, version, platform,
// last_*_ms (3), *_activity (3), closed, gateway.
constexpr char kDeviceReadColumns[] =
    "user_id, device_id, session_id, version, platform, last_inferred_ms, last_app_ms, "
    "last_manual_ms, inferred_activity, app_activity, manual_activity, closed, gateway";

bool ReadDevice(Row& r, DeviceRecord* d) {
  d->user_id = r.Bytes(0);
  d->device_id = r.Bytes(1);
  d->session_id = r.Unsigned(2);
  d->version = r.Unsigned(3);
  d->platform = As<Platform>(r.Enum(4, 1, 5));
  d->last_signal_ms = {r.Int(5), r.Int(6), r.Int(7)};
  d->activity = {As<Activity>(r.Enum(8, 1, 2)), As<Activity>(r.Enum(9, 1, 2)),
                 As<Activity>(r.Enum(10, 1, 2))};
  d->closed = r.Bool(11);
  d->gone = false;
  d->gateway = r.Bytes(12);
  return r.ok();
}

// Columns: version, at_ms, previous, state, self_state, cause, trace_id,
// last_seen, public_version, public_last_seen (the user id is the one asked
// for).
constexpr char kTransitionReadColumns[] =
    "version, at_ms, previous, state, self_state, cause, trace_id, last_seen, public_version, "
    "public_last_seen";

// Columns: session_id, at_ms, event, platform.
bool ReadDeviceTransition(Row& r, absl::string_view user_id, absl::string_view device_id,
                          DeviceTransition* t) {
  t->user_id = std::string(user_id);
  t->device_id = std::string(device_id);
  t->session_id = r.Unsigned(0);
  t->at_ms = r.Int(1);
  t->event = As<DeviceEvent>(r.Enum(2, 1, static_cast<int>(DeviceEvent::kProbeGivenUp)));
  t->platform = As<Platform>(r.Enum(3, 1, kPlatformCount));
  return r.ok();
}

bool ReadTransition(Row& r, absl::string_view user_id, Transition* t) {
  t->user_id = std::string(user_id);
  t->version = r.Unsigned(0);
  t->at_ms = r.Int(1);
  t->previous = As<State>(r.Enum(2, 1, 4));
  t->state = As<State>(r.Enum(3, 1, 4));
  t->self_state = As<State>(r.Enum(4, 1, 4));
  t->cause = As<Cause>(r.Enum(5, 1, 6));
  t->trace_id = r.Unsigned(6);
  t->last_seen_ms = r.Int(7);
  t->public_version = r.Unsigned(8);
  t->public_last_seen_ms = r.Int(9);
  return r.ok();
}

bool ValidPrefix(absl::string_view p) {
  if (p.empty() || p.size() > 40) return false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    const bool letter = (c >= 'a' && c <= 'z') || c == '_';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// ---- The store ----------------------------------------------------------------------

// One object is the PostgresStore, its Store and its HistoryStore (their
// methods do not share names).
class PostgresStoreImpl final : public PostgresStore, public Store, public HistoryStore {
 public:
  explicit PostgresStoreImpl(const PostgresStoreOptions& o)
      : options_(o),
        pool_(o.connections),
        users_(o.table_prefix + "users"),
        devices_(o.table_prefix + "devices"),
        erasures_(o.table_prefix + "erasures"),
        offsets_(o.table_prefix + "offsets"),
        history_table_(o.table_prefix + "history"),
        device_history_(o.table_prefix + "device_history") {}

  Store* store() override { return this; }
  HistoryStore* history() override { return this; }

  // The schema: every statement on its own (CockroachDB runs schema changes
  // best outside explicit transactions).
  absl::Status CreateTables() {
    const std::string p = options_.table_prefix;
    const std::vector<std::string> ddl = {
        absl::StrCat("CREATE TABLE IF NOT EXISTS ", users_,
                     " (user_id BYTEA NOT NULL PRIMARY KEY, version INT8 NOT NULL, "
                     "state_version INT8 NOT NULL, state INT2 NOT NULL, self_state INT2 NOT NULL, "
                     "last_seen INT8 NOT NULL, published_at INT8 NOT NULL, "
                     "override_ids INT8[] NOT NULL, override_states INT2[] NOT NULL, "
                     "override_set_at INT8[] NOT NULL, override_until INT8[] NOT NULL, "
                     "public_version INT8 NOT NULL, hidden_last_seen INT8 NOT NULL)"),
        // Tables made before the public view had its own columns (rule 8).
        absl::StrCat("ALTER TABLE ", users_,
                     " ADD COLUMN IF NOT EXISTS public_version INT8 NOT NULL DEFAULT 0"),
        absl::StrCat("ALTER TABLE ", users_,
                     " ADD COLUMN IF NOT EXISTS hidden_last_seen INT8 NOT NULL DEFAULT 0"),
        absl::StrCat("CREATE INDEX IF NOT EXISTS ", p, "users_last_seen ON ", users_,
                     " (last_seen)"),
        absl::StrCat("CREATE TABLE IF NOT EXISTS ", devices_,
                     " (user_id BYTEA NOT NULL, device_id BYTEA NOT NULL, state INT2 NOT NULL, "
                     "last_seen INT8 NOT NULL, session_id INT8 NOT NULL, "
                     "precedence INT2 NOT NULL, version INT8 NOT NULL, platform INT2 NOT NULL, "
                     "last_inferred_ms INT8 NOT NULL, last_app_ms INT8 NOT NULL, "
                     "last_manual_ms INT8 NOT NULL, inferred_activity INT2 NOT NULL, "
                     "app_activity INT2 NOT NULL, manual_activity INT2 NOT NULL, "
                     "closed BOOL NOT NULL, gateway BYTEA NOT NULL, "
                     "PRIMARY KEY (user_id, device_id))"),
        absl::StrCat("CREATE TABLE IF NOT EXISTS ", erasures_,
                     " (user_id BYTEA NOT NULL PRIMARY KEY, floor_version INT8 NOT NULL)"),
        absl::StrCat("CREATE TABLE IF NOT EXISTS ", offsets_,
                     " (bus_partition INT8 NOT NULL PRIMARY KEY, next_offset INT8 NOT NULL)"),
        absl::StrCat("CREATE TABLE IF NOT EXISTS ", history_table_,
                     " (user_id BYTEA NOT NULL, version INT8 NOT NULL, at_ms INT8 NOT NULL, "
                     "previous INT2 NOT NULL, state INT2 NOT NULL, self_state INT2 NOT NULL, "
                     "cause INT2 NOT NULL, trace_id INT8 NOT NULL, last_seen INT8 NOT NULL, "
                     "public_version INT8 NOT NULL, public_last_seen INT8 NOT NULL, "
                     "PRIMARY KEY (user_id, version))"),
        absl::StrCat("ALTER TABLE ", history_table_,
                     " ADD COLUMN IF NOT EXISTS public_version INT8 NOT NULL DEFAULT 0"),
        absl::StrCat("ALTER TABLE ", history_table_,
                     " ADD COLUMN IF NOT EXISTS public_last_seen INT8 NOT NULL DEFAULT 0"),
        absl::StrCat("CREATE INDEX IF NOT EXISTS ", p, "history_window ON ", history_table_,
                     " (user_id, at_ms, version)"),
        absl::StrCat("CREATE INDEX IF NOT EXISTS ", p, "history_at ON ", history_table_,
                     " (at_ms)"),
        // The per-device audit (docs/design.md section 4); seq keeps the order
        // of transitions within one millisecond.
        absl::StrCat("CREATE TABLE IF NOT EXISTS ", device_history_,
                     " (user_id BYTEA NOT NULL, device_id BYTEA NOT NULL, "
                     "session_id INT8 NOT NULL, at_ms INT8 NOT NULL, event INT2 NOT NULL, "
                     "platform INT2 NOT NULL, seq BIGSERIAL NOT NULL, "
                     "PRIMARY KEY (user_id, device_id, session_id, at_ms, event))"),
        absl::StrCat("CREATE INDEX IF NOT EXISTS ", p, "device_history_window ON ",
                     device_history_, " (user_id, device_id, at_ms, seq)"),
        absl::StrCat("CREATE INDEX IF NOT EXISTS ", p, "device_history_at ON ", device_history_,
                     " (at_ms)"),
    };
    for (const std::string& sql : ddl) {
      auto create = [&](PgConnection& c) { return Exec(c, sql, Params()).status(); };
      absl::Status st = Retrying(create);
      // Two stores creating the same tables at once can collide in the
      // catalog; a second attempt finds them there.
      if (!st.ok()) st = Retrying(create);
      if (!st.ok()) return absl::InternalError(absl::StrCat("creating the schema: ", st.message()));
    }
    return absl::OkStatus();
  }

  absl::Status Check() {
    return Retrying([](PgConnection&) { return absl::OkStatus(); });
  }

  // ---- Store ----

  absl::Status Write(const StoreBatch& batch) override {
    if (batch.empty()) return absl::OkStatus();
    auto statements = WriteStatements(batch);
    if (!statements.ok()) return statements.status();
    return Retrying([&](PgConnection& c) { return RunPipelined(c, *statements); });
  }

  absl::StatusOr<std::vector<Statement>> WriteStatements(const StoreBatch& batch) const {
    // Erasures: the highest floor per user.
    std::map<std::string, uint64_t> floors;
    for (const StoreBatch::Erasure& e : batch.erasures) {
      uint64_t& f = floors[e.user_id];
      f = std::max(f, e.floor);
      if (e.floor >= kMaxInt8) return absl::InvalidArgumentError("erasure floor >= 2^63");
    }
    // Records: the greatest version per key (the first of equal ones), so
    // that no statement touches a row twice.
    std::map<std::string, const UserRecord*> users;
    for (const UserRecord& u : batch.users) {
      if (u.version >= kMaxInt8 || u.state_version >= kMaxInt8 || u.public_version >= kMaxInt8) {
        return absl::InvalidArgumentError("user record version >= 2^63");
      }
      auto [it, inserted] = users.try_emplace(u.user_id, &u);
      if (!inserted && u.version > it->second->version) it->second = &u;
    }
    std::map<std::pair<std::string, std::string>, const DeviceRecord*> devices;
    for (const DeviceRecord& d : batch.devices) {
      if (d.version >= kMaxInt8) return absl::InvalidArgumentError("device record version >= 2^63");
      auto [it, inserted] = devices.try_emplace({d.user_id, d.device_id}, &d);
      if (!inserted && d.version > it->second->version) it->second = &d;
    }
    std::map<uint32_t, uint64_t> offsets;
    for (const CommittedOffset& o : batch.offsets) {
      if (o.offset >= kMaxInt8) return absl::InvalidArgumentError("offset >= 2^63");
      uint64_t& off = offsets[o.partition];
      off = std::max(off, o.offset);
    }

    std::vector<Statement> out;
    const size_t chunk = static_cast<size_t>(options_.rows_per_statement);
    // Runs `add_row` over `items` in chunks, one statement each: head,
    // rows joined by `sep`, tail.
    auto chunked = [&](const auto& items, absl::string_view head, absl::string_view sep,
                       absl::string_view tail, const auto& add_row) {
      auto it = items.begin();
      while (it != items.end()) {
        Statement s;
        std::vector<std::string> rows;
        for (size_t n = 0; n < chunk && it != items.end(); ++n, ++it) {
          rows.push_back(add_row(*it, &s.params));
        }
        s.sql = absl::StrCat(head, absl::StrJoin(rows, sep), tail);
        out.push_back(std::move(s));
      }
    };

    chunked(floors, absl::StrCat("INSERT INTO ", erasures_, " AS t (user_id, floor_version) VALUES "),
            ",",
            " ON CONFLICT (user_id) DO UPDATE SET floor_version = excluded.floor_version "
            "WHERE excluded.floor_version > t.floor_version",
            [](const auto& e, Params* p) {
              return absl::StrCat("(", p->Bytes(e.first), ",",
                                  p->Int(static_cast<int64_t>(e.second)), ")");
            });
    for (const std::string& table : {users_, devices_}) {
      chunked(floors, absl::StrCat("DELETE FROM ", table, " WHERE user_id IN ("), ",", ")",
              [](const auto& e, Params* p) { return p->Bytes(e.first); });
    }

    // The floor join: a row below its user's floor is not inserted at all.
    const std::string floor_join =
        absl::StrCat(" LEFT JOIN ", erasures_,
                     " AS e ON e.user_id = v.user_id "
                     "WHERE e.user_id IS NULL OR v.version >= e.floor_version ");
    std::vector<const UserRecord*> user_rows;
    for (const auto& [id, u] : users) user_rows.push_back(u);
    chunked(user_rows,
            absl::StrCat("INSERT INTO ", users_, " AS t (", kUserColumns, ") SELECT v.* FROM (VALUES "),
            ",",
            absl::StrCat(") AS v (", kUserColumns, ")", floor_join,
                         "ON CONFLICT (user_id) DO UPDATE SET version = excluded.version, "
                         "state_version = excluded.state_version, state = excluded.state, "
                         "self_state = excluded.self_state, last_seen = excluded.last_seen, "
                         "published_at = excluded.published_at, "
                         "public_version = excluded.public_version, "
                         "hidden_last_seen = excluded.hidden_last_seen, "
                         "override_ids = excluded.override_ids, "
                         "override_states = excluded.override_states, "
                         "override_set_at = excluded.override_set_at, "
                         "override_until = excluded.override_until "
                         "WHERE excluded.version > t.version"),
            [](const UserRecord* u, Params* p) { return UserRow(*u, p); });

    std::vector<const DeviceRecord*> device_rows, gone_rows;
    for (const auto& [key, d] : devices) (d->gone ? gone_rows : device_rows).push_back(d);
    chunked(device_rows,
            absl::StrCat("INSERT INTO ", devices_, " AS t (", kDeviceColumns,
                         ") SELECT v.* FROM (VALUES "),
            ",",
            absl::StrCat(") AS v (", kDeviceColumns, ")", floor_join,
                         "ON CONFLICT (user_id, device_id) DO UPDATE SET state = excluded.state, "
                         "last_seen = excluded.last_seen, session_id = excluded.session_id, "
                         "precedence = excluded.precedence, version = excluded.version, "
                         "platform = excluded.platform, "
                         "last_inferred_ms = excluded.last_inferred_ms, "
                         "last_app_ms = excluded.last_app_ms, "
                         "last_manual_ms = excluded.last_manual_ms, "
                         "inferred_activity = excluded.inferred_activity, "
                         "app_activity = excluded.app_activity, "
                         "manual_activity = excluded.manual_activity, closed = excluded.closed, "
                         "gateway = excluded.gateway "
                         "WHERE excluded.version > t.version"),
            [](const DeviceRecord* d, Params* p) { return DeviceRow(*d, p); });
    // A gone device is deleted when its version is greater than the row's
    // (a row below a floor cannot exist: the erasure deleted it).
    chunked(gone_rows, absl::StrCat("DELETE FROM ", devices_, " WHERE "), " OR ", "",
            [](const DeviceRecord* d, Params* p) {
              return absl::StrCat("(user_id = ", p->Bytes(d->user_id), " AND device_id = ",
                                  p->Bytes(d->device_id), " AND version < ",
                                  p->Int(static_cast<int64_t>(d->version)), ")");
            });

    chunked(offsets, absl::StrCat("INSERT INTO ", offsets_, " AS t (bus_partition, next_offset) VALUES "),
            ",",
            " ON CONFLICT (bus_partition) DO UPDATE SET next_offset = excluded.next_offset "
            "WHERE excluded.next_offset > t.next_offset",
            [](const auto& o, Params* p) {
              return absl::StrCat("(", p->Int(o.first), ",", p->Int(static_cast<int64_t>(o.second)),
                                  ")");
            });
    return out;
  }

  absl::Status Load(StoreVisitor* visitor) override {
    if (visitor == nullptr) return absl::InvalidArgumentError("visitor is null");
    bool visited = false;  // a retry would visit records twice
    return Retrying(
        [&](PgConnection& c) -> absl::Status {
          absl::Status st = Exec(c, "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", Params()).status();
          if (st.ok()) {
            st = Stream(c, absl::StrCat("SELECT ", kUserColumns, " FROM ", users_),
                        [&](Row& r) {
                          UserRecord u;
                          if (!ReadUser(r, &u)) return false;
                          visited = true;
                          visitor->OnUser(u);
                          return true;
                        });
          }
          if (st.ok()) {
            st = Stream(c, absl::StrCat("SELECT ", kDeviceReadColumns, " FROM ", devices_),
                        [&](Row& r) {
                          DeviceRecord d;
                          if (!ReadDevice(r, &d)) return false;
                          visited = true;
                          visitor->OnDevice(d);
                          return true;
                        });
          }
          if (st.ok()) {
            st = Stream(c, absl::StrCat("SELECT bus_partition, next_offset FROM ", offsets_),
                        [&](Row& r) {
                          const int64_t p = r.Int(0);
                          const uint64_t off = r.Unsigned(1);
                          if (!r.ok() || p < 0 || p > 0xffffffffLL) return false;
                          visited = true;
                          visitor->OnOffset(CommittedOffset{static_cast<uint32_t>(p), off});
                          return true;
                        });
          }
          if (st.ok()) st = Exec(c, "COMMIT", Params()).status();
          if (!st.ok()) Rollback(c);
          return st;
        },
        [&] { return !visited; });
  }

  absl::StatusOr<size_t> SweepSeenBefore(int64_t cutoff_ms) override {
    constexpr int kUsersPerTransaction = 1000;
    size_t removed = 0;
    while (true) {
      std::vector<std::string> ids;
      absl::Status st = Retrying([&](PgConnection& c) -> absl::Status {
        ids.clear();
        Params p;
        const std::string cutoff = p.Int(cutoff_ms);
        absl::Status s = Exec(c, "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE", Params()).status();
        absl::StatusOr<Result> r;
        if (s.ok()) {
          r = Exec(c,
                   absl::StrCat("DELETE FROM ", users_, " WHERE user_id IN (SELECT u.user_id FROM ",
                                users_, " AS u WHERE u.last_seen < ", cutoff,
                                " AND NOT EXISTS (SELECT 1 FROM ", devices_,
                                " AS d WHERE d.user_id = u.user_id AND (NOT d.closed OR "
                                "d.last_seen >= ",
                                cutoff, ")) ORDER BY u.user_id LIMIT ", kUsersPerTransaction,
                                ") RETURNING user_id"),
                   p);
          s = r.status();
        }
        if (s.ok()) {
          for (int i = 0; i < PQntuples(r->get()); ++i) {
            Row row(r->get(), i);
            ids.push_back(row.Bytes(0));
          }
          if (!ids.empty()) {
            Params q;
            std::vector<std::string> in;
            for (const std::string& id : ids) in.push_back(q.Bytes(id));
            s = Exec(c, absl::StrCat("DELETE FROM ", devices_, " WHERE user_id IN (",
                                     absl::StrJoin(in, ","), ")"),
                     q)
                    .status();
          }
        }
        if (s.ok()) s = Exec(c, "COMMIT", Params()).status();
        if (!s.ok()) Rollback(c);
        return s;
      });
      if (!st.ok()) return st;
      removed += ids.size();
      if (ids.size() < static_cast<size_t>(kUsersPerTransaction)) break;
    }
    swept_.fetch_add(removed, std::memory_order_relaxed);
    return removed;
  }

  // ---- HistoryStore ----

  absl::Status Append(absl::Span<const Transition> transitions) override {
    std::map<std::pair<std::string, uint64_t>, const Transition*> unique;
    for (const Transition& t : transitions) {
      if (t.version >= kMaxInt8 || t.public_version >= kMaxInt8) {
        return absl::InvalidArgumentError("transition version >= 2^63");
      }
      unique.try_emplace({t.user_id, t.version}, &t);
    }
    if (unique.empty()) return absl::OkStatus();
    std::vector<Statement> statements;
    auto it = unique.begin();
    while (it != unique.end()) {
      Statement s;
      std::vector<std::string> rows;
      for (int n = 0; n < options_.rows_per_statement && it != unique.end(); ++n, ++it) {
        rows.push_back(HistoryRow(*it->second, &s.params));
      }
      s.sql = absl::StrCat("INSERT INTO ", history_table_, " (", kHistoryColumns, ") VALUES ",
                           absl::StrJoin(rows, ","), " ON CONFLICT (user_id, version) DO NOTHING");
      statements.push_back(std::move(s));
    }
    return Retrying([&](PgConnection& c) { return RunPipelined(c, statements); });
  }

  absl::StatusOr<std::vector<Transition>> Query(absl::string_view user_id, int64_t from_ms,
                                                int64_t to_ms) override {
    return SelectRows<Transition>(
        [&](Params* p) {
          return absl::StrCat("SELECT ", kTransitionReadColumns, " FROM ", history_table_,
                              " WHERE user_id = ", p->Bytes(user_id), " AND at_ms >= ",
                              p->Int(from_ms), " AND at_ms <= ", p->Int(to_ms),
                              " ORDER BY at_ms, version");
        },
        [&](Row& row, Transition* t) { return ReadTransition(row, user_id, t); });
  }

  // Runs the SELECT that `build` writes (retrying) and decodes each row with
  // `read`; a row that does not decode is counted and left out.
  template <typename T, typename Build, typename Read>
  absl::StatusOr<std::vector<T>> SelectRows(Build build, Read read) {
    std::vector<T> out;
    absl::Status st = Retrying([&](PgConnection& c) -> absl::Status {
      out.clear();
      Params p;
      const std::string sql = build(&p);
      auto r = Exec(c, sql, p);
      if (!r.ok()) return r.status();
      for (int i = 0; i < PQntuples(r->get()); ++i) {
        Row row(r->get(), i);
        T t;
        if (read(row, &t)) {
          out.push_back(std::move(t));
        } else {
          records_dropped_.fetch_add(1, std::memory_order_relaxed);
        }
      }
      return absl::OkStatus();
    });
    if (!st.ok()) return st;
    return out;
  }

  absl::StatusOr<std::optional<Transition>> LastBefore(absl::string_view user_id,
                                                       int64_t before_ms) override {
    std::optional<Transition> out;
    absl::Status st = Retrying([&](PgConnection& c) -> absl::Status {
      out.reset();
      Params p;
      const std::string sql = absl::StrCat(
          "SELECT ", kTransitionReadColumns, " FROM ", history_table_, " WHERE user_id = ",
          p.Bytes(user_id), " AND at_ms < ", p.Int(before_ms),
          " ORDER BY at_ms DESC, version DESC LIMIT 1");
      auto r = Exec(c, sql, p);
      if (!r.ok()) return r.status();
      if (PQntuples(r->get()) == 1) {
        Row row(r->get(), 0);
        Transition t;
        if (!ReadTransition(row, user_id, &t)) {
          records_dropped_.fetch_add(1, std::memory_order_relaxed);
          return absl::InternalError("history: a row that does not decode");
        }
        out = std::move(t);
      }
      return absl::OkStatus();
    });
    if (!st.ok()) return st;
    return out;
  }

  absl::Status AppendDevices(absl::Span<const DeviceTransition> transitions) override {
    if (transitions.empty()) return absl::OkStatus();
    std::vector<Statement> statements;
    // In the order given (seq keeps it); a key twice in one statement would
    // be an error, so repeats within the call are left out first.
    std::set<std::tuple<absl::string_view, absl::string_view, uint64_t, int64_t, DeviceEvent>> seen;
    size_t i = 0;
    while (i < transitions.size()) {
      Statement s;
      std::vector<std::string> rows;
      for (; i < transitions.size() && static_cast<int>(rows.size()) < options_.rows_per_statement;
           ++i) {
        const DeviceTransition& t = transitions[i];
        if (!seen.emplace(t.user_id, t.device_id, t.session_id, t.at_ms, t.event).second) continue;
        rows.push_back(DeviceHistoryRow(t, &s.params));
      }
      if (rows.empty()) break;
      s.sql = absl::StrCat("INSERT INTO ", device_history_, " (", kDeviceHistoryColumns,
                           ") VALUES ", absl::StrJoin(rows, ","),
                           " ON CONFLICT (user_id, device_id, session_id, at_ms, event) DO NOTHING");
      statements.push_back(std::move(s));
    }
    return Retrying([&](PgConnection& c) { return RunPipelined(c, statements); });
  }

  absl::StatusOr<std::vector<DeviceTransition>> QueryDevice(absl::string_view user_id,
                                                            absl::string_view device_id,
                                                            int64_t from_ms,
                                                            int64_t to_ms) override {
    return SelectRows<DeviceTransition>(
        [&](Params* p) {
          return absl::StrCat("SELECT session_id, at_ms, event, platform FROM ", device_history_,
                              " WHERE user_id = ", p->Bytes(user_id), " AND device_id = ",
                              p->Bytes(device_id), " AND at_ms >= ", p->Int(from_ms),
                              " AND at_ms <= ", p->Int(to_ms), " ORDER BY at_ms, seq");
        },
        [&](Row& row, DeviceTransition* t) {
          return ReadDeviceTransition(row, user_id, device_id, t);
        });
  }

  // The user's transitions and its devices', in one transaction.
  absl::Status Erase(absl::string_view user_id) override {
    return Retrying([&](PgConnection& c) {
      std::vector<Statement> statements;
      for (const std::string* table : {&history_table_, &device_history_}) {
        Statement s;
        s.sql = absl::StrCat("DELETE FROM ", *table, " WHERE user_id = ", s.params.Bytes(user_id));
        statements.push_back(std::move(s));
      }
      return RunPipelined(c, statements);
    });
  }

  // In transactions of up to 10000 rows (CockroachDB advises small deletes;
  // PostgreSQL has no DELETE ... LIMIT, hence the subquery), each table's.
  absl::Status DropBefore(int64_t before_ms) override {
    if (auto st = DropRowsBefore(history_table_, "user_id, version", before_ms); !st.ok()) {
      return st;
    }
    return DropRowsBefore(device_history_, "user_id, device_id, session_id, at_ms, event",
                          before_ms);
  }

  absl::Status DropRowsBefore(const std::string& table, absl::string_view key, int64_t before_ms) {
    constexpr int kRows = 10000;
    while (true) {
      int deleted = 0;
      absl::Status st = Retrying([&](PgConnection& c) -> absl::Status {
        Params p;
        const std::string sql =
            absl::StrCat("DELETE FROM ", table, " WHERE (", key, ") IN (SELECT ", key, " FROM ",
                         table, " WHERE at_ms < ", p.Int(before_ms), " LIMIT ", kRows, ")");
        auto r = Exec(c, sql, p);
        if (!r.ok()) return r.status();
        if (!absl::SimpleAtoi(PQcmdTuples(r->get()), &deleted)) deleted = 0;
        return absl::OkStatus();
      });
      if (!st.ok()) return st;
      if (deleted < kRows) return absl::OkStatus();
    }
  }

  std::string RenderMetrics() const override {
    std::string out;
    auto counter = [&](absl::string_view name, absl::string_view help, uint64_t v) {
      Metric(&out, name, "counter", help, static_cast<double>(v));
    };
    counter("presence_postgres_calls_total", "Calls to the server (a Write, a Query, ...).",
            calls_.load());
    counter("presence_postgres_call_errors_total", "Calls that failed, after their retries.",
            call_errors_.load());
    counter("presence_postgres_retries_total",
            "Transactions run again after a serialization failure or a deadlock.",
            retries_.load());
    counter("presence_postgres_connects_total", "Connections made (the first ones included).",
            connects_.load());
    counter("presence_postgres_connection_errors_total", "Connections dropped after an error.",
            connection_errors_.load());
    counter("presence_postgres_round_trips_total", "Pipelines and statements sent and answered.",
            round_trips_.load());
    counter("presence_postgres_records_dropped_total", "Rows that did not decode (skipped).",
            records_dropped_.load());
    counter("presence_postgres_users_swept_total", "Users removed by SweepSeenBefore.",
            swept_.load());
    return out;
  }

 private:
  // Runs `attempt` on a leased connection, connecting first when needed. It
  // is run again, at once, when the connection broke and had been made by an
  // earlier call (a server restart while it sat idle); and, after a short
  // backoff, on a serialization failure or a deadlock, up to max_retries
  // times. `may_retry` can veto any retry.
  absl::Status Retrying(const std::function<absl::Status(PgConnection&)>& attempt,
                        const std::function<bool()>& may_retry = nullptr) {
    calls_.fetch_add(1, std::memory_order_relaxed);
    auto conn = pool_.Acquire();
    bool fresh_retry_used = false;
    std::minstd_rand jitter(static_cast<uint32_t>(
        std::chrono::steady_clock::now().time_since_epoch().count()));
    for (int tries = 0;; ++tries) {
      const bool was_connected = conn->conn != nullptr;
      conn->sqlstate.clear();
      absl::Status st = Connect(*conn);
      if (st.ok()) st = attempt(*conn);
      if (st.ok()) return st;
      const bool allowed = may_retry == nullptr || may_retry();
      if (allowed && was_connected && conn->conn == nullptr && !fresh_retry_used) {
        fresh_retry_used = true;
        continue;
      }
      if (allowed && Retryable(conn->sqlstate) && tries < options_.max_retries) {
        retries_.fetch_add(1, std::memory_order_relaxed);
        const int64_t us = std::min<int64_t>(int64_t{500} << std::min(tries, 8), 100000);
        std::this_thread::sleep_for(std::chrono::microseconds(us + jitter() % (us + 1)));
        continue;
      }
      call_errors_.fetch_add(1, std::memory_order_relaxed);
      return st;
    }
  }

  absl::Status Connect(PgConnection& c) {
    if (c.conn != nullptr) return absl::OkStatus();
    PGconn* conn = PQconnectdb(options_.conninfo.c_str());
    if (conn == nullptr) return absl::ResourceExhaustedError("postgres: cannot allocate a connection");
    if (PQstatus(conn) != CONNECTION_OK) {
      std::string why = PQerrorMessage(conn);
      PQfinish(conn);
      while (!why.empty() && why.back() == '\n') why.pop_back();
      return absl::UnavailableError(absl::StrCat("postgres: ", why));
    }
    // Server notices (a table that already exists, a shutdown under way)
    // are not the host's business: libpq would print them to stderr.
    PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);
    c.conn = conn;
    connects_.fetch_add(1, std::memory_order_relaxed);
    return absl::OkStatus();
  }

  // The status of a failed result (or of a broken connection, which is then
  // dropped).
  absl::Status Failure(PgConnection& c, const PGresult* r, absl::string_view what) {
    std::string message = r != nullptr ? PQresultErrorMessage(r) : "";
    if (message.empty() && c.conn != nullptr) message = PQerrorMessage(c.conn);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    c.sqlstate = state != nullptr ? state : "";
    if (c.conn == nullptr || PQstatus(c.conn) == CONNECTION_BAD) {
      c.Drop();
      connection_errors_.fetch_add(1, std::memory_order_relaxed);
      return absl::UnavailableError(absl::StrCat("postgres: ", what, ": ", message));
    }
    if (c.sqlstate.rfind("22", 0) == 0) {  // data exception: a value out of range
      return absl::InvalidArgumentError(absl::StrCat("postgres: ", what, ": ", message));
    }
    if (c.sqlstate.rfind("08", 0) == 0 || c.sqlstate.rfind("57P", 0) == 0 || Retryable(c.sqlstate)) {
      return absl::UnavailableError(absl::StrCat("postgres: ", what, ": ", message));
    }
    return absl::InternalError(absl::StrCat("postgres: ", what, ": ", message));
  }

  absl::StatusOr<Result> Exec(PgConnection& c, const std::string& sql, const Params& p) {
    const std::vector<const char*> values = p.values();
    const std::vector<int> lengths = p.lengths();
    round_trips_.fetch_add(1, std::memory_order_relaxed);
    Result r(PQexecParams(c.conn, sql.c_str(), p.size(), nullptr, values.data(), lengths.data(),
                          p.formats().data(), 0));
    const ExecStatusType s = r != nullptr ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) return Failure(c, r.get(), FirstWords(sql));
    return r;
  }

  // Runs a query in single-row mode, calling `row` for each (false: the row
  // did not decode; it is skipped and counted).
  absl::Status Stream(PgConnection& c, const std::string& sql,
                      const std::function<bool(Row&)>& row) {
    round_trips_.fetch_add(1, std::memory_order_relaxed);
    if (PQsendQueryParams(c.conn, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) != 1) {
      return Failure(c, nullptr, FirstWords(sql));
    }
    PQsetSingleRowMode(c.conn);
    absl::Status st;
    while (PGresult* raw = PQgetResult(c.conn)) {
      Result r(raw);
      const ExecStatusType s = PQresultStatus(raw);
      if (s == PGRES_SINGLE_TUPLE) {
        if (!st.ok()) continue;
        Row one(raw, 0);
        if (!row(one)) records_dropped_.fetch_add(1, std::memory_order_relaxed);
      } else if (s != PGRES_TUPLES_OK && st.ok()) {
        st = Failure(c, raw, FirstWords(sql));
        if (c.conn == nullptr) return st;
      }
    }
    if (st.ok() && PQstatus(c.conn) == CONNECTION_BAD) return Failure(c, nullptr, FirstWords(sql));
    return st;
  }

  // BEGIN, `statements`, COMMIT, in one transaction and one round trip
  // (libpq pipeline mode).
  absl::Status RunPipelined(PgConnection& c, const std::vector<Statement>& statements) {
    if (PQenterPipelineMode(c.conn) != 1) return Failure(c, nullptr, "pipeline mode");
    round_trips_.fetch_add(1, std::memory_order_relaxed);
    const Params none;
    auto send = [&](const std::string& sql, const Params& p) {
      const std::vector<const char*> values = p.values();
      const std::vector<int> lengths = p.lengths();
      return PQsendQueryParams(c.conn, sql.c_str(), p.size(), nullptr, values.data(),
                               lengths.data(), p.formats().data(), 0) == 1;
    };
    static const std::string kBegin = "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE", kCommit = "COMMIT";
    bool sent = send(kBegin, none);
    for (const Statement& s : statements) sent = sent && send(s.sql, s.params);
    sent = sent && send(kCommit, none) && PQpipelineSync(c.conn) == 1;
    if (!sent) {
      absl::Status st = Failure(c, nullptr, "sending a pipeline");
      c.Drop();  // half a pipeline may be queued
      return st;
    }

    absl::Status st;
    const size_t queries = statements.size() + 2;
    for (size_t q = 0; q < queries; ++q) {
      while (PGresult* raw = PQgetResult(c.conn)) {
        Result r(raw);
        const ExecStatusType s = PQresultStatus(raw);
        if (s == PGRES_FATAL_ERROR && st.ok()) {
          const std::string& sql = q == 0 ? kBegin : q == queries - 1 ? kCommit : statements[q - 1].sql;
          st = Failure(c, raw, FirstWords(sql));
        }
        if (c.conn == nullptr) return st;
      }
      if (PQstatus(c.conn) == CONNECTION_BAD) {
        return st.ok() ? Failure(c, nullptr, "reading a pipeline") : st;
      }
    }
    Result sync(PQgetResult(c.conn));
    if (sync == nullptr || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC ||
        PQexitPipelineMode(c.conn) != 1) {
      absl::Status broken = Failure(c, nullptr, "ending a pipeline");
      c.Drop();
      return st.ok() ? broken : st;
    }
    // A failed statement leaves the transaction open and aborted.
    if (!st.ok()) Rollback(c);
    return st;
  }

  void Rollback(PgConnection& c) {
    if (c.conn == nullptr) return;
    const PGTransactionStatusType t = PQtransactionStatus(c.conn);
    if (t == PQTRANS_INTRANS || t == PQTRANS_INERROR) {
      Result r(PQexec(c.conn, "ROLLBACK"));
      if (r == nullptr || PQresultStatus(r.get()) != PGRES_COMMAND_OK) c.Drop();
    } else if (t != PQTRANS_IDLE) {
      c.Drop();
    }
  }

  // For error messages: the statement's first words.
  static std::string FirstWords(absl::string_view sql) {
    return std::string(sql.substr(0, std::min<size_t>(sql.size(), 40)));
  }

  const PostgresStoreOptions options_;
  adapters::ConnectionPool<PgConnection> pool_;
  const std::string users_, devices_, erasures_, offsets_, history_table_, device_history_;
  std::atomic<uint64_t> calls_{0}, call_errors_{0}, retries_{0}, connects_{0},
      connection_errors_{0}, round_trips_{0}, records_dropped_{0}, swept_{0};
};

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresStore>> PostgresStore::Open(
    const PostgresStoreOptions& options) {
  if (!ValidPrefix(options.table_prefix)) {
    return absl::InvalidArgumentError("table_prefix must match [a-z_][a-z0-9_]*, up to 40 characters");
  }
  if (options.connections < 1) return absl::InvalidArgumentError("connections must be > 0");
  if (options.max_retries < 0) return absl::InvalidArgumentError("max_retries must be >= 0");
  if (options.rows_per_statement < 1) {
    return absl::InvalidArgumentError("rows_per_statement must be > 0");
  }
  auto store = std::make_unique<PostgresStoreImpl>(options);
  if (auto st = store->Check(); !st.ok()) return st;
  if (options.create_tables) {
    if (auto st = store->CreateTables(); !st.ok()) return st;
  }
  return std::unique_ptr<PostgresStore>(std::move(store));
}

}  // namespace presence
