// The crash-safe file store (include/presence/file_store.h): the state lives
// in an internal::RecordSet and an internal::TransitionLog (src/store/record_rules.h,
// the same rules as the in-memory stores); every change is first appended to
// the log (src/store/log_format.h) and only then applied in memory, so readers never
// see a change the log does not hold.
//
// Writers go through a queue (LevelDB's group commit): the writer at the front
// leads, frames its own record and those queued behind it, appends them with
// one write and one fdatasync without holding mu_, then applies them in log
// order and wakes the others. A snapshot cut queues like a writer, so it sees
// no write in flight.
//
// Locks: compact_mu_ (one snapshot at a time), then mu_ (queue and state),
// then log_mu_ (the open segment). The leader holds log_mu_ alone while it
// writes; nothing takes mu_ while holding log_mu_.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "presence/file_store.h"
#include "presence/v1/storage.pb.h"
#include "src/store/file_store_internal.h"
#include "src/store/file_system.h"
#include "src/store/log_format.h"
#include "src/core/metrics.h"
#include "src/store/record_rules.h"

namespace presence {

FileStore::~FileStore() = default;

namespace internal {
namespace {

namespace pb = ::presence::v1::storage;
namespace wire = ::presence::v1;

// A group of frames written at once is at most this large (a single larger
// record still goes alone).
constexpr size_t kMaxGroupBytes = size_t{1} << 20;
// Entries per snapshot chunk.
constexpr size_t kChunkEntries = 4096;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---- Conversions ---------------------------------------------------------------

template <typename To, typename From>
To Enum(From v) {
  return static_cast<To>(static_cast<int>(v));
}

void ToProto(const UserRecord& u, pb::StoredUser* p) {
  p->set_user_id(u.user_id);
  p->set_version(u.version);
  p->set_state_version(u.state_version);
  p->set_state(Enum<wire::State>(u.state));
  p->set_self_state(Enum<wire::State>(u.self_state));
  p->set_last_seen_ms(u.last_seen_ms);
  p->set_published_at_ms(u.published_at_ms);
  p->set_public_version(u.public_version);
  p->set_hidden_last_seen_ms(u.hidden_last_seen_ms);
  for (const OverrideInfo& o : u.overrides) {
    wire::Override* po = p->add_overrides();
    po->set_id(o.id);
    po->set_state(Enum<wire::OverrideState>(o.state));
    po->set_set_at_ms(o.set_at_ms);
    po->set_until_ms(o.until_ms);
  }
}

UserRecord FromProto(const pb::StoredUser& p) {
  UserRecord u;
  u.user_id = p.user_id();
  u.version = p.version();
  u.state_version = p.state_version();
  u.state = Enum<State>(p.state());
  u.self_state = Enum<State>(p.self_state());
  u.last_seen_ms = p.last_seen_ms();
  u.published_at_ms = p.published_at_ms();
  u.public_version = p.public_version();
  u.hidden_last_seen_ms = p.hidden_last_seen_ms();
  u.overrides.reserve(p.overrides_size());
  for (const wire::Override& po : p.overrides()) {
    u.overrides.push_back(OverrideInfo{po.id(), Enum<OverrideState>(po.state()), po.set_at_ms(),
                                       po.until_ms()});
  }
  return u;
}

void ToProto(const DeviceRecord& d, pb::StoredDevice* p) {
  p->set_user_id(d.user_id);
  p->set_device_id(d.device_id);
  p->set_session_id(d.session_id);
  p->set_platform(Enum<wire::Platform>(d.platform));
  p->set_last_inferred_ms(d.last_signal_ms[0]);
  p->set_last_app_ms(d.last_signal_ms[1]);
  p->set_last_manual_ms(d.last_signal_ms[2]);
  p->set_inferred_activity(Enum<wire::Activity>(d.activity[0]));
  p->set_app_activity(Enum<wire::Activity>(d.activity[1]));
  p->set_manual_activity(Enum<wire::Activity>(d.activity[2]));
  p->set_closed(d.closed);
  p->set_gone(d.gone);
  p->set_gateway(d.gateway);
  p->set_version(d.version);
}

DeviceRecord FromProto(const pb::StoredDevice& p) {
  DeviceRecord d;
  d.user_id = p.user_id();
  d.device_id = p.device_id();
  d.session_id = p.session_id();
  d.platform = Enum<Platform>(p.platform());
  d.last_signal_ms = {p.last_inferred_ms(), p.last_app_ms(), p.last_manual_ms()};
  d.activity = {Enum<Activity>(p.inferred_activity()), Enum<Activity>(p.app_activity()),
                Enum<Activity>(p.manual_activity())};
  d.closed = p.closed();
  d.gone = p.gone();
  d.gateway = p.gateway();
  d.version = p.version();
  return d;
}

void ToProto(const Transition& t, pb::StoredTransition* p) {
  p->set_user_id(t.user_id);
  p->set_version(t.version);
  p->set_at_ms(t.at_ms);
  p->set_previous(Enum<wire::State>(t.previous));
  p->set_state(Enum<wire::State>(t.state));
  p->set_self_state(Enum<wire::State>(t.self_state));
  p->set_cause(Enum<wire::Cause>(t.cause));
  p->set_trace_id(t.trace_id);
  p->set_last_seen_ms(t.last_seen_ms);
  p->set_public_version(t.public_version);
  p->set_public_last_seen_ms(t.public_last_seen_ms);
}

Transition FromProto(const pb::StoredTransition& p) {
  Transition t;
  t.user_id = p.user_id();
  t.version = p.version();
  t.at_ms = p.at_ms();
  t.previous = Enum<State>(p.previous());
  t.state = Enum<State>(p.state());
  t.self_state = Enum<State>(p.self_state());
  t.cause = Enum<Cause>(p.cause());
  t.trace_id = p.trace_id();
  t.last_seen_ms = p.last_seen_ms();
  t.public_version = p.public_version();
  t.public_last_seen_ms = p.public_last_seen_ms();
  return t;
}

void ToProto(const DeviceTransition& t, pb::StoredDeviceTransition* p) {
  p->set_user_id(t.user_id);
  p->set_device_id(t.device_id);
  p->set_at_ms(t.at_ms);
  p->set_session_id(t.session_id);
  p->set_event(static_cast<uint32_t>(t.event));
  p->set_platform(Enum<wire::Platform>(t.platform));
}

DeviceTransition FromProto(const pb::StoredDeviceTransition& p) {
  DeviceTransition t;
  t.user_id = p.user_id();
  t.device_id = p.device_id();
  t.at_ms = p.at_ms();
  t.session_id = p.session_id();
  t.event = static_cast<DeviceEvent>(p.event());
  t.platform = Enum<Platform>(p.platform());
  return t;
}

// Applies the lists that a log record's store batch and a snapshot chunk
// share, in the order a batch applies them: erasure floors, users, devices,
// committed offsets.
void ApplyRecords(const google::protobuf::RepeatedPtrField<pb::Erasure>& erasures,
                  const google::protobuf::RepeatedPtrField<pb::StoredUser>& users,
                  const google::protobuf::RepeatedPtrField<pb::StoredDevice>& devices,
                  const google::protobuf::RepeatedPtrField<pb::Offset>& offsets,
                  RecordSet* records) {
  for (const pb::Erasure& e : erasures) {
    records->ApplyErasure(StoreBatch::Erasure{e.user_id(), e.floor()});
  }
  for (const pb::StoredUser& u : users) records->ApplyUser(FromProto(u));
  for (const pb::StoredDevice& d : devices) records->ApplyDevice(FromProto(d));
  for (const pb::Offset& o : offsets) {
    records->ApplyOffset(CommittedOffset{o.partition(), o.offset()});
  }
}

// Applies one log record to the state; returns the entries it held.
uint64_t ApplyLogRecord(const pb::LogRecord& r, RecordSet* records, TransitionLog* history) {
  switch (r.kind_case()) {
    case pb::LogRecord::kStoreBatch: {
      const pb::StoreBatchRecord& b = r.store_batch();
      ApplyRecords(b.erasures(), b.users(), b.devices(), b.offsets(), records);
      return b.erasures_size() + b.users_size() + b.devices_size() + b.offsets_size();
    }
    case pb::LogRecord::kHistoryAppend:
      for (const pb::StoredTransition& t : r.history_append().transitions()) {
        history->Append(FromProto(t));
      }
      for (const pb::StoredDeviceTransition& t : r.history_append().device_transitions()) {
        history->AppendDevice(FromProto(t));
      }
      return r.history_append().transitions_size() +
             r.history_append().device_transitions_size();
    case pb::LogRecord::kHistoryErase:
      history->Erase(r.history_erase().user_id());
      return 1;
    case pb::LogRecord::kHistoryRetention:
      history->DropBefore(r.history_retention().before_ms());
      return 1;
    case pb::LogRecord::KIND_NOT_SET:
      break;
  }
  return 0;
}

// ---- Snapshots -------------------------------------------------------------------

// Writes the whole state as snapshot frames.
class SnapshotWriter : public StoreVisitor {
 public:
  explicit SnapshotWriter(std::string* out) : out_(out) {}

