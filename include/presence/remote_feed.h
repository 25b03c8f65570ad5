// File: presence/remote_feed.h
//
// presence::RemoteFeed keeps fan-out working across engines (docs/design.md
// section 6). Users are partitioned over engines (PartitionFor in bus.h);
// every engine publishes its users' change events to the bus. A subscriber
// on engine B that watches a user owned by engine A gets that user's changes
// through B's RemoteFeed, which reads the change events of the partitions B
// does not own and hands those of watched users to B's Fanout, exactly as
// B's engine would (Fanout::OnChanges).
//
//   auto feed = presence::RemoteFeed::Create(&bus, fanout.get(), {2, 3}).value();
//   ...                                   // host loop, e.g. before each Tick
//   feed->Poll();                         // delivers remote changes
//   engine->Tick();                       // the fan-out flushes from here
//   feed->SetOwnedPartitions({1, 2, 3});  // failover: partition 1 is ours now
//
// WHAT IT PROMISES
//   * Only kChange records of partitions not owned are delivered; kSignal
//     and kCommand records are left to the engines (RemoteFeedOptions's
//     on_signal and on_command are told of them). Only changes of users that some subscriber or topic of the
//     fan-out watches are delivered.
//   * No duplicates: the fan-out ignores a change whose version is not newer
//     than the one it holds, so reading the bus again from an earlier offset
//     (Seek) delivers nothing twice.
//   * Bad records never stop a partition: a payload that does not decode, or
//     whose user is not the record's key, is counted as malformed; a record
//     whose key does not hash to the partition it was read from (a record from
//     an unknown partition: a misconfigured producer or a different partition
//     count) is counted apart. Both are skipped; PollResult::first_error names
//     the first, and RenderMetrics counts them.
//
// SNAPSHOTS: the feed is the fan-out's SnapshotSource (it attaches itself).
// For a user that another engine owns, the local engine knows nothing, so the
// snapshot of a new subscription would be wrong; instead the fan-out takes
// the latest change event the feed has read for that user. The feed keeps:
//   * for every watched remote user, its latest change event (as many as
//     there are watched users);
//   * for unwatched remote users, the latest change event of at most
//     RemoteFeedOptions::max_unwatched_users of those changed most recently
//     (two generations: when the newer one is full, the older one is
//     dropped), so that watching someone who changed recently, the common
//     case of a friend coming online, starts from the right state.
// A remote user the feed has nothing on starts from the local engine's answer
// (usually OFFLINE) until its next change. Start the feed at the beginning of
// the bus (or at an early offset) to learn everyone's state.
//
// START AND OWNERSHIP: the feed reads each partition from its own offset,
// which starts at the partition's end when the feed is created
// (RemoteFeedOptions::from_beginning: at 0) and can be moved with Seek. When
// a partition becomes owned (SetOwnedPartitions), the feed first reads it to
// its end, so that the changes its previous owner published before it let go
// or died reach the fan-out (the new owner's engine loads those users from
// the store and does not publish them again); then reading it stops and the
// feed forgets the events of its users (the engine answers for them now).
// When it stops being owned, reading resumes from where it stopped: the
// changes published in between are read again (the fan-out ignores the ones
// it has), which also teaches the cache the latest state of those users.
//
// LIMITS: the wire form of a change event carries one last_seen and one
// device summary (the public ones), so a user's own subscriber sees its
// public last_seen and devices while it is invisible on another engine.
//
// THREAD SAFETY: every method may be called from any thread; Poll calls are
// serialised. The fan-out must outlive the feed; the feed detaches itself
// from the fan-out when destroyed. The bus must outlive the feed.
#ifndef PRESENCE_REMOTE_FEED_H_
#define PRESENCE_REMOTE_FEED_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "presence/bus.h"
#include "presence/export.h"
#include "presence/fanout.h"
#include "presence/types.h"

