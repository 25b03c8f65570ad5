#include "src/store/file_system.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace presence::internal {

WritableFile::~WritableFile() = default;
FileLock::~FileLock() = default;
FileSystem::~FileSystem() = default;

absl::Status ErrnoStatus(absl::string_view what, int err) {
  const std::string msg = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

namespace {

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  absl::Status Append(absl::string_view data) override {
    if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, " is closed"));
    while (!data.empty()) {
      // pwrite at our own offset: after a Truncate the next byte goes right
      // after the kept ones, never past a hole.
      const ssize_t n = ::pwrite(fd_, data.data(), data.size(), static_cast<off_t>(size_));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(absl::StrCat("write ", path_), errno);
      }
      size_ += static_cast<uint64_t>(n);
      data.remove_prefix(static_cast<size_t>(n));
    }
    return absl::OkStatus();
  }

  absl::Status Sync() override {
    if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, " is closed"));
    if (::fdatasync(fd_) != 0) return ErrnoStatus(absl::StrCat("fdatasync ", path_), errno);
    return absl::OkStatus();
  }

  absl::Status Truncate(uint64_t size) override {
    if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, " is closed"));
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      return ErrnoStatus(absl::StrCat("ftruncate ", path_), errno);
    }
    size_ = size;
    return absl::OkStatus();
  }

  absl::Status Close() override {
    if (fd_ < 0) return absl::OkStatus();
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return ErrnoStatus(absl::StrCat("close ", path_), errno);
    return absl::OkStatus();
  }

  uint64_t size() const override { return size_; }

 private:
  const std::string path_;
  int fd_;
  uint64_t size_ = 0;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }

 private:
  int fd_;
};

// The data folder and its files are the owner's alone: the log holds every
// user's true states and devices, invisible ones' included. Files are opened
// without following links (O_NOFOLLOW), so a link planted in the folder is
// an error, never a way to overwrite or read another file.
constexpr mode_t kDirMode = 0700;
constexpr mode_t kFileMode = 0600;

class PosixFs final : public FileSystem {
 public:
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                          kFileMode);
    if (fd < 0) return ErrnoStatus(absl::StrCat("create ", path), errno);
    return std::make_unique<PosixWritableFile>(path, fd);
  }

  absl::Status ReadFile(const std::string& path, std::string* contents) override {
    contents->clear();
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return ErrnoStatus(absl::StrCat("open ", path), errno);
    struct stat st;
    if (::fstat(fd, &st) == 0 && st.st_size > 0) contents->reserve(static_cast<size_t>(st.st_size));
    char buf[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::close(fd);
        return ErrnoStatus(absl::StrCat("read ", path), err);
      }
      if (n == 0) break;
      contents->append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return ErrnoStatus(absl::StrCat("opendir ", dir), errno);
    std::vector<std::string> out;
    while (struct dirent* e = ::readdir(d)) {
      const absl::string_view name(e->d_name);
      if (name != "." && name != "..") out.emplace_back(name);
    }
    ::closedir(d);
    return out;
  }

  absl::Status CreateDir(const std::string& dir) override {
    if (dir.empty()) return absl::InvalidArgumentError("empty directory name");
    // mkdir -p: each prefix ending before a '/', then the whole, which only
    // its owner may enter: it holds what invisible users really did.
    for (size_t i = 1; i <= dir.size(); ++i) {
      if (i < dir.size() && dir[i] != '/') continue;
      const std::string prefix = dir.substr(0, i);
      if (::mkdir(prefix.c_str(), i == dir.size() ? kDirMode : 0755) != 0 && errno != EEXIST) {
        return ErrnoStatus(absl::StrCat("mkdir ", prefix), errno);
      }
    }
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", dir), errno);
    if (!S_ISDIR(st.st_mode)) return absl::FailedPreconditionError(dir + " is not a directory");
    // A folder someone else controls could hold links planted to make the
    // store overwrite other files, or be read by them.
    if (st.st_uid != ::geteuid()) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " belongs to uid ", st.st_uid, ", not to this process (uid ", ::geteuid(),
          "): a data folder must be the store's own"));
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s is writable by others (mode %o): a data folder must be writable by its owner "
          "only (chmod 700)",
          dir, st.st_mode & 07777));
    }
    return absl::OkStatus();
  }

  absl::Status SyncDir(const std::string& dir) override {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(absl::StrCat("open ", dir), errno);
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return ErrnoStatus(absl::StrCat("fsync ", dir), err);
    return absl::OkStatus();
  }

  absl::Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoStatus(absl::StrCat("rename ", from, " to ", to), errno);
    }
    return absl::OkStatus();
  }

  absl::Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return ErrnoStatus(absl::StrCat("unlink ", path), errno);
    return absl::OkStatus();
  }

  absl::Status Truncate(const std::string& path, uint64_t size) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return ErrnoStatus(absl::StrCat("open ", path), errno);
    absl::Status s;
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
      s = ErrnoStatus(absl::StrCat("ftruncate ", path), errno);
    } else if (::fdatasync(fd) != 0) {
      s = ErrnoStatus(absl::StrCat("fdatasync ", path), errno);
    }
    ::close(fd);
    return s;
  }

  absl::StatusOr<std::unique_ptr<FileLock>> Lock(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, kFileMode);
    if (fd < 0) return ErrnoStatus(absl::StrCat("open ", path), errno);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK) {
        return absl::FailedPreconditionError(
            absl::StrCat(path, " is locked: the folder is open in another FileStore"));
      }
      return ErrnoStatus(absl::StrCat("flock ", path), err);
    }
    return std::make_unique<PosixFileLock>(fd);
  }
};

}  // namespace

