// File: examples/presence_server/cluster.h
//
// presence_server as a node of a cluster (docs/scale-out.md, "presence_server
// as a cluster"): users partitioned over a Kafka topic, partitions owned by
// engine nodes through a Kafka consumer group, a store shared by the engines
// (Redis or PostgreSQL; the file store for a single node).
//
//   role gateway  terminates HTTP and WebSockets; publishes each device's
//                 signals and disconnects, and the override calls, to its
//                 user's partition of the topic (GatewayPublisher); its
//                 fan-out reads the change events of every partition from
//                 the change topic (RemoteFeed), which also answer GET; the
//                 other gateways' connects, copied there, close its own
//                 older connection of a device that connected again through
//                 one of them.
//   role engine   owns the partitions the group gives it
//                 (KafkaOwnership), consumes their signals, writes through
//                 to the shared store and publishes change events to the
//                 change topic. Serves /metrics and /healthz only.
//   role both     a gateway and an engine in one process.
//
// The server calls into this unit at a few points only (server.cc): Init,
// each tick (BeforeTick), the device calls of its WebSocket sessions, GET,
// /metrics and the shutdown. Everything runs on the server's io thread.
#ifndef PRESENCE_EXAMPLES_SERVER_CLUSTER_H_
#define PRESENCE_EXAMPLES_SERVER_CLUSTER_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "presence/engine.h"
#include "presence/fanout.h"
#include "presence/options.h"

namespace presence_server {

// The consumer group of a cluster node's bus (its offset commits); the
// engines' membership group is named after it
// (KafkaOwnershipOptions::ForBus).
inline std::string ClusterBusGroup(absl::string_view topic) { return "presence-" + std::string(topic); }

// The topic of a cluster's change events and gateway notices (Options::
// change_bus, GatewayOptions::notice_bus), beside its signals' topic and
// with as many partitions: readers of the one fetch nothing of the other.
inline std::string ClusterChangeTopic(absl::string_view topic) { return std::string(topic) + ".changes"; }

enum class ClusterRole { kNone, kGateway, kEngine, kBoth };

// "gateway", "engine", "both"; InvalidArgument otherwise.
absl::StatusOr<ClusterRole> ParseClusterRole(absl::string_view role);

struct ClusterOptions {
  ClusterRole role = ClusterRole::kNone;  // kNone: one process, no cluster
  // This node's name: its gateway id (devices drained by it) and its member
  // name in the engines' group. Empty: "<role>-<pid>".
  std::string node_id;
  // Kafka: bootstrap brokers ("host:port,..."), the topic and its partition
  // count (every node must agree; the topic is created with it when
  // missing), and librdkafka settings for every client ("key=value").
  std::string brokers;
  std::string topic = "presence";
  uint32_t partitions = 12;
  std::vector<std::pair<std::string, std::string>> kafka_config;
  // The engines' group session timeout (0: KafkaOwnership's default, 3.5 s).
  int session_timeout_ms = 0;
  // How long a gateway gathers its sessions' signals before it publishes
  // them in one bus call (Cluster::Flush), 1 to 1000: each partition gets one
  // batch of records per flush. Longer means fewer, larger batches (less
  // work per record for the brokers and for every reader of the partition)
  // and later delivery.
  int flush_ms = 20;
  // How long a heartbeat that changes nothing may wait for that bus call,
  // flush_ms to 1000 (0: 200 ms, or flush_ms when that is longer;
  // HeartbeatFlushMs): the bulk of the signals, which only keep devices
  // alive (their deadline is seconds away), go in batches this far apart,
  // and a connect, a disconnect, an activity message or a change of source
  // brings the call forward to flush_ms. Each flush sends everything
  // queued, in order.
  int heartbeat_flush_ms = 0;
  // The shared store: "redis://HOST:PORT[/PREFIX]", a PostgreSQL connection
  // URI ("postgresql://..." or "postgres://..."), or "file" (the server's
  // --data-dir: one node only, role both).
  std::string store;
};

// ClusterOptions::heartbeat_flush_ms as the server uses it.
inline int HeartbeatFlushMs(const ClusterOptions& o) {
  return o.heartbeat_flush_ms > 0 ? o.heartbeat_flush_ms : std::max(200, o.flush_ms);
}

class Cluster {
 public:
  // Connects to Kafka and opens the shared store; sets the engine's options
  // for the role (bus, store, history, owns_all_partitions). Errors name
  // the flag at fault; FailedPrecondition when the program was built without
  // Kafka (or without the store's client library).
  static absl::StatusOr<std::unique_ptr<Cluster>> Create(const ClusterOptions& options,
                                                         presence::Options* engine_options);
  virtual ~Cluster();

