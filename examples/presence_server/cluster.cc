// File: examples/presence_server/cluster.cc
//
// The cluster node of cluster.h over the library's scale-out pieces:
// KafkaBus, KafkaOwnership, GatewayPublisher, RemoteFeed, and the shared
// store (RedisStore, PostgresStore, or the server's FileStore for one node).
// Built with Kafka when librdkafka is found (PRESENCE_SERVER_KAFKA), with
// each store when its client library is (PRESENCE_SERVER_REDIS,
// PRESENCE_SERVER_POSTGRES); without them, Create says what is missing.
#include "cluster.h"

#include <unistd.h>

#include <cstdio>
#include <deque>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "presence/clock.h"
#include "presence/gateway.h"
#include "presence/remote_feed.h"

#ifdef PRESENCE_SERVER_KAFKA
#include "presence/kafka_bus.h"
#include "presence/kafka_ownership.h"
#endif
#ifdef PRESENCE_SERVER_REDIS
#include "presence/redis_store.h"
#endif
#ifdef PRESENCE_SERVER_POSTGRES
#include "presence/postgres_store.h"
#endif

namespace presence_server {

absl::StatusOr<ClusterRole> ParseClusterRole(absl::string_view role) {
  if (role == "gateway") return ClusterRole::kGateway;
  if (role == "engine") return ClusterRole::kEngine;
  if (role == "both") return ClusterRole::kBoth;
  return absl::InvalidArgumentError(absl::StrCat("--role is gateway, engine or both, not '", role, "'"));
}

Cluster::~Cluster() = default;

#ifndef PRESENCE_SERVER_KAFKA

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Create(const ClusterOptions&, presence::Options*) {
  return absl::FailedPreconditionError(
      "this presence_server was built without Kafka (librdkafka-dev): it cannot run as a cluster node");
}

#else

namespace {

bool OwnsPartitions(ClusterRole r) { return r == ClusterRole::kEngine || r == ClusterRole::kBoth; }

// The shared store named by --store, opened. The file store is the
// server's own (Init opens it): nothing here.
class SharedStore {
 public:
  static absl::StatusOr<std::unique_ptr<SharedStore>> Open(const std::string& spec) {
    auto out = std::make_unique<SharedStore>();
    absl::string_view s = spec;
    if (absl::ConsumePrefix(&s, "redis://")) {
#ifdef PRESENCE_SERVER_REDIS
      presence::RedisStoreOptions ro;
      absl::string_view hostport = s.substr(0, s.find('/'));
      if (s.find('/') != absl::string_view::npos) ro.key_prefix = std::string(s.substr(s.find('/') + 1));
      const size_t colon = hostport.rfind(':');
      if (colon == absl::string_view::npos || !absl::SimpleAtoi(hostport.substr(colon + 1), &ro.port)) {
        return absl::InvalidArgumentError("--store redis://HOST:PORT[/PREFIX]");
      }
      ro.host = std::string(hostport.substr(0, colon));
      if (ro.key_prefix.empty()) ro.key_prefix = "presence:";
      auto r = presence::RedisStore::Open(ro);
      if (!r.ok()) return absl::UnavailableError(absl::StrCat("--store ", spec, ": ", r.status().message()));
      out->redis_ = std::move(*r);
      out->store_ = out->redis_.get();
      return out;
#else
      return absl::FailedPreconditionError("built without hiredis: --store redis:// is not available");
#endif
    }
    if (absl::StartsWith(s, "postgresql://") || absl::StartsWith(s, "postgres://")) {
#ifdef PRESENCE_SERVER_POSTGRES
      presence::PostgresStoreOptions po;
      po.conninfo = spec;
      auto p = presence::PostgresStore::Open(po);
      if (!p.ok()) return absl::UnavailableError(absl::StrCat("--store: ", p.status().message()));
      out->pg_ = std::move(*p);
      out->store_ = out->pg_->store();
      out->history_ = out->pg_->history();
      return out;
#else
      return absl::FailedPreconditionError("built without libpq: --store postgresql:// is not available");
#endif
    }
    return absl::InvalidArgumentError(
        "--store is redis://HOST:PORT[/PREFIX], postgresql://... or file (one node)");
  }
  presence::Store* store() const { return store_; }
  presence::HistoryStore* history() const { return history_; }

