// File: presence/postgres_store.h
//
// presence::PostgresStore is the SQL adapter (docs/design.md section 5), in its
// own library, presence_postgres (libpq): a presence::Store (device and user
// records, erasure floors, committed bus offsets) and a presence::HistoryStore
// (the audit trail) over PostgreSQL or CockroachDB. It uses only SQL that
// both accept (docs/adapters.md, "PostgreSQL and CockroachDB"): no PL/pgSQL, no
// advisory locks, no PostgreSQL-only types or statements.
//
// Example:
//
//   presence::PostgresStoreOptions po;
//   po.conninfo = "host=db1 dbname=presence user=presence";
//   auto pg = presence::PostgresStore::Open(po);   // creates the tables if needed
//   if (!pg.ok()) return pg.status();
//   presence::Options o;
//   o.store = (*pg)->store();                       // owned by the PostgresStore
//   o.history = (*pg)->history();
//   auto engine = presence::Engine::Create(o);
//
// SCHEMA (P is options.table_prefix; ids are BYTEA, times are ms since the
// epoch in INT8, enums are the numbers of presence.proto in INT2; versions
// and offsets are INT8, so they must stay below 2^63, as the engine's do):
//   P devices   the seed design's presence table, one row per device:
//               (user_id, device_id) PRIMARY KEY, state, last_seen,
//               session_id, precedence, version, platform, last_inferred_ms,
//               last_app_ms, last_manual_ms, inferred_activity, app_activity,
//               manual_activity, closed, gateway. state (OFFLINE when closed,
//               else ONLINE or AWAY from the activity of the highest source
//               that signalled) and precedence (that source; 0: none) are
//               for SQL readers, as of the row's write: liveness needs a
//               clock, and the engine reads the per-source columns.
//   P users     one row per user: user_id PRIMARY KEY, version,
//               state_version, state, self_state, last_seen, published_at,
//               and the override stack as four parallel arrays
//               (override_ids INT8[], override_states INT2[],
//               override_set_at INT8[], override_until INT8[]);
//               index (last_seen) for TTL sweeps
//   P erasures  user_id PRIMARY KEY, floor_version
//   P offsets   bus_partition PRIMARY KEY, next_offset
//   P history   (user_id, version) PRIMARY KEY, at_ms, previous, state,
//               self_state, cause, trace_id, last_seen; index
//               (user_id, at_ms, version) for window queries, index (at_ms)
//               for retention (DropBefore)
//
// WRITES: one Store::Write is one transaction (SERIALIZABLE), sent as one
// pipeline (libpq pipeline mode: one round trip): the erasures, then
// multi-row upserts of users and devices guarded by version
// (INSERT ... ON CONFLICT ... DO UPDATE ... WHERE excluded.version >
// t.version) and by the erasure floors (rows below a floor are filtered out
// by a join), a multi-row delete for gone devices, and the offsets. Within
// one batch, several records of one key count as the one with the greatest
// version. A transaction that fails with a serialization failure or a
// deadlock (SQLSTATE 40001, 40P01: CockroachDB's "restart transaction") is
// retried up to options.max_retries times.
//
// DURABILITY: an OK means the transaction committed: with the server's
// default synchronous_commit it is in the WAL on disk (CockroachDB: on a
// quorum of replicas).
//
// THREAD SAFETY: every method of PostgresStore, Store and HistoryStore may be
// called from any number of threads; each call leases one of
// options.connections connections (and waits for one when all are in use).
//
// FAILURES: a lost connection fails the call with Unavailable (after one
// immediate retry on a new connection, for a connection that broke while
// idle, e.g. across a server restart); a statement error with Internal (or
// InvalidArgument for values out of range). The connection is made again by
// the next call that leases it.
//
// LIFESPAN AND OWNERSHIP: the caller owns the PostgresStore; store() and
// history() are owned by it and valid until it is destroyed.
#ifndef PRESENCE_POSTGRES_STORE_H_
#define PRESENCE_POSTGRES_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "presence/history.h"
#include "presence/store.h"

namespace presence {

struct PostgresStoreOptions {
  // A libpq connection string ("host=... port=... dbname=... user=...") or
  // URI ("postgresql://user@host:26257/presence?sslmode=require").
  std::string conninfo;
  // Table names start with this: [a-z_][a-z0-9_]*, at most 40 characters.
  // Lets several stores (or tests) share a database.
  std::string table_prefix = "presence_";
  // Open creates the tables and indexes that are missing
  // (CREATE ... IF NOT EXISTS). false: they must exist.
  bool create_tables = true;
  // Connections kept open, at most one call on each at a time. Must be > 0.
  int connections = 4;
  // Retries of a transaction that failed with SQLSTATE 40001 or 40P01.
  int max_retries = 8;
  // Rows per multi-row statement (a batch may take several). Must be > 0.
  int rows_per_statement = 500;
};

class PostgresStore {
 public:
  // PostgresStore::Open connects (and creates the tables when asked).
  // Errors: InvalidArgument for bad options, Unavailable when the server
  // cannot be reached, Internal when the schema cannot be created.
  static absl::StatusOr<std::unique_ptr<PostgresStore>> Open(const PostgresStoreOptions& options);

  virtual ~PostgresStore();

  // The Store and HistoryStore over this database. Owned by the PostgresStore.
  virtual Store* store() = 0;
  virtual HistoryStore* history() = 0;

  // PostgresStore::SweepSeenBefore is the presence table's TTL clean-up:
  // it removes the users whose last_seen is before cutoff_ms and who have
  // no device that is open or was seen since, with their device rows (the
  // erasure floors stay). Runs in transactions of up to 1000 users. Returns
  // how many users were removed.
  virtual absl::StatusOr<size_t> SweepSeenBefore(int64_t cutoff_ms) = 0;

  // Prometheus text: transactions, retries, errors, reconnections.
  virtual std::string RenderMetrics() const = 0;

 protected:
  PostgresStore() = default;
};

}  // namespace presence

#endif  // PRESENCE_POSTGRES_STORE_H_
