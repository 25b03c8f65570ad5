// The Kafka bus against librdkafka's mock cluster: the Bus conformance
// suite, the record layout seen by a plain Kafka consumer, batches, seeks,
// commits, and a change of partition leaders in the middle of the stream.
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "adapters/kafka/tests/mock_kafka.h"
#include "presence/kafka_bus.h"
#include "tests/conformance/store_conformance.h"

namespace presence::conformance {
namespace {

// Each test gets a topic of its own on the binary's mock cluster.
struct KafkaBusFactory {
  std::unique_ptr<Bus> Open() {
    auto bus = KafkaBus::Create(kafka_testing::MockKafka::Shared().NewTopicOptions(4));
    EXPECT_TRUE(bus.ok()) << bus.status();
    return bus.ok() ? std::move(*bus) : nullptr;
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Kafka, BusConformance, ::testing::Types<KafkaBusFactory>);
// The header's other suites are for stores.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(StoreConformance);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(HistoryConformance);

}  // namespace
}  // namespace presence::conformance

namespace presence {
namespace {

using kafka_testing::MockKafka;
using ::testing::HasSubstr;

std::unique_ptr<KafkaBus> NewBus(const KafkaBusOptions& o) {
  auto bus = KafkaBus::Create(o);
  EXPECT_TRUE(bus.ok()) << bus.status();
  return bus.ok() ? std::move(*bus) : nullptr;
}

// Everything in `partition` from 0, read in slices of `slice`.
std::vector<BusRecord> ReadAll(Bus* bus, uint32_t partition, size_t slice = 1000) {
  std::vector<BusRecord> all;
  for (;;) {
    auto recs = bus->Read(partition, all.size(), slice);
    EXPECT_TRUE(recs.ok()) << recs.status();
    if (!recs.ok() || recs->empty()) return all;
    for (auto& r : *recs) all.push_back(std::move(r));
  }
}

// A plain librdkafka consumer of one partition, to see what is really on
// the topic.
struct RawRecord {
  int32_t partition;
  int64_t offset;
  std::string key, value, type_header;
  bool has_type_header = false;
};
std::vector<RawRecord> RawConsume(const std::string& brokers, const std::string& topic,
                                  int32_t partition, size_t count) {
  char err[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof err);
  rd_kafka_conf_set(conf, "group.id", "raw-reader", err, sizeof err);
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic.c_str(), partition)->offset = RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_assign(rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  std::vector<RawRecord> out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      RawRecord r;
      r.partition = m->partition;
      r.offset = m->offset;
      r.key.assign(static_cast<const char*>(m->key), m->key_len);
      r.value.assign(static_cast<const char*>(m->payload), m->len);
      rd_kafka_headers_t* h = nullptr;
      const void* v = nullptr;
      size_t size = 0;
      if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
          rd_kafka_header_get_last(h, "presence.type", &v, &size) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        r.has_type_header = true;
        r.type_header.assign(static_cast<const char*>(v), size);
      }
      out.push_back(std::move(r));
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return out;
}

TEST(KafkaBus, RecordsAreKeyedByUserInTheUsersPartitionWithTheTypeInAHeader) {
  MockKafka& kafka = MockKafka::Shared();
  KafkaBusOptions o = kafka.NewTopicOptions(8);
  auto bus = NewBus(o);
  ASSERT_NE(bus, nullptr);
  ASSERT_EQ(bus->partitions(), 8u);
  const uint32_t p = PartitionFor("alice", 8);
  ASSERT_TRUE(bus->Publish(BusRecordType::kSignal, "alice", std::string("s\0ig", 4)).ok());
  ASSERT_TRUE(bus->Publish(BusRecordType::kChange, "alice", "chg").ok());
  ASSERT_TRUE(bus->Publish(BusRecordType::kOverride, "alice", "ovr").ok());
  ASSERT_TRUE(bus->Publish(BusRecordType::kErase, "alice", "era").ok());
  EXPECT_TRUE(absl::IsInvalidArgument(bus->Publish(static_cast<BusRecordType>(9), "alice", "x").status()));
  auto raw = RawConsume(o.brokers, o.topic, static_cast<int32_t>(p), 4);
  ASSERT_EQ(raw.size(), 4u);
  EXPECT_EQ(raw[0].key, "alice");
  EXPECT_EQ(raw[0].value, std::string("s\0ig", 4));  // the payload, unchanged
  EXPECT_EQ(raw[0].type_header, "signal");
  EXPECT_EQ(raw[1].type_header, "change");
  EXPECT_EQ(raw[1].offset, 1);
  EXPECT_EQ(raw[2].type_header, "override");
  EXPECT_EQ(raw[3].type_header, "erase");
  // And the bus reads them back as it wrote them (one Read may answer with
  // the first only: what the client had fetched).
  const std::vector<BusRecord> recs = ReadAll(bus.get(), p);
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(recs[0].type, BusRecordType::kSignal);
  EXPECT_EQ(recs[0].key, "alice");
  EXPECT_EQ(recs[1].type, BusRecordType::kChange);
  EXPECT_EQ(recs[2].type, BusRecordType::kOverride);
  EXPECT_EQ(recs[2].payload, "ovr");
  EXPECT_EQ(recs[3].type, BusRecordType::kErase);
}

TEST(KafkaBus, ARecordFromAnotherProducerReadsWithAnUnknownType) {
  MockKafka& kafka = MockKafka::Shared();
  KafkaBusOptions o = kafka.NewTopicOptions(2);
  auto bus = NewBus(o);
  ASSERT_NE(bus, nullptr);
  char err[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", o.brokers.c_str(), err, sizeof err);
  rd_kafka_t* p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  ASSERT_EQ(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(o.topic.c_str()), RD_KAFKA_V_PARTITION(1),
                              RD_KAFKA_V_VALUE(const_cast<char*>("x"), 1), RD_KAFKA_V_END),
            RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_flush(p, 10000);
  rd_kafka_destroy(p);
  auto recs = bus->Read(1, 0, 10);
  ASSERT_TRUE(recs.ok()) << recs.status();
  ASSERT_EQ(recs->size(), 1u);
  EXPECT_NE((*recs)[0].type, BusRecordType::kSignal);
  EXPECT_NE((*recs)[0].type, BusRecordType::kChange);
  EXPECT_TRUE(BusRecordTypeName((*recs)[0].type).empty());
  EXPECT_EQ((*recs)[0].key, "");
}

TEST(KafkaBus, CreateChecksTheTopicAndTheOptions) {
  MockKafka& kafka = MockKafka::Shared();
  KafkaBusOptions o = kafka.NewTopicOptions(4);
  KafkaBusOptions wrong = o;
  wrong.partitions = 8;
  auto st = KafkaBus::Create(wrong).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  KafkaBusOptions any = o;
  any.partitions = 0;
  auto bus = KafkaBus::Create(any);
  ASSERT_TRUE(bus.ok()) << bus.status();
  EXPECT_EQ((*bus)->partitions(), 4u);
  // A missing topic: a real broker answers that it does not exist
  // (NotFound); the mock one creates it with its default count (4).
  KafkaBusOptions missing = o;
  missing.topic = "no-such-topic";
  missing.partitions = 7;
  missing.request_timeout_ms = 3000;
  st = KafkaBus::Create(missing).status();
  EXPECT_TRUE(absl::IsNotFound(st) || absl::IsFailedPrecondition(st)) << st;
  KafkaBusOptions bad = o;
  bad.config.push_back({"no.such.property", "1"});
  st = KafkaBus::Create(bad).status();
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("no.such.property"));
  KafkaBusOptions none;
  EXPECT_TRUE(absl::IsInvalidArgument(KafkaBus::Create(none).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      (*bus)->Publish(static_cast<BusRecordType>(9), "alice", "x").status()));
}

TEST(KafkaBus, ABatchGetsItsOffsetsInOrder) {
  MockKafka& kafka = MockKafka::Shared();
  auto bus = NewBus(kafka.NewTopicOptions(4));
  ASSERT_NE(bus, nullptr);
  std::vector<std::string> users, payloads;
  for (int i = 0; i < 2000; ++i) {
    users.push_back("user-" + std::to_string(i % 37));
    payloads.push_back("p" + std::to_string(i));
  }
  std::vector<KafkaBus::Message> batch;
  for (int i = 0; i < 2000; ++i) {
    batch.push_back({i % 3 ? BusRecordType::kSignal : BusRecordType::kChange, users[i], payloads[i]});
  }
  auto offsets = bus->PublishBatch(batch);
  ASSERT_TRUE(offsets.ok()) << offsets.status();
  ASSERT_EQ(offsets->size(), batch.size());
  std::map<uint32_t, uint64_t> next;
  for (size_t i = 0; i < batch.size(); ++i) {
    const uint32_t p = PartitionFor(users[i], 4);
    EXPECT_EQ((*offsets)[i], next[p]++) << i;  // in batch order within the partition
  }
  for (uint32_t p = 0; p < 4; ++p) {
    auto recs = ReadAll(bus.get(), p, 300);
    ASSERT_EQ(recs.size(), next[p]);
    EXPECT_EQ(*bus->EndOffset(p), next[p]);
  }
  for (size_t i = 0; i < batch.size(); i += 97) {
    auto r = bus->Read(PartitionFor(users[i], 4), (*offsets)[i], 1);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->size(), 1u);
    EXPECT_EQ((*r)[0].payload, payloads[i]);
    EXPECT_EQ((*r)[0].type, batch[i].type);
  }
  EXPECT_EQ(bus->stats().published, 2000u);
}

TEST(KafkaBus, ReadsAnywhereBackwardsAndForwards) {
  MockKafka& kafka = MockKafka::Shared();
  auto bus = NewBus(kafka.NewTopicOptions(2));
  ASSERT_NE(bus, nullptr);
  const std::string user = "bob";
  const uint32_t p = PartitionFor(user, 2);
  std::vector<KafkaBus::Message> batch;
  std::vector<std::string> payloads;
  for (int i = 0; i < 500; ++i) payloads.push_back(std::to_string(i));
  for (int i = 0; i < 500; ++i) batch.push_back({BusRecordType::kSignal, user, payloads[i]});
  ASSERT_TRUE(bus->PublishBatch(batch).ok());
  std::mt19937 rng(7);
  for (int i = 0; i < 60; ++i) {
    const uint64_t from = rng() % 501;
    const size_t max = 1 + rng() % 50;
    auto recs = bus->Read(p, from, max);
    ASSERT_TRUE(recs.ok()) << recs.status();
    // At least one record unless at the end, and never more than asked.
    ASSERT_LE(recs->size(), max);
    if (from < 500) {
      ASSERT_FALSE(recs->empty()) << from;
    }
    for (size_t k = 0; k < recs->size(); ++k) {
      EXPECT_EQ((*recs)[k].offset, from + k);
      EXPECT_EQ((*recs)[k].payload, std::to_string(from + k));
    }
  }
  EXPECT_GT(bus->stats().seeks, 0u);
  EXPECT_TRUE(absl::IsOutOfRange(bus->Read(p, 501, 1).status()));
  EXPECT_TRUE(absl::IsOutOfRange(bus->Read(p, 501, 0).status()));
  auto recs = bus->Read(p, 499, 10);  // after the error, reads go on
  ASSERT_TRUE(recs.ok()) << recs.status();
  ASSERT_EQ(recs->size(), 1u);
}

// A hint starts the fetching: the reader learns the partitions' ends from
// its own fetches before any Read, and the Reads then take what came.
TEST(KafkaBus, APrefetchStartsFetchingBeforeTheRead) {
  MockKafka& kafka = MockKafka::Shared();
  const KafkaBusOptions o = kafka.NewTopicOptions(2);
  auto writer = NewBus(o);
  ASSERT_NE(writer, nullptr);
  std::vector<std::string> users(2);
  for (int i = 0; users[0].empty() || users[1].empty(); ++i) {
    const std::string u = "user-" + std::to_string(i);
    if (users[PartitionFor(u, 2)].empty()) users[PartitionFor(u, 2)] = u;
  }
  std::vector<std::string> payloads;
  for (int i = 0; i < 100; ++i) payloads.push_back(std::to_string(i));
  std::vector<KafkaBus::Message> batch;
  for (int i = 0; i < 200; ++i) batch.push_back({BusRecordType::kSignal, users[i % 2], payloads[i / 2]});
  ASSERT_TRUE(writer->PublishBatch(batch).ok());

  auto reader = NewBus(o);
  ASSERT_NE(reader, nullptr);
  for (uint32_t p = 0; p < 2; ++p) EXPECT_TRUE(absl::IsNotFound(reader->KnownEndOffset(p).status())) << p;
  reader->Prefetch(0, 10);
  reader->Prefetch(1, 0);
  auto known = [&](uint32_t p) {
    auto end = reader->KnownEndOffset(p);
    return end.ok() && *end == 100;
  };
  ASSERT_TRUE(kafka_testing::WaitUntil([&] { return known(0) && known(1); }))
      << "no fetch of both partitions within 10 s of the hints";
  EXPECT_EQ(reader->stats().records_read, 0u);
  auto from10 = reader->Read(0, 10, 1000);
  ASSERT_TRUE(from10.ok()) << from10.status();
  ASSERT_EQ(from10->size(), 90u);
  for (size_t k = 0; k < from10->size(); ++k) EXPECT_EQ((*from10)[k].payload, payloads[10 + k]);
  EXPECT_EQ(reader->stats().seeks, 0u) << "the read where the hint pointed moved the reader";
  auto from50 = reader->Read(1, 50, 10);  // not where it was hinted
  ASSERT_TRUE(from50.ok()) << from50.status();
  ASSERT_EQ(from50->size(), 10u);
  for (size_t k = 0; k < from50->size(); ++k) EXPECT_EQ((*from50)[k].offset, 50 + k);
  EXPECT_EQ(reader->stats().seeks, 1u);
  // Hinted ahead, fetched, then read behind the hint: the records fetched
  // for the hint are not taken for those asked.
  reader->Prefetch(0, 95);
  auto from5 = reader->Read(0, 5, 10);
  ASSERT_TRUE(from5.ok()) << from5.status();
  ASSERT_EQ(from5->size(), 10u);
  for (size_t k = 0; k < from5->size(); ++k) EXPECT_EQ((*from5)[k].payload, payloads[5 + k]);
}

// The log start moves on (retention); a read below it is OutOfRange, as the
// Bus contract says of offsets no longer held. The mock broker keeps a
// bounded number of log segments; the test publishes until it drops one.
TEST(KafkaBus, AnOffsetNoLongerHeldIsOutOfRange) {
  MockKafka& kafka = MockKafka::Shared();
  KafkaBusOptions o = kafka.NewTopicOptions(1);
  auto bus = NewBus(o);
  ASSERT_NE(bus, nullptr);
  const std::string payload(100, 'x');
  std::vector<KafkaBus::Message> batch(5000, {BusRecordType::kSignal, "alice", payload});
  int64_t low = 0;
  for (int i = 0; i < 100 && low == 0; ++i) {
    ASSERT_TRUE(bus->PublishBatch(batch).ok());
    low = kafka.Watermarks(o.topic, 0).first;
  }
  if (low == 0) GTEST_SKIP() << "this mock broker kept all of 500,000 records";
  const uint64_t start = static_cast<uint64_t>(low);
  // (A reader that had fetched them before they went would return them.)
  absl::Status st = bus->Read(0, 0, 10).status();
  EXPECT_TRUE(absl::IsOutOfRange(st)) << st;
  st = bus->Read(0, start - 1, 10).status();
  EXPECT_TRUE(absl::IsOutOfRange(st)) << st;
  for (int i = 0; i < 3; ++i) {  // and reads go on from the log start
    auto recs = bus->Read(0, start, 10);
    ASSERT_TRUE(recs.ok()) << recs.status();
    ASSERT_FALSE(recs->empty());
    EXPECT_EQ((*recs)[0].offset, start);
    st = bus->Read(0, start - 1000, 10).status();
    EXPECT_TRUE(absl::IsOutOfRange(st)) << st;
  }
}

TEST(KafkaBus, ReadWaitsForWhatWasJustPublished) {
  MockKafka& kafka = MockKafka::Shared();
  auto bus = NewBus(kafka.NewTopicOptions(1));
  ASSERT_NE(bus, nullptr);
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(bus->Publish(BusRecordType::kSignal, "u", std::to_string(i)).ok());
    auto recs = bus->Read(0, i, 10);  // the reader continues where it stopped
    ASSERT_TRUE(recs.ok()) << recs.status();
    ASSERT_EQ(recs->size(), 1u) << i;
    EXPECT_EQ((*recs)[0].payload, std::to_string(i));
    auto none = bus->Read(0, i + 1, 10);
    ASSERT_TRUE(none.ok());
    EXPECT_TRUE(none->empty());
  }
}

