// presence_mock_kafka: librdkafka's mock cluster in a process of its own, so
// that presence_server nodes (and the cluster test) reach a Kafka bus over
// TCP on one machine without a broker. Not for production: the mock keeps
// everything in memory and has the quirks adapters/kafka/tests/mock_kafka.h
// lists (give the nodes the --kafka-config lines it prints).
//
//   presence_mock_kafka [--brokers 3] [--topic presence] [--partitions 12]
//
// --brokers counts the brokers that lead the partitions; one more
// coordinates the nodes' group (MockKafka says why). It creates the topic
// and its change topic (ClusterChangeTopic), each with the partitions.
// Prints "bootstrap HOST:PORT,..." on its first line, then the suggested
// client settings, and serves until SIGINT or SIGTERM.
#include <signal.h>

#include <cstdio>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "adapters/kafka/tests/mock_kafka.h"
#include "examples/presence_server/cluster.h"

int main(int argc, char** argv) {
  int brokers = 3, partitions = 12;
  std::string topic = "presence";
  for (int i = 1; i < argc; ++i) {
    const absl::string_view a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--brokers" && has_value && absl::SimpleAtoi(argv[i + 1], &brokers) && brokers >= 1) {
      ++i;
    } else if (a == "--partitions" && has_value && absl::SimpleAtoi(argv[i + 1], &partitions) &&
               partitions >= 1) {
      ++i;
    } else if (a == "--topic" && has_value && argv[i + 1][0] != '\0') {
      topic = argv[++i];
    } else {
      std::fprintf(stderr, "usage: presence_mock_kafka [--brokers N>=1] [--topic NAME] [--partitions N>=1]\n");
      return 2;
    }
  }
  // Block the signals before librdkafka starts its threads, so that they
  // all inherit the mask and sigwait below receives them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  presence::kafka_testing::MockKafka kafka(brokers);
  kafka.CreateTopic(topic, partitions);
  kafka.CreateTopic(presence_server::ClusterChangeTopic(topic), partitions);
  presence::KafkaBusOptions nodes_bus;  // presence_server's
  nodes_bus.topic = topic;
  nodes_bus.group_id = presence_server::ClusterBusGroup(topic);
  kafka.CoordinateOwners(nodes_bus);
  std::printf("bootstrap %s\n", kafka.bootstrap().c_str());
  std::printf("topic %s partitions %d\n", topic.c_str(), partitions);
  // The mock answers a fetch at a partition's end only after
  // fetch.wait.max.ms, and mishandles pipelined produce requests.
  std::printf("client-config fetch.wait.max.ms=10 max.in.flight.requests.per.connection=1\n");
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop, &sig);
  return 0;
}
