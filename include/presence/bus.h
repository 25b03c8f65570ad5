// File: presence/bus.h
//
// presence::Bus is the event-bus seam (docs/design.md sections 5 and 6): normalized
// signals and change events, keyed by user, in partitions with offsets, that
// can be read again from any offset still held (replay). The embedded
// default is NewInProcessBus(); the Kafka adapter lives in its own library.
//
// PARTITIONING: a user's records always go to PartitionFor(user_id, n): an
// xxHash (XXH3, 64 bits) of the user id, then jump consistent hashing onto n
// partitions. The mapping is part of the wire contract and stays the same
// across versions, so every process in a deployment agrees on it.
//
// ORDER: within a partition, records keep the order in which Publish
// returned their offsets; offsets grow by one from 0.
//
// THREAD SAFETY: implementations must accept calls from several threads.
#ifndef PRESENCE_BUS_H_
#define PRESENCE_BUS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "presence/export.h"

namespace presence {

// The kinds of record on the bus. Payloads are encoded protobuf:
// presence.v1.Signal, presence.v1.ChangeEvent, presence.v1.OverrideCommand
// (an override call that a gateway publishes for the user's owner) and
// presence.v1.EraseCommand (an erasure, likewise) and
// presence.v1.PartitionCommand (an operator's action on every user of one
// partition: a gateway publishes one to each partition, keyed by
// PartitionKey).
enum class BusRecordType : uint8_t { kSignal = 1, kChange = 2, kOverride = 3, kErase = 4, kCommand = 5 };

// The name of a record type where a bus carries it as text (the Kafka bus's
// "presence.type" header): "signal", "change", "override", "erase" or
// "command", part
// of the wire contract; empty for a value that is no type.
PRESENCE_EXPORT absl::string_view BusRecordTypeName(BusRecordType type);
// The type BusRecordTypeName names `name`, or nullopt.
PRESENCE_EXPORT std::optional<BusRecordType> BusRecordTypeNamed(absl::string_view name);

struct BusRecord {
  uint32_t partition = 0;
  uint64_t offset = 0;
  BusRecordType type = BusRecordType::kSignal;
  std::string key;  // the user id
  std::string payload;
};

// One record for Bus::PublishBatch.
struct BusMessage {
  BusRecordType type = BusRecordType::kSignal;
  absl::string_view key;  // the user id
  absl::string_view payload;
};

// The partition of a user: XXH3-64 of the id, then jump consistent hashing.
PRESENCE_EXPORT uint32_t PartitionFor(absl::string_view user_id, uint32_t partitions);

// A key that PartitionFor maps onto `partition` (< `partitions`): the key of a
// record addressed to a partition rather than to a user (kCommand). The
// same for the same arguments in every process: "#" then the partition, then
// "." and the first number from 0 that lands there. Empty for a partition
// that does not exist.
PRESENCE_EXPORT std::string PartitionKey(uint32_t partition, uint32_t partitions);

class PRESENCE_EXPORT Bus {
 public:
  virtual ~Bus();

  virtual uint32_t partitions() const = 0;

  // Appends a record to PartitionFor(key) and returns its offset.
  virtual absl::StatusOr<uint64_t> Publish(BusRecordType type, absl::string_view key,
                                           absl::string_view payload) = 0;

  // Bus::PublishBatch appends `messages` as Publish on each in turn would
  // (records of one key keep their order) and returns their offsets, in the
  // order of `messages`. A bus that can send many records at once overrides
  // it (the Kafka bus waits for the broker once per batch instead of once per
  // record); this default calls Publish on each and stops at the first
  // failure. On failure it answers that error, and records of the batch may
  // already be written: a retry of the whole batch can write them twice,
  // which is why the engine's change events are idempotent by version.
  virtual absl::StatusOr<std::vector<uint64_t>> PublishBatch(
      absl::Span<const BusMessage> messages);

  // Up to `max` records of `partition` from `offset` on (fewer, or none, at
  // the end). OutOfRange when `offset` is past EndOffset or no longer held;
  // InvalidArgument for a partition that does not exist.
  virtual absl::StatusOr<std::vector<BusRecord>> Read(uint32_t partition, uint64_t offset,
                                                      size_t max) = 0;

  // Bus::Prefetch: a hint that Read(partition, offset, ...) comes soon. A
  // bus that fetches over a network starts fetching from `offset` now, so
  // that the records of several partitions arrive together rather than one
  // partition after another (Engine::AssignPartitions prefetches every
  // partition it takes, then replays them in turn). Nothing is answered: a
  // failure shows at the Read, and a Read at another offset is served as if
  // no hint was given. It may wait as long as positioning a Read does
  // (KafkaBus: a seek), never for records. This default does nothing.
  virtual void Prefetch(uint32_t partition, uint64_t offset);

  // The offset the next record of `partition` will get (InvalidArgument for
  // a partition that does not exist).
  virtual absl::StatusOr<uint64_t> EndOffset(uint32_t partition) = 0;

  // Bus::KnownEndOffset: the end of `partition` as this process last
  // learned it, without asking anyone; it may lag EndOffset (NotFound while
  // nothing is known). The engine's backlog gauge reads it, so that rendering
  // metrics never waits on a broker. This default answers EndOffset, which
  // an in-process bus knows at once.
  virtual absl::StatusOr<uint64_t> KnownEndOffset(uint32_t partition);
};

// An in-process bus with `partitions` partitions (at least 1), holding every
// record in memory.
PRESENCE_EXPORT std::unique_ptr<Bus> NewInProcessBus(uint32_t partitions);

}  // namespace presence

#endif  // PRESENCE_BUS_H_
