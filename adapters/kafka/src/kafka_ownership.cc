// presence::KafkaOwnership: an engine's partitions from a Kafka consumer
// group's assignment. See presence/kafka_ownership.h.
//
// One consumer handle, subscribed to the bus topic in a group of its own.
// Its rebalance callback (served by rd_kafka_consumer_poll, inside Poll, and
// by rd_kafka_consumer_close, inside Close) lets revoked partitions go
// before acknowledging, and acknowledges assigned ones at once, paused;
// Poll then has the engine take them.
#include "presence/kafka_ownership.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <atomic>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "adapters/kafka/src/kafka_common.h"

namespace presence {

using kafka_internal::Config;
using kafka_internal::KafkaStatus;
using kafka_internal::MakeConf;
using kafka_internal::PartitionList;

KafkaOwnershipOptions KafkaOwnershipOptions::ForBus(const KafkaBusOptions& bus, std::string member) {
  KafkaOwnershipOptions o;
  o.brokers = bus.brokers;
  o.topic = bus.topic;
  o.group_id = absl::StrCat(bus.group_id.empty() ? absl::StrCat("presence-", bus.topic) : bus.group_id,
                            "-owners");
  o.member = std::move(member);
  o.config = bus.config;
  return o;
}

struct KafkaOwnership::Impl {
  Engine* engine = nullptr;
  KafkaOwnershipOptions options;
  rd_kafka_t* consumer = nullptr;  // null once closed or abandoned

  mutable absl::Mutex mu;
  std::set<uint32_t> assigned ABSL_GUARDED_BY(mu);
  // The first error of a revocation since the last Poll, for Poll to answer.
  absl::Status revoke_error;

  std::atomic<uint64_t> rebalances{0}, assign_errors{0}, revoke_errors{0}, records_fetched{0};

  ~Impl() {
    if (consumer != nullptr) rd_kafka_destroy(consumer);
  }

  static std::vector<uint32_t> PartitionsOf(const rd_kafka_topic_partition_list_t* list) {
    std::vector<uint32_t> out;
    for (int i = 0; i < list->cnt; ++i) out.push_back(static_cast<uint32_t>(list->elems[i].partition));
    return out;
  }

  static void OnRebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                          rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    static_cast<Impl*>(opaque)->Rebalance(rk, err, partitions);
  }