FileSystem* PosixFileSystem() {
  static FileSystem* fs = new PosixFs();
  return fs;
}

// ---- FaultInjectingFileSystem ----------------------------------------------

class FaultInjectingFileSystem::File final : public WritableFile {
 public:
  File(FaultInjectingFileSystem* fs, std::string path, std::unique_ptr<WritableFile> base)
      : fs_(fs), path_(std::move(path)), base_(std::move(base)) {}

  absl::Status Append(absl::string_view data) override {
    size_t allowed = data.size();
    {
      absl::MutexLock lock(&fs_->mu_);
      if (fs_->dead_) return fs_->Dead();
      if (fs_->budget_ >= 0 && static_cast<int64_t>(allowed) > fs_->budget_) {
        allowed = static_cast<size_t>(fs_->budget_);
      }
      if (fs_->budget_ >= 0) fs_->budget_ -= static_cast<int64_t>(allowed);
      fs_->appended_ += allowed;
    }
    if (allowed > 0) {
      absl::Status s = base_->Append(data.substr(0, allowed));
      if (!s.ok()) return s;
    }
    if (allowed < data.size()) return ErrnoStatus(absl::StrCat("write ", path_), ENOSPC);
    return absl::OkStatus();
  }

  absl::Status Sync() override {
    {
      absl::MutexLock lock(&fs_->mu_);
      if (fs_->dead_) return fs_->Dead();
      if (fs_->fail_syncs_) return ErrnoStatus(absl::StrCat("fdatasync ", path_), EIO);
      ++fs_->syncs_;
    }
    absl::Status s = base_->Sync();
    if (s.ok()) {
      absl::MutexLock lock(&fs_->mu_);
      auto it = fs_->tracked_.find(path_);
      if (it != fs_->tracked_.end()) it->second.synced = base_->size();
    }
    return s;
  }

  absl::Status Truncate(uint64_t size) override {
    {
      absl::MutexLock lock(&fs_->mu_);
      if (fs_->dead_) return fs_->Dead();
      if (fs_->fail_truncates_) return ErrnoStatus(absl::StrCat("ftruncate ", path_), EIO);
      auto it = fs_->tracked_.find(path_);
      if (it != fs_->tracked_.end() && it->second.synced > size) it->second.synced = size;
    }
    return base_->Truncate(size);
  }

  absl::Status Close() override { return base_->Close(); }
  uint64_t size() const override { return base_->size(); }

 private:
  FaultInjectingFileSystem* const fs_;
  const std::string path_;
  std::unique_ptr<WritableFile> base_;
};

