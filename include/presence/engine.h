// File: presence/engine.h
//
// presence::Engine decides who is online. The host feeds it signals from its
// own sockets, calls Tick() about every flush interval (100 ms is typical),
// and reads states with Get() or receives published changes through a
// ChangeListener.
//
// Two ways in:
//   * keyed signals: Signal(), SignalBatch(), DisconnectDevice(), addressed by
//     (user_id, device_id);
//   * the handle fast path: Connect() returns a DeviceHandle that the host
//     keeps beside its socket; Beat() on it costs O(1) with no hashing and no
//     allocation, and takes no lock when it changes nothing but the time.
//
// Example:
//
//   presence::Options opts;
//   opts.listener = &my_listener;
//   std::unique_ptr<presence::Engine> engine =
//       presence::Engine::Create(opts).value();
//   presence::Signal s{.user_id = "alice", .device_id = "laptop",
//                      .session_id = 1, .platform = presence::Platform::kWeb};
//   presence::DeviceHandle h = engine->Connect(s).value();
//   engine->Beat(h);                                   // every second
//   engine->Tick();                                    // every 100 ms
//   engine->Disconnect(h, presence::DisconnectKind::kAbrupt);
//
// THREAD SAFETY: every method may be called from any number of threads at
// once, except the destructor. Ticks are serialised internally (a second
// caller waits), and one thread at a time calls the listeners, with no lock
// of the engine held: a listener (and a fan-out's sink, which runs inside
// one) may call every method of the engine except Tick() and the
// destructor (presence/listener.h). Users are sharded
// by an xxHash of user_id; each shard has its own lock, so threads working on
// different users rarely contend. Beat() on a handle whose device is live and
// whose activity does not change takes no lock at all. A load from the
// store of 65,536 records or more (Create, Rebuild, AssignPartitions) runs
// on the caller's thread and one the engine starts for it, which calls the
// OfflineDetector too (detector.h: any thread).
//
// ERRORS: methods that can fail return absl::Status. InvalidArgument for bad
// input (empty or oversized ids, unknown enum values, timestamps out of range),
// NotFound for an unknown user, device or closed handle, ResourceExhausted for
// a limit passed, FailedPrecondition for a stale signal (dropped and counted,
// never applied). A failed call changes nothing.
#ifndef PRESENCE_ENGINE_H_
#define PRESENCE_ENGINE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "presence/export.h"
#include "presence/history.h"
#include "presence/options.h"
#include "presence/types.h"

namespace presence {

class ChangeListener;

namespace internal {
class EngineCore;
}

// What each record counts against Options::memory_budget_bytes, so that the
// charge follows what the heap grows: the device record (48 bytes, its
// timer included), its gateway index; the user record (56 bytes) with its
// index slot (4 bytes, the index 75% to 90% full as users come). With a detector, a device
// is charged 4 bytes more (its answer, kept beside the records). Checked
// within 10% of the heap's growth after a mass connect of 10^6 devices, one
// or two per user (tests/memory_budget_test.cc); figures in
// benchmarks/RESULTS.md.
inline constexpr int64_t kDeviceChargeBytes = 52;
inline constexpr int64_t kUserChargeBytes = 61;

// presence::BatchResult counts the outcome of Engine::SignalBatch.
struct BatchResult {
  size_t applied = 0;   // accepted (including exact replays, which change nothing)
  size_t stale = 0;     // dropped as stale (older session or timestamp)
  size_t rejected = 0;  // invalid, or a limit passed
  // The status of the first signal that was not applied (OK if none).
  absl::Status first_error;
};

// presence::StateDurations: how long a user spent in each state inside a
// window (Engine::TimeInStates), from its own view.
struct StateDurations {
  int64_t online_ms = 0;
  int64_t away_ms = 0;
  int64_t dnd_ms = 0;
  int64_t offline_ms = 0;
};

class PRESENCE_EXPORT Engine {
 public:
  // Creates an engine. Fails with InvalidArgument when an option is out of
  // range (a non-positive interval, offline_after below interval, ...).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const Options& options);

  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // ---- Keyed signals -------------------------------------------------------

  // Engine::Signal applies one signal (docs/design.md rules 1, 2 and 5). A signal
  // for a device the engine does not hold creates it (an implicit connect).
  // Returns FailedPrecondition for a stale signal (a session older than the
  // device's current one, a closed session, or a timestamp older than one
  // already applied from the same session and source); it is counted and
  // dropped.
  absl::Status Signal(const presence::Signal& signal);

  // Engine::SignalBatch applies many signals, in order, and counts outcomes.
  BatchResult SignalBatch(absl::Span<const presence::Signal> signals);

  // Engine::DisconnectDevice ends the device's session `session_id` (0: its
  // current session). NotFound when the device is unknown or already closed.
  absl::Status DisconnectDevice(absl::string_view user_id, absl::string_view device_id,
                                uint64_t session_id, DisconnectKind kind);