  void Header(uint64_t next_sequence, uint64_t first_segment) {
    pb::SnapshotRecord r;
    pb::SnapshotHeader* h = r.mutable_header();
    h->set_next_sequence(next_sequence);
    h->set_first_segment(first_segment);
    h->set_created_at_ms(WallMs());
    Emit(r);
  }
  void Floor(const std::string& user, uint64_t floor) {
    pb::Erasure* e = chunk()->add_floors();
    e->set_user_id(user);
    e->set_floor(floor);
    ++counts_.floors;
    Counted();
  }
  void OnUser(const UserRecord& u) override {
    ToProto(u, chunk()->add_users());
    ++counts_.users;
    Counted();
  }
  void OnDevice(const DeviceRecord& d) override {
    ToProto(d, chunk()->add_devices());
    ++counts_.devices;
    Counted();
  }
  void OnOffset(const CommittedOffset& o) override {
    pb::Offset* p = chunk()->add_offsets();
    p->set_partition(o.partition);
    p->set_offset(o.offset);
    ++counts_.offsets;
    Counted();
  }
  void OnTransition(const Transition& t) {
    ToProto(t, chunk()->add_transitions());
    ++counts_.transitions;
    Counted();
  }
  void OnDeviceTransition(const DeviceTransition& t) {
    ToProto(t, chunk()->add_device_transitions());
    ++counts_.device_transitions;
    Counted();
  }
  void Trailer() {
    Flush();
    pb::SnapshotRecord r;
    pb::SnapshotTrailer* t = r.mutable_trailer();
    t->set_floors(counts_.floors);
    t->set_users(counts_.users);
    t->set_devices(counts_.devices);
    t->set_offsets(counts_.offsets);
    t->set_transitions(counts_.transitions);
    t->set_device_transitions(counts_.device_transitions);
    Emit(r);
  }

 private:
  struct Counts {
    uint64_t floors = 0, users = 0, devices = 0, offsets = 0, transitions = 0,
             device_transitions = 0;
  };
  pb::SnapshotChunk* chunk() { return chunk_.mutable_chunk(); }
  void Counted() {
    if (++in_chunk_ >= kChunkEntries) Flush();
  }
  void Flush() {
    if (in_chunk_ == 0) return;
    Emit(chunk_);
    chunk_.Clear();
    in_chunk_ = 0;
  }
  void Emit(const pb::SnapshotRecord& r) {
    r.SerializeToString(&scratch_);
    AppendFrame(FileKind::kSnapshot, frame_++, scratch_, out_);
  }

