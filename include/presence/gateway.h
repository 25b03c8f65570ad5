// File: presence/gateway.h
//
// presence::GatewayPublisher is the library's gateway side (docs/design.md
// section 6): a process that holds client connections but no engine
// publishes each signal to its user's bus partition, where the engine that
// owns the partition consumes it (Engine::ConsumeBus).
//
//   presence::GatewayOptions go;
//   go.gateway_id = "gw-eu-1";
//   auto gw = presence::GatewayPublisher::Create(bus, go).value();
//   absl::StatusOr<uint64_t> trace = gw->Publish(signal);
//   if (absl::IsResourceExhausted(trace.status())) { /* slow the client down */ }
//
// EACH SIGNAL is validated (InvalidArgument, nothing published) and
// normalized before it leaves: a timestamp of 0 becomes the gateway's clock,
// the gateway field becomes GatewayOptions::gateway_id (so an operator can
// drain this gateway), and a trace id of 0 becomes a fresh one, returned.
//
// WHEN THE BUS FAILS, signals are held in a buffer, in order, and published
// first on the next Publish or Flush. Past GatewayOptions::max_buffered,
// Publish answers ResourceExhausted and does not take the signal: that is
// the back-pressure the host passes on to its clients. A signal is never
// dropped silently: each one is published, held, or refused to the caller.
//
// ORDER: signals are published in the order Publish took them, buffered or
// not, so a user's signals reach its partition in order.
//
// THREAD SAFETY: every method may be called from any thread; calls are
// serialised by one mutex (a publish is a bus call anyway).
#ifndef PRESENCE_GATEWAY_H_
#define PRESENCE_GATEWAY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "presence/bus.h"
#include "presence/clock.h"
#include "presence/export.h"
#include "presence/types.h"

namespace presence {

struct GatewayOptions {
  std::string gateway_id;        // required: 1..kMaxGatewayIdBytes bytes
  size_t max_buffered = 100000;  // signals held while the bus fails (>= 1); notices likewise
  Clock* clock = nullptr;        // stamps signals without a time; null: SystemClock()
  // The bus that the other gateways' RemoteFeeds read when change events
  // have a bus of their own (Options::change_bus; same partition count as
  // the signals' bus). The feeds read no signals then, so what a gateway
  // must hear from another besides changes is copied there as a notice,
  // after the original is on the signals' bus: the first signal of each
  // session (Item::connect), so that a gateway that holds an older session
  // of the device closes it (RemoteFeedOptions::on_signal), and each copy of
  // a partition command the bus took (RemoteFeedOptions::on_command). A
  // notice the bus fails is held, in order, and tried again at each flush;
  // past max_buffered held notices the oldest is dropped (counted), so a
  // notice bus that stays down never holds up a signal. Null: none; not
  // `bus` itself.
  Bus* notice_bus = nullptr;
};

class PRESENCE_EXPORT GatewayPublisher {
 public:
  // InvalidArgument for a null bus, a bad gateway id or max_buffered 0.
  static absl::StatusOr<std::unique_ptr<GatewayPublisher>> Create(Bus* bus,
                                                                  const GatewayOptions& options);
  virtual ~GatewayPublisher();

  // Publishes the signal (after what is buffered) and returns its trace id.
  // OK also when the bus failed and the signal is buffered.
  // ResourceExhausted: the buffer is full and the signal was not taken.
  // InvalidArgument: the signal is malformed and was not taken.
  virtual absl::StatusOr<uint64_t> Publish(const Signal& signal) = 0;
  // Publishes the end of `session`'s session (its user, device and session
  // id; its time and trace id as Publish fills them), clean or abrupt, so
  // that the owner disconnects the device as Engine::DisconnectDevice would
  // (docs/design.md section 6: every signal kind travels the bus). Answers as
  // Publish, and keeps the order of everything published.
  virtual absl::StatusOr<uint64_t> PublishDisconnect(const Signal& session,
                                                     DisconnectKind kind) = 0;

