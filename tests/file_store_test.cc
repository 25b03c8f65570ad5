// The file store (presence/file_store.h): the Store and HistoryStore
// conformance suites over a real folder, reopened between steps; then damaged
// files, a newer format, a full disk, failing syncs and simulated power
// losses, each answered with a clear error or report and nothing good lost.
#include "presence/file_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/store/file_store_internal.h"
#include "src/store/file_system.h"
#include "src/store/log_format.h"
#include "tests/conformance/store_conformance.h"
#include "tests/file_store_test.h"

namespace presence::conformance {
namespace {

using testing_fs::FilesIn;
using testing_fs::FrameOffsets;
using testing_fs::ReadAll;
using testing_fs::TempDir;
using testing_fs::WriteAll;

// ---- Conformance ------------------------------------------------------------------

// Every write synced; one segment, no compaction in the way.
struct EveryWriteOptions {
  static FileStoreOptions Get() { return FileStoreOptions{}; }
};
// Tiny segments and a snapshot every few records, so that the suites also
// run across segment rolls, snapshots and compaction.
struct CompactingOptions {
  static FileStoreOptions Get() {
    FileStoreOptions o;
    o.sync = SyncPolicy::kInterval;
    o.sync_interval_ms = 5;
    o.segment_bytes = 300;
    o.compact_after_bytes = 600;
    return o;
  }
};

template <typename Opts>
struct FileStoreFactory {
  static constexpr bool kDurable = true;
  std::unique_ptr<Store> Open() {
    auto fs = FileStore::Open(dir->path(), Opts::Get());
    EXPECT_TRUE(fs.ok()) << fs.status();
    if (!fs.ok()) return nullptr;
    return std::make_unique<testing_fs::OwningStore>(std::move(*fs));
  }
  std::shared_ptr<TempDir> dir = std::make_shared<TempDir>();
};

template <typename Opts>
struct FileHistoryFactory {
  static constexpr bool kDurable = true;
  std::unique_ptr<HistoryStore> Open() {
    auto fs = FileStore::Open(dir->path(), Opts::Get());
    EXPECT_TRUE(fs.ok()) << fs.status();
    if (!fs.ok()) return nullptr;
    return std::make_unique<testing_fs::OwningHistory>(std::move(*fs));
  }
  std::shared_ptr<TempDir> dir = std::make_shared<TempDir>();
};

using StoreFactories =
    ::testing::Types<FileStoreFactory<EveryWriteOptions>, FileStoreFactory<CompactingOptions>>;
using HistoryFactories =
    ::testing::Types<FileHistoryFactory<EveryWriteOptions>, FileHistoryFactory<CompactingOptions>>;
INSTANTIATE_TYPED_TEST_SUITE_P(File, StoreConformance, StoreFactories);
INSTANTIATE_TYPED_TEST_SUITE_P(File, HistoryConformance, HistoryFactories);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(BusConformance);  // the file store has no bus

// ---- Helpers ----------------------------------------------------------------------

std::unique_ptr<FileStore> MustOpen(const std::string& dir, const FileStoreOptions& o = {}) {
  auto fs = FileStore::Open(dir, o);
  EXPECT_TRUE(fs.ok()) << fs.status();
  return fs.ok() ? std::move(*fs) : nullptr;
}

Loaded LoadAll(FileStore* fs) {
  Loaded l;
  EXPECT_TRUE(fs->store()->Load(&l).ok());
  return l;
}

StoreBatch OneUser(const std::string& id, uint64_t version) {
  StoreBatch b;
  b.users.push_back(User(id, version));
  return b;
}

// Writes users u0..u{n-1}, one batch each.
void WriteUsers(FileStore* fs, int n, int first = 0) {
  for (int i = first; i < first + n; ++i) {
    ASSERT_TRUE(fs->store()->Write(OneUser("u" + std::to_string(i), 10 + i)).ok());
  }
}

std::string OnlySegmentWithData(const std::string& dir) {
  std::string found;
  for (const std::string& name : FilesIn(dir, "segment-", ".log")) {
    if (std::filesystem::file_size(dir + "/" + name) > 0) {
      EXPECT_TRUE(found.empty()) << "more than one segment holds data";
      found = name;
    }
  }
  return dir + "/" + found;
}

// ---- Damaged files ------------------------------------------------------------------

TEST(FileStoreRecovery, FlippedBitsKeepTheGoodPrefixAndReportTheRest) {
  TempDir dir;
  {
    auto fs = MustOpen(dir.path());
    WriteUsers(fs.get(), 10);
  }
  const std::string seg = OnlySegmentWithData(dir.path());
  std::string data = ReadAll(seg);
  const std::vector<size_t> frames = FrameOffsets(data, internal::FileKind::kSegment);
  ASSERT_EQ(frames.size(), 11u);  // 10 frames, and the end
  data[frames[6] + 30] ^= 0x10;   // a bit in the 7th record's payload
  WriteAll(seg, data);

  {
    auto fs = MustOpen(dir.path());
    const RecoveryStats r = fs->recovery();
    EXPECT_EQ(r.corrupt_records, 1u);
    EXPECT_EQ(r.torn_records, 0u);
    EXPECT_EQ(r.log_records, 6u);
    EXPECT_EQ(r.bytes_dropped, data.size() - frames[6]);
    ASSERT_FALSE(r.problems.empty());
    EXPECT_TRUE(absl::StrContains(r.problems[0], "checksum mismatch")) << r.problems[0];
    const std::string metrics = fs->RenderMetrics();
    EXPECT_TRUE(absl::StrContains(metrics, "presence_file_store_recovery_corrupt_records 1\n"));
    EXPECT_TRUE(absl::StrContains(
        metrics, absl::StrCat("presence_file_store_recovery_bytes_dropped ", r.bytes_dropped)));
    Loaded l = LoadAll(fs.get());
    EXPECT_EQ(l.users.size(), 6u);
    for (int i = 0; i < 6; ++i) EXPECT_EQ(l.users.count("u" + std::to_string(i)), 1u) << i;
    // The bad tail is gone from the file, so what is written next is read back.
    EXPECT_EQ(std::filesystem::file_size(seg), frames[6]);
    WriteUsers(fs.get(), 1, 100);
  }
  auto fs = MustOpen(dir.path());
  EXPECT_EQ(fs->recovery().corrupt_records, 0u);
  EXPECT_EQ(fs->recovery().bytes_dropped, 0u);
  EXPECT_TRUE(fs->recovery().problems.empty());
  Loaded l = LoadAll(fs.get());
  EXPECT_EQ(l.users.size(), 7u);
  EXPECT_EQ(l.users.count("u100"), 1u);
}

TEST(FileStoreRecovery, ATornWriteAtTheTailIsCutAndLaterAppendsAreRead) {
  TempDir dir;
  {
    auto fs = MustOpen(dir.path());
    WriteUsers(fs.get(), 5);
  }
  const std::string seg = OnlySegmentWithData(dir.path());
  const std::string data = ReadAll(seg);
  const std::vector<size_t> frames = FrameOffsets(data, internal::FileKind::kSegment);
  ASSERT_EQ(frames.size(), 6u);
  // The last write got only partly onto the disk.
  WriteAll(seg, data.substr(0, frames[4] + 10));
  {
    auto fs = MustOpen(dir.path());
    EXPECT_EQ(fs->recovery().torn_records, 1u);
    EXPECT_EQ(fs->recovery().corrupt_records, 0u);
    EXPECT_EQ(fs->recovery().bytes_dropped, 10u);
    EXPECT_EQ(LoadAll(fs.get()).users.size(), 4u);
    WriteUsers(fs.get(), 3, 50);
  }
  auto fs = MustOpen(dir.path());
  EXPECT_EQ(fs->recovery().torn_records, 0u);
  EXPECT_EQ(LoadAll(fs.get()).users.size(), 7u);
}

TEST(FileStoreRecovery, ADuplicatedFrameIsCaughtBySequence) {
  TempDir dir;
  {
    auto fs = MustOpen(dir.path());
    ASSERT_TRUE(fs->history()->Append({At("alice", 1, 100, State::kOnline)}).ok());
    ASSERT_TRUE(fs->history()->Append({At("alice", 2, 200, State::kAway)}).ok());
    ASSERT_TRUE(fs->history()->Erase("alice").ok());
  }
  // The frame of version 2 appears twice (as a bad copy tool might leave it),
  // and the erasure after it.
  const std::string seg = OnlySegmentWithData(dir.path());
  const std::string data = ReadAll(seg);
  const std::vector<size_t> f = FrameOffsets(data, internal::FileKind::kSegment);
  ASSERT_EQ(f.size(), 4u);
  WriteAll(seg, data.substr(0, f[2]) + data.substr(f[1], f[2] - f[1]) + data.substr(f[2]));
  auto fs = MustOpen(dir.path());
  EXPECT_EQ(fs->recovery().corrupt_records, 1u);
  ASSERT_FALSE(fs->recovery().problems.empty());
  EXPECT_TRUE(absl::StrContains(fs->recovery().problems[0], "sequence 2"))
      << fs->recovery().problems[0];
  auto q = fs->history()->Query("alice", 0, 1000);
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->size(), 2u);  // the prefix: both appends, once each
}

TEST(FileStoreRecovery, ATruncatedSnapshotFallsBackToThePreviousOne) {
  TempDir dir;
  {
    auto fs = MustOpen(dir.path());
    WriteUsers(fs.get(), 5);
    ASSERT_TRUE(fs->Compact().ok());
    WriteUsers(fs.get(), 5, 5);
    ASSERT_TRUE(fs->Compact().ok());
    WriteUsers(fs.get(), 5, 10);
  }
  const auto snaps = FilesIn(dir.path(), "snapshot-", ".snap");
  ASSERT_EQ(snaps.size(), 2u);
  const std::string newest = dir.path() + "/" + snaps.back();
  const std::string data = ReadAll(newest);
  WriteAll(newest, data.substr(0, data.size() / 2));
  {
    auto fs = MustOpen(dir.path());
    const RecoveryStats r = fs->recovery();
    EXPECT_EQ(r.snapshots_rejected, 1u);
    EXPECT_EQ(r.snapshot, snaps.front());
    ASSERT_FALSE(r.problems.empty());
    EXPECT_TRUE(absl::StrContains(r.problems[0], snaps.back())) << r.problems[0];
    EXPECT_EQ(LoadAll(fs.get()).users.size(), 15u);
    EXPECT_TRUE(absl::StrContains(fs->RenderMetrics(),
                                  "presence_file_store_recovery_snapshots_rejected 1\n"));
  }
  // Set aside, not read again.
  EXPECT_TRUE(std::filesystem::exists(newest + ".dropped"));
  auto fs = MustOpen(dir.path());
  EXPECT_EQ(fs->recovery().snapshots_rejected, 0u);
  EXPECT_EQ(LoadAll(fs.get()).users.size(), 15u);
}

TEST(FileStoreRecovery, TheOnlySnapshotDamagedFallsBackToTheSegments) {
  TempDir dir;
  {
    auto fs = MustOpen(dir.path());
    WriteUsers(fs.get(), 5);
    ASSERT_TRUE(fs->Compact().ok());
    WriteUsers(fs.get(), 5, 5);
  }
  const auto snaps = FilesIn(dir.path(), "snapshot-", ".snap");
  ASSERT_EQ(snaps.size(), 1u);
  const std::string path = dir.path() + "/" + snaps[0];
  std::string data = ReadAll(path);
  data[data.size() - 3] ^= 1;  // in the trailer
  WriteAll(path, data);
  auto fs = MustOpen(dir.path());
  EXPECT_EQ(fs->recovery().snapshots_rejected, 1u);
  EXPECT_TRUE(fs->recovery().snapshot.empty());
  EXPECT_EQ(LoadAll(fs.get()).users.size(), 10u);
}

TEST(FileStoreRecovery, AnErasedUserNeverComesBackThroughCompaction) {
  TempDir dir;
  {
    auto fs = MustOpen(dir.path());
    StoreBatch b;
    b.users.push_back(User("alice", 10));
    b.devices.push_back(Device("alice", "web", 10));
    ASSERT_TRUE(fs->store()->Write(b).ok());
    StoreBatch e;
    e.erasures.push_back({"alice", 20});
    ASSERT_TRUE(fs->store()->Write(e).ok());
    ASSERT_TRUE(fs->Compact().ok());
    ASSERT_TRUE(fs->store()->Write(OneUser("bob", 1)).ok());
    ASSERT_TRUE(fs->Compact().ok());
    ASSERT_TRUE(fs->Compact().ok());  // the log with alice's records is gone now
    ASSERT_TRUE(fs->store()->Write(b).ok());  // a late replay of the old write
    EXPECT_EQ(LoadAll(fs.get()).users.count("alice"), 0u);
  }
  EXPECT_TRUE(FilesIn(dir.path(), "segment-000001", ".log").empty());
  auto fs = MustOpen(dir.path());
  Loaded l = LoadAll(fs.get());
  EXPECT_EQ(l.users.count("alice"), 0u);
  EXPECT_EQ(l.devices.size(), 0u);
  EXPECT_EQ(l.users.count("bob"), 1u);
}

// ---- A newer format ------------------------------------------------------------------

TEST(FileStoreRecovery, ARecordOfANewerFormatFailsOpenAndChangesNothing) {
  TempDir dir;
  {
    auto fs = MustOpen(dir.path());
    WriteUsers(fs.get(), 3);
  }
  const std::string seg = OnlySegmentWithData(dir.path());
  std::string data = ReadAll(seg);
  internal::AppendFrame(internal::FileKind::kSegment, 4, "from the future", &data,
                        internal::kFormatVersion + 1);
  WriteAll(seg, data);
  const auto before = FilesIn(dir.path(), "", "");
  auto fs = FileStore::Open(dir.path(), {});
  ASSERT_FALSE(fs.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(fs.status())) << fs.status();
  EXPECT_TRUE(absl::StrContains(fs.status().message(),
                                absl::StrCat("format version ", internal::kFormatVersion + 1)))
      << fs.status();
  EXPECT_EQ(ReadAll(seg), data);
  EXPECT_EQ(FilesIn(dir.path(), "", ""), before);
}

TEST(FileStoreRecovery, ASnapshotOfANewerFormatFailsOpen) {
  TempDir dir;
  {
    auto fs = MustOpen(dir.path());
    WriteUsers(fs.get(), 3);
    ASSERT_TRUE(fs->Compact().ok());
  }
  const auto snaps = FilesIn(dir.path(), "snapshot-", ".snap");
  ASSERT_EQ(snaps.size(), 1u);
  std::string future;
  internal::AppendFrame(internal::FileKind::kSnapshot, 0, "", &future, 7);
  WriteAll(dir.path() + "/" + snaps[0], future);
  auto fs = FileStore::Open(dir.path(), {});
  ASSERT_FALSE(fs.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(fs.status()));
  EXPECT_TRUE(absl::StrContains(fs.status().message(), "format version 7")) << fs.status();
}

// ---- Failing writes --------------------------------------------------------------------

TEST(FileStoreFaults, AFullDiskFailsTheWriteLosesNothingAndRecovers) {
  TempDir dir;
  internal::FaultInjectingFileSystem faulty(internal::PosixFileSystem());
  {
    auto opened = internal::OpenFileStore(dir.path(), {}, &faulty);
    ASSERT_TRUE(opened.ok()) << opened.status();
    FileStore* fs = opened->get();
    WriteUsers(fs, 3);
    faulty.SetWriteBudget(10);  // part of a frame fits, then ENOSPC
    absl::Status s = fs->store()->Write(OneUser("full", 1));
    EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
    EXPECT_TRUE(absl::IsResourceExhausted(fs->history()->Append({At("full", 1, 1, State::kOnline)})));
    EXPECT_EQ(LoadAll(fs).users.count("full"), 0u);  // not applied
    EXPECT_EQ(LoadAll(fs).users.size(), 3u);
    EXPECT_TRUE(absl::StrContains(fs->RenderMetrics(), "presence_file_store_write_errors_total 2\n"));
    // A snapshot cannot be written either; nothing is removed.
    EXPECT_FALSE(fs->Compact().ok());
    EXPECT_TRUE(FilesIn(dir.path(), "snapshot-", "").empty());
    // Space is back.
    faulty.SetWriteBudget(-1);
    ASSERT_TRUE(fs->store()->Write(OneUser("after", 1)).ok());
    ASSERT_TRUE(fs->Compact().ok());
    ASSERT_TRUE(fs->store()->Write(OneUser("later", 1)).ok());
  }
  auto fs = MustOpen(dir.path());
  EXPECT_EQ(fs->recovery().torn_records + fs->recovery().corrupt_records, 0u);
  Loaded l = LoadAll(fs.get());
  EXPECT_EQ(l.users.size(), 5u);
  EXPECT_EQ(l.users.count("full"), 0u);
  EXPECT_EQ(l.users.count("after"), 1u);
  EXPECT_EQ(l.users.count("later"), 1u);
}

TEST(FileStoreFaults, APartialFrameThatCannotBeCutOffBlocksWritesUntilItIs) {
  TempDir dir;
  internal::FaultInjectingFileSystem faulty(internal::PosixFileSystem());
  {
    auto opened = internal::OpenFileStore(dir.path(), {}, &faulty);
    ASSERT_TRUE(opened.ok()) << opened.status();
    FileStore* fs = opened->get();
    WriteUsers(fs, 2);
    faulty.SetWriteBudget(10);
    faulty.SetFailTruncates(true);
    EXPECT_TRUE(absl::IsResourceExhausted(fs->store()->Write(OneUser("torn", 1))));
    faulty.SetWriteBudget(-1);
    // The 10 bytes are still there: nothing may go after them, and the
    // segment may not be closed with them (recovery would stop there).
    EXPECT_FALSE(fs->store()->Write(OneUser("blocked", 1)).ok());
    EXPECT_FALSE(fs->Compact().ok());
    faulty.SetFailTruncates(false);
    ASSERT_TRUE(fs->store()->Write(OneUser("after", 1)).ok());
    ASSERT_TRUE(fs->Compact().ok());
    ASSERT_TRUE(fs->store()->Write(OneUser("later", 1)).ok());
  }
  auto fs = MustOpen(dir.path());
  EXPECT_EQ(fs->recovery().torn_records + fs->recovery().corrupt_records, 0u);
  Loaded l = LoadAll(fs.get());
  EXPECT_EQ(l.users.size(), 4u);
  EXPECT_EQ(l.users.count("after") + l.users.count("later"), 2u);
}

TEST(FileStoreFaults, AFailingSyncFailsTheWriteUnderEveryWrite) {
  TempDir dir;
  internal::FaultInjectingFileSystem faulty(internal::PosixFileSystem());
  {
    auto opened = internal::OpenFileStore(dir.path(), {}, &faulty);
    ASSERT_TRUE(opened.ok()) << opened.status();
    FileStore* fs = opened->get();
    WriteUsers(fs, 2);
    faulty.SetFailSyncs(true);
    EXPECT_FALSE(fs->store()->Write(OneUser("unsynced", 1)).ok());
    EXPECT_EQ(LoadAll(fs).users.count("unsynced"), 0u);
    faulty.SetFailSyncs(false);
    ASSERT_TRUE(fs->store()->Write(OneUser("synced", 1)).ok());
  }
  auto fs = MustOpen(dir.path());
  Loaded l = LoadAll(fs.get());
  EXPECT_EQ(l.users.size(), 3u);
  EXPECT_EQ(l.users.count("unsynced"), 0u);
}

TEST(FileStoreFaults, OneFolderOpensInOneStoreAtATime) {
  TempDir dir;
  auto first = MustOpen(dir.path());
  auto second = FileStore::Open(dir.path(), {});
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
  first.reset();
  EXPECT_TRUE(FileStore::Open(dir.path(), {}).ok());
}

// The data folder holds every user's true states (invisible ones' too): it
// and its files are the owner's alone, and nothing in it is followed as a
// link (a link planted there would make the store overwrite another file).
TEST(FileStoreFaults, TheFolderAndItsFilesAreTheOwnersAlone) {
  TempDir base;
  const std::string dir = base.path() + "/data";
  {
    auto fs = MustOpen(dir);
    StoreBatch b;
    b.users.push_back(UserRecord{"alice", 1});
    ASSERT_TRUE(fs->store()->Write(b).ok());
  }
  namespace sfs = std::filesystem;
  EXPECT_EQ(sfs::status(dir).permissions() & sfs::perms::all, sfs::perms::owner_all);
  size_t files = 0;
  for (const auto& e : sfs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    ++files;
    EXPECT_EQ(e.status().permissions() & sfs::perms::all,
              sfs::perms::owner_read | sfs::perms::owner_write)
        << e.path();
  }
  EXPECT_GE(files, 2u);  // the lock and a segment
}

TEST(FileStoreFaults, ALinkPlantedInTheFolderIsNeverFollowed) {
  TempDir base;
  const std::string dir = base.path() + "/data";
  const std::string victim = base.path() + "/victim";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  { std::ofstream(victim) << "keep me"; }
  std::filesystem::create_symlink(victim, dir + "/" + std::string(internal::kLockFileName));
  auto fs = FileStore::Open(dir, {});
  ASSERT_FALSE(fs.ok());
  EXPECT_THAT(std::string(fs.status().message()), ::testing::HasSubstr("LOCK"));
  std::string contents;
  std::getline(std::ifstream(victim), contents);
  EXPECT_EQ(contents, "keep me");
}

TEST(FileStoreFaults, AFolderOthersMayWriteOrOwnIsRefused) {
  TempDir base;
  const std::string dir = base.path() + "/data";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(dir.c_str(), 0777), 0);
  auto fs = FileStore::Open(dir, {});
  ASSERT_TRUE(absl::IsFailedPrecondition(fs.status())) << fs.status();
  EXPECT_THAT(std::string(fs.status().message()), ::testing::HasSubstr("writable by others"));
  ASSERT_EQ(::chmod(dir.c_str(), 0700), 0);
  EXPECT_TRUE(FileStore::Open(dir, {}).ok());
  if (::geteuid() == 0) {  // only root can give it away (CI runs as root)
    ASSERT_EQ(::chown(dir.c_str(), 65534, 65534), 0);
    fs = FileStore::Open(dir, {});
    ASSERT_TRUE(absl::IsFailedPrecondition(fs.status())) << fs.status();
    EXPECT_THAT(std::string(fs.status().message()), ::testing::HasSubstr("belongs to uid 65534"));
  }
}