  std::string* out_;
  std::string scratch_;
  pb::SnapshotRecord chunk_;
  size_t in_chunk_ = 0;
  uint64_t frame_ = 0;
  Counts counts_;
};

struct LoadedSnapshot {
  RecordSet records;
  TransitionLog history;
  uint64_t next_sequence = 0;
  uint64_t first_segment = 0;
  uint64_t entries = 0;
};

// Reads a whole snapshot. OK; FailedPrecondition for a newer format;
// DataLoss (with what was wrong) for anything damaged or unreadable.
absl::Status LoadSnapshot(FileSystem* fs, const std::string& path, uint64_t number,
                          LoadedSnapshot* out) {
  std::string data;
  absl::Status s = fs->ReadFile(path, &data);
  if (!s.ok()) return absl::DataLossError(s.ToString());
  FrameReader reader(data, FileKind::kSnapshot);
  absl::string_view payload;
  uint64_t seq = 0, frames = 0;
  bool header = false, trailer = false;
  pb::SnapshotTrailer counted;
  pb::SnapshotRecord r;
  for (;;) {
    const FrameReader::Result res = reader.Next(&payload, &seq);
    if (res == FrameReader::Result::kEnd) break;
    if (res == FrameReader::Result::kNewer) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " was written in format version ", reader.version(), "; this build reads up to ",
          kFormatVersion, ": open it with a newer build"));
    }
    if (res != FrameReader::Result::kFrame) return absl::DataLossError(reader.problem());
    if (trailer) return absl::DataLossError("frames after the trailer");
    if (seq != frames) {
      return absl::DataLossError(absl::StrCat("frame ", frames, " carries index ", seq));
    }
    ++frames;
    if (!r.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
      return absl::DataLossError(absl::StrCat("frame ", seq, " does not parse"));
    }
    if (!header) {
      if (r.kind_case() != pb::SnapshotRecord::kHeader) return absl::DataLossError("no header");
      header = true;
      out->next_sequence = r.header().next_sequence();
      out->first_segment = r.header().first_segment();
      if (out->first_segment != number) {
        return absl::DataLossError(absl::StrCat("the header names segment ", out->first_segment));
      }
      continue;
    }
    switch (r.kind_case()) {
      case pb::SnapshotRecord::kChunk: {
        const pb::SnapshotChunk& c = r.chunk();
        ApplyRecords(c.floors(), c.users(), c.devices(), c.offsets(), &out->records);
        for (const pb::StoredTransition& t : c.transitions()) out->history.Append(FromProto(t));
        for (const pb::StoredDeviceTransition& t : c.device_transitions()) {
          out->history.AppendDevice(FromProto(t));
        }
        counted.set_floors(counted.floors() + c.floors_size());
        counted.set_users(counted.users() + c.users_size());
        counted.set_devices(counted.devices() + c.devices_size());
        counted.set_offsets(counted.offsets() + c.offsets_size());
        counted.set_transitions(counted.transitions() + c.transitions_size());
        counted.set_device_transitions(counted.device_transitions() +
                                       c.device_transitions_size());
        break;
      }
      case pb::SnapshotRecord::kTrailer: {
        const pb::SnapshotTrailer& t = r.trailer();
        if (t.floors() != counted.floors() || t.users() != counted.users() ||
            t.devices() != counted.devices() || t.offsets() != counted.offsets() ||
            t.transitions() != counted.transitions() ||
            t.device_transitions() != counted.device_transitions()) {
          return absl::DataLossError("the trailer's counts do not match the chunks");
        }
        trailer = true;
        break;
      }
      default:
        return absl::DataLossError(absl::StrCat("unexpected record in frame ", seq));
    }
  }
  if (!header) return absl::DataLossError("empty");
  if (!trailer) return absl::DataLossError("cut short: no trailer");
  out->entries = counted.floors() + counted.users() + counted.devices() + counted.offsets() +
                 counted.transitions() + counted.device_transitions();
  return absl::OkStatus();
}

// ---- The store -------------------------------------------------------------------

class FileStoreImpl;

class FileStoreStore final : public Store {
 public:
  explicit FileStoreStore(FileStoreImpl* impl) : impl_(impl) {}
  absl::Status Write(const StoreBatch& batch) override;
  absl::Status Load(StoreVisitor* visitor) override;

 private:
  FileStoreImpl* impl_;
};

class FileStoreHistory final : public HistoryStore {
 public:
  explicit FileStoreHistory(FileStoreImpl* impl) : impl_(impl) {}
  absl::Status Append(absl::Span<const Transition> transitions) override;
  absl::StatusOr<std::vector<Transition>> Query(absl::string_view user_id, int64_t from_ms,
                                                int64_t to_ms) override;
  absl::StatusOr<std::optional<Transition>> LastBefore(absl::string_view user_id,
                                                       int64_t before_ms) override;
  absl::Status AppendDevices(absl::Span<const DeviceTransition> transitions) override;
  absl::StatusOr<std::vector<DeviceTransition>> QueryDevice(absl::string_view user_id,
                                                            absl::string_view device_id,
                                                            int64_t from_ms,
                                                            int64_t to_ms) override;
  absl::Status Erase(absl::string_view user_id) override;
  absl::Status DropBefore(int64_t before_ms) override;

 private:
  FileStoreImpl* impl_;
};

class FileStoreImpl final : public FileStore {
 public:
  FileStoreImpl(std::string dir, const FileStoreOptions& options, FileSystem* fs)
      : dir_(std::move(dir)), options_(options), fs_(fs), store_(this), history_store_(this) {}

  ~FileStoreImpl() override {
    {
      absl::MutexLock l(&bg_mu_);
      stop_ = true;
    }
    for (std::thread& t : threads_) t.join();
    absl::MutexLock g(&log_mu_);
    if (segment_ != nullptr) {
      if (tail_dirty_) segment_->Truncate(good_size_).IgnoreError();
      if (unsynced_ || dir_unsynced_) SyncLocked().IgnoreError();
      segment_->Close().IgnoreError();
    }
  }

  absl::Status Recover();
  void StartThreads();

  Store* store() override { return &store_; }
  HistoryStore* history() override { return &history_store_; }
  absl::Status Sync() override {
    absl::MutexLock g(&log_mu_);
    return SyncLocked();
  }
  absl::Status Compact() override;
  RecoveryStats recovery() const override { return recovery_; }
  std::string RenderMetrics() const override;

  // What the Store and HistoryStore facades call.
  absl::Status WriteBatch(const StoreBatch& batch);
  absl::Status LoadRecords(StoreVisitor* visitor) {
    if (visitor == nullptr) return absl::InvalidArgumentError("visitor is null");
    absl::ReaderMutexLock l(&mu_);
    records_.Visit(visitor);
    return absl::OkStatus();
  }
  // A log record of history entries (Transition or DeviceTransition).
  template <typename Entry>
  absl::Status AppendHistory(absl::Span<const Entry> entries);
  std::vector<Transition> Query(absl::string_view user_id, int64_t from_ms, int64_t to_ms) {
    absl::ReaderMutexLock l(&mu_);
    return history_.Query(user_id, from_ms, to_ms);
  }
  std::optional<Transition> LastBefore(absl::string_view user_id, int64_t before_ms) {
    absl::ReaderMutexLock l(&mu_);
    return history_.LastBefore(user_id, before_ms);
  }
  std::vector<DeviceTransition> QueryDevice(absl::string_view user_id,
                                            absl::string_view device_id, int64_t from_ms,
                                            int64_t to_ms) {
    absl::ReaderMutexLock l(&mu_);
    return history_.QueryDevice(user_id, device_id, from_ms, to_ms);
  }
  absl::Status EraseHistory(absl::string_view user_id);
  absl::Status DropHistoryBefore(int64_t before_ms);

