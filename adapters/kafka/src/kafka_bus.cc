// presence::KafkaBus over librdkafka's C API. See presence/kafka_bus.h for
// the mapping of the Bus contract onto Kafka.
//
// Two client handles: an idempotent producer, and a consumer that is never
// subscribed (partitions are assigned one by one, on first read or
// prefetch, at the offset asked for), whose group id serves only for offset
// commits. One thread serves the producer's delivery reports and the
// consumer's events.
#include "presence/kafka_bus.h"

#include <librdkafka/rdkafka.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "adapters/kafka/src/kafka_common.h"

namespace presence {
namespace {

using kafka_internal::Config;
using kafka_internal::KafkaStatus;
using kafka_internal::MakeConf;
using kafka_internal::PartitionList;
using kafka_internal::TopicPartitionCount;

constexpr char kTypeHeader[] = "presence.type";  // BusRecordTypeName
// How long a read at a partition's end takes the consumer's fetches for the
// end without asking the leader again (Read): the leader is asked at most
// this often per partition there.
constexpr std::chrono::seconds kTrustFetchedEnd(1);

// The type of a read record, from its header; 0 (no type of the bus) for a
// record without one.
BusRecordType TypeOf(const rd_kafka_message_t* m) {
  rd_kafka_headers_t* headers = nullptr;
  if (rd_kafka_message_headers(m, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return static_cast<BusRecordType>(0);
  }
  const void* value = nullptr;
  size_t size = 0;
  if (rd_kafka_header_get_last(headers, kTypeHeader, &value, &size) !=
          RD_KAFKA_RESP_ERR_NO_ERROR ||
      value == nullptr) {
    return static_cast<BusRecordType>(0);
  }
  return BusRecordTypeNamed(absl::string_view(static_cast<const char*>(value), size))
      .value_or(static_cast<BusRecordType>(0));
}

// Waits for the delivery reports of one Publish or PublishBatch. Each
// produced record carries a Slot as its opaque.
struct Delivery {
  struct Slot {
    Delivery* delivery;
    size_t index;
  };
  explicit Delivery(size_t n) : remaining(n), offsets(n, -1), slots(n) {
    for (size_t i = 0; i < n; ++i) slots[i] = Slot{this, i};
  }
  absl::Mutex mu;
  size_t remaining ABSL_GUARDED_BY(mu);
  std::vector<int64_t> offsets ABSL_GUARDED_BY(mu);
  rd_kafka_resp_err_t first_error ABSL_GUARDED_BY(mu) = RD_KAFKA_RESP_ERR_NO_ERROR;
  size_t failed ABSL_GUARDED_BY(mu) = 0;
  size_t without_offset ABSL_GUARDED_BY(mu) = 0;  // written, offset not reported
  std::vector<Slot> slots;
};

// A commit's outcome, for the synchronous CommitOffsets.
struct CommitResult {
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  std::string detail;
};

}  // namespace

struct KafkaBus::Impl {
  KafkaBusOptions options;
  uint32_t n = 0;
  rd_kafka_t* producer = nullptr;
  rd_kafka_topic_t* producer_topic = nullptr;
  rd_kafka_t* consumer = nullptr;
  rd_kafka_queue_t* commit_queue = nullptr;  // results of asynchronous commits
  std::thread poller;
  std::atomic<bool> stop{false};

  // One per partition: reads of a partition are serialized.
  struct Reader {
    absl::Mutex mu;
    rd_kafka_queue_t* queue ABSL_GUARDED_BY(mu) = nullptr;  // the partition's own queue
    bool assigned ABSL_GUARDED_BY(mu) = false;
    // The offset the queue delivers next, or -1 when unknown (after an
    // error): the next read seeks.
    int64_t next ABSL_GUARDED_BY(mu) = -1;
    // Whether the consumer delivered a record, or a partition EOF event
    // (a fetch that found the end where the reader is), since the reader
    // was positioned: then the high watermark of its last fetch is of this
    // position's fetches, at most one fetch old.
    bool fetched ABSL_GUARDED_BY(mu) = false;
    // When a read of it last asked the leader for the watermarks.
    std::chrono::steady_clock::time_point asked ABSL_GUARDED_BY(mu);
  };
  std::vector<std::unique_ptr<Reader>> readers;
  // Per partition: the end offset this process last learned (a watermark
  // query's answer, or past an offset it published), -1 while none.
  std::unique_ptr<std::atomic<int64_t>[]> known_end;