TEST(FileStoreFaults, BadOptionsAreRejected) {
  TempDir dir;
  FileStoreOptions o;
  o.segment_bytes = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(FileStore::Open(dir.path(), o).status()));
  o = {};
  o.sync = SyncPolicy::kInterval;
  o.sync_interval_ms = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(FileStore::Open(dir.path(), o).status()));
  o = {};
  o.create_if_missing = false;
  EXPECT_TRUE(absl::IsNotFound(FileStore::Open(dir.path() + "/missing", o).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(FileStore::Open("", {}).status()));
}

// ---- Sync policies: what a power loss keeps ------------------------------------------------

// Writes through `faulty`, then "pulls the plug": the store's files keep only
// what was synced. Returns the users found after reopening.
class PowerLoss {
 public:
  explicit PowerLoss(const FileStoreOptions& o) : faulty_(internal::PosixFileSystem()) {
    auto opened = internal::OpenFileStore(dir_.path(), o, &faulty_);
    EXPECT_TRUE(opened.ok()) << opened.status();
    fs_ = std::move(*opened);
  }
  FileStore* fs() { return fs_.get(); }
  internal::FaultInjectingFileSystem& faulty() { return faulty_; }
  Loaded PullThePlugAndReopen() {
    faulty_.SetDead(true);
    fs_.reset();  // its final sync fails: the machine is off
    EXPECT_TRUE(faulty_.DropUnsyncedData().ok());
    auto fs = MustOpen(dir_.path());
    return fs ? LoadAll(fs.get()) : Loaded{};
  }

