// Helpers shared by the Kafka adapter's components (KafkaBus,
// KafkaOwnership): librdkafka errors as Statuses, configurations, partition
// lists and the topic's partition count. Internal: not installed.
#ifndef PRESENCE_ADAPTERS_KAFKA_SRC_KAFKA_COMMON_H_
#define PRESENCE_ADAPTERS_KAFKA_SRC_KAFKA_COMMON_H_

#include <librdkafka/rdkafka.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace presence::kafka_internal {

// A librdkafka error as a Status.
absl::Status KafkaStatus(rd_kafka_resp_err_t err, absl::string_view what);

using Config = std::vector<std::pair<std::string, std::string>>;

// A conf with `sets` applied in order; InvalidArgument names the bad one.
absl::StatusOr<rd_kafka_conf_t*> MakeConf(std::initializer_list<const Config*> sets);

struct PartitionListDeleter {
  void operator()(rd_kafka_topic_partition_list_t* l) const { rd_kafka_topic_partition_list_destroy(l); }
};
using PartitionList = std::unique_ptr<rd_kafka_topic_partition_list_t, PartitionListDeleter>;

// The partition count of `topic` (a handle of `rk`), asked of the brokers,
// retrying transient metadata errors (a new topic whose leaders are not
// elected yet) until `timeout_ms`. NotFound without the topic.
absl::StatusOr<uint32_t> TopicPartitionCount(rd_kafka_t* rk, rd_kafka_topic_t* topic,
                                             absl::string_view brokers, int timeout_ms);

}  // namespace presence::kafka_internal

#endif  // PRESENCE_ADAPTERS_KAFKA_SRC_KAFKA_COMMON_H_