  // Once the engine and the fan-out exist: joins the group (engines), opens
  // the feed of change events and the publisher (gateways). A node with
  // clients reads the other partitions' signals too: `elsewhere` is told of
  // each one another node published (its gateway, session and device), so
  // that the server closes its own older connection of a device that came
  // back through another gateway. `drained` is told, for each copy of a
  // drain of this node's gateway id read from a partition it does not own,
  // when the drain was issued (ms) and the copy's partition: the server
  // closes its connections of that partition's users that began before, whose
  // devices the partition's owner disconnected.
  virtual absl::Status Attach(presence::Engine* engine, presence::Fanout* fanout,
                              std::function<void(const presence::Signal&)> elsewhere,
                              std::function<void(int64_t issued_at_ms, uint32_t partition)> drained) = 0;

  virtual ClusterRole role() const = 0;
  bool serves_clients() const { return role() != ClusterRole::kEngine; }

  // A device's signal, or with `disconnect` the end of its session, for
  // its user's partition: queued (the signal's ids are copied), published at
  // the next Flush, which tells `done` (may be empty) whether the bus took
  // it (ResourceExhausted while the bus fails and the gateway's buffer is
  // full). `connect`: the first signal of its session, which the other
  // gateways hear of (GatewayPublisher::Item::connect). The server flushes
  // ClusterOptions::flush_ms after a connect, a disconnect or a change was
  // queued, HeartbeatFlushMs after a heartbeat that changes nothing,
  // whichever comes first, so that what waits goes in one bus call.
  virtual void Queue(const presence::Signal& signal, std::optional<presence::DisconnectKind> disconnect,
                     bool connect, std::function<void(const absl::Status&)> done) = 0;
  virtual void Flush() = 0;

  // An override call from an HTTP request, for its user's partition: what
  // is queued goes first (Flush), then the command, at once. Returns the
  // override's id (GatewayPublisher::PublishOverride: a set's is chosen
  // here); InvalidArgument for what an engine would refuse,
  // ResourceExhausted while the bus fails and the buffer is full,
  // FailedPrecondition on a node that is no gateway.
  virtual absl::StatusOr<uint64_t> PublishOverride(const presence::OverrideCommand& command) = 0;

  // An operator's erasure (POST /operator/erase), for the user's partition,
  // after what is queued (GatewayPublisher::PublishErase); the owner erases
  // the user when it reads it. Errors as PublishOverride's.
  virtual absl::Status PublishErase(absl::string_view user_id) = 0;

  // An operator's drain or bulk revoke (POST /operator/drain,
  // /operator/overrides/revoke), for every partition, after what is queued
  // (GatewayPublisher::PublishToEveryPartition); each owner applies it to
  // the users of the partition when it reads it. Errors as PublishErase's.
  virtual absl::Status PublishToEveryPartition(const presence::PartitionCommand& command) = 0;
  // The bus's partitions.
  virtual uint32_t partitions() const = 0;

  // Each tick, before Engine::Tick: ownership (engines), the signals of the
  // owned partitions, the change events of the others (to the fan-out), and
  // what the gateway's publisher holds after a failed publish. What is
  // queued waits for its Flush.
  virtual void BeforeTick() = 0;

  // What `viewer` may see of `users`: the engine's answer for the users of
  // partitions this node owns, the latest change event read for the others.
  virtual std::vector<presence::UserPresence> Get(absl::Span<const absl::string_view> users,
                                                  absl::string_view viewer) = 0;

  // The user's override stack: the engine's for a user of a partition this
  // node owns, else as the latest change event read carried it (its owner's
  // at that change).
  virtual absl::StatusOr<std::vector<presence::OverrideInfo>> ListOverrides(absl::string_view user) = 0;

  // Prometheus text: the feed's, the publisher's and the group's figures.
  virtual std::string RenderMetrics() const = 0;

  // A clean stop (after the last Tick): what waits is published, the owned
  // partitions are flushed and let go, the group is left; then nothing here
  // uses the engine or the fan-out any more (call it before they go; the bus
  // and the store they use stay until this is destroyed). Idempotent.
  virtual void Close() = 0;
};

}  // namespace presence_server

#endif  // PRESENCE_EXAMPLES_SERVER_CLUSTER_H_