 private:
  TempDir dir_;
  internal::FaultInjectingFileSystem faulty_;
  std::unique_ptr<FileStore> fs_;
};

TEST(FileStoreSyncPolicy, EveryWriteKeepsEveryAcknowledgedWrite) {
  PowerLoss p(FileStoreOptions{});
  const uint64_t syncs = p.faulty().syncs();
  WriteUsers(p.fs(), 20);
  EXPECT_GE(p.faulty().syncs() - syncs, 20u);  // one fdatasync per write at least
  EXPECT_EQ(p.PullThePlugAndReopen().users.size(), 20u);
}

TEST(FileStoreSyncPolicy, NeverLosesWhatTheOsHadNotWritten) {
  FileStoreOptions o;
  o.sync = SyncPolicy::kNever;
  PowerLoss p(o);
  const uint64_t syncs = p.faulty().syncs();
  WriteUsers(p.fs(), 20);
  EXPECT_EQ(p.faulty().syncs(), syncs);  // the store never synced the log
  EXPECT_EQ(p.PullThePlugAndReopen().users.size(), 0u);
}

TEST(FileStoreSyncPolicy, NeverStillSyncsOnSyncAndClose) {
  FileStoreOptions o;
  o.sync = SyncPolicy::kNever;
  PowerLoss p(o);
  WriteUsers(p.fs(), 5);
  ASSERT_TRUE(p.fs()->Sync().ok());
  WriteUsers(p.fs(), 5, 5);  // after the Sync: lost
  EXPECT_EQ(p.PullThePlugAndReopen().users.size(), 5u);
}

