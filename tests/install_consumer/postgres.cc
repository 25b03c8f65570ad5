// An installed presence::postgres (find_package(presence COMPONENTS
// postgres), or pkg-config presence-postgres) against a real PostgreSQL:
//   consumer_postgres CONNINFO TABLE_PREFIX
#include <string>

#include "adapters.h"
#include "presence/postgres_store.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    return consumer::Fail("consumer_postgres", "usage: consumer_postgres CONNINFO TABLE_PREFIX");
  }
  presence::PostgresStoreOptions o;
  o.conninfo = argv[1];
  o.table_prefix = argv[2];
  auto pg = presence::PostgresStore::Open(o);
  if (!pg.ok()) return consumer::Fail("consumer_postgres", std::string(pg.status().message()));
  if (std::string e = consumer::WriteThrough((*pg)->store()); !e.empty()) {
    return consumer::Fail("consumer_postgres", e);
  }
  std::printf("consumer_postgres: alice written through to PostgreSQL\n");
  return 0;
}