  std::atomic<uint64_t> published{0}, publish_errors{0}, published_without_offset{0},
      records_read{0}, seeks{0},
      watermark_queries{0}, commits{0}, commit_errors{0};

  ~Impl() {
    if (producer != nullptr) rd_kafka_flush(producer, options.publish_timeout_ms);
    stop = true;
    if (poller.joinable()) poller.join();
    if (consumer != nullptr) {
      PartitionList assigned(rd_kafka_topic_partition_list_new(static_cast<int>(readers.size())));
      for (size_t p = 0; p < readers.size(); ++p) {
        absl::MutexLock lock(&readers[p]->mu);
        if (readers[p]->assigned) {
          rd_kafka_topic_partition_list_add(assigned.get(), options.topic.c_str(), static_cast<int32_t>(p));
        }
      }
      if (assigned->cnt > 0) {
        if (rd_kafka_error_t* e = rd_kafka_incremental_unassign(consumer, assigned.get())) {
          rd_kafka_error_destroy(e);
        }
      }
      for (auto& r : readers) {
        absl::MutexLock lock(&r->mu);
        if (r->queue != nullptr) rd_kafka_queue_destroy(r->queue);
        r->queue = nullptr;
      }
      if (commit_queue != nullptr) {
        rd_kafka_queue_poll_callback(commit_queue, 0);
        rd_kafka_queue_destroy(commit_queue);
      }
      rd_kafka_consumer_close(consumer);
      rd_kafka_destroy(consumer);
    }
    if (producer_topic != nullptr) rd_kafka_topic_destroy(producer_topic);
    if (producer != nullptr) rd_kafka_destroy(producer);
  }

  static void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
    auto* slot = static_cast<Delivery::Slot*>(m->_private);
    if (slot == nullptr) return;
    Delivery* d = slot->delivery;
    absl::MutexLock lock(&d->mu);
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (d->first_error == RD_KAFKA_RESP_ERR_NO_ERROR) d->first_error = m->err;
      ++d->failed;
    } else if (m->offset < 0) {
      // Acknowledged implicitly: the response to its request was lost, and
      // a later request of the partition succeeded, which the broker only
      // accepts after this one. Written, but at an offset nobody told us.
      ++d->without_offset;
    } else {
      d->offsets[slot->index] = m->offset;
    }
    --d->remaining;
  }

  static void OnAsyncCommit(rd_kafka_t*, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t* offsets, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    bool ok = err == RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; ok && offsets != nullptr && i < offsets->cnt; ++i) {
      ok = offsets->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    (ok ? self->commits : self->commit_errors).fetch_add(1, std::memory_order_relaxed);
  }

  static void OnSyncCommit(rd_kafka_t*, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t* offsets, void* opaque) {
    auto* result = static_cast<CommitResult*>(opaque);
    result->err = err;
    for (int i = 0; result->err == RD_KAFKA_RESP_ERR_NO_ERROR && offsets != nullptr &&
                    i < offsets->cnt;
         ++i) {
      if (offsets->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        result->err = offsets->elems[i].err;
        result->detail = absl::StrCat(" (partition ", offsets->elems[i].partition, ")");
      }
    }
  }