 private:
  // One call waiting to be logged.
  struct Writer {
    std::string payload;          // a serialized LogRecord
    std::function<void()> apply;  // applies it in memory, under mu_
    bool cut = false;             // a snapshot cut, not a record
    bool done = false;
    absl::Status status;
    absl::CondVar cv;
  };

  std::string PathOf(const std::string& name) const { return absl::StrCat(dir_, "/", name); }
  absl::Status Commit(Writer* w);
  // Appends framed records to the open segment and syncs per the policy.
  // Sets *compact when a snapshot is due.
  absl::Status AppendToLog(const std::string& frames, bool* compact);
  absl::Status StartSegmentLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_mu_);
  absl::Status SyncLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_mu_);
  void RequestCompaction();
  bool CompactionReady() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(bg_mu_) {
    return stop_ || compaction_wanted_;
  }
  void SyncLoop();
  void CompactLoop();

  const std::string dir_;
  const FileStoreOptions options_;
  FileSystem* const fs_;
  FileStoreStore store_;
  FileStoreHistory history_store_;
  std::unique_ptr<FileLock> lock_;
  RecoveryStats recovery_;  // set by Recover, then constant

  // One snapshot at a time.
  absl::Mutex compact_mu_ ABSL_ACQUIRED_BEFORE(mu_);

  mutable absl::Mutex mu_ ABSL_ACQUIRED_BEFORE(log_mu_);
  RecordSet records_ ABSL_GUARDED_BY(mu_);
  TransitionLog history_ ABSL_GUARDED_BY(mu_);
  std::deque<Writer*> writers_ ABSL_GUARDED_BY(mu_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;

  // The log. The leader (front of writers_) holds log_mu_ while it appends.
  mutable absl::Mutex log_mu_;
  std::unique_ptr<WritableFile> segment_ ABSL_GUARDED_BY(log_mu_);
  uint64_t segment_number_ ABSL_GUARDED_BY(log_mu_) = 0;
  uint64_t last_number_ ABSL_GUARDED_BY(log_mu_) = 0;  // highest segment number ever used
  uint64_t good_size_ ABSL_GUARDED_BY(log_mu_) = 0;    // bytes of whole frames in segment_
  bool tail_dirty_ ABSL_GUARDED_BY(log_mu_) = false;   // a failed append left bytes past it
  bool unsynced_ ABSL_GUARDED_BY(log_mu_) = false;     // appended but not yet fdatasynced
  bool dir_unsynced_ ABSL_GUARDED_BY(log_mu_) = false;
  uint64_t bytes_since_snapshot_ ABSL_GUARDED_BY(log_mu_) = 0;
  std::vector<uint64_t> segments_ ABSL_GUARDED_BY(log_mu_);   // on disk, ascending
  std::vector<uint64_t> snapshots_ ABSL_GUARDED_BY(log_mu_);  // on disk, ascending

  // Background threads: the interval syncer and the compactor.
  absl::Mutex bg_mu_;
  bool stop_ ABSL_GUARDED_BY(bg_mu_) = false;
  bool compaction_wanted_ ABSL_GUARDED_BY(bg_mu_) = false;
  std::vector<std::thread> threads_;

  // Metrics.
  std::atomic<uint64_t> records_written_{0};
  std::atomic<uint64_t> bytes_written_{0};
  std::atomic<uint64_t> group_commits_{0};
  std::atomic<uint64_t> write_errors_{0};
  std::atomic<uint64_t> syncs_{0};
  std::atomic<uint64_t> sync_errors_{0};
  std::atomic<uint64_t> snapshots_written_{0};
  std::atomic<uint64_t> snapshot_errors_{0};
  std::atomic<uint64_t> files_removed_{0};
};

absl::Status FileStoreStore::Write(const StoreBatch& batch) { return impl_->WriteBatch(batch); }
absl::Status FileStoreStore::Load(StoreVisitor* visitor) { return impl_->LoadRecords(visitor); }
absl::Status FileStoreHistory::Append(absl::Span<const Transition> transitions) {
  return impl_->AppendHistory(transitions);
}
absl::StatusOr<std::vector<Transition>> FileStoreHistory::Query(absl::string_view user_id,
                                                                int64_t from_ms, int64_t to_ms) {
  return impl_->Query(user_id, from_ms, to_ms);
}
absl::StatusOr<std::optional<Transition>> FileStoreHistory::LastBefore(absl::string_view user_id,
                                                                       int64_t before_ms) {
  return impl_->LastBefore(user_id, before_ms);
}
absl::Status FileStoreHistory::AppendDevices(absl::Span<const DeviceTransition> transitions) {
  return impl_->AppendHistory(transitions);
}
absl::StatusOr<std::vector<DeviceTransition>> FileStoreHistory::QueryDevice(
    absl::string_view user_id, absl::string_view device_id, int64_t from_ms, int64_t to_ms) {
  return impl_->QueryDevice(user_id, device_id, from_ms, to_ms);
}
absl::Status FileStoreHistory::Erase(absl::string_view user_id) {
  return impl_->EraseHistory(user_id);
}
absl::Status FileStoreHistory::DropBefore(int64_t before_ms) {
  return impl_->DropHistoryBefore(before_ms);
}

// ---- Writing ---------------------------------------------------------------------

absl::Status FileStoreImpl::WriteBatch(const StoreBatch& batch) {
  if (batch.empty()) return absl::OkStatus();
  pb::LogRecord r;
  pb::StoreBatchRecord* b = r.mutable_store_batch();
  for (const auto& e : batch.erasures) {
    pb::Erasure* pe = b->add_erasures();
    pe->set_user_id(e.user_id);
    pe->set_floor(e.floor);
  }
  for (const UserRecord& u : batch.users) ToProto(u, b->add_users());
  for (const DeviceRecord& d : batch.devices) ToProto(d, b->add_devices());
  for (const CommittedOffset& o : batch.offsets) {
    pb::Offset* po = b->add_offsets();
    po->set_partition(o.partition);
    po->set_offset(o.offset);
  }
  Writer w;
  r.SerializeToString(&w.payload);
  w.apply = [this, &batch]() ABSL_NO_THREAD_SAFETY_ANALYSIS { records_.Apply(batch); };
  return Commit(&w);
}

