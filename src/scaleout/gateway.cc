#include "presence/gateway.h"

#include <deque>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "presence/wire.h"
#include "src/core/mutex.h"
#include "src/core/validate.h"
#include "xxhash.h"

namespace presence {
namespace {

// A signal on its way to the bus: its encoding and its key.
struct Outgoing {
  std::string user_id;
  std::string payload;
};

class GatewayPublisherImpl final : public GatewayPublisher {
 public:
  GatewayPublisherImpl(Bus* bus, const GatewayOptions& o)
      : bus_(bus),
        options_(o),
        clock_(o.clock != nullptr ? o.clock : SystemClock()),
        trace_base_(XXH3_64bits(o.gateway_id.data(), o.gateway_id.size())) {}

  absl::StatusOr<uint64_t> Publish(const Signal& signal) override {
    return Enqueue(signal, std::nullopt);
  }

  absl::StatusOr<uint64_t> PublishDisconnect(const Signal& session, DisconnectKind kind) override {
    if (auto st = internal::ValidateDisconnectKind(kind); !st.ok()) {
      internal::MutexLock lock(&mu_);
      ++stats_.invalid;
      return st;
    }
    return Enqueue(session, kind);
  }

  absl::Status Flush() override {
    internal::MutexLock lock(&mu_);
    return FlushLocked();
  }

  Stats stats() const override {
    internal::MutexLock lock(&mu_);
    Stats s = stats_;
    s.buffered = queue_.size();
    return s;
  }

 private:
  // A signal, or the end of its session, normalized and published in order.
  absl::StatusOr<uint64_t> Enqueue(const Signal& signal, std::optional<DisconnectKind> disconnect) {
    Signal s = signal;
    s.gateway = options_.gateway_id;
    internal::MutexLock lock(&mu_);
    if (s.timestamp_ms == 0) s.timestamp_ms = clock_->NowMs();
    if (s.trace_id == 0) s.trace_id = NextTraceId();
    if (auto st = internal::ValidateSignal(s); !st.ok()) {
      ++stats_.invalid;
      return st;
    }
    // What waits goes first.
    (void)FlushLocked();  // a failure leaves them waiting, and this signal joins them
    if (queue_.size() >= options_.max_buffered) {
      ++stats_.refused;
      return absl::ResourceExhaustedError(absl::StrCat(
          "the bus is failing and ", queue_.size(), " signals wait for it (the gateway's bound): ",
          "slow down and retry (", last_error_.message(), ")"));
    }
    Outgoing out{std::string(s.user_id),
                 disconnect ? EncodeDisconnect(s, *disconnect) : EncodeSignal(s)};
    if (queue_.empty() && Send(out).ok()) return s.trace_id;
    queue_.push_back(std::move(out));
    return s.trace_id;
  }

  absl::Status Send(const Outgoing& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto off = bus_->Publish(BusRecordType::kSignal, out.user_id, out.payload);
    if (!off.ok()) {
      ++stats_.bus_errors;
      last_error_ = off.status();
      return off.status();
    }
    ++stats_.published;
    return absl::OkStatus();
  }

  absl::Status FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (!queue_.empty()) {
      if (auto st = Send(queue_.front()); !st.ok()) return st;
      queue_.pop_front();
    }
    return absl::OkStatus();
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

  Bus* const bus_;
  const GatewayOptions options_;
  Clock* const clock_;
  const uint64_t trace_base_;
  mutable internal::Mutex mu_;
  std::deque<Outgoing> queue_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  uint64_t next_trace_ ABSL_GUARDED_BY(mu_) = 1;
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
  return std::unique_ptr<GatewayPublisher>(new GatewayPublisherImpl(bus, options));
}

}  // namespace presence
