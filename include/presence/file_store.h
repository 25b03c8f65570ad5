// File: presence/file_store.h
//
// presence::FileStore is the embedded crash-safe store (docs/design.md section 5):
// one data folder that implements both presence::Store (device and user
// records, erasure floors, committed bus offsets) and presence::HistoryStore
// (the audit trail of transitions). It keeps the whole state in memory,
// under the same rules as the in-memory stores, and makes every change
// durable in an append-only log before it is visible to readers.
//
// Example:
//
//   presence::FileStoreOptions fo;                 // kEveryWrite by default
//   auto fs = presence::FileStore::Open("/var/lib/presence", fo);
//   if (!fs.ok()) return fs.status();              // unreadable or newer format
//   if ((*fs)->recovery().bytes_dropped > 0) log("dropped a torn tail");
//   presence::Options o;
//   o.store = (*fs)->store();                      // owned by the FileStore
//   o.history = (*fs)->history();
//   auto engine = presence::Engine::Create(o);     // loads what the folder holds
//
// SYNC POLICIES: what an OK from Write, Append, Erase or DropBefore promises.
//   kEveryWrite  The change is in the log and fdatasync(2) returned before the
//                call returns. It survives a crash of the process, of the OS
//                and a power loss. Concurrent callers share one fdatasync
//                (group commit), so throughput grows with the number of
//                writing threads.
//   kInterval    The change was handed to the OS (write(2)) before the call
//                returns, so it survives a crash of the process (a kill -9,
//                an abort) like kEveryWrite. A background thread runs
//                fdatasync at most every sync_interval_ms when something is
//                unsynced: a crash of the OS or a power loss loses at most the
//                changes acknowledged in the last sync_interval_ms (plus the
//                time one fdatasync takes). What survives is always a prefix
//                of the acknowledged changes, never a change without the ones
//                before it. A failed background fdatasync is counted
//                (presence_file_store_sync_errors_total) and tried again at
//                the next tick; Sync() and the next segment roll report it.
//   kNever       Like kInterval, but the store never syncs the log on its own:
//                the OS writes it back when it chooses (on Linux, usually
//                within 30 s). Sync() and a clean close (the destructor) still
//                sync.
// Under every policy snapshots are fsynced before they replace anything, and
// the directory is synced after files are created, renamed or removed (under
// kNever only for snapshots), so compaction never loses a change that the log
// held durably.
//
// FORMAT: the folder holds
//   LOCK                   flock(2)ed while a FileStore has the folder open
//   segment-NNNNNN.log     the log: frames, one per call that changed
//                          something, appended; a new segment is started
//                          when one passes segment_bytes, at a snapshot, and
//                          on Open (unless the last one is empty)
//   snapshot-NNNNNN.snap   the whole state (records, erasure floors, offsets,
//                          transitions) as of the start of segment NNNNNN
//   *.tmp                  a snapshot being written (removed by Open)
//   *.dropped              segments set aside by recovery (see below); the
//                          store never reads or removes them
// A frame is a 24-byte header (XXH3-64 checksum, payload length, format
// version, file kind, sequence number) and a protobuf payload of
// proto/presence/v1/storage.proto; the exact layout is in src/store/log_format.h.
// Log sequence numbers grow by one per frame across segments, so a missing,
// repeated or reordered frame is detected. A snapshot is a header, chunks of
// state and a trailer with the counts; it counts only if it is whole.
//
// COMPACTION: once compact_after_bytes have been logged since the last
// snapshot (or on Compact()), the store starts a new segment, writes the
// state as of that point to snapshot-N.snap.tmp, fsyncs it, renames it into
// place and syncs the folder. It then removes the segments and snapshots
// that the previous snapshot does not need: the two newest snapshots are kept
// with the segments after the older of them, so a damaged newest snapshot
// still has a fallback. Erasure floors are part of every snapshot, so an
// erased user never comes back through compaction or recovery.
//
// RECOVERY (Open): loads the newest snapshot that reads back whole, then
// replays the segments after it in order. It stops cleanly at the first frame
// it cannot trust (cut short by a crash, a checksum mismatch, a payload that
// does not parse, a sequence number out of place): that segment is truncated
// to its good prefix so that later appends are readable, the segments after
// it are renamed to *.dropped, and the loss is reported in recovery() and the
// metrics. Open does not fail for this. A damaged snapshot is skipped in
// favour of the previous one (or of the segments alone) and reported too. A
// frame written by a newer format version makes Open fail with
// FailedPrecondition naming the version, and changes nothing in the folder:
// this build cannot carry data it cannot read.
//
// FAILURES: a failed write (a full disk, an I/O error) makes the call return
// that error (ResourceExhausted for a full disk) and changes nothing that
// readers see; the partial frame is cut off the log, so a later call succeeds
// once the cause is gone. Everything acknowledged before stays.
//
// THREAD SAFETY: every method of FileStore, Store and HistoryStore may be
// called from any number of threads at once. Readers (Load, Query,
// LastBefore) do not wait for a write's fdatasync; they wait while a snapshot
// copies the state (a short pause, proportional to its size). A
// StoreVisitor passed to Load must not call back into the store.
//
// LIFESPAN AND OWNERSHIP: the caller owns the FileStore. store() and history()
// are owned by it and valid until it is destroyed; nothing may be calling
// them then. One folder may be open in one FileStore at a time (LOCK).
#ifndef PRESENCE_FILE_STORE_H_
#define PRESENCE_FILE_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "presence/export.h"
#include "presence/history.h"
#include "presence/store.h"