// The two kinds of history entry: where a log record holds each, and how
// the in-memory log keeps it.
pb::StoredTransition* AddTo(pb::HistoryAppendRecord* a, const Transition&) {
  return a->add_transitions();
}
pb::StoredDeviceTransition* AddTo(pb::HistoryAppendRecord* a, const DeviceTransition&) {
  return a->add_device_transitions();
}
void Keep(TransitionLog* log, const Transition& t) { log->Append(t); }
void Keep(TransitionLog* log, const DeviceTransition& t) { log->AppendDevice(t); }

template <typename Entry>
absl::Status FileStoreImpl::AppendHistory(absl::Span<const Entry> entries) {
  if (entries.empty()) return absl::OkStatus();
  pb::LogRecord r;
  pb::HistoryAppendRecord* a = r.mutable_history_append();
  for (const Entry& t : entries) ToProto(t, AddTo(a, t));
  Writer w;
  r.SerializeToString(&w.payload);
  w.apply = [this, entries]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (const Entry& t : entries) Keep(&history_, t);
  };
  return Commit(&w);
}

absl::Status FileStoreImpl::EraseHistory(absl::string_view user_id) {
  pb::LogRecord r;
  r.mutable_history_erase()->set_user_id(std::string(user_id));
  Writer w;
  r.SerializeToString(&w.payload);
  w.apply = [this, user_id]() ABSL_NO_THREAD_SAFETY_ANALYSIS { history_.Erase(user_id); };
  return Commit(&w);
}

absl::Status FileStoreImpl::DropHistoryBefore(int64_t before_ms) {
  pb::LogRecord r;
  r.mutable_history_retention()->set_before_ms(before_ms);
  Writer w;
  r.SerializeToString(&w.payload);
  w.apply = [this, before_ms]() ABSL_NO_THREAD_SAFETY_ANALYSIS { history_.DropBefore(before_ms); };
  return Commit(&w);
}

absl::Status FileStoreImpl::Commit(Writer* w) {
  absl::MutexLock l(&mu_);
  writers_.push_back(w);
  while (!w->done && w != writers_.front()) w->cv.Wait(&mu_);
  if (w->done) return w->status;

  // This thread leads: it logs its record and those queued behind it, up to
  // a snapshot cut (which leads itself).
  std::vector<Writer*> group;
  size_t bytes = 0;
  for (Writer* x : writers_) {
    if (x->cut) break;
    if (!group.empty() && bytes + x->payload.size() > kMaxGroupBytes) break;
    group.push_back(x);
    bytes += x->payload.size();
  }
  const uint64_t first = next_sequence_;
  bool compact = false;
  absl::Status s;
  mu_.Unlock();
  {
    std::string frames;
    frames.reserve(bytes + group.size() * kFrameHeaderBytes);
    for (size_t i = 0; i < group.size(); ++i) {
      AppendFrame(FileKind::kSegment, first + i, group[i]->payload, &frames);
    }
    s = AppendToLog(frames, &compact);
  }
  mu_.Lock();
  if (s.ok()) {
    next_sequence_ = first + group.size();
    for (Writer* x : group) x->apply();
    records_written_ += group.size();
    ++group_commits_;
  } else {
    write_errors_ += group.size();
  }
  for (Writer* x : group) {
    writers_.pop_front();
    if (x != w) {
      x->status = s;
      x->done = true;
      x->cv.Signal();
    }
  }
  if (!writers_.empty()) writers_.front()->cv.Signal();
  if (compact) RequestCompaction();
  return s;
}

absl::Status FileStoreImpl::AppendToLog(const std::string& frames, bool* compact) {
  absl::MutexLock g(&log_mu_);
  absl::Status s;
  if (tail_dirty_ && segment_ != nullptr) {
    // A failed append left part of a frame behind: cut it off first, or
    // recovery would stop there and never reach what follows.
    s = segment_->Truncate(good_size_);
    if (!s.ok()) return s;
    tail_dirty_ = false;
  }
  if (segment_ == nullptr || (good_size_ > 0 && good_size_ + frames.size() > options_.segment_bytes)) {
    s = StartSegmentLocked();
    if (!s.ok()) return s;
  }
  s = segment_->Append(frames);
  if (segment_->size() != good_size_) unsynced_ = true;
  if (s.ok() && options_.sync == SyncPolicy::kEveryWrite) {
    s = SyncLocked();
    if (!s.ok()) ++sync_errors_;
  }
  if (!s.ok()) {
    if (segment_->size() != good_size_ && !segment_->Truncate(good_size_).ok()) tail_dirty_ = true;
    return s;
  }
  good_size_ += frames.size();
  bytes_since_snapshot_ += frames.size();
  bytes_written_ += frames.size();
  *compact = options_.compact_after_bytes > 0 && bytes_since_snapshot_ >= options_.compact_after_bytes;
  return absl::OkStatus();
}

absl::Status FileStoreImpl::SyncLocked() {
  if (segment_ != nullptr && unsynced_) {
    absl::Status s = segment_->Sync();
    if (!s.ok()) return s;
    ++syncs_;
    unsynced_ = false;
  }
  if (dir_unsynced_) {
    absl::Status s = fs_->SyncDir(dir_);
    if (!s.ok()) return s;
    dir_unsynced_ = false;
  }
  return absl::OkStatus();
}

// Closes the open segment (synced, unless kNever) and starts the next one.
absl::Status FileStoreImpl::StartSegmentLocked() {
  if (segment_ != nullptr) {
    // Never close a segment with part of a frame at its end: recovery would
    // stop there and set every later segment aside.
    if (tail_dirty_) {
      absl::Status s = segment_->Truncate(good_size_);
      if (!s.ok()) return s;
      tail_dirty_ = false;
    }
    if (options_.sync != SyncPolicy::kNever) {
      absl::Status s = SyncLocked();
      if (!s.ok()) return s;
    }
    absl::Status s = segment_->Close();
    segment_.reset();
    if (!s.ok()) return s;
  }
  const uint64_t number = last_number_ + 1;
  auto f = fs_->NewWritableFile(PathOf(SegmentFileName(number)));
  if (!f.ok()) return f.status();
  last_number_ = number;
  segment_ = std::move(*f);
  segment_number_ = number;
  good_size_ = 0;
  unsynced_ = false;
  tail_dirty_ = false;
  segments_.push_back(number);
  dir_unsynced_ = true;
  if (options_.sync != SyncPolicy::kNever) return SyncLocked();
  return absl::OkStatus();
}