absl::Status FaultInjectingFileSystem::Dead() const {
  return absl::InternalError("simulated power loss: the file system is gone");
}

void FaultInjectingFileSystem::SetWriteBudget(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  budget_ = bytes;
}

void FaultInjectingFileSystem::SetFailSyncs(bool fail) {
  absl::MutexLock lock(&mu_);
  fail_syncs_ = fail;
}

void FaultInjectingFileSystem::SetFailTruncates(bool fail) {
  absl::MutexLock lock(&mu_);
  fail_truncates_ = fail;
}

void FaultInjectingFileSystem::SetDead(bool dead) {
  absl::MutexLock lock(&mu_);
  dead_ = dead;
}

uint64_t FaultInjectingFileSystem::bytes_appended() const {
  absl::MutexLock lock(&mu_);
  return appended_;
}

uint64_t FaultInjectingFileSystem::syncs() const {
  absl::MutexLock lock(&mu_);
  return syncs_;
}

absl::Status FaultInjectingFileSystem::DropUnsyncedData() {
  absl::MutexLock lock(&mu_);
  for (const auto& [path, t] : tracked_) {
    absl::Status s = base_->Truncate(path, t.synced);
    if (!s.ok() && !absl::IsNotFound(s)) return s;
  }
  tracked_.clear();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectingFileSystem::NewWritableFile(
    const std::string& path) {
  {
    absl::MutexLock lock(&mu_);
    if (dead_) return Dead();
  }
  auto base = base_->NewWritableFile(path);
  if (!base.ok()) return base.status();
  absl::MutexLock lock(&mu_);
  tracked_[path] = Tracked{};
  return std::make_unique<File>(this, path, std::move(*base));
}

absl::Status FaultInjectingFileSystem::ReadFile(const std::string& path, std::string* contents) {
  return base_->ReadFile(path, contents);
}

absl::StatusOr<std::vector<std::string>> FaultInjectingFileSystem::ListDir(
    const std::string& dir) {
  return base_->ListDir(dir);
}

absl::Status FaultInjectingFileSystem::CreateDir(const std::string& dir) {
  {
    absl::MutexLock lock(&mu_);
    if (dead_) return Dead();
  }
  return base_->CreateDir(dir);
}

absl::Status FaultInjectingFileSystem::SyncDir(const std::string& dir) {
  {
    absl::MutexLock lock(&mu_);
    if (dead_) return Dead();
    if (fail_syncs_) return ErrnoStatus(absl::StrCat("fsync ", dir), EIO);
    ++syncs_;
  }
  return base_->SyncDir(dir);
}

absl::Status FaultInjectingFileSystem::Rename(const std::string& from, const std::string& to) {
  absl::MutexLock lock(&mu_);
  if (dead_) return Dead();
  absl::Status s = base_->Rename(from, to);
  if (s.ok()) {
    auto it = tracked_.find(from);
    if (it != tracked_.end()) {
      Tracked t = it->second;
      tracked_.erase(it);
      tracked_[to] = t;
    } else {
      tracked_.erase(to);
    }
  }
  return s;
}

absl::Status FaultInjectingFileSystem::Remove(const std::string& path) {
  absl::MutexLock lock(&mu_);
  if (dead_) return Dead();
  absl::Status s = base_->Remove(path);
  if (s.ok()) tracked_.erase(path);
  return s;
}

absl::Status FaultInjectingFileSystem::Truncate(const std::string& path, uint64_t size) {
  absl::MutexLock lock(&mu_);
  if (dead_) return Dead();
  if (fail_truncates_) return ErrnoStatus(absl::StrCat("ftruncate ", path), EIO);
  absl::Status s = base_->Truncate(path, size);  // syncs
  if (s.ok()) {
    auto it = tracked_.find(path);
    if (it != tracked_.end()) it->second.synced = size;
  }
  return s;
}

absl::StatusOr<std::unique_ptr<FileLock>> FaultInjectingFileSystem::Lock(const std::string& path) {
  return base_->Lock(path);
}

}  // namespace presence::internal
