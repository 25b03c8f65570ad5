// A Kafka cluster inside the test process: librdkafka's mock cluster, with
// brokers listening on loopback. No broker needs to be installed.
#ifndef PRESENCE_ADAPTERS_KAFKA_TESTS_MOCK_KAFKA_H_
#define PRESENCE_ADAPTERS_KAFKA_TESTS_MOCK_KAFKA_H_

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <utility>

#include "presence/kafka_bus.h"
#include "presence/kafka_ownership.h"

namespace presence::kafka_testing {

// Whether `done()` held within `timeout`, asked every 5 ms: for what
// librdkafka reports by no event a test could wait on (a fetch arrived, a
// commit answered).
template <typename Done>
bool WaitUntil(Done done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class MockKafka {
 public:
  // `brokers` brokers that lead the partitions, with ids 1..brokers, and
  // one more (id brokers + 1) that coordinates the engines' groups
  // (CoordinateOwners).
  explicit MockKafka(int brokers = 3) : brokers_(brokers) {
    char err[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);  // it has no bootstrap servers
    handle_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (handle_ == nullptr) Die(err);
    cluster_ = rd_kafka_mock_cluster_new(handle_, brokers + 1);
    if (cluster_ == nullptr) Die("rd_kafka_mock_cluster_new failed");
    bootstrap_ = rd_kafka_mock_cluster_bootstraps(cluster_);
    // The mock ends a group's sync as soon as the leader's SyncGroup has
    // come (it counts the assignments the leader sent, not the members that
    // asked), and refuses a follower's SyncGroup that arrives after that:
    // the follower rejoins and the whole group waits another rebalance
    // (session timeout - 1 s). A real coordinator answers a late follower
    // with its assignment. The leader sends its SyncGroup only after a
    // metadata round trip to the coordinator, so a coordinator that answers
    // kCoordinatorRttMs late gives every follower that head start. Only that
    // broker is slowed, and it leads no partition: what else reaches it
    // (a bus's offset-commit group hashed to it, a metadata request) is
    // answered 50 ms late, which nothing waits on.
    if (rd_kafka_mock_broker_set_rtt(cluster_, coordinator(), kCoordinatorRttMs) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      Die("rd_kafka_mock_broker_set_rtt failed");
    }
  }
  ~MockKafka() {
    rd_kafka_mock_cluster_destroy(cluster_);
    rd_kafka_destroy(handle_);
  }
  MockKafka(const MockKafka&) = delete;
  MockKafka& operator=(const MockKafka&) = delete;

  // One cluster for a whole test binary, each test on topics of its own:
  // destroying a mock cluster takes a second.
  static MockKafka& Shared() {
    static MockKafka* shared = new MockKafka(3);  // never destroyed
    return *shared;
  }

  const std::string& bootstrap() const { return bootstrap_; }
  rd_kafka_mock_cluster_t* cluster() { return cluster_; }

  // A new topic, each partition led by one of brokers 1..brokers. (The
  // 2.0.2 mock ignores the replication factor: it replicates on the first
  // 3 brokers.)
  void CreateTopic(const std::string& topic, int partitions) {
    if (rd_kafka_mock_topic_create(cluster_, topic.c_str(), partitions, std::min(3, brokers_)) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      Die("rd_kafka_mock_topic_create failed");
    }
    for (int p = 0; p < partitions; ++p) SetLeader(topic, p, 1 + p % brokers_);
  }
  // The engines of `bus` form their group (KafkaOwnership) on the
  // coordinator broker.
  void CoordinateOwners(const KafkaBusOptions& bus) {
    const std::string group = KafkaOwnershipOptions::ForBus(bus, "any").group_id;
    if (rd_kafka_mock_coordinator_set(cluster_, "group", group.c_str(), coordinator()) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      Die("rd_kafka_mock_coordinator_set failed");
    }
  }
  void SetLeader(const std::string& topic, int partition, int broker) {
    if (rd_kafka_mock_partition_set_leader(cluster_, topic.c_str(), partition, broker) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      Die("rd_kafka_mock_partition_set_leader failed");
    }
  }

  // The coordinator broker refuses the next `n` SyncGroup requests it gets
  // (a rebalance in progress, to the member): the engines' members join
  // their group but get no assignment.
  void RefuseSyncGroups(int n) {
    for (int i = 0; i < n; ++i) {
      if (rd_kafka_mock_broker_push_request_error_rtts(cluster_, coordinator(), kSyncGroup, 1,
                                                       RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
                                                       0) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        Die("rd_kafka_mock_broker_push_request_error_rtts failed");
      }
    }
  }
  // How many of those refusals are still to come.
  size_t SyncGroupRefusalsLeft() {
    size_t n = 0;
    if (rd_kafka_mock_broker_error_stack_cnt(cluster_, coordinator(), kSyncGroup, &n) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      Die("rd_kafka_mock_broker_error_stack_cnt failed");
    }
    return n;
  }

  // The low and high watermarks of a partition, asked by a client of its
  // own.
  std::pair<int64_t, int64_t> Watermarks(const std::string& topic, int partition) {
    char err[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap_.c_str(), err, sizeof err);
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    int64_t low = -1, high = -1;
    if (rd_kafka_query_watermark_offsets(rk, topic.c_str(), partition, &low, &high, 10000) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      Die("rd_kafka_query_watermark_offsets failed");
    }
    rd_kafka_destroy(rk);
    return {low, high};
  }

  // Options for a bus on a new topic of this cluster.
  KafkaBusOptions NewTopicOptions(int partitions, const std::string& group = "") {
    static std::atomic<int> seq{0};
    KafkaBusOptions o;
    o.brokers = bootstrap_;
    o.topic = "presence-" + std::to_string(seq.fetch_add(1));
    o.partitions = static_cast<uint32_t>(partitions);
    o.group_id = group;
    // The mock broker answers a fetch at the end of a partition only after
    // fetch.wait.max.ms, even when a record arrives meanwhile (a real broker
    // answers at once): keep reads that follow a publish quick.
    o.consumer_config.push_back({"fetch.wait.max.ms", "10"});
    // One produce request in flight per broker connection, for two
    // shortcomings of the mock broker that a real one does not have:
    //  * it answers the second of two pipelined requests about 40 ms late
    //    (the signature of Nagle's algorithm meeting delayed ACKs: a real
    //    broker sets TCP_NODELAY);
    //  * it does not check an idempotent producer's sequence numbers across
    //    a change of leader: of two pipelined requests it can refuse the
    //    first (not the leader yet) and append the second, where a real
    //    broker refuses the second too (out of order sequence) so that the
    //    producer resends both in order. librdkafka then takes the first as
    //    written (acknowledged implicitly, without an offset), and the mock
    //    lost it.
    o.producer_config.push_back({"max.in.flight.requests.per.connection", "1"});
    CreateTopic(o.topic, partitions);
    CoordinateOwners(o);
    return o;
  }

 private:
  [[noreturn]] static void Die(const char* what) {
    std::cerr << "mock Kafka cluster: " << what << "\n";
    std::abort();
  }
  static constexpr int kCoordinatorRttMs = 50;
  static constexpr int16_t kSyncGroup = 14;  // the request's ApiKey
  int coordinator() const { return brokers_ + 1; }

  const int brokers_;
  rd_kafka_t* handle_ = nullptr;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
  std::string bootstrap_;
};

}  // namespace presence::kafka_testing

#endif  // PRESENCE_ADAPTERS_KAFKA_TESTS_MOCK_KAFKA_H_