 private:
#ifdef PRESENCE_SERVER_REDIS
  std::unique_ptr<presence::RedisStore> redis_;
#endif
#ifdef PRESENCE_SERVER_POSTGRES
  std::unique_ptr<presence::PostgresStore> pg_;
#endif
  presence::Store* store_ = nullptr;
  presence::HistoryStore* history_ = nullptr;
};

class KafkaCluster final : public Cluster {
 public:
  KafkaCluster(ClusterOptions o, presence::KafkaBusOptions bo) : opts_(std::move(o)), bo_(std::move(bo)) {}

  absl::Status Open(presence::Options* eo) {
    auto bus = presence::KafkaBus::Create(bo_);
    if (!bus.ok()) return absl::UnavailableError(absl::StrCat("kafka: ", bus.status().message()));
    bus_ = std::move(*bus);
    presence::KafkaBusOptions co = bo_;
    co.topic = ClusterChangeTopic(bo_.topic);
    co.group_id.clear();  // nothing commits there: a feed reads it from the start
    auto changes = presence::KafkaBus::Create(co);
    if (!changes.ok()) return absl::UnavailableError(absl::StrCat("kafka: ", changes.status().message()));
    changes_ = std::move(*changes);
    if (opts_.store != "file") {
      auto shared = SharedStore::Open(opts_.store);
      if (!shared.ok()) return shared.status();
      shared_ = std::move(*shared);
      eo->history = shared_->history();
      if (OwnsPartitions(opts_.role)) {
        // Offsets reach the group too (what Kafka's tools show as lag).
        committing_ = std::make_unique<presence::KafkaCommittingStore>(shared_->store(), bus_.get());
        eo->store = committing_.get();
      } else {
        eo->store = nullptr;  // a gateway writes nothing: its engine only serves the fan-out
      }
    }
    if (OwnsPartitions(opts_.role)) {
      eo->bus = bus_.get();
      eo->change_bus = changes_.get();
      eo->owns_all_partitions = false;
    }
    return absl::OkStatus();
  }

  absl::Status Attach(presence::Engine* engine, presence::Fanout* fanout,
                      std::function<void(const presence::Signal&)> elsewhere,
                      std::function<void(int64_t issued_at_ms, uint32_t partition)> drained) override {
    engine_ = engine;
    if (OwnsPartitions(opts_.role)) {
      presence::KafkaOwnershipOptions ko = presence::KafkaOwnershipOptions::ForBus(bo_, opts_.node_id);
      if (opts_.session_timeout_ms > 0) {
        ko.session_timeout_ms = opts_.session_timeout_ms;
        ko.heartbeat_interval_ms = std::max(100, opts_.session_timeout_ms / 6);
      }
      auto own = presence::KafkaOwnership::Create(engine, ko);
      if (!own.ok()) return own.status();
      own_ = std::move(*own);
    }
    // A node with clients reads the change events of the partitions it
    // does not own, from the beginning of the change topic, keeping every
    // user's latest: its fan-out's snapshots and GET come from there. An engine alone has no
    // clients, and no feed: reading the topic from its start at each
    // restart held its tick (and its group's rebalance) for longer each time.
    if (serves_clients()) {
      presence::RemoteFeedOptions fo;
      fo.from_beginning = true;
      fo.max_unwatched_users = 10'000'000;
      fo.on_signal = [this, elsewhere = std::move(elsewhere)](const presence::Signal& s) {
        if (s.gateway != opts_.node_id && elsewhere) elsewhere(s);
      };
      fo.on_command = [this, drained = std::move(drained)](const presence::PartitionCommand& c) {
        if (c.action == presence::PartitionCommand::Action::kDrain && c.drained_gateway == opts_.node_id &&
            drained) {
          drained(c.issued_at_ms, c.partition);
        }
      };
      auto feed = presence::RemoteFeed::Create(changes_.get(), fanout, {}, fo);
      if (!feed.ok()) return feed.status();
      feed_ = std::move(*feed);
    }
    if (serves_clients()) {
      presence::GatewayOptions go;
      go.gateway_id = opts_.node_id;
      go.notice_bus = changes_.get();  // connects and drains, for the other gateways' feeds
      auto gw = presence::GatewayPublisher::Create(bus_.get(), go);
      if (!gw.ok()) return gw.status();
      gateway_ = std::move(*gw);
    }
    return absl::OkStatus();
  }

