// presence::internal::FileSystem: the file operations the file store needs,
// behind one small interface (LevelDB's Env, cut down), so that tests can put
// a fault-injecting wrapper in between: a full disk, failing syncs, or a power
// loss that drops what was never synced.
//
// THREAD SAFETY: a FileSystem may be used from several threads at once. A
// WritableFile is used by one thread at a time (the file store serializes its
// appends).
//
// ERRORS: every failure is a Status naming the path and the system error.
// ENOSPC and EDQUOT map to ResourceExhausted, ENOENT to NotFound, EACCES,
// EPERM and EROFS to PermissionDenied, anything else to Internal.
#ifndef PRESENCE_SRC_STORE_FILE_SYSTEM_H_
#define PRESENCE_SRC_STORE_FILE_SYSTEM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace presence::internal {

// A file open for appending. Not thread-safe.
class WritableFile {
 public:
  virtual ~WritableFile();

  // Appends `data` at the end of the file. On success all of it was handed
  // to the OS (write(2)); it is durable only after Sync. On failure a prefix
  // of it may have been written: size() says how much the file holds.
  virtual absl::Status Append(absl::string_view data) = 0;
  // fdatasync(2): on success everything appended so far is on stable storage.
  virtual absl::Status Sync() = 0;
  // Cuts the file to `size` bytes (to undo a failed Append); the next Append
  // goes right after them.
  virtual absl::Status Truncate(uint64_t size) = 0;
  // Closes the file; does not sync. Further calls fail.
  virtual absl::Status Close() = 0;
  // Bytes in the file, as far as this handle knows.
  virtual uint64_t size() const = 0;
};

// An advisory lock on a file, held until destroyed.
class FileLock {
 public:
  virtual ~FileLock();
};

class FileSystem {
 public:
  virtual ~FileSystem();

  // Creates `path` empty (truncating what was there) and opens it.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) = 0;
  // Reads the whole file into *contents.
  virtual absl::Status ReadFile(const std::string& path, std::string* contents) = 0;
  // Names (not paths) of the entries of `dir`, without "." and "..".
  virtual absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  // Creates `dir` and missing parents; OK if it exists.
  virtual absl::Status CreateDir(const std::string& dir) = 0;
  // fsync(2) on the directory, so that creations, renames and removals in it
  // are durable.
  virtual absl::Status SyncDir(const std::string& dir) = 0;
  // rename(2): atomically replaces `to`.
  virtual absl::Status Rename(const std::string& from, const std::string& to) = 0;
  virtual absl::Status Remove(const std::string& path) = 0;
  // Cuts the file at `path` to `size` bytes and syncs it.
  virtual absl::Status Truncate(const std::string& path, uint64_t size) = 0;
  // Takes an exclusive lock on `path` (created if missing). Fails with
  // FailedPrecondition when another holder has it, in this process or another.
  virtual absl::StatusOr<std::unique_ptr<FileLock>> Lock(const std::string& path) = 0;
};

// The POSIX file system: one process-wide instance, never destroyed.
FileSystem* PosixFileSystem();

// A wrapper for tests: injects a full disk, failing syncs, and a power loss.
// Thread-safe.
class FaultInjectingFileSystem final : public FileSystem {
 public:
  explicit FaultInjectingFileSystem(FileSystem* base) : base_(base) {}

  // After `bytes` more bytes are appended (to any file), appends fail with
  // ResourceExhausted (ENOSPC), having written what fitted. -1: no limit.
  void SetWriteBudget(int64_t bytes);
  // While set, Sync and SyncDir fail with Internal (EIO).
  void SetFailSyncs(bool fail);
  // While set, Truncate (of an open file or by path) fails with Internal (EIO).
  void SetFailTruncates(bool fail);
  // While set, every change (append, sync, truncate, create, rename, remove)
  // fails and does nothing: the machine is "off". Reads still work.
  void SetDead(bool dead);
  // Cuts every file written through this wrapper back to what was last
  // synced, as a power loss would. Call it after SetDead(true) and after the
  // store using it is gone. Directory operations are taken as durable.
  absl::Status DropUnsyncedData();

  uint64_t bytes_appended() const;
  uint64_t syncs() const;

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  absl::Status ReadFile(const std::string& path, std::string* contents) override;
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override;
  absl::Status CreateDir(const std::string& dir) override;
  absl::Status SyncDir(const std::string& dir) override;
  absl::Status Rename(const std::string& from, const std::string& to) override;
  absl::Status Remove(const std::string& path) override;
  absl::Status Truncate(const std::string& path, uint64_t size) override;
  absl::StatusOr<std::unique_ptr<FileLock>> Lock(const std::string& path) override;

 private:
  class File;
  friend class File;
  // How much of a file written through the wrapper is synced.
  struct Tracked {
    uint64_t synced = 0;
  };

  absl::Status Dead() const;

  FileSystem* const base_;
  mutable absl::Mutex mu_;
  int64_t budget_ ABSL_GUARDED_BY(mu_) = -1;
  bool fail_syncs_ ABSL_GUARDED_BY(mu_) = false;
  bool fail_truncates_ ABSL_GUARDED_BY(mu_) = false;
  bool dead_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t appended_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t syncs_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, Tracked> tracked_ ABSL_GUARDED_BY(mu_);
};

// A Status for errno `err` while doing `what` (e.g. "write /dir/file").
absl::Status ErrnoStatus(absl::string_view what, int err);

}  // namespace presence::internal

#endif  // PRESENCE_SRC_STORE_FILE_SYSTEM_H_
