// An installed presence::redis (find_package(presence COMPONENTS redis), or
// pkg-config presence-redis) against a real redis-server on loopback:
//   consumer_redis PORT KEY_PREFIX
#include <cstdlib>
#include <string>

#include "adapters.h"
#include "presence/redis_store.h"

int main(int argc, char** argv) {
  if (argc != 3) return consumer::Fail("consumer_redis", "usage: consumer_redis PORT KEY_PREFIX");
  presence::RedisStoreOptions o;
  o.port = std::atoi(argv[1]);
  o.key_prefix = argv[2];
  auto store = presence::RedisStore::Open(o);
  if (!store.ok()) return consumer::Fail("consumer_redis", std::string(store.status().message()));
  if (std::string e = consumer::WriteThrough(store->get()); !e.empty()) {
    return consumer::Fail("consumer_redis", e);
  }
  std::printf("consumer_redis: alice written through to Redis on port %d\n", o.port);
  return 0;
}