  ClusterRole role() const override { return opts_.role; }

  void Queue(const presence::Signal& s, std::optional<presence::DisconnectKind> disconnect, bool connect,
             std::function<void(const absl::Status&)> done) override {
    // A deque: its elements stay where they are, so the signal views them.
    Pending& p = pending_.emplace_back();
    p.user = std::string(s.user_id);
    p.device = std::string(s.device_id);
    p.item.signal = s;
    p.item.signal.user_id = p.user;
    p.item.signal.device_id = p.device;
    // Stamped now, on the publisher's clock, not when the flush sends it (a
    // heartbeat may wait up to heartbeat_flush_ms).
    if (p.item.signal.timestamp_ms == 0) p.item.signal.timestamp_ms = presence::SystemClock()->NowMs();
    p.item.disconnect = disconnect;
    p.item.connect = connect;
    p.done = std::move(done);
  }

  void Flush() override {
    if (pending_.empty()) return;
    std::vector<presence::GatewayPublisher::Item> items;
    items.reserve(pending_.size());
    for (const Pending& p : pending_) items.push_back(p.item);
    const std::vector<absl::StatusOr<uint64_t>> out =
        gateway_ != nullptr ? gateway_->PublishBatch(items)
                            : std::vector<absl::StatusOr<uint64_t>>(
                                  items.size(), absl::FailedPreconditionError("this node is no gateway"));
    std::deque<Pending> done;
    done.swap(pending_);  // a callback may queue more
    for (size_t i = 0; i < done.size(); ++i) {
      if (done[i].done) done[i].done(out[i].status());
    }
  }

  absl::StatusOr<uint64_t> PublishOverride(const presence::OverrideCommand& command) override {
    if (gateway_ == nullptr) return absl::FailedPreconditionError("this node is no gateway");
    Flush();  // in order with the signals queued before it
    return gateway_->PublishOverride(command);
  }

  absl::Status PublishErase(absl::string_view user_id) override {
    if (gateway_ == nullptr) return absl::FailedPreconditionError("this node is no gateway");
    Flush();  // in order with the signals queued before it
    return gateway_->PublishErase(user_id);
  }

  absl::Status PublishToEveryPartition(const presence::PartitionCommand& command) override {
    if (gateway_ == nullptr) return absl::FailedPreconditionError("this node is no gateway");
    Flush();  // in order with the signals queued before it
    return gateway_->PublishToEveryPartition(command);
  }

  uint32_t partitions() const override { return bus_->partitions(); }