// ---- Snapshots and compaction --------------------------------------------------------

absl::Status FileStoreImpl::Compact() {
  absl::MutexLock c(&compact_mu_);
  std::string image;
  uint64_t number = 0, covered = 0;
  {
    Writer cut;
    cut.cut = true;
    absl::MutexLock l(&mu_);
    writers_.push_back(&cut);
    while (&cut != writers_.front()) cut.cv.Wait(&mu_);
    absl::Status s;
    bool unchanged = false;
    {
      absl::MutexLock g(&log_mu_);
      unchanged = bytes_since_snapshot_ == 0 && !snapshots_.empty() && good_size_ == 0 &&
                  snapshots_.back() == segment_number_;
      if (!unchanged && (segment_ == nullptr || good_size_ > 0)) s = StartSegmentLocked();
      number = segment_number_;
      covered = bytes_since_snapshot_;
    }
    if (s.ok() && !unchanged) {
      SnapshotWriter sw(&image);
      sw.Header(next_sequence_, number);
      for (const auto& [user, floor] : records_.floors()) sw.Floor(user, floor);
      records_.Visit(&sw);
      history_.ForEach([&](const Transition& t) { sw.OnTransition(t); });
      history_.ForEachDevice([&](const DeviceTransition& t) { sw.OnDeviceTransition(t); });
      sw.Trailer();
    }
    writers_.pop_front();
    if (!writers_.empty()) writers_.front()->cv.Signal();
    if (!s.ok()) {
      ++snapshot_errors_;
      return s;
    }
    if (unchanged) return absl::OkStatus();
  }

  // Write it beside its final name, sync, and rename it into place.
  const std::string final_path = PathOf(SnapshotFileName(number));
  const std::string tmp_path = absl::StrCat(final_path, kTempSuffix);
  absl::Status s;
  {
    auto f = fs_->NewWritableFile(tmp_path);
    s = f.status();
    if (s.ok()) s = (*f)->Append(image);
    if (s.ok()) s = (*f)->Sync();
    if (f.ok()) {
      absl::Status closed = (*f)->Close();
      if (s.ok()) s = closed;
    }
  }
  if (s.ok()) s = fs_->Rename(tmp_path, final_path);
  if (s.ok()) s = fs_->SyncDir(dir_);
  if (!s.ok()) {
    fs_->Remove(tmp_path).IgnoreError();
    ++snapshot_errors_;
    return s;
  }
  ++snapshots_written_;

  // Keep the two newest snapshots and the segments the older one needs.
  std::vector<std::string> doomed;
  {
    absl::MutexLock g(&log_mu_);
    bytes_since_snapshot_ -= std::min(bytes_since_snapshot_, covered);
    if (snapshots_.empty() || snapshots_.back() != number) snapshots_.push_back(number);
    std::sort(snapshots_.begin(), snapshots_.end());
    while (snapshots_.size() > 2) {
      doomed.push_back(PathOf(SnapshotFileName(snapshots_.front())));
      snapshots_.erase(snapshots_.begin());
    }
    if (snapshots_.size() == 2) {
      const uint64_t keep_from = snapshots_.front();
      auto end = std::lower_bound(segments_.begin(), segments_.end(), keep_from);
      for (auto it = segments_.begin(); it != end; ++it) {
        doomed.push_back(PathOf(SegmentFileName(*it)));
      }
      segments_.erase(segments_.begin(), end);
    }
  }
  for (const std::string& path : doomed) {
    if (fs_->Remove(path).ok()) ++files_removed_;
  }
  if (!doomed.empty()) fs_->SyncDir(dir_).IgnoreError();
  return absl::OkStatus();
}

void FileStoreImpl::RequestCompaction() {
  absl::MutexLock l(&bg_mu_);
  compaction_wanted_ = true;
}

void FileStoreImpl::StartThreads() {
  if (options_.sync == SyncPolicy::kInterval) threads_.emplace_back([this] { SyncLoop(); });
  if (options_.compact_after_bytes > 0) threads_.emplace_back([this] { CompactLoop(); });
}

void FileStoreImpl::SyncLoop() {
  const absl::Duration interval = absl::Milliseconds(options_.sync_interval_ms);
  for (;;) {
    {
      absl::MutexLock l(&bg_mu_);
      // Wakes early only to stop.
      bg_mu_.AwaitWithTimeout(absl::Condition(&stop_), interval);
      if (stop_) return;
    }
    absl::MutexLock g(&log_mu_);
    if (!SyncLocked().ok()) ++sync_errors_;  // tried again at the next tick
  }
}

void FileStoreImpl::CompactLoop() {
  for (;;) {
    {
      absl::MutexLock l(&bg_mu_);
      bg_mu_.Await(absl::Condition(this, &FileStoreImpl::CompactionReady));
      if (stop_) return;
      compaction_wanted_ = false;
    }
    if (!Compact().ok()) {
      // A full disk, say: try again after a pause, not in a tight loop.
      absl::MutexLock l(&bg_mu_);
      bg_mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Seconds(1));
      if (stop_) return;
      compaction_wanted_ = true;
    }
  }
}

// ---- Recovery ----------------------------------------------------------------------

