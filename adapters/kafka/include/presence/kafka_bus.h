// File: presence/kafka_bus.h
//
// presence::KafkaBus: the presence::Bus (presence/bus.h) over Apache Kafka,
// through librdkafka's C API. It lives in its own library, presence_kafka
// (adapters/kafka/); the core links nothing of Kafka.
//
// MAPPING (docs/design.md sections 5 and 6):
//   * The bus is one topic with N partitions. N is the topic's partition
//     count and must stay fixed while the topic is in use: PartitionFor(user,
//     N) decides where a user's records go, and every process must agree on
//     N. Create checks the topic's count against KafkaBusOptions::partitions.
//   * Publish produces to partition PartitionFor(user_id, N), given
//     explicitly (Kafka's own partitioner is never used), with the user id as
//     the record's key and the encoded payload as its value, unchanged.
//   * The record type is the header "presence.type", with the value "signal",
//     "change" or "override". A record without it (or with another value)
//     reads back with a type that is none of the bus's, which
//     Engine::ConsumeBus skips; so a foreign producer on the topic does not
//     stop consumption.
//   * Bus offsets are Kafka offsets; a CommittedOffset is, as in Kafka, the
//     next offset to read. Records keep their partition order (the producer
//     is idempotent, so retries neither reorder nor duplicate them).
//
// PUBLISH waits for the record's delivery report (acks=all) and returns the
// offset the broker gave it. PublishBatch pipelines many records and waits
// once for all of their reports: the way to reach throughput.
//
// READ consumes from an explicit offset: each partition is assigned to an
// internal consumer on its first read (or Prefetch) and seeked when a read
// (or Prefetch) does not continue where the previous one stopped; there is
// no subscription, no rebalancing
// and no automatic commit. Records already fetched are returned at once;
// otherwise, when the consumer's own fetch found the partition's end where
// the read starts (and no publish or query of this bus since says more
// exist), Read returns none without asking anyone, for up to a second after
// it last asked the leader there: records appended since come with the next
// fetch (fetch.wait.max.ms), as for any consumer.
// Otherwise the leader's high watermark says whether more exist, and Read
// waits for those (up to request_timeout_ms; Unavailable if none came) or
// returns none at the end. OutOfRange past the high watermark, and below the
// log start (records dropped by retention). Reads of one partition are
// serialized; different partitions read in parallel. Once read (or
// prefetched), a partition keeps being fetched ahead, up to 100,000
// records or 16 MB per partition (librdkafka's queued.min.messages and
// queued.max.messages.kbytes). A seek costs up to fetch.wait.max.ms (100 ms
// here) when the partition's broker is holding a fetch that waits for data:
// keep reads sequential.
//
// COMMITS: the engine keeps its consumed offsets in the Store, written after
// the records those signals changed (Engine::Tick); the Store is what a
// rebuild replays from. With a consumer group configured, the same offsets
// also go to Kafka, for the usual lag monitoring and tooling: either the host
// calls CommitOffsets itself, or it gives the engine a KafkaCommittingStore
// (below), which commits each set of offsets to Kafka right after the Store
// accepted it. Kafka's group offsets are never read back by the engine.
//
// FAILURES: librdkafka rides out broker restarts and leader changes (the
// producer retries, the fetcher follows the new leader, watermark requests
// are retried); a call fails only past its timeout. An idempotent producer
// that hits a fatal error (rare: e.g. the broker lost its state) fails every
// later Publish with FailedPrecondition: create the bus again.
//
// THREAD SAFETY: every method may be called from several threads at once.
// Destroy the bus only after every call on it has returned.
#ifndef PRESENCE_KAFKA_BUS_H_
#define PRESENCE_KAFKA_BUS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "presence/bus.h"
#include "presence/store.h"

namespace presence {

struct KafkaBusOptions {
  // bootstrap.servers: "host:port[,host:port...]". Required.
  std::string brokers;
  // The topic. It must exist: the bus never creates it (create it with N
  // partitions, e.g. kafka-topics.sh --create --partitions N).
  std::string topic = "presence";
  // N, the topic's partition count. 0: whatever the topic has. Otherwise
  // Create fails with FailedPrecondition when the topic has another count.
  uint32_t partitions = 0;
  // The consumer group that CommitOffsets commits to. Empty: none
  // (CommitOffsets answers FailedPrecondition). Reads never depend on it.
  // Only standalone committers may share the group: a member that
  // subscribes would make the broker refuse these commits.
  std::string group_id;
  // How long Publish and PublishBatch wait for delivery (librdkafka's
  // message.timeout.ms: past it the record is reported as failed).
  int publish_timeout_ms = 30000;
  // How long a Read waits for records it knows exist, and how long a
  // metadata, watermark or synchronous commit request may take.
  int request_timeout_ms = 10000;
  // More librdkafka properties (security.protocol, sasl.*, linger.ms,
  // client.id, log_level, ...), for the producer and the consumer, then for
  // each alone. They are applied over the adapter's defaults, except the few
  // that the adapter depends on (enable.auto.commit, enable.auto.offset.store,
  // auto.offset.reset, enable.partition.eof, group.id, bootstrap.servers,
  // enable.idempotence, acks, message.timeout.ms), which it sets last.
  std::vector<std::pair<std::string, std::string>> config;
  std::vector<std::pair<std::string, std::string>> producer_config;
  std::vector<std::pair<std::string, std::string>> consumer_config;
};

// Counters, from the bus's creation.
struct KafkaBusStats {
  uint64_t published = 0;       // records acknowledged by the broker
  uint64_t publish_errors = 0;  // records that failed
  // Of `published`, acknowledged without an offset (see Publish).
  uint64_t published_without_offset = 0;
  uint64_t records_read = 0;    // records returned by Read
  uint64_t seeks = 0;           // reads and prefetches that did not continue the previous one
  uint64_t watermark_queries = 0;
  uint64_t commits = 0;         // offset commits acknowledged by the group coordinator
  uint64_t commit_errors = 0;
};

class KafkaBus final : public Bus {
 public:
  // Connects, and checks that the topic exists with the expected partition
  // count. NotFound: no such topic; FailedPrecondition: another count;
  // InvalidArgument: a bad option or librdkafka property; Unavailable or
  // DeadlineExceeded: no broker answered within request_timeout_ms.
  static absl::StatusOr<std::unique_ptr<KafkaBus>> Create(KafkaBusOptions options);
  ~KafkaBus() override;