  void BeforeTick() override {
    // What is queued goes at its own flush (the server's timer), not here:
    // a heartbeat that changes nothing may wait heartbeat_flush_ms.
    if (closed_) return;
    if (own_ != nullptr) {
      if (absl::Status st = own_->Poll(); !st.ok()) {
        ++ownership_errors_;
        // Logged when it changes (a store that stays down fails every poll).
        if (st.ToString() != last_error_) {
          std::fprintf(stderr, "presence_server: at %lld ownership: %s\n", static_cast<long long>(engine_->NowMs()),
                       st.ToString().c_str());
        }
        last_error_ = st.ToString();
      } else {
        last_error_.clear();
      }
      std::vector<uint32_t> owned = engine_->OwnedPartitions();
      if (owned != told_) {
        // After the engine took them: the feed first reads them to their end.
        if (feed_ == nullptr || feed_->SetOwnedPartitions(owned).ok()) {
          std::fprintf(stderr, "presence_server: at %lld serving partitions [%s] (was [%s])\n",
                       static_cast<long long>(engine_->NowMs()), absl::StrJoin(owned, ",").c_str(),
                       absl::StrJoin(told_, ",").c_str());
          told_ = std::move(owned);
        }
      }
      for (int round = 0; round < 16; ++round) {  // bounded: the tick stays on time
        auto n = engine_->ConsumeBus();
        if (!n.ok() || *n == 0) break;
      }
    }
    if (feed_ != nullptr) (void)feed_->Poll();
    if (gateway_ != nullptr) (void)gateway_->Flush();  // what waited for the bus
  }

  std::vector<presence::UserPresence> Get(absl::Span<const absl::string_view> users,
                                          absl::string_view viewer) override {
    std::vector<presence::UserPresence> out = engine_->Get(users, viewer);
    if (feed_ == nullptr) return out;  // closed, or an engine alone
    const int64_t now = engine_->NowMs();
    const int64_t retention = engine_->options().user_retention_ms;
    for (size_t i = 0; i < users.size(); ++i) {
      std::optional<presence::ChangeEvent> ev = feed_->Latest(users[i]);
      if (!ev || ev->erased) continue;  // owned here (the engine's answer), or nothing read
      presence::UserPresence& p = out[i];
      const bool self = users[i] == viewer;
      p = presence::UserPresence{};
      p.user_id = std::string(users[i]);
      p.state = self ? ev->self_state : ev->state;
      p.last_seen_ms = self ? ev->self_last_seen_ms : ev->last_seen_ms;
      p.devices = self ? ev->self_devices : ev->devices;
      p.version = self ? ev->version : ev->public_version;
      if (const auto& shown = self ? ev->self_shown_override : ev->shown_override) {
        p.has_override = true;
        p.override_state = shown->state;
        p.override_until_ms = shown->until_ms;
      }
      p.freshness_ms = p.last_seen_ms == 0 ? 0 : std::max<int64_t>(0, now - p.last_seen_ms);
      // As the engine does: an offline user is known until the retention
      // has passed since its last_seen.
      p.known = p.state != presence::State::kOffline ||
                (p.last_seen_ms != 0 && now - p.last_seen_ms < retention);
      if (!p.known) {
        p = presence::UserPresence{};
        p.user_id = std::string(users[i]);
      }
    }
    return out;
  }

  absl::StatusOr<std::vector<presence::OverrideInfo>> ListOverrides(absl::string_view user) override {
    if (feed_ != nullptr) {
      std::optional<presence::ChangeEvent> ev = feed_->Latest(user);
      if (ev && !ev->erased) {
        // As the engine lists them: those that ended since are left out.
        const int64_t now = engine_->NowMs();
        std::vector<presence::OverrideInfo> out;
        for (const presence::OverrideInfo& o : ev->self_overrides) {
          if (o.until_ms == 0 || now < o.until_ms) out.push_back(o);
        }
        return out;
      }
    }
    return engine_->ListOverrides(user);
  }

