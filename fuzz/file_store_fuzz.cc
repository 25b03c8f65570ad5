// Fuzz target: file-store recovery from arbitrary bytes. The first byte
// says how the rest is laid out: bit 0 set, the rest is split into a
// snapshot and a segment at (byte >> 1) / 127 of its length; clear, it is
// all one segment. Open must recover what it can, report the rest, and never
// crash; what it recovered must load, and must still be there after a
// reopen.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "presence/file_store.h"
#include "presence/store.h"

namespace {

struct Count : presence::StoreVisitor {
  size_t n = 0;
  void OnUser(const presence::UserRecord&) override { ++n; }
  void OnDevice(const presence::DeviceRecord&) override { ++n; }
  void OnOffset(const presence::CommittedOffset&) override { ++n; }
};

void WriteFile(const std::filesystem::path& p, const uint8_t* data, size_t size) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  static const fs::path root = fs::temp_directory_path() /
                               ("presence-fuzz-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  if (size < 1) return 0;
  const bool with_snapshot = data[0] & 1;
  const uint8_t* rest = data + 1;
  const size_t n = size - 1;
  const size_t cut = with_snapshot ? n * (data[0] >> 1) / 127 : 0;
  if (with_snapshot) WriteFile(root / "snapshot-000001.snap", rest, cut);
  WriteFile(root / (with_snapshot ? "segment-000001.log" : "segment-000000.log"), rest + cut,
            n - cut);
  size_t first = 0;
  {
    presence::FileStoreOptions fo;
    fo.sync = presence::SyncPolicy::kNever;  // fsync is not what is fuzzed here
    auto store = presence::FileStore::Open(root.string(), fo);
    if (!store.ok()) return 0;  // a clear error (a newer format, say) is fine
    Count c;
    if (!(*store)->store()->Load(&c).ok()) std::abort();
    first = c.n;
  }
  presence::FileStoreOptions fo;
  fo.sync = presence::SyncPolicy::kNever;
  auto again = presence::FileStore::Open(root.string(), fo);
  if (!again.ok()) std::abort();  // what recovery kept must open again
  Count c;
  if (!(*again)->store()->Load(&c).ok() || c.n != first) std::abort();
  return 0;
}