  // ---- Handle fast path ----------------------------------------------------

  // Engine::Connect applies `signal` as a connect and returns a handle for its
  // device. Connecting a device that already has a live session with a newer
  // session_id replaces it; the previous handle stops working.
  absl::StatusOr<DeviceHandle> Connect(const presence::Signal& signal);

  // Engine::Beat records a heartbeat on the handle, at the engine's current
  // time. O(1): no hashing, no allocation, and no lock unless the signal
  // changes the device's state (it revives it, or its activity changes).
  absl::Status Beat(DeviceHandle handle, Activity activity = Activity::kActive,
                    Source source = Source::kApp);

  // Engine::BeatMany is Beat on each handle in turn, with the same activity
  // and source, at one reading of the clock, and counts the outcomes
  // (a closed or unknown handle and the rate limit count as rejected). It
  // overlaps the memory accesses of neighbouring handles, so a
  // host that gathers the heartbeats of many connections (an event loop's
  // ready list) pays much less per beat when the engine is larger than the
  // CPU caches. Handles may belong to any shard, in any order.
  BatchResult BeatMany(absl::Span<const DeviceHandle> handles,
                       Activity activity = Activity::kActive, Source source = Source::kApp);

  // Engine::AnswerProbe reports the answer to a probe (docs/design.md rule 9,
  // presence/prober.h): it counts as a signal of the probed device and
  // source, at the engine's current time, with the activity that source
  // last had; it is not counted against the flood limit.
  // FailedPrecondition for a late answer (the device signalled, died or
  // disconnected since the probe; counted, nothing applied); NotFound for an
  // id no probe of this engine had.
  absl::Status AnswerProbe(uint64_t probe_id);

  // Engine::Disconnect closes the handle's session. The handle is invalid
  // afterwards (a second Disconnect answers NotFound).
  absl::Status Disconnect(DeviceHandle handle, DisconnectKind kind);

  // ---- Overrides (docs/design.md section 1 and rule 3) --------------------------

  // Engine::SetOverride pushes a manual state on the user's stack; the most
  // recently set unexpired override shows. `until_ms` is an absolute time on
  // the engine's clock (0: until revoked); a time not after now answers
  // InvalidArgument. Returns the override's id.
  absl::StatusOr<uint64_t> SetOverride(absl::string_view user_id, OverrideState state,
                                       int64_t until_ms = 0, uint64_t trace_id = 0);

  // Engine::ApplyOverride applies an override command (presence/types.h) as
  // the owner of the user's partition does when it reads one from the bus
  // (ConsumeBus): a set pushes the command's id (chosen by the caller, see
  // kFirstChosenOverrideId) with its set_at_ms (0: now), through the same
  // path as SetOverride; a revoke removes its id; a clear removes all. It is
  // idempotent, so that a replay of the bus changes nothing: a set of an id
  // the user holds, or one whose end is not after now, a revoke of an id it
  // does not hold, and a clear of none answer 0. Returns how many overrides
  // were added or removed. InvalidArgument for a malformed command; the
  // errors of SetOverride otherwise (FailedPrecondition for a user of a
  // partition this engine does not own, ResourceExhausted at the limit).
  absl::StatusOr<size_t> ApplyOverride(const OverrideCommand& command);

  // Engine::RevokeOverride removes one override. NotFound when the user has
  // no override with that id.
  absl::Status RevokeOverride(absl::string_view user_id, uint64_t override_id);

  // Engine::ClearOverrides removes every override of the user; returns how
  // many were removed.
  absl::StatusOr<size_t> ClearOverrides(absl::string_view user_id);

  // Engine::RevokeOverridesSetBetween is the operator's bulk revoke: every
  // override of any user set in [from_ms, to_ms] is removed. Returns how many.
  size_t RevokeOverridesSetBetween(int64_t from_ms, int64_t to_ms);

  // Engine::ListOverrides returns the user's override stack, oldest first
  // (expired ones that no timer removed yet are left out).
  absl::StatusOr<std::vector<OverrideInfo>> ListOverrides(absl::string_view user_id);

  // ---- Queries (docs/design.md section 4) ---------------------------------------

  // Engine::Get answers for each id, in order, as `viewer_user_id` sees it:
  // the user itself sees its true state, everyone else sees an invisible user
  // as OFFLINE. State is computed at the clock's current time, so it is exact
  // even between ticks. Ids that fail validation come back known=false.
  std::vector<UserPresence> Get(absl::Span<const absl::string_view> user_ids,
                                absl::string_view viewer_user_id = {});
  UserPresence GetOne(absl::string_view user_id, absl::string_view viewer_user_id = {});

