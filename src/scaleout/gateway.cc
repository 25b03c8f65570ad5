#include "presence/gateway.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <deque>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "presence/wire.h"
#include "src/core/mutex.h"
#include "src/core/validate.h"
#include "xxhash.h"

namespace presence {
namespace {

// A record on its way to the bus: its type, its key and its encoding.
struct Outgoing {
  BusRecordType type;
  std::string user_id;
  std::string payload;
};

// A copy for the notice bus, published once the queue's first `after`
// records (counted from the publisher's start) are on the signals' bus.
struct Notice {
  uint64_t after;
  Outgoing record;
};

class GatewayPublisherImpl final : public GatewayPublisher {
 public:
  GatewayPublisherImpl(Bus* bus, const GatewayOptions& o)
      : bus_(bus),
        options_(o),
        clock_(o.clock != nullptr ? o.clock : SystemClock()),
        trace_base_(XXH3_64bits(o.gateway_id.data(), o.gateway_id.size())),
        override_seed_(RandomSeed()) {}

  absl::StatusOr<uint64_t> Publish(const Signal& signal) override {
    internal::MutexLock lock(&mu_);
    return PublishLocked(signal, std::nullopt);
  }
  absl::StatusOr<uint64_t> PublishDisconnect(const Signal& session, DisconnectKind kind) override {
    internal::MutexLock lock(&mu_);
    return PublishLocked(session, kind);
  }
  absl::StatusOr<uint64_t> PublishOverride(const OverrideCommand& command) override {
    internal::MutexLock lock(&mu_);
    (void)FlushLocked();  // what waits goes first
    OverrideCommand c = command;
    c.gateway = options_.gateway_id;
    if (c.set_at_ms == 0) c.set_at_ms = clock_->NowMs();
    if (c.trace_id == 0) c.trace_id = NextTraceId();
    if (c.op == OverrideOp::kSet && c.override_id == 0) c.override_id = NextOverrideId();
    absl::Status st = internal::ValidateOverrideCommand(c);
    if (st.ok() && c.op == OverrideOp::kSet) st = internal::ValidateOverrideEnd(c.until_ms, c.set_at_ms);
    if (!st.ok()) {
      ++stats_.invalid;
      return st;
    }
    if (auto full = Full(); !full.ok()) return full;
    queue_.push_back(Outgoing{BusRecordType::kOverride, std::string(c.user_id), EncodeOverrideCommand(c)});
    (void)FlushLocked();  // this one too, or it waits with them
    return c.op == OverrideOp::kClear ? 0 : c.override_id;
  }
  absl::Status PublishErase(absl::string_view user_id) override {
    internal::MutexLock lock(&mu_);
    (void)FlushLocked();  // what waits goes first
    if (auto st = internal::ValidateUserId(user_id); !st.ok()) {
      ++stats_.invalid;
      return st;
    }
    if (auto full = Full(); !full.ok()) return full;
    queue_.push_back(Outgoing{BusRecordType::kErase, std::string(user_id),
                              EncodeEraseCommand(user_id, options_.gateway_id)});
    if (absl::Status st = FlushLocked(); !st.ok()) {
      // Refused rather than held: nobody may be told that an erasure is
      // under way which this process's end would lose. (The bus may have
      // written it all the same; erasing again changes nothing.)
      queue_.pop_back();
      return absl::UnavailableError(
          absl::StrCat("the bus did not take the erasure (try again): ", st.message()));
    }
    return absl::OkStatus();
  }
  absl::Status PublishToEveryPartition(const PartitionCommand& command) override {
    internal::MutexLock lock(&mu_);
    (void)FlushLocked();  // what waits goes first
    PartitionCommand c = command;
    c.gateway = options_.gateway_id;
    c.issued_at_ms = clock_->NowMs();
    if (auto st = internal::ValidatePartitionCommand(c); !st.ok()) {
      ++stats_.invalid;
      return st;
    }
    if (auto full = Full(); !full.ok()) return full;
    const uint32_t n = std::max(bus_->partitions(), 1u);
    if (partition_keys_.size() != n) {  // about n hashes each: found once
      partition_keys_.clear();
      for (uint32_t p = 0; p < n; ++p) partition_keys_.push_back(PartitionKey(p, n));
    }
    std::vector<Outgoing> copies;  // one per partition, in order
    for (uint32_t p = 0; p < n; ++p) {
      c.partition = p;
      copies.push_back(Outgoing{BusRecordType::kCommand, partition_keys_[p], EncodePartitionCommand(c)});
    }
    queue_.insert(queue_.end(), copies.begin(), copies.end());
    const absl::Status st = FlushLocked();
    size_t taken = copies.size();
    if (!st.ok()) {
      // Refused rather than held, as an erasure: those the bus did not take
      // are the queue's last (a failed call leaves its records and all
      // after them), and no command waits there from an earlier call.
      while (taken > 0 && !queue_.empty() && queue_.back().type == BusRecordType::kCommand) {
        queue_.pop_back();
        --taken;
      }
    }
    if (options_.notice_bus != nullptr && taken > 0) {
      // The gateways hear of each copy the bus took (held when the notice
      // bus fails: the command itself is on the bus).
      for (size_t p = 0; p < taken; ++p) AddNotice(sent_, std::move(copies[p]));
      (void)FlushNoticesLocked();
    }
    if (!st.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "the bus did not take the command for every partition (try again: what it already did is "
          "not done twice): ",
          st.message()));
    }
    return absl::OkStatus();
  }
  std::vector<absl::StatusOr<uint64_t>> PublishBatch(absl::Span<const Item> items) override {
    internal::MutexLock lock(&mu_);
    std::vector<absl::StatusOr<uint64_t>> out;
    out.reserve(items.size());
    (void)FlushLocked();  // what waits goes first
    for (const Item& item : items) out.push_back(Take(item.signal, item.disconnect, item.connect));
    (void)FlushLocked();  // a failure leaves them waiting, in order
    return out;
  }
  absl::Status Flush() override {
    internal::MutexLock lock(&mu_);
    absl::Status st = FlushLocked();
    return st.ok() ? notice_status_ : st;
  }
  Stats stats() const override {
    internal::MutexLock lock(&mu_);
    Stats s = stats_;
    s.buffered = queue_.size() + notices_.size();
    return s;
  }