  // Publishes an override command (presence/types.h) to its user's
  // partition, in order with everything published, for the owner to apply
  // (Engine::ApplyOverride). It is normalized as a signal is (gateway, a
  // set_at_ms of 0 becomes the gateway's clock, a trace id of 0 a fresh
  // one), and a set with override_id 0 gets an id chosen here: unique with
  // overwhelming likelihood (52 random bits from a per-publisher seed and a
  // counter, in [kFirstChosenOverrideId, kMaxOverrideId]), so that the owner
  // applies it once however often the bus delivers it. Returns the
  // override's id (a set's chosen one, a revoke's; 0 for a clear).
  // InvalidArgument, nothing published: a malformed command, or a set whose
  // end is not after the gateway's clock (as Engine::SetOverride answers);
  // ResourceExhausted as Publish.
  virtual absl::StatusOr<uint64_t> PublishOverride(const OverrideCommand& command) = 0;

  // Publishes the erasure of `user_id` (docs/design.md section 4) to its
  // partition, in order with everything published, for the owner to erase
  // the user as Engine::Erase does when it consumes it (Engine::ConsumeBus;
  // its erasure then reaches every RemoteFeed as a change event).
  // OK once the bus took it. Unlike a signal it is never held: Unavailable
  // when the bus fails (try again: erasing twice changes nothing);
  // InvalidArgument for a malformed user id; ResourceExhausted as Publish.
  virtual absl::Status PublishErase(absl::string_view user_id) = 0;

  // Publishes `command` (presence/types.h) to every partition of the bus,
  // each copy with its partition, the gateway's id and clock, keyed by
  // PartitionKey, after everything published before it: each partition's
  // owner applies it to that partition's users when it reads it
  // (Engine::ConsumeBus). The operator's drain and bulk revoke in a cluster.
  // OK once the bus took it for every partition. Never held: Unavailable
  // when the bus fails (some partitions may have it; publishing it again
  // changes nothing more there); InvalidArgument for a malformed command;
  // ResourceExhausted as Publish.
  virtual absl::Status PublishToEveryPartition(const PartitionCommand& command) = 0;

  // One item of PublishBatch: a signal, or with `disconnect` set the end of
  // its session. `connect`: the signal is its session's first (the client
  // connected), copied to GatewayOptions::notice_bus once published. The
  // signal's ids are viewed, not copied: they must outlive the call.
  struct Item {
    Signal signal;
    std::optional<DisconnectKind> disconnect;
    bool connect = false;
  };
  // Takes each item as Publish (or PublishDisconnect) would, in order, and
  // publishes what it took with one bus call per 512 records
  // (Bus::PublishBatch) instead of one per record: a host that collects the
  // signals of one pass of its event loop sends them at once. Per item, its
  // trace id or why it was not taken. A bus call that fails leaves all of
  // its records buffered, in order; some of them may have been written
  // (see Bus::PublishBatch), so a retry can publish a signal twice, which
  // the owner takes as the same signal again (a disconnect of a closed
  // session, or a signal no newer than its device's last, changes nothing).
  virtual std::vector<absl::StatusOr<uint64_t>> PublishBatch(absl::Span<const Item> items) = 0;

  // Publishes what is buffered, in order, then the notices. OK when
  // nothing is left; a bus's error when it still fails (what remains stays
  // buffered).
  virtual absl::Status Flush() = 0;

  struct Stats {
    uint64_t published = 0;   // signals (and override, erase and partition commands) on the bus
    uint64_t notices = 0;     // copies on the notice bus
    uint64_t notices_dropped = 0;  // notices dropped while the notice bus failed
    uint64_t buffered = 0;    // held now, notices included
    uint64_t refused = 0;     // ResourceExhausted answers (back-pressure)
    uint64_t invalid = 0;     // InvalidArgument answers
    uint64_t bus_errors = 0;  // failed publish attempts
  };
  virtual Stats stats() const = 0;
};

}  // namespace presence

#endif  // PRESENCE_GATEWAY_H_