  // Engine::GetPublished answers like Get, except that `state` and `version`
  // are those of the user's last published change: what listeners have been
  // told, so a snapshot built from it agrees with the stream of changes that
  // follows. (last_seen, devices and the override are current.)
  std::vector<UserPresence> GetPublished(absl::Span<const absl::string_view> user_ids,
                                         absl::string_view viewer_user_id = {});

  // ---- History and durable state (docs/design.md sections 4, 5 and 7) -----------

  // History queries answer like Get, as `viewer_user_id` sees the user: the
  // user itself reads everything, anyone else its public view (docs/design.md
  // rule 8).

  // Engine::History: the user's published transitions with at_ms in
  // [from_ms, to_ms], oldest first. The user itself gets every transition,
  // with both views, cause and trace id (the audit trail). Anyone else gets
  // only the changes of the public view, each with its public version as
  // `version`, its public last_seen, self_state equal to state, cause
  // kWithheld and trace id 0. FailedPrecondition when the engine has no
  // HistoryStore.
  absl::StatusOr<std::vector<Transition>> History(absl::string_view user_id, int64_t from_ms,
                                                  int64_t to_ms,
                                                  absl::string_view viewer_user_id = {});

  // Engine::DeviceHistory: the per-device audit (docs/design.md section 4):
  // the device's transitions (connect, grace, death with its cause, probe
  // outcomes) with at_ms in [from_ms, to_ms], oldest first; none for an
  // unknown user or device. Only the user itself may read it:
  // PermissionDenied for any other viewer (none included), whether or not
  // the user or device exists; an operator's host asks as the user.
  // InvalidArgument for a bad id or from_ms after to_ms; FailedPrecondition
  // when the engine has no HistoryStore.
  absl::StatusOr<std::vector<DeviceTransition>> DeviceHistory(absl::string_view user_id,
                                                              absl::string_view device_id,
                                                              int64_t from_ms, int64_t to_ms,
                                                              absl::string_view viewer_user_id);

  // Engine::TimeInStates: time spent in each state in [from_ms, to_ms]
  // (the part of the window after now, or before 0, is not counted), from
  // the history, in the viewer's view.
  absl::StatusOr<StateDurations> TimeInStates(absl::string_view user_id, int64_t from_ms,
                                              int64_t to_ms,
                                              absl::string_view viewer_user_id = {});

  // Engine::LastSeen: the user's last_seen in the viewer's view, from the
  // engine while it knows the user (Get), else from the history (for users
  // long offline). NotFound when neither knows the user (for anyone but the
  // user: when its public view never showed it).
  absl::StatusOr<int64_t> LastSeen(absl::string_view user_id,
                                   absl::string_view viewer_user_id = {});

  // Engine::Erase forgets the user everywhere: its records in the engine,
  // the Store (with the next write) and the history. A later compaction,
  // replay or rebuild never brings it back. A signal afterwards starts anew.
  // The next Tick publishes its erasure (a ChangeEvent with `erased` set) to
  // the listeners and the bus, so that watchers drop it (the fan-out and a
  // RemoteFeed do), whether or not the engine holds the user or published
  // it: the engine may have forgotten it (Options::user_retention_ms), or
  // another engine owned it; where nobody was told of the user, the
  // erasure changes nothing. With a bus, FailedPrecondition for a user of a
  // partition this engine does not own (its owner erases it: see
  // GatewayPublisher::PublishErase).
  absl::Status Erase(absl::string_view user_id);

  // Engine::DrainGateway: the operator's drain. Disconnects cleanly up to
  // `max_devices` open devices whose signals named `gateway`; call again
  // until it answers 0. NotFound when no device of this engine carries the
  // gateway (none ever did, or they are all gone: the engine forgets a
  // gateway at the tick after its last device, so gateway ids are not a
  // resource that runs out).
  absl::StatusOr<size_t> DrainGateway(absl::string_view gateway, size_t max_devices = 1000);

  // Engine::ConsumeBus reads up to `max_records` records from Options::bus,
  // from where it last stopped (after a rebuild: from the offsets committed
  // in the Store), and applies the signals among them (disconnects
  // included: GatewayPublisher::PublishDisconnect) and the override commands
  // (GatewayPublisher::PublishOverride, applied as ApplyOverride does) and
  // erase commands (GatewayPublisher::PublishErase: the user is erased as
  // Erase does; no offset past the command is committed until its history
  // erasure succeeded, retried with each Tick, and its erasure event is on
  // the bus), in order, without the per-device flood limit, which applied
  // when they came in; change events are skipped. Offsets are committed to
  // the Store after the records the signals changed were written, on Tick
  // (a partition's are held back while an erasure of one of its users waits
  // for the bus: presence_offsets_held_partitions). Returns how many records
  // it went past. One call reads each partition once (twice at an erase
  // command), and a bus may answer with
  // fewer records than it holds (Kafka: what the client has fetched); to
  // catch up, call again until it answers 0.
  absl::StatusOr<size_t> ConsumeBus(size_t max_records = 4096);

