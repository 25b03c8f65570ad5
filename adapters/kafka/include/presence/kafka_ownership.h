// File: presence/kafka_ownership.h
//
// presence::KafkaOwnership makes an Engine own exactly the bus partitions
// that a Kafka consumer group assigns to it (docs/design.md section 6; without
// Kafka, presence/ownership.h gives a static table). Each engine process
// runs one, next to its KafkaBus, on an engine created with
// Options::owns_all_partitions = false:
//
//   auto own = presence::KafkaOwnership::Create(
//       engine.get(), presence::KafkaOwnershipOptions::ForBus(bus_options, "engine-a"))
//       .value();
//   while (running) {
//     absl::Status st = own->Poll();   // the group protocol; takes and lets go
//     if (!st.ok()) log(st);           // e.g. the store is down: retried next Poll
//     engine->ConsumeBus();
//     engine->Tick();
//   }
//   own->Close();                      // flush, let go, leave: fast handover
//
// HOW: it joins a consumer group of its own (not KafkaBusOptions::group_id,
// see ForBus) subscribed to the bus topic. The group's members split the
// topic's partitions (cooperative-sticky: a rebalance moves only the
// partitions that change owner). The membership consumer never reads a
// record: its partitions are paused at the end of the log as soon as they
// are assigned; the engine reads them through its KafkaBus.
//
//   * Partitions revoked by the group: Engine::RevokePartitions (flush, let
//     go) runs inside the rebalance callback, so the group hands them to the
//     next owner only after this engine wrote what it had.
//   * Partitions assigned by the group: acknowledged to the group at once,
//     then taken (Engine::AssignPartitions: load from the store, replay the
//     bus) by the same Poll, after the callback. When taking fails (the
//     store unreachable: Unavailable), Poll answers that error and the next
//     Poll tries again; the partitions stay assigned to this member
//     meanwhile, so nobody else serves them until they are taken.
//   * Crash: the group notices when heartbeats stop, after
//     session_timeout_ms, then reassigns; the new owner replays from the
//     offsets committed in the Store.
//
// Not fenced: a member that lost the group (cut off from the coordinator
// longer than the session timeout) learns it only when librdkafka notices;
// until then it still serves, and its last flush can reach the Store after
// the new owner loaded it.
//
// THREAD SAFETY: Poll, Close and Abandon from one thread (the host's loop);
// Assigned and stats from any thread. The engine is not owned: it must
// outlive this object, which calls it on Poll, Close and destruction.
#ifndef PRESENCE_KAFKA_OWNERSHIP_H_
#define PRESENCE_KAFKA_OWNERSHIP_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "presence/engine.h"
#include "presence/kafka_bus.h"

namespace presence {

struct KafkaOwnershipOptions {
  // bootstrap.servers and the bus topic. Required.
  std::string brokers;
  std::string topic;
  // The owners' consumer group. Required. Not the bus's group_id: KafkaBus
  // commits to that one without being a member, and a broker refuses such
  // commits into a group that has members (UNKNOWN_MEMBER_ID).
  std::string group_id;
  // The engine's name, as the member's client.id (what the group's tools
  // show). Required.
  std::string member;
  // How long the group waits for a silent member's heartbeat before giving
  // its partitions to the others: the takeover time after a crash. A real
  // broker accepts only values within its group.min.session.timeout.ms
  // (default 6000) and group.max.session.timeout.ms: lower the minimum on
  // the broker, or raise this. Not 3000 or less on librdkafka's mock cluster:
  // its group's first rebalance waits 3000 ms, and its once-a-second check
  // of sessions, when it runs a little late, drops a member that joined
  // first and has waited a session timeout by then; that member waits for
  // an answer that never comes, owning nothing (the chaos test saw it).
  int session_timeout_ms = 3500;
  int heartbeat_interval_ms = 500;
  // More librdkafka properties (security.protocol, sasl.*, ...). Applied
  // over the defaults, except bootstrap.servers, group.id, client.id, the
  // timeouts above, enable.auto.commit and partition.assignment.strategy
  // (cooperative-sticky), which are set last.
  std::vector<std::pair<std::string, std::string>> config;

  // The options for the engine of a bus: its brokers, topic and config, and
  // the group "<bus group_id>-owners" ("presence-<topic>-owners" when the
  // bus has none).
  static KafkaOwnershipOptions ForBus(const KafkaBusOptions& bus, std::string member);
};

// Counters, from creation.
struct KafkaOwnershipStats {
  uint64_t rebalances = 0;      // rebalance callbacks (assignments and revocations)
  uint64_t assign_errors = 0;   // failed Engine::AssignPartitions calls
  uint64_t revoke_errors = 0;   // Engine::RevokePartitions calls whose flush failed
  uint64_t records_fetched = 0; // records the membership consumer got anyway (dropped)
};

class KafkaOwnership {
 public:
  // Joins the group (asynchronously: the first assignment comes through a
  // later Poll). InvalidArgument for a missing option, a bad librdkafka
  // property, or an engine without a bus or with owns_all_partitions;
  // FailedPrecondition when the topic's partition count is not the engine's
  // bus's; NotFound without the topic; Unavailable or DeadlineExceeded when
  // no broker answered.
  static absl::StatusOr<std::unique_ptr<KafkaOwnership>> Create(Engine* engine,
                                                                KafkaOwnershipOptions options);
  // Close(), unless Close or Abandon was called.
  ~KafkaOwnership();
  KafkaOwnership(const KafkaOwnership&) = delete;
  KafkaOwnership& operator=(const KafkaOwnership&) = delete;

  // KafkaOwnership::Poll serves the group protocol (heartbeats run in the
  // background; rebalances need Poll), waiting up to `timeout_ms` for an
  // event, then takes the partitions assigned and not yet taken. Call it
  // every loop of the host, at least every max.poll.interval.ms (librdkafka
  // default 300 s; past it the member leaves the group). Returns the error
  // of Engine::AssignPartitions (retried on the next Poll) or of a
  // revocation's flush (the partitions were let go anyway; the next owner
  // replays), FailedPrecondition after Close/Abandon or on a fatal
  // librdkafka error.
  absl::Status Poll(int timeout_ms = 0);

  // The partitions the group assigns to this member now, in order. The
  // engine serves them (Engine::OwnedPartitions equals them) once a Poll
  // returned OK.
  std::vector<uint32_t> Assigned() const;
  KafkaOwnershipStats stats() const;

  // KafkaOwnership::Close lets every partition go (Engine::RevokePartitions)
  // and leaves the group, which hands them over at once. Returns the
  // revocation's error, if any. Idempotent. With librdkafka before 2.3.0,
  // a member whose JoinGroup the group answered and no SyncGroup yet
  // cannot be destroyed: that librdkafka aborts the process there (its
  // issue 4312). So a member closed before its first assignment came
  // (before any rebalance) keeps its closed, silent handle, and its
  // threads, until the process ends.
  absl::Status Close();

  // KafkaOwnership::Abandon drops the membership as a crashed process would:
  // no revocation, no LeaveGroup. The engine is not told (it keeps serving
  // what it owned); the group reassigns the partitions only after
  // session_timeout_ms. For tests of failover in one process. Before the
  // first assignment came, with librdkafka before 2.3.0, it closes instead
  // (see Close): the member owns nothing yet.
  void Abandon();

  struct Impl;

 private:
  explicit KafkaOwnership(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace presence

#endif  // PRESENCE_KAFKA_OWNERSHIP_H_