  KafkaBus(const KafkaBus&) = delete;
  KafkaBus& operator=(const KafkaBus&) = delete;

  uint32_t partitions() const override;

  // Produces one record to PartitionFor(key, N) and waits for its delivery
  // report. DeadlineExceeded when it was not acknowledged within
  // publish_timeout_ms (it may still have been written: at-least-once).
  // Unknown, rarely, when the record was written but its offset was never
  // reported (librdkafka acknowledges a record implicitly when the response
  // to its request was lost and a later request of the partition
  // succeeded): retrying it writes it twice.
  absl::StatusOr<uint64_t> Publish(BusRecordType type, absl::string_view key,
                                   absl::string_view payload) override;

  using Message = BusMessage;
  // KafkaBus::PublishBatch produces all of `messages` without waiting in
  // between, then waits for every delivery report; on success the offsets
  // are in the order of `messages`. Records of one user keep their order in
  // the batch. On failure it answers the first error, and some records may
  // have been written (a retry of the whole batch can duplicate those).
  absl::StatusOr<std::vector<uint64_t>> PublishBatch(absl::Span<const BusMessage> messages) override;

  absl::StatusOr<std::vector<BusRecord>> Read(uint32_t partition, uint64_t offset,
                                              size_t max) override;
  // Positions the partition's reader at `offset` (as a Read there would),
  // so that the consumer fetches it alongside every other partition it
  // reads; the records wait in the reader's queue for the Read. Like a Read,
  // it waits for a seek (up to request_timeout_ms) when the partition was
  // read elsewhere before; it never waits for records.
  void Prefetch(uint32_t partition, uint64_t offset) override;

  // The partition's high watermark, asked of its leader.
  absl::StatusOr<uint64_t> EndOffset(uint32_t partition) override;
  // The high watermark of this consumer's last fetch of the partition, or
  // the end that this bus last learned by a query or a publish, whichever is
  // higher; no request (NotFound while neither is known).
  absl::StatusOr<uint64_t> KnownEndOffset(uint32_t partition) override;

  // KafkaBus::CommitOffsets commits `offsets` (each the next offset to read
  // of its partition) to the consumer group and waits for the coordinator.
  // Call it after the Store accepted the same offsets (after Engine::Tick),
  // or let a KafkaCommittingStore do it. FailedPrecondition without a group.
  absl::Status CommitOffsets(const std::vector<CommittedOffset>& offsets);
  // The same, without waiting: the outcome shows in stats() (commits,
  // commit_errors) and in CommittedOffsets once the coordinator answered.
  absl::Status CommitOffsetsAsync(const std::vector<CommittedOffset>& offsets);
  // The group's committed offsets, by partition; partitions without one are
  // left out. FailedPrecondition without a group.
  absl::StatusOr<std::vector<CommittedOffset>> CommittedOffsets();

  const std::string& topic() const;
  KafkaBusStats stats() const;

  struct Impl;

 private:
  explicit KafkaBus(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// presence::KafkaCommittingStore: a Store that forwards everything to
// `inner` and, after each Write that carried bus offsets succeeded, commits
// those offsets to `bus`'s consumer group. Give it to the engine as
// Options::store: the engine writes its consumed offsets only after the
// records they changed were written, so Kafka's group offsets never run
// ahead of the Store. A failed Kafka commit does not fail the Write (the
// Store holds the offsets the engine relies on); it is counted in the bus's
// stats, and the next offsets written replace it. With `wait` false (the
// default) the commit does not hold up Engine::Tick: it goes out
// asynchronously. With a bus that has no group_id it only forwards.
// Neither pointer is owned; both must outlive the store.
class KafkaCommittingStore final : public Store {
 public:
  KafkaCommittingStore(Store* inner, KafkaBus* bus, bool wait = false);
  absl::Status Write(const StoreBatch& batch) override;
  absl::Status Load(StoreVisitor* visitor) override;

 private:
  Store* inner_;
  KafkaBus* bus_;
  bool wait_;
};

}  // namespace presence

#endif  // PRESENCE_KAFKA_BUS_H_
