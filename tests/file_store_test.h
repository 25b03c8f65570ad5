// Helpers shared by the file store's tests and benchmark: a temporary folder,
// a Store and a HistoryStore that own their FileStore, and a look at the
// frames of a file.
#ifndef PRESENCE_TESTS_FILE_STORE_TEST_H_
#define PRESENCE_TESTS_FILE_STORE_TEST_H_

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "presence/file_store.h"
#include "src/store/log_format.h"

namespace presence::testing_fs {

// A fresh folder under /tmp (or $TMPDIR), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base ? base : "/tmp") + "/presence-fs-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) != nullptr) path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A Store that owns the FileStore behind it (the conformance suites own
// what their factory returns).
class OwningStore final : public Store {
 public:
  explicit OwningStore(std::unique_ptr<FileStore> fs) : fs_(std::move(fs)) {}
  absl::Status Write(const StoreBatch& batch) override { return fs_->store()->Write(batch); }
  absl::Status Load(StoreVisitor* visitor) override { return fs_->store()->Load(visitor); }

 private:
  std::unique_ptr<FileStore> fs_;
};

class OwningHistory final : public HistoryStore {
 public:
  explicit OwningHistory(std::unique_ptr<FileStore> fs) : fs_(std::move(fs)) {}
  absl::Status Append(absl::Span<const Transition> t) override { return fs_->history()->Append(t); }
  absl::StatusOr<std::vector<Transition>> Query(absl::string_view user_id, int64_t from_ms,
                                                int64_t to_ms) override {
    return fs_->history()->Query(user_id, from_ms, to_ms);
  }
  absl::StatusOr<std::optional<Transition>> LastBefore(absl::string_view user_id,
                                                       int64_t before_ms) override {
    return fs_->history()->LastBefore(user_id, before_ms);
  }
  absl::Status AppendDevices(absl::Span<const DeviceTransition> t) override {
    return fs_->history()->AppendDevices(t);
  }
  absl::StatusOr<std::vector<DeviceTransition>> QueryDevice(absl::string_view user_id,
                                                            absl::string_view device_id,
                                                            int64_t from_ms,
                                                            int64_t to_ms) override {
    return fs_->history()->QueryDevice(user_id, device_id, from_ms, to_ms);
  }
  absl::Status Erase(absl::string_view user_id) override { return fs_->history()->Erase(user_id); }
  absl::Status DropBefore(int64_t before_ms) override {
    return fs_->history()->DropBefore(before_ms);
  }

 private:
  std::unique_ptr<FileStore> fs_;
};

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// Names in `dir` that start with `prefix` and end with `suffix`, sorted.
inline std::vector<std::string> FilesIn(const std::string& dir, const std::string& prefix,
                                        const std::string& suffix) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.size() >= prefix.size() + suffix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      out.push_back(name);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Where each frame of a file starts (and, last, where the good part ends).
inline std::vector<size_t> FrameOffsets(const std::string& data, internal::FileKind kind) {
  std::vector<size_t> out;
  internal::FrameReader reader(data, kind);
  absl::string_view payload;
  uint64_t seq;
  out.push_back(0);
  while (reader.Next(&payload, &seq) == internal::FrameReader::Result::kFrame) {
    out.push_back(reader.good_bytes());
  }
  return out;
}

}  // namespace presence::testing_fs

#endif  // PRESENCE_TESTS_FILE_STORE_TEST_H_
