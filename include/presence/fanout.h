// File: presence/fanout.h
//
// presence::Fanout delivers published changes to subscribers (docs/design.md
// section 3): batched, suppressed, throttled, resumable, and private.
//
// A subscriber is one watcher, usually one client connection. Its interest is
// a list of users (friends), any number of topics (teams, guilds, channels),
// or both; the host sets topic membership. Every batch is an encoded
// presence.v1.DiffBatch: the first one is a snapshot of the whole interest
// set, later ones carry only users whose state changed since the subscriber
// last saw them.
//
// Example:
//
//   auto engine = presence::Engine::Create(opts).value();
//   auto fanout = presence::Fanout::Create(engine.get()).value();  // attaches itself
//   presence::SubscriberOptions so;
//   so.owner_user_id = "bob";              // bob sees his own true state
//   presence::SubscriberId sub = fanout->Subscribe(so).value();
//   const absl::string_view friends[] = {"alice", "carol"};
//   fanout->AddUsers(sub, friends);
//   fanout->AddMembers("team-1", friends);
//   fanout->Join(sub, "team-1");
//   ...
//   engine->Tick();                         // the fan-out flushes from here
//   presence::Batch b;
//   while (fanout->Poll(sub, &b).value()) send(b.Encode());
//
// WHAT A SUBSCRIBER CAN RELY ON
//   * It never receives a user outside its interest set.
//   * An INVISIBLE user is OFFLINE to it, unless the subscriber is bound to
//     that user (SubscriberOptions::owner_user_id) and watches it through its
//     list: then the list carries the user's own view. Topic sections always
//     carry the public view, so a client shows its owner from the list.
//   * Within one batch a user appears at most once per stream (its list, or a
//     topic), with its latest state; a user that went A -> B -> A since the
//     previous batch is left out.
//   * Sequence numbers grow by one per batch. Batches are never lost: a
//     throttled subscriber gets coalesced diffs later; a subscriber whose
//     undelivered batches pass FanoutOptions::max_outbox_batches is marked
//     lagging and gets one snapshot instead of the backlog.
//   * Each UserState carries the user's version; applying entries whose
//     version is not newer than the one held is a no-op.
//
// THREAD SAFETY: every method may be called from any thread, except the
// destructor: the last call on the fan-out, and never from inside one of its
// own sinks. The fan-out flushes
// from Engine::Tick (it is a ChangeListener); Sink::Deliver is called on that
// thread, with no lock of the fan-out or the engine held.
#ifndef PRESENCE_FANOUT_H_
#define PRESENCE_FANOUT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "presence/export.h"
#include "presence/listener.h"
#include "presence/types.h"

namespace presence {

class Engine;

using SubscriberId = uint64_t;

struct FanoutOptions {
  // Flush every this long (docs/design.md: 100 ms), or sooner when a subscriber or
  // a topic has max_batch changes waiting.
  int64_t flush_interval_ms = 100;
  size_t max_batch = 1024;

  // Token bucket per subscriber, in batches: `rate_per_sec` refill and
  // `burst` capacity. 0 rate: unlimited.
  double rate_per_sec = 50;
  double burst = 20;

  // Undelivered batches held for a polling subscriber; past it the
  // subscriber is lagging and gets a snapshot at its next poll.
  size_t max_outbox_batches = 256;
  // Delivered batches kept per subscriber for Resume: at most this many, and
  // at most this many bytes (the newest batch is always kept). This is most
  // of a subscriber's memory; older cursors get a snapshot instead.
  size_t resume_window = 64;
  size_t resume_window_bytes = 32 * 1024;

  // Large topics (docs/design.md section 3): above `interval_mode_members`
  // members a topic's section is flushed at most every
  // `large_topic_interval_ms`; above `counts_only_members` it carries only
  // occupancy counts.
  size_t interval_mode_members = 1000;
  int64_t large_topic_interval_ms = 1000;
  size_t counts_only_members = 10000;
  // Overload steps (Engine::OverloadLevel; docs/operations.md "Overload"),
  // read at each flush: from level 1 the fan-out flushes at most every
  // max(flush_interval_ms, overload_flush_interval_ms); from level 2 every
  // topic above interval_mode_members carries counts only; at level 3 push
  // subscribers are served as polling ones (their batches wait in their
  // outbox, bounded by max_outbox_batches, and Poll serves them), and once
  // the level is below 3 again what waits is pushed, in order (a snapshot
  // for a subscriber that fell too far behind).
  int64_t overload_flush_interval_ms = 1000;
  // Topic sections kept to coalesce diffs for subscribers that fell behind.
  size_t topic_history = 32;

  // Limits; passing one answers ResourceExhausted and changes nothing.
  size_t max_subscribers = 1 << 20;
  size_t max_list_users = 10000;          // users in one subscriber's list
  size_t max_topics_per_subscriber = 1000;
  size_t max_topic_members = 1 << 20;
};

// presence::Batch is one encoded DiffBatch: a per-subscriber header followed
// by parts that may be shared (a topic's section is one buffer for all its
// subscribers). Its wire form is the concatenation; a Sink can write the
// pieces with writev and copy nothing.
struct Batch {
  uint64_t sequence = 0;
  bool snapshot = false;
  size_t users = 0;  // user entries it carries, over all streams
  std::string header;
  std::vector<std::shared_ptr<const std::string>> parts;

