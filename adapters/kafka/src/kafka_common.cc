#include "adapters/kafka/src/kafka_common.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"

namespace presence::kafka_internal {

absl::Status KafkaStatus(rd_kafka_resp_err_t err, absl::string_view what) {
  const std::string msg = absl::StrCat(what, ": ", rd_kafka_err2str(err));
  switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
      return absl::OkStatus();
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
      return absl::DeadlineExceededError(msg);
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
      return absl::NotFoundError(msg);
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
      return absl::InvalidArgumentError(msg);
    case RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE:
    case RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET:
      return absl::OutOfRangeError(msg);
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__STATE:
    case RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::UnavailableError(msg);
  }
}

absl::StatusOr<rd_kafka_conf_t*> MakeConf(std::initializer_list<const Config*> sets) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  for (const Config* set : sets) {
    for (const auto& [k, v] : *set) {
      if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return absl::InvalidArgumentError(absl::StrCat("librdkafka property ", k, "=", v, ": ", err));
      }
    }
  }
  return conf;
}

absl::StatusOr<uint32_t> TopicPartitionCount(rd_kafka_t* rk, rd_kafka_topic_t* topic,
                                             absl::string_view brokers, int timeout_ms) {
  const std::string name = rd_kafka_topic_name(topic);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  absl::Status last = absl::DeadlineExceededError("no metadata");
  while (std::chrono::steady_clock::now() < deadline) {
    const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          deadline - std::chrono::steady_clock::now())
                                          .count());
    const rd_kafka_metadata_t* md = nullptr;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, topic, &md, std::max(left, 1));
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return KafkaStatus(e, absl::StrCat("metadata of topic ", name, " from ", brokers));
    }
    rd_kafka_resp_err_t topic_err = RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
    int count = 0;
    for (int i = 0; i < md->topic_cnt; ++i) {
      if (name == md->topics[i].topic) {
        topic_err = md->topics[i].err;
        count = md->topics[i].partition_cnt;
      }
    }
    rd_kafka_metadata_destroy(md);
    if (topic_err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
        topic_err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
      return absl::NotFoundError(absl::StrCat(
          "Kafka topic ", name, " does not exist (create it with the partition count"
          " every process uses)"));
    }
    if (topic_err == RD_KAFKA_RESP_ERR_NO_ERROR && count > 0) return static_cast<uint32_t>(count);
    last = KafkaStatus(topic_err, absl::StrCat("metadata of topic ", name));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return last;
}

}  // namespace presence::kafka_internal