  std::string RenderMetrics() const override {
    std::string out = feed_ != nullptr ? feed_->RenderMetrics() : std::string();
    auto gauge = [&](const char* name, const char* help, uint64_t v, const char* type = "counter") {
      absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ", v, "\n");
    };
    if (gateway_ != nullptr) {
      const auto s = gateway_->stats();
      gauge("presence_gateway_published_total",
            "Signals, disconnects and override commands this gateway published.", s.published);
      gauge("presence_gateway_bus_errors_total", "Failed publishes (the signal waits in the buffer).",
            s.bus_errors);
      gauge("presence_gateway_refused_total", "Signals refused because the buffer was full.", s.refused);
      gauge("presence_gateway_buffered", "Signals and notices waiting for the bus.", s.buffered, "gauge");
      gauge("presence_gateway_notices_total",
            "Connects and partition commands copied to the change topic for the other gateways.", s.notices);
      gauge("presence_gateway_notices_dropped_total",
            "Notices dropped, the oldest first, while the change topic failed.", s.notices_dropped);
    }
    if (own_ != nullptr) {
      const auto s = own_->stats();
      gauge("presence_ownership_rebalances_total", "Rebalances of the engines' group seen.", s.rebalances);
      gauge("presence_ownership_assign_errors_total", "Partitions assigned but not yet taken (retried).",
            s.assign_errors);
      gauge("presence_ownership_poll_errors_total", "Ownership polls that failed (retried).", ownership_errors_);
    }
    return out;
  }

  void Close() override {
    Flush();
    if (gateway_ != nullptr) (void)gateway_->Flush();
    if (own_ != nullptr) (void)own_->Close();
    own_.reset();
    feed_.reset();  // detaches from the fan-out
    closed_ = true;
  }

 private:
  const ClusterOptions opts_;
  const presence::KafkaBusOptions bo_;
  std::unique_ptr<presence::KafkaBus> bus_;      // signals and commands
  std::unique_ptr<presence::KafkaBus> changes_;  // change events and gateways' notices
  std::unique_ptr<SharedStore> shared_;
  std::unique_ptr<presence::KafkaCommittingStore> committing_;
  presence::Engine* engine_ = nullptr;
  std::unique_ptr<presence::KafkaOwnership> own_;
  std::unique_ptr<presence::RemoteFeed> feed_;  // null for an engine alone
  bool closed_ = false;
  std::unique_ptr<presence::GatewayPublisher> gateway_;
  std::vector<uint32_t> told_;
  // Signals queued since the last Flush, with their ids.
  struct Pending {
    std::string user, device;
    presence::GatewayPublisher::Item item;
    std::function<void(const absl::Status&)> done;
  };
  std::deque<Pending> pending_;
  uint64_t ownership_errors_ = 0;
  std::string last_error_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Create(const ClusterOptions& options,
                                                         presence::Options* engine_options) {
  ClusterOptions o = options;
  if (o.brokers.empty()) return absl::InvalidArgumentError("a cluster node needs --kafka-brokers");
  if (o.store.empty()) return absl::InvalidArgumentError("a cluster node needs --store");
  if (o.store == "file" && o.role != ClusterRole::kBoth) {
    return absl::InvalidArgumentError("--store file is for one node (--role both): engines share a store");
  }
  if (o.flush_ms < 1 || o.flush_ms > 1000) {
    return absl::InvalidArgumentError("--bus-flush-ms must be 1 to 1000");
  }
  if (o.heartbeat_flush_ms != 0 && (o.heartbeat_flush_ms < o.flush_ms || o.heartbeat_flush_ms > 1000)) {
    return absl::InvalidArgumentError("--bus-heartbeat-flush-ms must be --bus-flush-ms to 1000");
  }
  if (o.partitions == 0 || o.partitions > 65536) {
    return absl::InvalidArgumentError("--partitions must be 1 to 65536");
  }
  if (o.node_id.empty()) {
    o.node_id = absl::StrCat(o.role == ClusterRole::kGateway  ? "gateway"
                             : o.role == ClusterRole::kEngine ? "engine"
                                                              : "node",
                             "-", getpid());
  }
  presence::KafkaBusOptions bo;
  bo.brokers = o.brokers;
  bo.topic = o.topic;
  bo.partitions = o.partitions;
  bo.group_id = ClusterBusGroup(o.topic);
  bo.config = o.kafka_config;
  auto c = std::make_unique<KafkaCluster>(o, bo);
  if (absl::Status st = c->Open(engine_options); !st.ok()) return st;
  return std::unique_ptr<Cluster>(std::move(c));
}

#endif  // PRESENCE_SERVER_KAFKA

}  // namespace presence_server