absl::Status FileStoreImpl::Recover() {
  const auto started = std::chrono::steady_clock::now();
  auto lock = fs_->Lock(PathOf(std::string(kLockFileName)));
  if (!lock.ok()) return lock.status();
  lock_ = std::move(*lock);

  auto names = fs_->ListDir(dir_);
  if (!names.ok()) return names.status();
  std::map<uint64_t, std::string> segments, snapshots;
  std::vector<std::string> temps;
  uint64_t last_number = 0;
  for (const std::string& name : *names) {
    if (auto n = ParseSegmentFileName(name)) {
      segments[*n] = name;
      last_number = std::max(last_number, *n);
    } else if (auto m = ParseSnapshotFileName(name)) {
      snapshots[*m] = name;
    } else if (absl::EndsWith(name, kTempSuffix)) {
      temps.push_back(name);
    } else if (absl::EndsWith(name, kDroppedSuffix)) {
      absl::string_view base(name);
      base.remove_suffix(kDroppedSuffix.size());
      if (auto d = ParseSegmentFileName(base)) last_number = std::max(last_number, *d);
    }
  }
  RecoveryStats stats;

  // 1. The newest snapshot that reads back whole.
  std::unique_ptr<LoadedSnapshot> loaded;
  std::vector<uint64_t> rejected;
  for (auto it = snapshots.rbegin(); it != snapshots.rend(); ++it) {
    auto snap = std::make_unique<LoadedSnapshot>();
    absl::Status s = LoadSnapshot(fs_, PathOf(it->second), it->first, snap.get());
    if (s.ok()) {
      loaded = std::move(snap);
      stats.snapshot = it->second;
      stats.snapshot_records = loaded->entries;
      break;
    }
    if (absl::IsFailedPrecondition(s)) return s;
    ++stats.snapshots_rejected;
    rejected.push_back(it->first);
    stats.problems.push_back(absl::StrCat(it->second, " is damaged (", s.message(),
                                          "); set aside as ", it->second, kDroppedSuffix,
                                          ", falling back to an older snapshot or the log"));
  }
  if (loaded == nullptr) loaded = std::make_unique<LoadedSnapshot>();
  const uint64_t first_segment = stats.snapshot.empty() ? 0 : loaded->first_segment;
  uint64_t expected = stats.snapshot.empty() ? 0 : loaded->next_sequence;  // 0: not known yet

  // 2. Replay the segments after it, up to the first frame not to be trusted.
  struct Cut {
    uint64_t segment = 0;
    uint64_t keep = 0;
  };
  std::optional<Cut> cut;
  std::vector<uint64_t> dropped;
  std::vector<uint64_t> kept;  // live segments after recovery
  uint64_t log_bytes = 0;
  bool last_is_empty = false;  // the last segment replayed holds nothing
  pb::LogRecord record;
  std::string data;
  for (const auto& [number, name] : segments) {
    if (number < first_segment) {
      kept.push_back(number);  // before the snapshot; kept for an older one
      continue;
    }
    absl::Status s = fs_->ReadFile(PathOf(name), &data);
    if (!s.ok()) return s;
    FrameReader reader(data, FileKind::kSegment);
    if (cut.has_value()) {
      // Set aside below; but never data of a newer format.
      absl::string_view payload;
      uint64_t seq;
      FrameReader::Result res;
      while ((res = reader.Next(&payload, &seq)) == FrameReader::Result::kFrame) {
      }
      if (res == FrameReader::Result::kNewer) {
        return absl::FailedPreconditionError(absl::StrCat(
            PathOf(name), " holds a record of format version ", reader.version(),
            "; this build reads up to ", kFormatVersion, ": open the folder with a newer build"));
      }
      dropped.push_back(number);
      stats.bytes_dropped += data.size();
      continue;
    }
    ++stats.segments_replayed;
    kept.push_back(number);
    last_is_empty = data.empty();
    std::string problem;
    bool torn = false;
    size_t good = 0;  // bytes of whole, applied frames
    for (;;) {
      absl::string_view payload;
      uint64_t seq = 0;
      const FrameReader::Result res = reader.Next(&payload, &seq);
      if (res == FrameReader::Result::kEnd) break;
      if (res == FrameReader::Result::kNewer) {
        return absl::FailedPreconditionError(absl::StrCat(
            PathOf(name), " holds a record of format version ", reader.version(),
            " at offset ", good, "; this build reads up to ", kFormatVersion,
            ": open the folder with a newer build"));
      }
      if (res == FrameReader::Result::kTorn || res == FrameReader::Result::kCorrupt) {
        problem = reader.problem();
        torn = res == FrameReader::Result::kTorn;
        break;
      }
      // A good checksum, but not the record expected: from here on the log
      // cannot be trusted either.
      if (expected != 0 && seq != expected) {
        problem = absl::StrCat("sequence ", seq, " at offset ", good, " where ", expected,
                               " was expected");
        break;
      }
      if (!record.ParseFromArray(payload.data(), static_cast<int>(payload.size())) ||
          record.kind_case() == pb::LogRecord::KIND_NOT_SET) {
        problem = absl::StrCat("the record at offset ", good, " (sequence ", seq,
                               ") does not parse");
        break;
      }
      if (expected == 0 && seq != 1) {
        stats.problems.push_back(absl::StrCat(
            "the log starts at sequence ", seq,
            " and no readable snapshot holds what came before: that part of the state is lost"));
      }
      stats.log_entries += ApplyLogRecord(record, &loaded->records, &loaded->history);
      ++stats.log_records;
      expected = seq + 1;
      good = reader.good_bytes();
    }
    log_bytes += good;
    if (!problem.empty()) {
      const uint64_t lost = data.size() - good;
      (torn ? stats.torn_records : stats.corrupt_records) += 1;
      stats.bytes_dropped += lost;
      stats.problems.push_back(absl::StrCat(name, ": ", problem, "; kept the first ", good,
                                            " bytes, dropped ", lost,
                                            " bytes and every later segment"));
      cut = Cut{number, good};
    }
  }
  stats.segments_dropped = dropped.size();
  if (!dropped.empty()) {
    stats.problems.push_back(absl::StrCat(dropped.size(), " later segment(s) set aside as *",
                                          kDroppedSuffix, " and not replayed"));
  }

  // 3. Now change the folder: nothing above did.
  for (const std::string& t : temps) fs_->Remove(PathOf(t)).IgnoreError();
  for (uint64_t n : rejected) {
    absl::Status s = fs_->Rename(PathOf(SnapshotFileName(n)),
                                 absl::StrCat(PathOf(SnapshotFileName(n)), kDroppedSuffix));
    if (!s.ok()) return s;
  }
  if (cut.has_value()) {
    absl::Status s = fs_->Truncate(PathOf(SegmentFileName(cut->segment)), cut->keep);
    if (!s.ok()) return s;
  }
  for (uint64_t n : dropped) {
    absl::Status s = fs_->Rename(PathOf(SegmentFileName(n)),
                                 absl::StrCat(PathOf(SegmentFileName(n)), kDroppedSuffix));
    if (!s.ok()) return s;
  }

  {
    absl::MutexLock l(&mu_);
    records_ = std::move(loaded->records);
    history_ = std::move(loaded->history);
    next_sequence_ = expected == 0 ? 1 : expected;
  }
  // An empty last segment (an Open that wrote nothing) is written from
  // here on rather than left behind: restarts do not pile up empty files.
  if (last_is_empty && !cut.has_value() && !kept.empty() && kept.back() == last_number) {
    kept.pop_back();
    --last_number;
  }
  {
    absl::MutexLock g(&log_mu_);
    segments_ = kept;
    for (const auto& [n, name] : snapshots) {
      if (std::find(rejected.begin(), rejected.end(), n) == rejected.end()) snapshots_.push_back(n);
    }
    last_number_ = last_number;
    bytes_since_snapshot_ = log_bytes;
    // Appends go to a new segment: the old ones are never written again.
    dir_unsynced_ = true;
    absl::Status s = StartSegmentLocked();
    if (s.ok() && options_.sync == SyncPolicy::kNever) s = SyncLocked();
    if (!s.ok()) return s;
  }
  stats.records_recovered = stats.snapshot_records + stats.log_entries;
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  recovery_ = std::move(stats);
  return absl::OkStatus();
}