  // ---- Partition ownership (docs/design.md section 6) ---------------------------
  //
  // With a bus, users are partitioned by PartitionFor (presence/bus.h) and
  // each partition is owned by one engine. An engine serves, consumes and
  // writes only the users of the partitions it owns; a keyed signal, a keyed
  // disconnect or an override call for any other user answers
  // FailedPrecondition naming the partition. Without a bus these answer FailedPrecondition.

  // Engine::AssignPartitions takes the partitions over: for those not yet
  // owned, it loads their users, devices and committed offsets from the
  // Store, then replays the bus from those offsets up to its end, and only
  // then serves them. It then publishes each loaded user's published state
  // again (its stored version, cause kMerge): the previous owner may have
  // stored a change and died before publishing it, and watchers ignore a
  // version they have. InvalidArgument for a partition the bus does not have;
  // Unavailable when the Store cannot be read (nothing of it is taken: call
  // again). Owned partitions in the list are left as they are.
  absl::Status AssignPartitions(absl::Span<const uint32_t> partitions);

  // Engine::RevokePartitions lets partitions go: it flushes first (a Tick:
  // every pending record written, the offsets committed, the changes
  // published), then drops their users from memory, writing nothing more of
  // them. Called from inside a listener, it returns before the listeners
  // see the flush's changes: they get them once that listener returned,
  // before the Tick running it returns. Keyed calls racing it either finish
  // before the users are dropped (and are dropped with them) or answer
  // FailedPrecondition. When the flush could not write everything, or an
  // erasure of one of their users is not on the bus yet, it still lets go
  // and answers Unavailable: the offsets of what was not done were not
  // committed, so the next owner replays those records. Partitions not
  // owned are ignored.
  absl::Status RevokePartitions(absl::Span<const uint32_t> partitions);

  // The partitions this engine owns, in order (every partition of the bus
  // when Options::owns_all_partitions; none without a bus).
  std::vector<uint32_t> OwnedPartitions() const;
  // The number of partitions of Options::bus (0 without a bus).
  uint32_t BusPartitions() const;

  // Engine::OverloadLevel: how many overload steps apply now, 0 to 3
  // (Options, "Overload"): 1 a longer flush interval, 2 large topics to
  // counts, 3 subscribers to polling. Decided at the end of each Tick; the
  // fan-out reads it when it flushes. Lock-free.
  int OverloadLevel() const;

  // Engine::Rebuild: the operator's rebuild. Drops everything the engine
  // holds in memory, reloads the Store, and resumes consuming the bus from
  // the committed offsets. Changes that were not yet written are lost (so
  // Tick first). Do not feed the engine while it runs.
  absl::Status Rebuild();

  // ---- Listeners -----------------------------------------------------------

  // Engine::AddListener adds a listener beside Options::listener; Tick calls
  // them in the order added. Not owned; it must stay alive until removed or
  // the engine is destroyed. Called from inside a listener, the new one is
  // first called with the next tick's changes.
  void AddListener(ChangeListener* listener);
  // Engine::RemoveListener: the listener is not called after this returns.
  // It waits for a call to the listener running on another thread, so the
  // host may destroy the listener then; called from inside a listener of
  // this engine it does not wait (the running call may be to itself).
  void RemoveListener(ChangeListener* listener);

  // ---- Time ----------------------------------------------------------------

  // Engine::Tick reads the clock, fires the timers that are due (device
  // timeouts, grace, dwell, override expiry, retention) and publishes the
  // changes of every touched user to the listeners, then calls each
  // listener's OnTick. Call it every flush interval. Returns how many change
  // events were published. A device record freed (erased, released, past
  // retention) is reused only after a later Tick found no heartbeat on a
  // handle running since it was freed.
  size_t Tick();

  // The engine's notion of now: its clock's time.
  int64_t NowMs() const;

  // ---- Operations (docs/design.md section 7) -------------------------------------

  // Engine::RenderMetrics renders every metric in Prometheus text exposition
  // format, with HELP and TYPE lines.
  std::string RenderMetrics() const;

  // Counts of what the engine holds now.
  struct Sizes {
    size_t users = 0;
    size_t devices = 0;       // records, live or recently dead
    size_t live_devices = 0;
    size_t overrides = 0;
  };
  Sizes GetSizes() const;

  const Options& options() const;

 private:
  explicit Engine(std::unique_ptr<internal::EngineCore> core);
  std::unique_ptr<internal::EngineCore> core_;
};

// The version of the linked library ("0.1.0").
PRESENCE_EXPORT const char* VersionString();

}  // namespace presence

#endif  // PRESENCE_ENGINE_H_