// At a partition's end, once the consumer's own fetch found the end there
// (a partition EOF event, or the last fetch's high watermark), a read asks
// the leader at most once a second: an engine's ConsumeBus and a feed's Poll
// at the end of every partition, each tick, cost no request. What another
// producer appends comes with a later fetch.
TEST(KafkaBus, AReadAtTheEndTheFetchesFoundAsksTheLeaderOnceASecond) {
  MockKafka& kafka = MockKafka::Shared();
  const KafkaBusOptions o = kafka.NewTopicOptions(1);
  auto writer = NewBus(o);
  auto reader = NewBus(o);
  ASSERT_NE(writer, nullptr);
  ASSERT_NE(reader, nullptr);
  auto publish = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      ASSERT_TRUE(writer->Publish(BusRecordType::kSignal, "u", std::to_string(i)).ok());
    }
  };
  publish(0, 5);
  auto queries = [&] { return reader->stats().watermark_queries; };
  // Positioned at the end, nothing to take: the first read asks, then the
  // fetch's EOF event tells the reader.
  auto none = reader->Read(0, 5, 10);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  EXPECT_GE(queries(), 1u);
  auto at_end_asking_nobody = [&](uint64_t offset) {
    const uint64_t before = queries();
    auto got = reader->Read(0, offset, 10);
    return got.ok() && got->empty() && queries() == before;
  };
  ASSERT_TRUE(kafka_testing::WaitUntil([&] { return at_end_asking_nobody(5); }));
  uint64_t before = queries();
  for (int i = 0; i < 50; ++i) {
    auto again = reader->Read(0, 5, 10);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_TRUE(again->empty());
  }
  EXPECT_LE(queries(), before + 1) << "50 reads within a second (one may cross it)";
  // Appended by another producer: the records come with the fetches.
  publish(5, 8);
  std::vector<BusRecord> more;
  ASSERT_TRUE(kafka_testing::WaitUntil([&] {
    auto got = reader->Read(0, 5 + more.size(), 10);
    if (got.ok()) more.insert(more.end(), got->begin(), got->end());
    return more.size() >= 3;
  }));
  ASSERT_EQ(more.size(), 3u);
  for (size_t k = 0; k < more.size(); ++k) EXPECT_EQ(more[k].payload, std::to_string(5 + k));
  ASSERT_TRUE(kafka_testing::WaitUntil([&] { return at_end_asking_nobody(8); }));
  EXPECT_EQ(reader->stats().seeks, 0u);
  // Read at the end without pause for 2.5 s: the leader is asked once a
  // second, so a fetcher that stalled would be found out.
  before = queries();
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(2500)) {
    auto again = reader->Read(0, 8, 10);
    ASSERT_TRUE(again.ok()) << again.status();
    ASSERT_TRUE(again->empty());
  }
  EXPECT_GE(queries() - before, 2u);
  EXPECT_LE(queries() - before, 3u);
}