  // Serves delivery reports, asynchronous commit results and the consumer's
  // events (errors are logged by librdkafka itself).
  void Poll() {
    while (!stop.load(std::memory_order_relaxed)) {
      rd_kafka_poll(producer, 20);
      rd_kafka_queue_poll_callback(commit_queue, 0);
      rd_kafka_poll(consumer, 0);
      // The consumer's own queue gets only errors (every assigned partition
      // has its own queue); librdkafka has logged them.
      while (rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer, 0)) rd_kafka_message_destroy(m);
    }
  }

  absl::Status Connect() {
    if (options.brokers.empty()) return absl::InvalidArgumentError("KafkaBusOptions::brokers is empty");
    if (options.topic.empty()) return absl::InvalidArgumentError("KafkaBusOptions::topic is empty");
    if (options.publish_timeout_ms <= 0 || options.request_timeout_ms <= 0) {
      return absl::InvalidArgumentError("KafkaBusOptions timeouts must be positive");
    }
    const Config producer_defaults = {
        // Sent at once: Publish waits for each record; PublishBatch and
        // concurrent publishers still batch, while requests are in flight.
        {"linger.ms", "0"},
        {"log.connection.close", "false"},
        // Requests go out as soon as they are built (no Nagle delay: with
        // several requests on a connection it stalls them ~40 ms).
        {"socket.nagle.disable", "true"},
    };
    const Config producer_fixed = {
        {"bootstrap.servers", options.brokers},
        // acks=all, bounded in-flight requests, retries without reordering
        // or duplicates (also across a change of partition leader).
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"message.timeout.ms", std::to_string(options.publish_timeout_ms)},
    };
    auto pconf = MakeConf({&producer_defaults, &options.config, &options.producer_config,
                           &producer_fixed});
    if (!pconf.ok()) return pconf.status();
    rd_kafka_conf_set_dr_msg_cb(*pconf, &Impl::OnDelivery);
    char err[512];
    producer = rd_kafka_new(RD_KAFKA_PRODUCER, *pconf, err, sizeof err);
    if (producer == nullptr) {
      rd_kafka_conf_destroy(*pconf);
      return absl::InvalidArgumentError(absl::StrCat("creating the Kafka producer: ", err));
    }

    // The consumer needs a group id to be assigned partitions; without the
    // host's, a private one that is never committed to.
    static std::atomic<uint64_t> instance{0};
    const std::string group =
        !options.group_id.empty()
            ? options.group_id
            : absl::StrCat("presence-bus-reader-", getpid(), "-", instance.fetch_add(1));
    const Config consumer_defaults = {
        {"log.connection.close", "false"},
        {"socket.nagle.disable", "true"},
        // A fetch waiting at the end of a partition holds up the next fetch
        // of every partition on that broker, so a seek (a read that does not
        // continue the previous one) waits for it: keep the wait short.
        {"fetch.wait.max.ms", "100"},
        // Prefetched records are kept per partition read (each has its own
        // queue): up to 100,000 records (queued.min.messages) or 16 MB, not
        // 64 MB. Lower bounds cost throughput in librdkafka 2.0: a partition
        // whose queue reached them is not fetched again for a second.
        {"queued.max.messages.kbytes", "16384"},
    };
    const Config consumer_fixed = {
        {"bootstrap.servers", options.brokers},
        {"group.id", group},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        // A read below the log start (or past the end) is an error, not a
        // silent jump.
        {"auto.offset.reset", "error"},
        // Each time a fetch finds a partition's end: a read there then
        // knows it without asking the leader (Reader::fetched).
        {"enable.partition.eof", "true"},
    };
    auto cconf = MakeConf({&consumer_defaults, &options.config, &options.consumer_config,
                           &consumer_fixed});
    if (!cconf.ok()) return cconf.status();
    consumer = rd_kafka_new(RD_KAFKA_CONSUMER, *cconf, err, sizeof err);
    if (consumer == nullptr) {
      rd_kafka_conf_destroy(*cconf);
      return absl::InvalidArgumentError(absl::StrCat("creating the Kafka consumer: ", err));
    }
    commit_queue = rd_kafka_queue_new(consumer);

    producer_topic = rd_kafka_topic_new(producer, options.topic.c_str(), nullptr);
    if (producer_topic == nullptr) {
      return KafkaStatus(rd_kafka_last_error(), absl::StrCat("topic ", options.topic));
    }
    poller = std::thread([this] { Poll(); });

    auto count = TopicPartitionCount(producer, producer_topic, options.brokers,
                                     options.request_timeout_ms);
    if (!count.ok()) return count.status();
    if (options.partitions != 0 && options.partitions != *count) {
      return absl::FailedPreconditionError(
          absl::StrCat("topic ", options.topic, " has ", *count, " partitions, not ",
                       options.partitions, " (users are placed by PartitionFor(user, ",
                       options.partitions, "))"));
    }
    n = *count;
    for (uint32_t p = 0; p < n; ++p) readers.push_back(std::make_unique<Reader>());
    known_end = std::make_unique<std::atomic<int64_t>[]>(n);
    for (uint32_t p = 0; p < n; ++p) known_end[p] = -1;
    // The consumer learns the partition leaders now rather than on the
    // first read (which would otherwise wait for its metadata refresh).
    if (rd_kafka_topic_t* t = rd_kafka_topic_new(consumer, options.topic.c_str(), nullptr)) {
      const rd_kafka_metadata_t* md = nullptr;
      if (rd_kafka_metadata(consumer, 0, t, &md, options.request_timeout_ms) ==
          RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_metadata_destroy(md);
      }
      rd_kafka_topic_destroy(t);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<uint64_t>> Produce(absl::Span<const Message> messages) {
    if (messages.empty()) return std::vector<uint64_t>();
    for (const Message& m : messages) {
      if (BusRecordTypeName(m.type).empty()) {
        return absl::InvalidArgumentError("unknown bus record type");
      }
    }
    Delivery d(messages.size());
    std::vector<uint32_t> partitions(messages.size());
    size_t produced = 0;
    rd_kafka_resp_err_t produce_err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (; produced < messages.size(); ++produced) {
      const Message& m = messages[produced];
      const absl::string_view type = BusRecordTypeName(m.type);
      partitions[produced] = PartitionFor(m.key, n);
      // Blocks while the local queue is full; the poller drains it.
      produce_err = rd_kafka_producev(
          producer, RD_KAFKA_V_RKT(producer_topic),
          RD_KAFKA_V_PARTITION(static_cast<int32_t>(partitions[produced])),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY | RD_KAFKA_MSG_F_BLOCK),
          RD_KAFKA_V_KEY(m.key.data(), m.key.size()),
          RD_KAFKA_V_VALUE(const_cast<char*>(m.payload.data()), m.payload.size()),
          RD_KAFKA_V_HEADER(kTypeHeader, type.data(), static_cast<ssize_t>(type.size())),
          RD_KAFKA_V_OPAQUE(&d.slots[produced]), RD_KAFKA_V_END);
      if (produce_err != RD_KAFKA_RESP_ERR_NO_ERROR) break;
    }
    {
      absl::MutexLock lock(&d.mu);
      if (produced < messages.size()) {
        // Nothing from here on went out: no report will come for it.
        d.remaining -= messages.size() - produced;
        d.failed += messages.size() - produced;
        if (d.first_error == RD_KAFKA_RESP_ERR_NO_ERROR) d.first_error = produce_err;
      }
      // Every produced record gets its report (by message.timeout.ms at
      // the latest), so this wait ends.
      d.mu.Await(absl::Condition(
          +[](Delivery* x) ABSL_EXCLUSIVE_LOCKS_REQUIRED(x->mu) { return x->remaining == 0; }, &d));
      published.fetch_add(messages.size() - d.failed, std::memory_order_relaxed);
      publish_errors.fetch_add(d.failed, std::memory_order_relaxed);
      if (d.first_error != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return KafkaStatus(d.first_error,
                           absl::StrCat("publishing to ", options.topic, " (", d.failed, " of ",
                                        messages.size(), " records failed)"));
      }
      if (d.without_offset > 0) {
        published_without_offset.fetch_add(d.without_offset, std::memory_order_relaxed);
        return absl::UnknownError(absl::StrCat(
            "publishing to ", options.topic, ": ", d.without_offset, " of ", messages.size(),
            " records were acknowledged without an offset (implicitly, after a lost response);"
            " they are written, at offsets unknown"));
      }
      for (size_t i = 0; i < messages.size(); ++i) {
        Learn(partitions[i], static_cast<int64_t>(d.offsets[i]) + 1);
      }
      return std::vector<uint64_t>(d.offsets.begin(), d.offsets.end());
    }
  }

  void Learn(uint32_t partition, int64_t end) {
    std::atomic<int64_t>& k = known_end[partition];
    int64_t held = k.load(std::memory_order_relaxed);
    while (end > held && !k.compare_exchange_weak(held, end, std::memory_order_relaxed)) {
    }
  }

  // What this process knows of the partition's end, asking nobody: the
  // high watermark of the consumer's last fetch, or what Learn kept.
  absl::StatusOr<uint64_t> KnownEnd(uint32_t partition) {
    int64_t low = RD_KAFKA_OFFSET_INVALID, high = RD_KAFKA_OFFSET_INVALID;
    rd_kafka_get_watermark_offsets(consumer, options.topic.c_str(), static_cast<int32_t>(partition),
                                   &low, &high);
    high = std::max(high, known_end[partition].load(std::memory_order_relaxed));
    if (high < 0) {
      return absl::NotFoundError(absl::StrCat("no end offset of ", options.topic, "/", partition,
                                              " is known yet"));
    }
    return static_cast<uint64_t>(high);
  }

  // The partition's low and high watermarks, asked of its leader; retried
  // while the leadership moves, up to request_timeout_ms.
  absl::StatusOr<std::pair<int64_t, int64_t>> Watermarks(uint32_t partition) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(options.request_timeout_ms);
    for (int attempt = 0;; ++attempt) {
      int64_t low = 0, high = 0;
      watermark_queries.fetch_add(1, std::memory_order_relaxed);
      const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                            deadline - std::chrono::steady_clock::now())
                                            .count());
      // Asked through the producer's connections: the consumer's may be
      // held by a fetch waiting for data, and a broker answers in order.
      rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
          producer, options.topic.c_str(), static_cast<int32_t>(partition), &low, &high,
          std::max(left, 1));
      if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        // The leader's answer stands, lower too (a topic truncated by an
        // unclean leader election).
        known_end[partition].store(high, std::memory_order_relaxed);
        return std::make_pair(low, high);
      }
      if (!Retriable(e) || std::chrono::steady_clock::now() >= deadline) {
        return KafkaStatus(e, absl::StrCat("watermarks of ", options.topic, "/", partition));
      }
      // librdkafka refreshes the leader on these errors; give it a moment.
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(5 << std::min(attempt, 5), 100)));
    }
  }

  // Errors that go away once the cluster settled (a leader moved, a broker
  // restarted).
  static bool Retriable(rd_kafka_resp_err_t e) {
    switch (e) {
      case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
      case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
      case RD_KAFKA_RESP_ERR_REPLICA_NOT_AVAILABLE:
      case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
      case RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE:
      case RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH:
      case RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH:
      case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
      case RD_KAFKA_RESP_ERR__TRANSPORT:
      case RD_KAFKA_RESP_ERR__WAIT_COORD:
      case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
      case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
      case RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
        return true;
      default:
        return false;
    }
  }

  // Starts delivering `partition` from `offset` into the reader's queue,
  // unless it delivers from there already (the previous read stopped there).
  absl::Status Position(uint32_t partition, Reader& r, int64_t offset)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(r.mu) {
    if (r.assigned && r.next == offset) return absl::OkStatus();
    PartitionList list(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(list.get(), options.topic.c_str(),
                                      static_cast<int32_t>(partition))
        ->offset = offset;
    rd_kafka_error_t* error = nullptr;
    if (!r.assigned) {
      // The partition's own queue, detached from the consumer's, before
      // anything is fetched into it.
      if (r.queue == nullptr) {
        r.queue = rd_kafka_queue_get_partition(consumer, options.topic.c_str(),
                                               static_cast<int32_t>(partition));
        if (r.queue == nullptr) return absl::InternalError("no queue for the partition");
        rd_kafka_queue_forward(r.queue, nullptr);
      }
      error = rd_kafka_incremental_assign(consumer, list.get());
      if (error == nullptr) r.assigned = true;
    } else {
      seeks.fetch_add(1, std::memory_order_relaxed);
      bool reassign = r.next < 0;  // the position was lost to an error
      if (!reassign) {
        error = rd_kafka_seek_partitions(consumer, list.get(), options.request_timeout_ms);
        const rd_kafka_resp_err_t e =
            error != nullptr ? rd_kafka_error_code(error) : list->elems[0].err;
        if (error != nullptr) rd_kafka_error_destroy(error);
        error = nullptr;
        // A seek needs a running fetcher; one that stopped, or is stopping,
        // refuses it (or never answers): assign the partition afresh.
        reassign = e != RD_KAFKA_RESP_ERR_NO_ERROR;
        list->elems[0].err = RD_KAFKA_RESP_ERR_NO_ERROR;
      }
      if (reassign) {
        error = rd_kafka_incremental_unassign(consumer, list.get());
        if (error == nullptr) {
          // Unassigned: a failed assign leaves it so, and the next
          // positioning assigns it afresh rather than seeking.
          r.assigned = false;
          error = rd_kafka_incremental_assign(consumer, list.get());
          if (error == nullptr) r.assigned = true;
        }
      }
    }
    if (error != nullptr) {
      absl::Status st = KafkaStatus(rd_kafka_error_code(error),
                                    absl::StrCat("positioning ", options.topic, "/", partition,
                                                 " at ", offset, " (", rd_kafka_error_string(error), ")"));
      rd_kafka_error_destroy(error);
      return st;
    }
    r.next = offset;
    r.fetched = false;  // what was fetched before is not of this position
    return absl::OkStatus();
  }

  // Moves records from the reader's queue to `out` until it holds `max` or
  // the reader reached offset `until`, waiting up to `timeout_ms` for them.
  // OutOfRange when the broker does not hold the reader's position.
  absl::Status Drain(uint32_t partition, Reader& r, size_t max, int64_t until, int timeout_ms,
                     std::vector<BusRecord>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r.mu) {
    rd_kafka_message_t* batch[256];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (out->size() < max && r.next >= 0 && r.next < until) {
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      deadline - std::chrono::steady_clock::now())
                                      .count());
      left = std::max(left, 0);
      const size_t ask = static_cast<size_t>(std::min<int64_t>(
          static_cast<int64_t>(std::min<size_t>(max - out->size(), 256)), until - r.next));
      // Whatever is there, without waiting (a batch call waits until it has
      // `ask` messages, and an error is one message); if nothing, wait for
      // the first that comes.
      ssize_t got = rd_kafka_consume_batch_queue(r.queue, 0, batch, ask);
      if (got == 0 && left > 0) {
        batch[0] = rd_kafka_consume_queue(r.queue, left);
        got = batch[0] != nullptr ? 1 : 0;
      }
      if (got < 0) return KafkaStatus(rd_kafka_last_error(), "consuming");
      absl::Status st;
      for (ssize_t i = 0; i < got; ++i) {
        rd_kafka_message_t* m = batch[i];
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
          // In order after the records before it: the end as of that fetch.
          if (m->offset == r.next) r.fetched = true;
        } else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
          // (One about an earlier position, before a seek, is stale.)
          if ((m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
               m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) &&
              m->offset == r.next) {
            r.next = -1;  // the position is lost: the next read seeks
            if (st.ok()) {
              st = absl::OutOfRangeError(absl::StrCat("offset ", m->offset, " of ", options.topic, "/",
                                                      partition, " is not held by the broker"));
            }
          }
          // Other errors are transient (librdkafka retries the fetch).
        } else if (st.ok() && r.next >= 0 && m->offset >= r.next) {
          BusRecord rec;
          rec.partition = partition;
          rec.offset = static_cast<uint64_t>(m->offset);
          rec.type = TypeOf(m);
          if (m->key != nullptr) rec.key.assign(static_cast<const char*>(m->key), m->key_len);
          if (m->payload != nullptr) rec.payload.assign(static_cast<const char*>(m->payload), m->len);
          out->push_back(std::move(rec));
          r.next = m->offset + 1;
          r.fetched = true;
        }
        // else: fetched before a seek to an earlier offset; dropped.
        rd_kafka_message_destroy(m);
      }
      if (!st.ok()) return st;
      if (got == 0) break;  // the time is up
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<BusRecord>> Read(uint32_t partition, uint64_t offset, size_t max) {
    if (partition >= n) return absl::InvalidArgumentError(absl::StrCat("no partition ", partition));
    if (offset > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::OutOfRangeError("offset past any Kafka offset");
    }
    const int64_t from = static_cast<int64_t>(offset);
    std::vector<BusRecord> out;
    if (max == 0) {
      auto wm = Watermarks(partition);
      if (!wm.ok()) return wm.status();
      if (from > wm->second || from < wm->first) {
        return absl::OutOfRangeError(absl::StrCat("offset ", offset, " is outside [", wm->first, ", ",
                                                  wm->second, "]"));
      }
      return out;
    }
    Reader& r = *readers[partition];
    absl::MutexLock lock(&r.mu);
    if (auto st = Position(partition, r, from); !st.ok()) return st;
    // What was already fetched comes at once.
    if (auto st = Drain(partition, r, max, std::numeric_limits<int64_t>::max(), 0, &out); !st.ok()) {
      return st;
    }
    if (out.size() == max) return Done(std::move(out));
    // How many more there are: the high watermark seen by the last fetch
    // when it shows more; none when this position's fetches found the end
    // where the reader is (the last one's high watermark says so), nothing
    // this process learned says otherwise, and the leader was asked
    // less than kTrustFetchedEnd ago (a fetcher that stalled is found out);
    // else the leader's (one request).
    int64_t low = RD_KAFKA_OFFSET_INVALID, high = RD_KAFKA_OFFSET_INVALID;
    rd_kafka_get_watermark_offsets(consumer, options.topic.c_str(), static_cast<int32_t>(partition),
                                   &low, &high);
    if (high <= r.next) {
      if (!out.empty()) return Done(std::move(out));
      const auto now = std::chrono::steady_clock::now();
      if (r.fetched && high == r.next && known_end[partition].load(std::memory_order_relaxed) <= r.next &&
          now - r.asked < kTrustFetchedEnd) {
        return out;  // at the end, as the consumer's last fetch found it
      }
      r.asked = now;
      auto wm = Watermarks(partition);
      if (!wm.ok()) return wm.status();
      std::tie(low, high) = *wm;
      if (from > high || from < low) {
        r.next = -1;
        return absl::OutOfRangeError(absl::StrCat("offset ", offset, " of ", options.topic, "/",
                                                  partition, " is outside [", low, ", ", high, "]"));
      }
      if (from == high) return out;  // at the end
    }
    if (auto st = Drain(partition, r, max, high, options.request_timeout_ms, &out); !st.ok()) {
      return st;
    }
    if (out.empty()) {
      r.next = -1;  // whatever held it up, the next read starts afresh
      return absl::UnavailableError(absl::StrCat("no record of ", options.topic, "/", partition,
                                                 " arrived within ", options.request_timeout_ms,
                                                 " ms (high watermark ", high, ")"));
    }
    return Done(std::move(out));
  }

  void Prefetch(uint32_t partition, uint64_t offset) {
    if (partition >= n || offset > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return;
    Reader& r = *readers[partition];
    absl::MutexLock lock(&r.mu);
    const int64_t from = static_cast<int64_t>(offset);
    // A failure leaves the reader unpositioned: the Read tries again.
    (void)Position(partition, r, from);
  }

  std::vector<BusRecord> Done(std::vector<BusRecord> out) {
    records_read.fetch_add(out.size(), std::memory_order_relaxed);
    return out;
  }

  absl::StatusOr<PartitionList> CommitList(const std::vector<CommittedOffset>& offsets) {
    if (options.group_id.empty()) {
      return absl::FailedPreconditionError("the Kafka bus has no consumer group (KafkaBusOptions::group_id)");
    }
    PartitionList list(rd_kafka_topic_partition_list_new(static_cast<int>(offsets.size())));
    for (const CommittedOffset& o : offsets) {
      if (o.partition >= n) return absl::InvalidArgumentError(absl::StrCat("no partition ", o.partition));
      if (o.offset > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::InvalidArgumentError("offset past any Kafka offset");
      }
      rd_kafka_topic_partition_list_add(list.get(), options.topic.c_str(),
                                        static_cast<int32_t>(o.partition))
          ->offset = static_cast<int64_t>(o.offset);
    }
    return list;
  }
};

