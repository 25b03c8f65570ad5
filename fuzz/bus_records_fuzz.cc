// Fuzz target: records that other processes put on the bus, as the scale-out
// consumers read them (issue 10). An engine that owns half the partitions
// (Engine::ConsumeBus), a RemoteFeed feeding a fan-out with a watcher, and a
// RegionMirror reading another region's bus all take the same records. They
// must answer a status, never crash, and never merge or apply what another
// partition or the local region sent.
//
// Input: records, each [kind][key length][key][payload length, 2 bytes][payload].
// kind % 7: 0 raw signal record, 1 raw change record, 2 raw record on the
// region's inbound bus, 3 a valid signal, change and mirrored change for the
// user `key`, with a payload length divisible by 3 a gateway's erase command
// for it, with one divisible by 5 a drain or bulk revoke of its partition,
// and with an odd one a mirrored erasure after it (so the fuzzer starts from
// well-formed bytes, then mutates), 4 raw override command, 5 raw erase
// command, 6 raw partition command.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "presence/bus.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/fanout.h"
#include "presence/region.h"
#include "presence/remote_feed.h"
#include "presence/store.h"
#include "presence/wire.h"

namespace {

constexpr uint32_t kPartitions = 4;

// Records of a mirror in region "origin", as it would publish them: the change
// `e`, or a tombstone for its user.
std::string MirroredBytes(presence::Clock* clock, const presence::ChangeEvent& e,
                          bool erase = false) {
  auto outbound = presence::NewInProcessBus(1);
  presence::RegionMirrorOptions o;
  o.region_id = "origin";
  o.clock = clock;
  o.outbound = outbound.get();
  auto mirror = presence::RegionMirror::Create(o);
  if (!mirror.ok()) return {};
  if (!(erase ? (*mirror)->Erase(e.user_id) : (*mirror)->Mirror({&e, 1})).ok()) return {};
  auto recs = outbound->Read(0, 0, 1);
  return recs.ok() && !recs->empty() ? (*recs)[0].payload : std::string();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  presence::ManualClock clock(1'000'000);
  auto bus = presence::NewInProcessBus(kPartitions);
  auto remote_region = presence::NewInProcessBus(2);
  auto own_region = presence::NewInProcessBus(2);
  auto store = presence::NewMemoryStore();

  size_t i = 0;
  std::vector<std::string> keys;
  while (i + 4 <= size) {
    const uint8_t kind = data[i] % 7;
    const size_t key_len = data[i + 1];
    i += 2;
    if (i + key_len + 2 > size) break;
    std::string key(reinterpret_cast<const char*>(data + i), key_len);
    i += key_len;
    const size_t len = std::min<size_t>(data[i] | (size_t{data[i + 1]} << 8), size - i - 2);
    i += 2;
    const std::string payload(reinterpret_cast<const char*>(data + i), len);
    i += len;
    keys.push_back(key);
    if (kind == 0) (void)bus->Publish(presence::BusRecordType::kSignal, key, payload);
    if (kind == 1) (void)bus->Publish(presence::BusRecordType::kChange, key, payload);
    if (kind == 2) (void)remote_region->Publish(presence::BusRecordType::kChange, key, payload);
    if (kind == 4) (void)bus->Publish(presence::BusRecordType::kOverride, key, payload);
    if (kind == 5) (void)bus->Publish(presence::BusRecordType::kErase, key, payload);
    if (kind == 6) (void)bus->Publish(presence::BusRecordType::kCommand, key, payload);
    if (kind == 3) {
      presence::Signal s;
      s.user_id = key;
      s.device_id = "d";
      s.session_id = 1;
      s.timestamp_ms = clock.NowMs();
      s.gateway = "gw";  // what the seeded drains name
      (void)bus->Publish(presence::BusRecordType::kSignal, key, presence::EncodeSignal(s));
      presence::ChangeEvent e;
      e.user_id = key;
      e.state = presence::State::kOnline;
      e.self_state = presence::State::kOnline;
      e.version = 1 + len;
      e.cause = presence::Cause::kSignal;
      (void)bus->Publish(presence::BusRecordType::kChange, key, presence::EncodeChangeEvent(e, true));
      (void)remote_region->Publish(presence::BusRecordType::kChange, key, MirroredBytes(&clock, e));
      if (len % 3 == 0) {  // a gateway's erasure of the user
        (void)bus->Publish(presence::BusRecordType::kErase, key, presence::EncodeEraseCommand(key, "gw"));
      }
      if (len % 5 == 0) {  // an operator's drain (or revoke) of the user's partition
        presence::PartitionCommand c;
        c.action = len % 2 ? presence::PartitionCommand::Action::kDrain
                           : presence::PartitionCommand::Action::kRevokeOverrides;
        c.drained_gateway = "gw";
        c.set_to_ms = clock.NowMs();
        c.issued_at_ms = clock.NowMs();
        c.partition = presence::PartitionFor(key, kPartitions);
        (void)bus->Publish(presence::BusRecordType::kCommand, presence::PartitionKey(c.partition, kPartitions),
                           presence::EncodePartitionCommand(c));
      }
      if (len % 2 == 1) {
        clock.Advance(1);  // after the change, so the tombstone wins
        (void)remote_region->Publish(presence::BusRecordType::kChange, key,
                                     MirroredBytes(&clock, e, /*erase=*/true));
      }
    }
  }

  // An engine owning partitions 0 and 1 of the bus.
  presence::Options o;
  o.clock = &clock;
  o.store = store.get();
  o.bus = bus.get();
  o.owns_all_partitions = false;
  auto engine = presence::Engine::Create(o);
  if (!engine.ok()) std::abort();
  if (!(*engine)->AssignPartitions({0, 1}).ok()) std::abort();
  for (int round = 0; round < 4; ++round) {
    auto n = (*engine)->ConsumeBus();
    if (!n.ok()) std::abort();
    if (*n == 0) break;
  }
  clock.Advance(1500);
  (*engine)->Tick();
  for (const std::string& k : keys) {
    const presence::UserPresence p = (*engine)->GetOne(k);
    // What the engine holds is of its own partitions only.
    if (p.known && presence::PartitionFor(k, kPartitions) > 1) std::abort();
  }

  // A fan-out on that engine with a subscriber watching every key, fed the
  // other partitions' change records.
  auto fanout = presence::Fanout::Create(engine->get());
  if (!fanout.ok()) std::abort();
  auto sub = (*fanout)->Subscribe();
  if (!sub.ok()) std::abort();
  std::vector<absl::string_view> watched;
  for (const std::string& k : keys) {
    if (!k.empty() && k.size() <= presence::kMaxUserIdBytes) watched.push_back(k);
  }
  (void)(*fanout)->AddUsers(*sub, watched);
  presence::RemoteFeedOptions fo;
  fo.from_beginning = true;
  auto feed = presence::RemoteFeed::Create(bus.get(), fanout->get(), {0, 1}, fo);
  if (!feed.ok()) std::abort();
  if (!(*feed)->Poll().ok()) std::abort();
  (*engine)->Tick();
  presence::Batch batch;
  while ((*fanout)->Poll(*sub, &batch).value_or(false)) {
  }

  // A region mirror reading the other region's bus.
  presence::RegionMirrorOptions ro;
  ro.region_id = "here";
  ro.clock = &clock;
  ro.outbound = own_region.get();
  ro.inbound = {remote_region.get()};
  auto mirror = presence::RegionMirror::Create(ro);
  if (!mirror.ok()) std::abort();
  auto merged = (*mirror)->Poll();
  if (!merged.ok() && !absl::IsFailedPrecondition(merged.status())) std::abort();
  for (const presence::RegionRecord& r : (*mirror)->View()) {
    if (r.region == "here") std::abort();  // a collision is never merged
    if (r.event.version == 0) std::abort();  // a tombstone is never shown
  }
  return 0;
}