// Publishers and a reader keep going while every partition's leader moves
// from broker to broker: nothing is lost, nothing is duplicated, and each
// user's records stay in order.
TEST(KafkaBus, APartitionLeaderChangeMidStreamLosesAndDuplicatesNothing) {
  MockKafka kafka(3);
  KafkaBusOptions o = kafka.NewTopicOptions(4);
  // (One produce request in flight per broker: see MockKafka::NewTopicOptions.)
  auto bus = NewBus(o);
  ASSERT_NE(bus, nullptr);
  constexpr int kThreads = 3;
  std::atomic<bool> stop{false};
  std::atomic<int> done{0};
  std::atomic<size_t> published{0};
  std::vector<std::thread> publishers;
  for (int t = 0; t < kThreads; ++t) {
    publishers.emplace_back([&, t] {
      for (int i = 0; !stop.load();) {
        if (t == 0) {  // one by one
          const std::string user = "t0-u" + std::to_string(i % 11);
          auto off = bus->Publish(BusRecordType::kSignal, user, std::to_string(i));
          EXPECT_TRUE(off.ok()) << off.status();
          published += off.ok();
          ++i;
        } else {  // in batches of 20
          std::vector<std::string> payloads, users;
          for (int k = 0; k < 20; ++k) {
            payloads.push_back(std::to_string(t * 10'000'000 + i + k));
            users.push_back("t" + std::to_string(t) + "-u" + std::to_string((i + k) % 11));
          }
          std::vector<KafkaBus::Message> batch;
          for (int k = 0; k < 20; ++k) batch.push_back({BusRecordType::kSignal, users[k], payloads[k]});
          auto offs = bus->PublishBatch(batch);
          EXPECT_TRUE(offs.ok()) << offs.status();
          if (offs.ok()) published += 20;
          i += 20;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(300));
      }
      ++done;
    });
  }
  // A reader follows every partition meanwhile.
  std::vector<std::vector<BusRecord>> got(4);
  std::thread reader([&] {
    for (;;) {
      const bool last = done.load() == kThreads;
      for (uint32_t p = 0; p < 4; ++p) {
        auto recs = bus->Read(p, got[p].size(), 64);
        EXPECT_TRUE(recs.ok()) << recs.status();
        if (recs.ok()) got[p].insert(got[p].end(), recs->begin(), recs->end());
      }
      if (last) {
        bool caught_up = true;
        for (uint32_t p = 0; p < 4; ++p) caught_up &= got[p].size() == *bus->EndOffset(p);
        if (caught_up) return;
      }
    }
  });
  // Move the leaders around while all that runs.
  for (int round = 0; round < 8; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    for (int p = 0; p < 4; ++p) kafka.SetLeader(o.topic, p, 1 + (round + p) % 3);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  stop = true;
  for (auto& th : publishers) th.join();
  reader.join();

  std::set<std::string> seen;
  std::map<std::string, int64_t> last_of_user;
  size_t total = 0;
  for (uint32_t p = 0; p < 4; ++p) {
    for (size_t i = 0; i < got[p].size(); ++i) {
      const BusRecord& r = got[p][i];
      EXPECT_EQ(r.offset, i);
      EXPECT_EQ(PartitionFor(r.key, 4), p);
      EXPECT_TRUE(seen.insert(r.key + "/" + r.payload).second) << "duplicated: " << r.payload;
      const int64_t v = std::stoll(r.payload);
      auto [it, fresh] = last_of_user.emplace(r.key, v);
      if (!fresh) {
        EXPECT_GT(v, it->second) << r.key;  // a user's records in publish order
        it->second = v;
      }
    }
    total += got[p].size();
    // A second read from 0, after the moves, sees the same log.
    auto again = ReadAll(bus.get(), p, 500);
    ASSERT_EQ(again.size(), got[p].size());
    for (size_t i = 0; i < again.size(); ++i) EXPECT_EQ(again[i].payload, got[p][i].payload);
  }
  EXPECT_GT(published.load(), 200u);
  EXPECT_EQ(total, published.load());  // nothing lost, nothing extra
  EXPECT_EQ(bus->stats().publish_errors, 0u);
}

TEST(KafkaBus, OffsetsCommittedToTheGroupAreSeenByTheNextBus) {
  MockKafka& kafka = MockKafka::Shared();
  KafkaBusOptions o = kafka.NewTopicOptions(4, "presence-engines");
  {
    KafkaBusOptions no_group = o;
    no_group.group_id.clear();
    auto bus = NewBus(no_group);
    ASSERT_NE(bus, nullptr);
    EXPECT_TRUE(absl::IsFailedPrecondition(bus->CommitOffsets({{0, 1}})));
    EXPECT_TRUE(absl::IsFailedPrecondition(bus->CommittedOffsets().status()));
  }
  auto bus = NewBus(o);
  ASSERT_NE(bus, nullptr);
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(bus->Publish(BusRecordType::kSignal, "u" + std::to_string(i), "x").ok());
  }
  auto none = bus->CommittedOffsets();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  std::vector<CommittedOffset> offsets;
  for (uint32_t p = 0; p < 4; ++p) offsets.push_back({p, *bus->EndOffset(p)});
  ASSERT_TRUE(bus->CommitOffsets(offsets).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(bus->CommitOffsets({{4, 1}})));
  bus.reset();
  auto next = NewBus(o);
  ASSERT_NE(next, nullptr);
  auto committed = next->CommittedOffsets();
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(*committed, offsets);
  // Asynchronously: seen once the coordinator answered.
  offsets[2].offset += 1;
  ASSERT_TRUE(next->CommitOffsetsAsync(offsets).ok());
  kafka_testing::WaitUntil([&] { return next->stats().commits >= 1; });
  EXPECT_EQ(next->stats().commits, 1u);
  EXPECT_EQ(*next->CommittedOffsets(), offsets);
}

}  // namespace
}  // namespace presence