KafkaBus::KafkaBus(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KafkaBus::~KafkaBus() = default;

absl::StatusOr<std::unique_ptr<KafkaBus>> KafkaBus::Create(KafkaBusOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  if (auto st = impl->Connect(); !st.ok()) return st;
  return std::unique_ptr<KafkaBus>(new KafkaBus(std::move(impl)));
}

uint32_t KafkaBus::partitions() const { return impl_->n; }
const std::string& KafkaBus::topic() const { return impl_->options.topic; }

absl::StatusOr<uint64_t> KafkaBus::Publish(BusRecordType type, absl::string_view key,
                                           absl::string_view payload) {
  const Message m{type, key, payload};
  auto offsets = impl_->Produce(absl::MakeConstSpan(&m, 1));
  if (!offsets.ok()) return offsets.status();
  return (*offsets)[0];
}

absl::StatusOr<std::vector<uint64_t>> KafkaBus::PublishBatch(absl::Span<const BusMessage> messages) {
  return impl_->Produce(messages);
}

absl::StatusOr<std::vector<BusRecord>> KafkaBus::Read(uint32_t partition, uint64_t offset,
                                                      size_t max) {
  return impl_->Read(partition, offset, max);
}

void KafkaBus::Prefetch(uint32_t partition, uint64_t offset) { impl_->Prefetch(partition, offset); }

absl::StatusOr<uint64_t> KafkaBus::EndOffset(uint32_t partition) {
  if (partition >= impl_->n) return absl::InvalidArgumentError(absl::StrCat("no partition ", partition));
  auto wm = impl_->Watermarks(partition);
  if (!wm.ok()) return wm.status();
  return static_cast<uint64_t>(wm->second);
}

absl::StatusOr<uint64_t> KafkaBus::KnownEndOffset(uint32_t partition) {
  if (partition >= impl_->n) return absl::InvalidArgumentError(absl::StrCat("no partition ", partition));
  return impl_->KnownEnd(partition);
}

absl::Status KafkaBus::CommitOffsets(const std::vector<CommittedOffset>& offsets) {
  auto list = impl_->CommitList(offsets);
  if (!list.ok()) return list.status();
  if (offsets.empty()) return absl::OkStatus();
  CommitResult result;
  // No queue: the call waits, and serves the callback itself.
  rd_kafka_resp_err_t e =
      rd_kafka_commit_queue(impl_->consumer, list->get(), nullptr, &Impl::OnSyncCommit, &result);
  if (e == RD_KAFKA_RESP_ERR_NO_ERROR) e = result.err;
  (e == RD_KAFKA_RESP_ERR_NO_ERROR ? impl_->commits : impl_->commit_errors)
      .fetch_add(1, std::memory_order_relaxed);
  return KafkaStatus(e, absl::StrCat("committing offsets of ", impl_->options.topic, " for group ",
                                     impl_->options.group_id, result.detail));
}

absl::Status KafkaBus::CommitOffsetsAsync(const std::vector<CommittedOffset>& offsets) {
  auto list = impl_->CommitList(offsets);
  if (!list.ok()) return list.status();
  if (offsets.empty()) return absl::OkStatus();
  rd_kafka_resp_err_t e = rd_kafka_commit_queue(impl_->consumer, list->get(), impl_->commit_queue,
                                                &Impl::OnAsyncCommit, impl_.get());
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) impl_->commit_errors.fetch_add(1, std::memory_order_relaxed);
  return KafkaStatus(e, "committing offsets");
}