  size_t ByteSize() const;
  std::string Encode() const;
};

// presence::Sink receives batches for subscribers that asked for push
// delivery. Deliver is called on the thread running Engine::Tick (or the
// thread calling Resume), with no lock held.
//
// MAY CALL: every method of the fan-out and of the engine (Close of this
// subscriber included; Fanout::Create and destroying another fan-out too),
// except Engine::Tick, the engine's destructor and this fan-out's.
//
// LIFESPAN AND OWNERSHIP: not owned. The host keeps the sink alive until
// Fanout::Close of every subscriber it serves returned (or the fan-out is
// destroyed): Close returns only once no Deliver to that subscriber is
// running, and none starts after. Close called from inside Deliver for the
// same subscriber does not wait for that call (it is the caller's own);
// that call is the last one. Close waits for deliveries running on other
// threads, so a sink must not close a subscriber whose own sink is waiting
// for it.
class PRESENCE_EXPORT Sink {
 public:
  virtual ~Sink();
  virtual void Deliver(SubscriberId subscriber, const Batch& batch) = 0;
};

// presence::SnapshotSource tells the fan-out about users that its own engine
// does not own (scale-out, docs/design.md section 6); presence::RemoteFeed is one.
// The fan-out calls StartWatching when a subscriber or a topic first watches
// a user, and StopWatching when none does any more, so the source always
// knows the set of watched users. Both are called under the fan-out's lock:
// they must not call back into the fan-out.
class PRESENCE_EXPORT SnapshotSource {
 public:
  virtual ~SnapshotSource();
  // The user's latest published change that the source holds, or nullopt:
  // then the local engine's answer stands. When both have one, the newer
  // version wins.
  virtual std::optional<ChangeEvent> StartWatching(absl::string_view user_id) = 0;
  virtual void StopWatching(absl::string_view user_id) = 0;
};

struct SubscriberOptions {
  // When set, this subscriber belongs to that user: if it watches the user
  // in its list, it sees the user's true state (an invisible user sees
  // itself as it is). Empty: a plain watcher.
  std::string owner_user_id;
  // Push delivery; null: pull with Poll.
  Sink* sink = nullptr;
};

class PRESENCE_EXPORT Fanout final : public ChangeListener {
 public:
  // Creates a fan-out tier over `engine` and attaches it as a listener; it
  // detaches when destroyed. The engine must outlive it.
  static absl::StatusOr<std::unique_ptr<Fanout>> Create(Engine* engine,
                                                        const FanoutOptions& options = {});
  ~Fanout() override;

  // ---- Subscribers ---------------------------------------------------------
  absl::StatusOr<SubscriberId> Subscribe(const SubscriberOptions& options = {});
  // Fanout::Close ends the subscriber. For a push subscriber it returns once
  // no Sink::Deliver to it is running (see Sink). NotFound for an unknown or
  // already closed subscriber.
  absl::Status Close(SubscriberId subscriber);

  // The subscriber's list. Users added appear in its next batch with their
  // current state; users removed appear once with `removed` set.
  absl::Status AddUsers(SubscriberId subscriber, absl::Span<const absl::string_view> user_ids);
  absl::Status RemoveUsers(SubscriberId subscriber, absl::Span<const absl::string_view> user_ids);
  absl::Status ReplaceUsers(SubscriberId subscriber, absl::Span<const absl::string_view> user_ids);

  // Topics. Join answers NotFound for a topic with no members. The next
  // batch carries the whole topic (a full section).
  absl::Status Join(SubscriberId subscriber, absl::string_view topic);
  absl::Status Leave(SubscriberId subscriber, absl::string_view topic);

  // ---- Topic membership (the host's) ---------------------------------------
  absl::Status AddMembers(absl::string_view topic, absl::Span<const absl::string_view> user_ids);
  absl::Status RemoveMembers(absl::string_view topic, absl::Span<const absl::string_view> user_ids);
  absl::Status ReplaceMembers(absl::string_view topic,
                              absl::Span<const absl::string_view> user_ids);

  // ---- Delivery --------------------------------------------------------------

  // Fanout::Poll moves the subscriber's oldest undelivered batch into *out and
  // answers true, or answers false when there is none. A lagging subscriber
  // gets a snapshot here. FailedPrecondition for a push subscriber, except
  // while overload step 3 serves it as a polling one.
  absl::StatusOr<bool> Poll(SubscriberId subscriber, Batch* out);

  // Fanout::Resume: the subscriber reconnected and last applied batch
  // `cursor`. The batches after it are delivered again (same sequence
  // numbers) when still held, else one snapshot is. InvalidArgument for a
  // cursor from the future.
  absl::Status Resume(SubscriberId subscriber, uint64_t cursor);

  // Fanout::SetSnapshotSource attaches a source (null detaches it). The
  // source is told about every user watched already, and its answers apply
  // like change events. Not owned; it must stay alive until detached.
  void SetSnapshotSource(SnapshotSource* source);

  // Prometheus text: batches, user diffs and bytes delivered, snapshots,
  // backlog, throttled and lagging subscribers, and the overload steps as
  // applied (flush interval, topics in counts, push subscribers polled).
  std::string RenderMetrics() const;

  // ChangeListener (called by Engine::Tick, and by RemoteFeed::Poll with
  // the changes of users other engines own). An event whose version is not
  // newer than the one the fan-out holds for its user changes nothing, so a
  // change delivered twice (a replay of the bus) is never a duplicate diff.
  void OnChanges(absl::Span<const ChangeEvent> events) override;
  void OnTick(int64_t now_ms) override;

  class Impl;

 private:
  explicit Fanout(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  Engine* engine_ = nullptr;
};

}  // namespace presence

#endif  // PRESENCE_FANOUT_H_