namespace presence {

// presence::SyncPolicy: when the log is fdatasynced (see SYNC POLICIES above).
enum class SyncPolicy : uint8_t {
  kEveryWrite = 1,
  kInterval = 2,
  kNever = 3,
};

struct FileStoreOptions {
  // Default kEveryWrite: nothing acknowledged is ever lost. kInterval trades
  // the last sync_interval_ms of writes on an OS crash for many more writes
  // per second from one thread.
  SyncPolicy sync = SyncPolicy::kEveryWrite;
  // kInterval only: the longest time a written change stays unsynced.
  // Must be > 0.
  int64_t sync_interval_ms = 100;
  // A segment is closed and a new one started once it holds this many bytes
  // (a single larger frame still goes into one segment). Must be > 0.
  size_t segment_bytes = size_t{64} << 20;
  // A snapshot and compaction start in the background once this many log
  // bytes were written since the last snapshot. 0: only on Compact().
  size_t compact_after_bytes = size_t{256} << 20;
  // Open creates the folder (and its parents) when it does not exist;
  // false: Open fails with NotFound then.
  bool create_if_missing = true;
};

// presence::RecoveryStats: what Open found and did. Every problem also has a
// line in `problems`, for logs.
struct RecoveryStats {
  std::string snapshot;              // the snapshot file loaded; empty: none
  uint64_t snapshot_records = 0;     // floors, users, devices, offsets, transitions
  uint64_t snapshots_rejected = 0;   // damaged snapshots skipped
  uint64_t segments_replayed = 0;
  uint64_t log_records = 0;          // frames replayed from segments
  uint64_t log_entries = 0;          // erasures, users, devices, offsets and transitions in them
  uint64_t records_recovered = 0;    // snapshot_records + log_entries
  uint64_t torn_records = 0;         // frames cut short at the end of a segment
  uint64_t corrupt_records = 0;      // frames that failed their checksum, parse or sequence
  uint64_t bytes_dropped = 0;        // log bytes after the good prefix (incl. dropped segments)
  uint64_t segments_dropped = 0;     // later segments renamed to *.dropped
  double seconds = 0;                // how long Open took
  std::vector<std::string> problems;
};

class PRESENCE_EXPORT FileStore {
 public:
  // FileStore::Open opens (or creates) the data folder `dir` and recovers its
  // state (see RECOVERY). The folder is the owner's alone (it holds every
  // user's true states): it is created 0700, its files 0600, and no file in
  // it is opened through a symbolic link. Errors: InvalidArgument for bad
  // options; FailedPrecondition when the folder is locked by another
  // FileStore, holds data of a newer format version, belongs to another
  // user, or is writable by group or others; NotFound when it does not exist
  // and create_if_missing is false; the I/O error when a file cannot be
  // read, truncated or created (a link in its place: ELOOP).
  static absl::StatusOr<std::unique_ptr<FileStore>> Open(const std::string& dir,
                                                         const FileStoreOptions& options);

  // Stops the background threads, syncs the log and releases the folder.
  virtual ~FileStore();

  // The Store over this folder. Owned by the FileStore.
  virtual Store* store() = 0;
  // The HistoryStore over this folder. Owned by the FileStore.
  virtual HistoryStore* history() = 0;

  // FileStore::Sync fdatasyncs the log now: on OK every change acknowledged
  // before the call is durable, whatever the policy.
  virtual absl::Status Sync() = 0;

  // FileStore::Compact writes a snapshot and removes what it makes
  // unnecessary (see COMPACTION), on the calling thread. Writers and readers
  // pause while the state is copied, not while it is written. On error
  // (e.g. a full disk) nothing is removed and the log still holds everything.
  virtual absl::Status Compact() = 0;

  // What Open found (see RecoveryStats).
  virtual RecoveryStats recovery() const = 0;

  // Prometheus text: writes, bytes, syncs, write and sync errors, snapshots,
  // segments, and what recovery found (records, bytes dropped, torn and
  // corrupt records, rejected snapshots).
  virtual std::string RenderMetrics() const = 0;

 protected:
  FileStore() = default;
};

}  // namespace presence

#endif  // PRESENCE_FILE_STORE_H_
