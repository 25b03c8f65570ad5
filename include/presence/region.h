// File: presence/region.h
//
// presence::RegionMirror makes regions converge (docs/design.md section 6,
// docs/scale-out.md). Each region runs its own engines and store; a mirror per
// region publishes the region's change events to an outbound bus that the
// other regions read, and merges what they publish into one view per user.
//
//   presence::RegionMirrorOptions o;
//   o.region_id = "eu-west";
//   o.outbound = eu_bus;                  // the other regions read this one
//   o.inbound = {us_bus, ap_bus};         // the other regions' outbound buses
//   auto mirror = presence::RegionMirror::Create(o).value();
//   engine->AddListener(mirror.get());    // local changes are mirrored on Tick
//   ...
//   mirror->Poll();                       // now and then: merge remote changes
//   std::optional<presence::RegionRecord> r = mirror->Get("alice");
//
// THE MERGE RULE: every local change is stamped with the region's hybrid
// logical clock (HLC) and its region id. Per user, the record with the
// greatest (hlc, region) wins: the greater HLC, and on equal HLCs the region id
// that is greater byte by byte. Equal or smaller keys change nothing, so
// duplicates, replays and stale records are no-ops, and every region that has
// received the same records holds the same view, whatever order they came in.
//
// THE CLOCK: an HLC is (physical ms << 16) | logical counter, in 64 bits.
//   send:    stamp = max(last + 1, now_ms << 16)
//   receive: last = max(last, remote stamp)
// So stamps of one region only grow, even if its clock steps back, and a
// change made after a remote record was merged is stamped after that record
// and wins over it. Physical time is Options::clock (ms, as in clock.h).
//
// THE WIRE: one presence.v1.MirroredChange per change, as BusRecordType::kChange
// keyed by user id (so a user's records stay in one partition, in order).
// The outbound bus carries only these: do not share it with an engine. The
// view holds events as the wire carries them (EncodeChangeEvent with the
// user's own view): self_devices and self_last_seen_ms are not on the wire, so
// they equal devices and last_seen_ms, in every region alike.
//
// FAILURES: a publish that fails loses nothing: the change stays queued and
// is retried on the next OnChanges, OnTick, Flush or Poll. While it waits, a newer
// change of the same user replaces it (only the latest matters to the merge).
// The queue holds at most max_pending users; past that, Mirror answers
// ResourceExhausted and applies nothing of its batch. Remote records that do
// not decode are counted and skipped. A remote record that carries this
// region's own id means two regions share an id (or a bus is wired back to
// itself): Poll stops there and answers FailedPrecondition naming the region,
// on every call, until the configuration is fixed.
//
// ERASURE: Engine::Erase is local to a region; the host calls Erase on the
// mirror beside it. Erase stamps a tombstone like a local change and publishes
// it (MirroredChange.erased). The merge rule is the same: a tombstone that wins
// hides the user (Get answers nullopt, View omits it), and is kept so that an
// older record arriving later (a replay, a region that was cut off) loses to
// it. A record with a greater (hlc, region) wins over it as usual: a change
// made after the erasure was seen (the user signs in again), or one that raced
// it with a later stamp. Tombstones are kept for the mirror's lifetime: at most
// one entry per user ever held, replaced by a newer record
// (stats().tombstones counts them); like the view they are not persisted.
// A remote tombstone that wins reaches the listener as a ChangeEvent with
// version 0 (which only a tombstone has: Mirror refuses version 0 and a remote
// change with version 0 is malformed), cause kMerge, state, self_state and the
// previous ones OFFLINE, no devices, last_seen 0. On it the host erases the
// user locally (the erasure event Engine::Erase then publishes is not
// mirrored: as a listener, the mirror passes over erased events, so nothing
// is mirrored back).
//
// Not yet: a bound on a remote clock that runs far ahead (its stamps win until
// local clocks pass them), and persistence (a new mirror starts empty, from
// offset 0).
//
// THREAD SAFETY: every method may be called from any thread; one mutex
// serialises them, held across bus calls (this is not the heartbeat path),
// and Poll calls are serialised among themselves.
#ifndef PRESENCE_REGION_H_
#define PRESENCE_REGION_H_

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
#include "presence/bus.h"
#include "presence/clock.h"
#include "presence/export.h"
#include "presence/listener.h"
#include "presence/types.h"