 private:
  absl::StatusOr<uint64_t> PublishLocked(const Signal& signal, std::optional<DisconnectKind> disconnect)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    (void)FlushLocked();  // what waits goes first; a failure leaves it waiting
    absl::StatusOr<uint64_t> trace = Take(signal, disconnect);
    if (trace.ok()) (void)FlushLocked();  // this signal too, or it waits with them
    return trace;
  }

  // A signal, or the end of its session, normalized and queued behind what
  // waits (a connect with its notice): its trace id, or why it was not taken.
  absl::StatusOr<uint64_t> Take(const Signal& signal, std::optional<DisconnectKind> disconnect,
                                bool connect = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (disconnect) {
      if (auto st = internal::ValidateDisconnectKind(*disconnect); !st.ok()) {
        ++stats_.invalid;
        return st;
      }
    }
    Signal s = signal;
    s.gateway = options_.gateway_id;
    if (s.timestamp_ms == 0) s.timestamp_ms = clock_->NowMs();
    if (s.trace_id == 0) s.trace_id = NextTraceId();
    if (auto st = internal::ValidateSignal(s); !st.ok()) {
      ++stats_.invalid;
      return st;
    }
    if (auto full = Full(); !full.ok()) return full;
    queue_.push_back(Outgoing{BusRecordType::kSignal, std::string(s.user_id),
                              disconnect ? EncodeDisconnect(s, *disconnect) : EncodeSignal(s)});
    if (connect && !disconnect && options_.notice_bus != nullptr) {
      AddNotice(sent_ + queue_.size(), queue_.back());  // once this signal is out
    }
    return s.trace_id;
  }

  // A notice, to go once the queue's first `after` records are out. Bounded
  // apart from the signals (max_buffered): a notice is a copy, so while the
  // notice bus fails the oldest go (counted), never a signal.
  void AddNotice(uint64_t after, Outgoing record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (notices_.size() >= options_.max_buffered) {
      notices_.pop_front();
      ++stats_.notices_dropped;
    }
    notices_.push_back(Notice{after, std::move(record)});
  }

  // ResourceExhausted (counted) when the buffer is at its bound.
  absl::Status Full() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (queue_.size() < options_.max_buffered) return absl::OkStatus();
    ++stats_.refused;
    return absl::ResourceExhaustedError(absl::StrCat(
        "the bus is failing and ", queue_.size(), " signals wait for it (the gateway's bound): ",
        "slow down and retry (", last_error_.message(), ")"));
  }

  static constexpr size_t kMaxBatch = 512;

  // One bus call; a failure is counted, and kept for Full's message.
  absl::Status Send(Bus* bus, absl::Span<const BusMessage> batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto offsets = bus->PublishBatch(batch);
    if (offsets.ok()) return absl::OkStatus();
    ++stats_.bus_errors;
    last_error_ = offsets.status();
    return last_error_;
  }

  // Publishes the queue in order, up to kMaxBatch records per bus call;
  // stops at the first failure, leaving that call's records and the rest
  // queued. Then the notices whose originals are out (their failure is
  // notice_status_, not this answer: what it answers is about the queue).
  absl::Status FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<BusMessage> batch;
    absl::Status st;
    while (!queue_.empty()) {
      const size_t n = std::min(queue_.size(), kMaxBatch);
      batch.clear();
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(BusMessage{queue_[i].type, queue_[i].user_id, queue_[i].payload});
      }
      st = Send(bus_, batch);
      if (!st.ok()) break;
      stats_.published += n;
      sent_ += n;
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    }
    (void)FlushNoticesLocked();
    return st;
  }

  // Publishes, in order, the notices whose originals are on the bus, as
  // FlushLocked publishes the queue.
  absl::Status FlushNoticesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<BusMessage> batch;
    notice_status_ = absl::OkStatus();
    while (!notices_.empty() && notices_.front().after <= sent_) {
      batch.clear();
      for (size_t i = 0; i < notices_.size() && i < kMaxBatch && notices_[i].after <= sent_; ++i) {
        const Outgoing& r = notices_[i].record;
        batch.push_back(BusMessage{r.type, r.user_id, r.payload});
      }
      notice_status_ = Send(options_.notice_bus, batch);
      if (!notice_status_.ok()) return notice_status_;
      stats_.notices += batch.size();
      notices_.erase(notices_.begin(), notices_.begin() + static_cast<std::ptrdiff_t>(batch.size()));
    }
    return notice_status_;
  }

  // Unique per gateway and never 0: the gateway's hash mixed with a counter.
  uint64_t NextTraceId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    uint64_t id;
    do {
      id = XXH3_64bits_withSeed(&next_trace_, sizeof next_trace_, trace_base_);
      ++next_trace_;
    } while (id == 0);
    return id;
  }

  // A set's id: 52 bits of a hash of the publisher's random seed and a
  // counter, above the engine's own ids (kFirstChosenOverrideId). Random,
  // not a counter alone, since an override can outlive the process that
  // set it and a restarted gateway must not give its id again.
  uint64_t NextOverrideId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const uint64_t h = XXH3_64bits_withSeed(&next_override_, sizeof next_override_, override_seed_);
    ++next_override_;
    return kFirstChosenOverrideId | (h & (kFirstChosenOverrideId - 1));
  }

  static uint64_t RandomSeed() {
    std::random_device rd;
    const uint64_t r = (uint64_t{rd()} << 32) ^ rd();
    const int64_t t = std::chrono::steady_clock::now().time_since_epoch().count();
    return XXH3_64bits_withSeed(&t, sizeof t, r);
  }

  Bus* const bus_;
  const GatewayOptions options_;
  Clock* const clock_;
  const uint64_t trace_base_;
  const uint64_t override_seed_;
  mutable internal::Mutex mu_;
  std::deque<Outgoing> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t sent_ ABSL_GUARDED_BY(mu_) = 0;  // records of queue_ published, since the start
  std::deque<Notice> notices_ ABSL_GUARDED_BY(mu_);
  absl::Status notice_status_ ABSL_GUARDED_BY(mu_);  // the last notice flush's
  Stats stats_ ABSL_GUARDED_BY(mu_);
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  uint64_t next_trace_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_override_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> partition_keys_ ABSL_GUARDED_BY(mu_);  // PartitionKey of each partition
};

}  // namespace

GatewayPublisher::~GatewayPublisher() = default;

absl::StatusOr<std::unique_ptr<GatewayPublisher>> GatewayPublisher::Create(
    Bus* bus, const GatewayOptions& options) {
  if (bus == nullptr) return absl::InvalidArgumentError("bus is null");
  if (options.gateway_id.empty() || options.gateway_id.size() > kMaxGatewayIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("gateway_id must be 1 to ", kMaxGatewayIdBytes, " bytes"));
  }
  if (options.max_buffered == 0) return absl::InvalidArgumentError("max_buffered must be at least 1");
  if (options.notice_bus == bus) return absl::InvalidArgumentError("notice_bus is the bus itself");
  if (options.notice_bus != nullptr && options.notice_bus->partitions() != bus->partitions()) {
    return absl::InvalidArgumentError(absl::StrCat("notice_bus has ", options.notice_bus->partitions(),
                                                   " partitions and bus ", bus->partitions(),
                                                   ": a user's notices go to its partition of both"));
  }
  return std::unique_ptr<GatewayPublisher>(new GatewayPublisherImpl(bus, options));
}

}  // namespace presence