  void Rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* partitions) {
    rebalances.fetch_add(1, std::memory_order_relaxed);
    const std::vector<uint32_t> list = PartitionsOf(partitions);
    rd_kafka_error_t* error = nullptr;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      // Taken by Poll, after the callback. Until then nothing is fetched:
      // from the end of the log, and paused right away.
      for (int i = 0; i < partitions->cnt; ++i) partitions->elems[i].offset = RD_KAFKA_OFFSET_END;
      error = rd_kafka_incremental_assign(rk, partitions);
      rd_kafka_pause_partitions(rk, partitions);
      absl::MutexLock lock(&mu);
      assigned.insert(list.begin(), list.end());
    } else {
      // Revoked (or lost): written and let go before the group learns it.
      absl::Status st = engine->RevokePartitions(list);
      if (!st.ok()) {
        revoke_errors.fetch_add(1, std::memory_order_relaxed);
        if (revoke_error.ok()) revoke_error = st;
      }
      {
        absl::MutexLock lock(&mu);
        for (uint32_t p : list) assigned.erase(p);
      }
      error = rd_kafka_incremental_unassign(rk, partitions);
    }
    // Only on misuse; librdkafka then fails the membership, which Poll
    // reports.
    if (error != nullptr) rd_kafka_error_destroy(error);
  }

  absl::Status Poll(int timeout_ms) {
    if (consumer == nullptr) return absl::FailedPreconditionError("the Kafka ownership was closed");
    absl::Status st;
    for (int wait = std::max(timeout_ms, 0);; wait = 0) {
      rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer, wait);
      if (m == nullptr) break;
      if (m->err == RD_KAFKA_RESP_ERR__FATAL && st.ok()) {
        char reason[512];
        const rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(consumer, reason, sizeof reason);
        st = absl::FailedPreconditionError(
            absl::StrCat("the Kafka group membership failed: ", rd_kafka_err2str(fatal), ": ", reason));
      } else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        records_fetched.fetch_add(1, std::memory_order_relaxed);  // paused: should not happen
      }
      // Other errors are transient; librdkafka logged them and retries.
      rd_kafka_message_destroy(m);
    }
    if (!st.ok()) return st;
    if (!revoke_error.ok()) return std::exchange(revoke_error, absl::OkStatus());
    return TakeAssigned();
  }

  // Has the engine take what the group assigned and it does not own yet.
  absl::Status TakeAssigned() {
    std::vector<uint32_t> missing;
    {
      absl::MutexLock lock(&mu);
      const std::vector<uint32_t> owned = engine->OwnedPartitions();
      std::set_difference(assigned.begin(), assigned.end(), owned.begin(), owned.end(),
                          std::back_inserter(missing));
    }
    if (missing.empty()) return absl::OkStatus();
    absl::Status st = engine->AssignPartitions(missing);
    if (!st.ok()) assign_errors.fetch_add(1, std::memory_order_relaxed);
    return st;
  }

  absl::Status Close() {
    if (consumer == nullptr) return absl::OkStatus();
    // Serves the revocation of everything, then leaves the group.
    const rd_kafka_resp_err_t e = rd_kafka_consumer_close(consumer);
    Release(0);
    absl::Status st = std::exchange(revoke_error, absl::OkStatus());
    if (st.ok()) st = KafkaStatus(e, "leaving the Kafka group");
    return st;
  }

  void Abandon() {
    if (consumer == nullptr) return;
    if (!Destroyable()) (void)rd_kafka_consumer_close(consumer);  // see Release
    Release(RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    absl::MutexLock lock(&mu);
    assigned.clear();
  }

  // librdkafka before 2.3.0 aborts the process in rd_kafka_destroy when the
  // group answered this member's JoinGroup but never its SyncGroup: the
  // cooperative-sticky assignor has no state yet and its destructor
  // asserts one (librdkafka issue 4312). A rebalance callback comes only
  // after the group answered a SyncGroup (or took partitions it gave); not
  // knowing whether a JoinGroup was answered, every member that had no
  // callback yet is taken to be in that state.
  bool Destroyable() const { return rebalances.load() > 0 || rd_kafka_version() >= 0x020300ff; }

  // Destroys the closed (or abandoned) handle; one that cannot be
  // destroyed is kept, closed and silent, until the process ends.
  void Release(int destroy_flags) {
    if (Destroyable()) {
      rd_kafka_destroy_flags(consumer, destroy_flags);
    } else {
      rd_kafka_set_log_level(consumer, 0);  // its brokers may go away meanwhile
      static absl::Mutex kept_mu(absl::kConstInit);
      static auto* kept = new std::vector<rd_kafka_t*>();  // reachable: not a leak
      absl::MutexLock lock(&kept_mu);
      kept->push_back(consumer);
    }
    consumer = nullptr;
  }

  absl::Status Connect() {
    const std::pair<const char*, const std::string*> required[] = {
        {"brokers", &options.brokers},
        {"topic", &options.topic},
        {"group_id", &options.group_id},
        {"member", &options.member}};
    for (const auto& [name, value] : required) {
      if (value->empty()) {
        return absl::InvalidArgumentError(absl::StrCat("KafkaOwnershipOptions::", name, " is empty"));
      }
    }
    if (engine == nullptr || engine->BusPartitions() == 0) {
      return absl::InvalidArgumentError("KafkaOwnership needs an engine with a bus");
    }
    if (engine->options().owns_all_partitions) {
      return absl::InvalidArgumentError(
          "the engine owns every partition (Options::owns_all_partitions): create it with false");
    }
    const Config defaults = {
        {"log.connection.close", "false"},
        {"socket.nagle.disable", "true"},
        // Assigned partitions are paused at once; should a fetch start
        // anyway, little is queued ahead.
        {"queued.min.messages", "1"},
    };
    const Config fixed = {
        {"bootstrap.servers", options.brokers},
        {"group.id", options.group_id},
        {"client.id", options.member},
        {"session.timeout.ms", std::to_string(options.session_timeout_ms)},
        {"heartbeat.interval.ms", std::to_string(options.heartbeat_interval_ms)},
        {"enable.auto.commit", "false"},
        // Incremental: a rebalance moves only the partitions that change
        // owner (an eager one would have every engine reload everything).
        {"partition.assignment.strategy", "cooperative-sticky"},
    };
    auto conf = MakeConf({&defaults, &options.config, &fixed});
    if (!conf.ok()) return conf.status();
    rd_kafka_conf_set_rebalance_cb(*conf, &Impl::OnRebalance);
    rd_kafka_conf_set_opaque(*conf, this);
    char err[512];
    consumer = rd_kafka_new(RD_KAFKA_CONSUMER, *conf, err, sizeof err);
    if (consumer == nullptr) {
      rd_kafka_conf_destroy(*conf);
      return absl::InvalidArgumentError(absl::StrCat("creating the Kafka group consumer: ", err));
    }
    rd_kafka_poll_set_consumer(consumer);

    rd_kafka_topic_t* topic = rd_kafka_topic_new(consumer, options.topic.c_str(), nullptr);
    if (topic == nullptr) return KafkaStatus(rd_kafka_last_error(), absl::StrCat("topic ", options.topic));
    auto count = kafka_internal::TopicPartitionCount(consumer, topic, options.brokers, 10000);
    rd_kafka_topic_destroy(topic);
    if (!count.ok()) return count.status();
    if (*count != engine->BusPartitions()) {
      return absl::FailedPreconditionError(absl::StrCat("topic ", options.topic, " has ", *count,
                                                        " partitions, the engine's bus ",
                                                        engine->BusPartitions()));
    }

    PartitionList subscription(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(subscription.get(), options.topic.c_str(), RD_KAFKA_PARTITION_UA);
    return KafkaStatus(rd_kafka_subscribe(consumer, subscription.get()),
                       absl::StrCat("subscribing to ", options.topic, " in group ", options.group_id));
  }
};

KafkaOwnership::KafkaOwnership(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

KafkaOwnership::~KafkaOwnership() { (void)impl_->Close(); }

absl::StatusOr<std::unique_ptr<KafkaOwnership>> KafkaOwnership::Create(Engine* engine,
                                                                       KafkaOwnershipOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->engine = engine;
  impl->options = std::move(options);
  if (auto st = impl->Connect(); !st.ok()) return st;
  return std::unique_ptr<KafkaOwnership>(new KafkaOwnership(std::move(impl)));
}

absl::Status KafkaOwnership::Poll(int timeout_ms) { return impl_->Poll(timeout_ms); }

std::vector<uint32_t> KafkaOwnership::Assigned() const {
  absl::MutexLock lock(&impl_->mu);
  return std::vector<uint32_t>(impl_->assigned.begin(), impl_->assigned.end());
}

KafkaOwnershipStats KafkaOwnership::stats() const {
  KafkaOwnershipStats s;
  s.rebalances = impl_->rebalances.load();
  s.assign_errors = impl_->assign_errors.load();
  s.revoke_errors = impl_->revoke_errors.load();
  s.records_fetched = impl_->records_fetched.load();
  return s;
}

absl::Status KafkaOwnership::Close() { return impl_->Close(); }

void KafkaOwnership::Abandon() { impl_->Abandon(); }

}  // namespace presence