TEST(FileStoreSyncPolicy, IntervalLosesAtMostTheLastInterval) {
  FileStoreOptions o;
  o.sync = SyncPolicy::kInterval;
  o.sync_interval_ms = 20;
  PowerLoss p(o);
  WriteUsers(p.fs(), 10);
  // Within a few intervals the syncer has run: these ten are durable.
  const uint64_t syncs = p.faulty().syncs();
  for (int i = 0; i < 1000 && p.faulty().syncs() == syncs; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  EXPECT_GT(p.faulty().syncs(), syncs);
  EXPECT_GE(p.PullThePlugAndReopen().users.size(), 10u);
}

TEST(FileStoreSyncPolicy, IntervalLosesWritesNotYetSynced) {
  FileStoreOptions o;
  o.sync = SyncPolicy::kInterval;
  o.sync_interval_ms = 3600 * 1000;  // never within this test
  PowerLoss p(o);
  WriteUsers(p.fs(), 10);
  // Acknowledged (written to the OS), but not yet synced: a power loss takes them.
  EXPECT_EQ(LoadAll(p.fs()).users.size(), 10u);
  EXPECT_EQ(p.PullThePlugAndReopen().users.size(), 0u);
}

TEST(FileStoreSyncPolicy, ConcurrentWritersAreAllDurable) {
  PowerLoss p(FileStoreOptions{});
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&p, t] {
      for (int i = 0; i < 25; ++i) {
        EXPECT_TRUE(
            p.fs()->store()->Write(OneUser(absl::StrCat("t", t, "-", i), 1)).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  const std::string m = p.fs()->RenderMetrics();
  EXPECT_TRUE(absl::StrContains(m, "presence_file_store_records_written_total 200\n")) << m;
  EXPECT_EQ(p.PullThePlugAndReopen().users.size(), 200u);
}

// ---- Compaction ----------------------------------------------------------------------------

TEST(FileStoreCompaction, KeepsTwoSnapshotsAndTheSegmentsTheOlderNeeds) {
  TempDir dir;
  FileStoreOptions o;
  o.segment_bytes = 200;
  {
    auto fs = MustOpen(dir.path(), o);
    for (int round = 0; round < 4; ++round) {
      WriteUsers(fs.get(), 10, round * 10);
      ASSERT_TRUE(fs->history()->Append({At("h", round + 1, round * 100, State::kOnline)}).ok());
      ASSERT_TRUE(fs->Compact().ok());
    }
    ASSERT_TRUE(fs->history()->DropBefore(150).ok());
  }
  const auto snaps = FilesIn(dir.path(), "snapshot-", ".snap");
  ASSERT_EQ(snaps.size(), 2u);
  const uint64_t older = *internal::ParseSnapshotFileName(snaps[0]);
  for (const std::string& seg : FilesIn(dir.path(), "segment-", ".log")) {
    EXPECT_GE(*internal::ParseSegmentFileName(seg), older) << seg;
  }
  auto fs = MustOpen(dir.path(), o);
  EXPECT_EQ(fs->recovery().snapshot, snaps[1]);
  EXPECT_EQ(LoadAll(fs.get()).users.size(), 40u);
  auto q = fs->history()->Query("h", 0, 1000);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->size(), 2u);  // 200 and 300; retention applied after the last snapshot
}

TEST(FileStoreCompaction, RestartsWithoutWritesDoNotPileUpSegments) {
  TempDir dir;
  {
    auto fs = MustOpen(dir.path());
    WriteUsers(fs.get(), 3);
  }
  for (int i = 0; i < 5; ++i) MustOpen(dir.path());
  EXPECT_EQ(FilesIn(dir.path(), "segment-", ".log").size(), 2u);  // the data, and one empty
  auto fs = MustOpen(dir.path());
  WriteUsers(fs.get(), 2, 3);
  fs.reset();
  fs = MustOpen(dir.path());
  EXPECT_EQ(LoadAll(fs.get()).users.size(), 5u);
}

TEST(FileStoreCompaction, StartsByItselfPastTheThreshold) {
  TempDir dir;
  FileStoreOptions o;
  o.segment_bytes = 4096;
  o.compact_after_bytes = 8192;
  auto fs = MustOpen(dir.path(), o);
  WriteUsers(fs.get(), 300);
  for (int i = 0; i < 500 && absl::StrContains(fs->RenderMetrics(),
                                               "presence_file_store_snapshots_total 0\n");
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(absl::StrContains(fs->RenderMetrics(), "presence_file_store_snapshots_total 0\n"));
  EXPECT_FALSE(FilesIn(dir.path(), "snapshot-", ".snap").empty());
}

}  // namespace
}  // namespace presence::conformance