namespace presence {

// A region id is 1 to kMaxRegionIdBytes bytes of printable ASCII, no spaces.
inline constexpr size_t kMaxRegionIdBytes = 64;
inline constexpr int kHlcLogicalBits = 16;

struct RegionMirrorOptions {
  std::string region_id;
  Clock* clock = nullptr;     // nullptr: SystemClock()
  Bus* outbound = nullptr;    // required; not owned
  std::vector<Bus*> inbound;  // the other regions' outbound buses; not owned
  size_t max_pending = 100000;  // users with a change not yet published
  size_t read_batch = 1024;     // records per Bus::Read
  // Optional, not owned: receives the remote records that won the merge in a
  // Poll (the host's engine already told it of local ones), in merge order,
  // after the merge, on Poll's thread, without the mirror's lock: it may call
  // Get or View, not Poll. Region and HLC: Get(event.user_id). A tombstone
  // that won comes as an event with version 0 (see ERASURE above): erase the
  // user locally.
  ChangeListener* listener = nullptr;
};

// presence::RegionRecord: a user's winning record in the merged view.
struct RegionRecord {
  ChangeEvent event;
  uint64_t hlc = 0;
  std::string region;  // where the change happened
};

struct RegionMirrorStats {
  uint64_t local = 0;             // local changes and erasures stamped and merged
  uint64_t merged = 0;            // remote records (tombstones too) that won
  uint64_t duplicate_or_stale = 0;  // remote records that lost (no-ops)
  uint64_t malformed = 0;         // remote records skipped
  uint64_t publish_failures = 0;  // failed Bus::Publish calls (retried)
  uint64_t rejected_full = 0;     // local changes refused: queue full
  size_t pending = 0;             // users waiting to be published
  size_t tombstones = 0;          // erased users held (hidden from the view)
};

class PRESENCE_EXPORT RegionMirror final : public ChangeListener {
 public:
  // InvalidArgument for a bad region id, a null or repeated bus, the outbound
  // bus among the inbound ones, or a zero max_pending or read_batch.
  static absl::StatusOr<std::unique_ptr<RegionMirror>> Create(const RegionMirrorOptions& options);
  ~RegionMirror() override;

  // RegionMirror::Mirror stamps each event, merges it into the view and
  // publishes it. InvalidArgument for an event that does not encode validly
  // or has version 0 (reserved for erasures), ResourceExhausted when the queue is full; either way nothing of the batch
  // is applied. A failed publish is not an error here (see FAILURES).
  absl::Status Mirror(absl::Span<const ChangeEvent> events);
  // RegionMirror::Erase mirrors an erasure: call it beside Engine::Erase. It
  // stamps and publishes a tombstone for the user, which hides it here and, by
  // the merge rule, in every region (see ERASURE). InvalidArgument for a bad
  // user id, ResourceExhausted when the queue is full (nothing applied).
  absl::Status Erase(absl::string_view user_id);
  // The engine's listener hook: Mirror, with refusals counted in stats().
  void OnChanges(absl::Span<const ChangeEvent> events) override;
  // Each engine Tick retries the queue (Flush, failures only counted).
  void OnTick(int64_t now_ms) override;

  // RegionMirror::Flush publishes what is queued; the first publish error,
  // with what failed left queued.
  absl::Status Flush();

  // RegionMirror::Poll retries the queue (failures only counted), then reads
  // every inbound bus to its end from its own offsets and merges. Returns how
  // many records changed the view. A bus error or a region id collision stops
  // it; what was merged before stays merged.
  absl::StatusOr<size_t> Poll();

  // The merged view: one user, or every user (sorted by user id).
  std::optional<RegionRecord> Get(absl::string_view user_id) const;
  std::vector<RegionRecord> View() const;

  // The last HLC this region issued or received.
  uint64_t LastHlc() const;
  RegionMirrorStats stats() const;
  const std::string& region_id() const;

 private:
  struct State;
  explicit RegionMirror(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

}  // namespace presence

#endif  // PRESENCE_REGION_H_