namespace presence {

struct RemoteFeedOptions {
  // Records read per Bus::Read call.
  size_t read_batch = 512;
  // Unwatched remote users whose latest change is kept for snapshots.
  size_t max_unwatched_users = 100000;
  // Where reading starts: false, each partition's end at Create; true, 0.
  bool from_beginning = false;
  // Told of each signal (not a disconnect) read from a partition not
  // owned, as published (its gateway included), so that a gateway can close
  // its own connection of a device that connected again through another
  // gateway. Called inside Poll and SetOwnedPartitions: it must not call the
  // feed. Empty: signals are skipped undecoded.
  std::function<void(const Signal& signal)> on_signal;
  // Told of each partition command (presence/types.h) read from a partition
  // not owned, decoded, so that a gateway that an operator drains closes its
  // own connections of the devices the owners disconnected. A command goes
  // to every partition, so it comes once per partition read. Called as
  // on_signal is. Empty: commands are skipped undecoded.
  std::function<void(const PartitionCommand& command)> on_command;
};

// What one RemoteFeed::Poll did.
struct RemoteFeedPollResult {
  size_t read = 0;               // records read, of any type and partition
  size_t delivered = 0;          // change events handed to the fan-out
  size_t malformed = 0;          // skipped: payload or key not a change event
  size_t unknown_partition = 0;  // skipped: key hashes to another partition
  // Describes the first skipped record (OK if none).
  absl::Status first_error;
};

// Counts since the feed was created (RenderMetrics renders them).
struct RemoteFeedStats {
  uint64_t read = 0;
  uint64_t delivered = 0;
  uint64_t malformed = 0;
  uint64_t unknown_partition = 0;
  uint64_t read_errors = 0;  // Bus::Read failures
  size_t cached_users = 0;   // change events held for snapshots (a gauge)
};

class PRESENCE_EXPORT RemoteFeed {
 public:
  // Creates a feed over `bus` for `fanout`, owning `owned` partitions, and
  // attaches it as the fan-out's SnapshotSource. InvalidArgument for a null
  // bus or fan-out, a partition the bus does not have, or a zero read_batch.
  static absl::StatusOr<std::unique_ptr<RemoteFeed>> Create(
      Bus* bus, Fanout* fanout, absl::Span<const uint32_t> owned,
      const RemoteFeedOptions& options = {});
  ~RemoteFeed();
  RemoteFeed(const RemoteFeed&) = delete;
  RemoteFeed& operator=(const RemoteFeed&) = delete;

  // RemoteFeed::Poll reads every partition not owned, looping on Bus::Read
  // until the partition is at its end or `max_records` were read in all, and
  // delivers the changes of watched users to the fan-out (they reach
  // subscribers at the fan-out's next flush, in Engine::Tick). Returns the
  // first Bus::Read error, after delivering what was read before it; the
  // other partitions are still read.
  absl::StatusOr<RemoteFeedPollResult> Poll(size_t max_records = 4096);

  // RemoteFeed::SetOwnedPartitions replaces the set of partitions this engine
  // owns (after a failover or a rebalance; call it after the engine took
  // them). Each partition gained is read to its end first and its changes
  // delivered (a read error is counted in Stats and the partition is taken
  // all the same). InvalidArgument for a partition the bus does not have;
  // then nothing changes.
  absl::Status SetOwnedPartitions(absl::Span<const uint32_t> owned);

  // RemoteFeed::Seek moves the next offset read in `partition` (to replay, or
  // to start from a committed offset). InvalidArgument for a partition the
  // bus does not have; an offset the bus no longer holds fails at Poll.
  absl::Status Seek(uint32_t partition, uint64_t offset);

  // The next offset to read, per partition (index = partition).
  std::vector<uint64_t> Offsets() const;
  // RemoteFeed::Latest is the latest change event the feed holds for a user
  // of a partition it does not own (watched, or among the unwatched it
  // keeps; see SNAPSHOTS above), or nullopt: what a gateway answers a query
  // with. A host that reads from the beginning and keeps as many unwatched
  // users as there are holds every user's latest change.
  std::optional<ChangeEvent> Latest(absl::string_view user_id) const;

  RemoteFeedStats Stats() const;
  // Prometheus text: records read, delivered, malformed, from an unknown
  // partition, read errors, and users cached.
  std::string RenderMetrics() const;

  class Impl;

 private:
  explicit RemoteFeed(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace presence

#endif  // PRESENCE_REMOTE_FEED_H_