absl::StatusOr<std::vector<CommittedOffset>> KafkaBus::CommittedOffsets() {
  std::vector<CommittedOffset> all;
  for (uint32_t p = 0; p < impl_->n; ++p) all.push_back(CommittedOffset{p, 0});
  auto list = impl_->CommitList(all);
  if (!list.ok()) return list.status();
  rd_kafka_resp_err_t e =
      rd_kafka_committed(impl_->consumer, list->get(), impl_->options.request_timeout_ms);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) return KafkaStatus(e, "reading committed offsets");
  std::vector<CommittedOffset> out;
  for (int i = 0; i < (*list)->cnt; ++i) {
    const rd_kafka_topic_partition_t& tp = (*list)->elems[i];
    if (tp.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return KafkaStatus(tp.err, absl::StrCat("committed offset of partition ", tp.partition));
    }
    if (tp.offset >= 0) {
      out.push_back(CommittedOffset{static_cast<uint32_t>(tp.partition), static_cast<uint64_t>(tp.offset)});
    }
  }
  return out;
}

KafkaBusStats KafkaBus::stats() const {
  KafkaBusStats s;
  s.published = impl_->published.load();
  s.publish_errors = impl_->publish_errors.load();
  s.published_without_offset = impl_->published_without_offset.load();
  s.records_read = impl_->records_read.load();
  s.seeks = impl_->seeks.load();
  s.watermark_queries = impl_->watermark_queries.load();
  s.commits = impl_->commits.load();
  s.commit_errors = impl_->commit_errors.load();
  return s;
}

// ---- KafkaCommittingStore ---------------------------------------------------

KafkaCommittingStore::KafkaCommittingStore(Store* inner, KafkaBus* bus, bool wait)
    : inner_(inner), bus_(bus), wait_(wait) {}

absl::Status KafkaCommittingStore::Write(const StoreBatch& batch) {
  absl::Status st = inner_->Write(batch);
  if (!st.ok() || batch.offsets.empty()) return st;
  // The Store has them: now Kafka. Its outcome is the bus's to count.
  (void)(wait_ ? bus_->CommitOffsets(batch.offsets) : bus_->CommitOffsetsAsync(batch.offsets));
  return st;
}

absl::Status KafkaCommittingStore::Load(StoreVisitor* visitor) { return inner_->Load(visitor); }

}  // namespace presence
