// An installed presence::kafka (find_package(presence COMPONENTS kafka), or
// pkg-config presence-kafka) against librdkafka's mock cluster (a Kafka
// broker in this process, on loopback): a record published through the bus
// reads back.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <string>

#include "adapters.h"
#include "presence/kafka_bus.h"

int main() {
  char err[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
  rd_kafka_t* handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (handle == nullptr) return consumer::Fail("consumer_kafka", err);
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(handle, 1);
  if (cluster == nullptr) return consumer::Fail("consumer_kafka", "rd_kafka_mock_cluster_new failed");
  if (rd_kafka_mock_topic_create(cluster, "presence", 2, 1) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return consumer::Fail("consumer_kafka", "rd_kafka_mock_topic_create failed");
  }
  int rc = 0;
  {
    presence::KafkaBusOptions o;
    o.brokers = rd_kafka_mock_cluster_bootstraps(cluster);
    o.partitions = 2;
    auto bus = presence::KafkaBus::Create(o);
    if (!bus.ok()) return consumer::Fail("consumer_kafka", std::string(bus.status().message()));
    auto offset = (*bus)->Publish(presence::BusRecordType::kSignal, "alice", "payload");
    if (!offset.ok()) return consumer::Fail("consumer_kafka", std::string(offset.status().message()));
    auto records = (*bus)->Read(presence::PartitionFor("alice", 2), *offset, 1);
    if (!records.ok() || records->size() != 1 || (*records)[0].payload != "payload") {
      rc = consumer::Fail("consumer_kafka", "the published record did not read back");
    } else {
      std::printf("consumer_kafka: a record published and read back through Kafka\n");
    }
  }
  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(handle);
  return rc;
}