// ---- Metrics -------------------------------------------------------------------------

std::string FileStoreImpl::RenderMetrics() const {
  size_t users = 0, devices = 0, transitions = 0;
  uint64_t audit_dropped = 0;
  {
    absl::ReaderMutexLock l(&mu_);
    users = records_.users();
    devices = records_.devices();
    transitions = history_.size() + history_.device_size();
    audit_dropped = history_.device_entries_dropped();
  }
  size_t segments = 0, snapshots = 0;
  uint64_t since = 0;
  {
    absl::MutexLock g(&log_mu_);
    segments = segments_.size();
    snapshots = snapshots_.size();
    since = bytes_since_snapshot_;
  }
  std::string out;
  auto counter = [&](absl::string_view name, absl::string_view help, double v) {
    Metric(&out, name, "counter", help, v);
  };
  auto gauge = [&](absl::string_view name, absl::string_view help, double v) {
    Metric(&out, name, "gauge", help, v);
  };
  counter("presence_file_store_records_written_total", "Log records appended (one per call).",
          records_written_.load());
  counter("presence_file_store_bytes_written_total", "Log bytes appended, frames included.",
          bytes_written_.load());
  counter("presence_file_store_group_commits_total",
          "Appends to the log; each carries one or more records.", group_commits_.load());
  counter("presence_file_store_write_errors_total",
          "Records whose write failed (returned an error; nothing applied).",
          write_errors_.load());
  counter("presence_file_store_syncs_total", "fdatasync calls on the log that succeeded.",
          syncs_.load());
  counter("presence_file_store_sync_errors_total", "fdatasync calls on the log that failed.",
          sync_errors_.load());
  counter("presence_file_store_snapshots_total", "Snapshots written.", snapshots_written_.load());
  counter("presence_file_store_snapshot_errors_total", "Snapshots that failed (nothing removed).",
          snapshot_errors_.load());
  counter("presence_file_store_files_removed_total", "Segments and snapshots removed by compaction.",
          files_removed_.load());
  gauge("presence_file_store_segments", "Segment files in the folder.", segments);
  gauge("presence_file_store_snapshot_files", "Snapshot files in the folder.", snapshots);
  gauge("presence_file_store_log_bytes_since_snapshot", "Log bytes not yet in a snapshot.", since);
  gauge("presence_file_store_users", "User records held.", users);
  gauge("presence_file_store_devices", "Device records held.", devices);
  gauge("presence_file_store_transitions", "History transitions held (users' and devices').", transitions);
  counter("presence_file_store_device_transitions_dropped_total",
          "A user's oldest device transitions dropped past the most kept per user "
          "(since open, the replay at open included).",
          audit_dropped);
  gauge("presence_file_store_recovery_records",
        "Records recovered at open (snapshot entries plus log entries).",
        recovery_.records_recovered);
  gauge("presence_file_store_recovery_bytes_dropped",
        "Log bytes dropped at open after the good prefix.", recovery_.bytes_dropped);
  gauge("presence_file_store_recovery_torn_records",
        "Frames cut short at the end of the log found at open.", recovery_.torn_records);
  gauge("presence_file_store_recovery_corrupt_records",
        "Frames with a bad checksum, payload or sequence found at open.",
        recovery_.corrupt_records);
  gauge("presence_file_store_recovery_segments_dropped",
        "Segments set aside at open because an earlier one was damaged.",
        recovery_.segments_dropped);
  gauge("presence_file_store_recovery_snapshots_rejected",
        "Damaged snapshots skipped at open.", recovery_.snapshots_rejected);
  gauge("presence_file_store_recovery_seconds", "How long open took.", recovery_.seconds);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileStore>> OpenFileStore(const std::string& dir,
                                                         const FileStoreOptions& options,
                                                         FileSystem* fs) {
  if (dir.empty()) return absl::InvalidArgumentError("FileStore: the folder name is empty");
  if (options.sync != SyncPolicy::kEveryWrite && options.sync != SyncPolicy::kInterval &&
      options.sync != SyncPolicy::kNever) {
    return absl::InvalidArgumentError("FileStoreOptions::sync is not a SyncPolicy");
  }
  if (options.sync == SyncPolicy::kInterval && options.sync_interval_ms <= 0) {
    return absl::InvalidArgumentError("FileStoreOptions::sync_interval_ms must be > 0");
  }
  if (options.segment_bytes == 0) {
    return absl::InvalidArgumentError("FileStoreOptions::segment_bytes must be > 0");
  }
  if (options.create_if_missing) {
    absl::Status s = fs->CreateDir(dir);
    if (!s.ok()) return s;
  } else {
    auto listed = fs->ListDir(dir);
    if (!listed.ok()) return listed.status();
  }
  auto impl = std::make_unique<FileStoreImpl>(dir, options, fs);
  absl::Status s = impl->Recover();
  if (!s.ok()) return s;
  impl->StartThreads();
  return std::unique_ptr<FileStore>(std::move(impl));
}

}  // namespace internal

absl::StatusOr<std::unique_ptr<FileStore>> FileStore::Open(const std::string& dir,
                                                           const FileStoreOptions& options) {
  return internal::OpenFileStore(dir, options, internal::PosixFileSystem());
}

}  // namespace presence
