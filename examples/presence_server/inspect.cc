// presence_inspect: an offline dump of a file store folder (the example
// server's --data-dir), for `presencectl inspect` and docs/runbooks.md.
//
//   presence_inspect DATA_DIR
//
// It never writes to DATA_DIR: it copies the folder's files to a private
// temporary folder and opens the copy with presence::FileStore, whose
// recovery (checksums, torn and corrupt frames, damaged snapshots) is the
// one the server would run. It prints the checksum report, then the users,
// devices, committed offsets and history that the folder holds.
// Exit status: 0 intact, 3 damaged (the report says what recovery would
// drop), 2 usage or a folder it cannot read (locked files are copied, so a
// running server's folder can be inspected too).
#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <system_error>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "presence/file_store.h"
#include "presence/history.h"
#include "presence/store.h"

namespace fs = std::filesystem;

namespace {

class Collect : public presence::StoreVisitor {
 public:
  void OnUser(const presence::UserRecord& u) override { users.push_back(u); }
  void OnDevice(const presence::DeviceRecord& d) override { devices.push_back(d); }
  void OnOffset(const presence::CommittedOffset& o) override { offsets.push_back(o); }
  std::vector<presence::UserRecord> users;
  std::vector<presence::DeviceRecord> devices;
  std::vector<presence::CommittedOffset> offsets;
};

int Usage(const char* why) {
  std::fprintf(stderr, "presence_inspect: %s\nusage: presence_inspect DATA_DIR\n", why);
  return 2;
}

// Copies the folder's regular files (LOCK aside) into `to`, owner-only.
bool CopyFolder(const fs::path& from, const fs::path& to, std::string* error) {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(from, ec)) {
    if (!e.is_regular_file() || e.path().filename() == "LOCK") continue;
    const fs::path dest = to / e.path().filename();
    if (!fs::copy_file(e.path(), dest, ec)) {
      *error = absl::StrCat("cannot copy ", e.path().string(), ": ", ec.message());
      return false;
    }
    fs::permissions(dest, fs::perms::owner_read | fs::perms::owner_write, ec);
  }
  if (ec) {
    *error = absl::StrCat("cannot read ", from.string(), ": ", ec.message());
    return false;
  }
  return true;
}

std::string Overrides(const presence::UserRecord& u) {
  std::vector<std::string> parts;
  for (const presence::OverrideInfo& o : u.overrides) {
    parts.push_back(absl::StrCat(presence::OverrideStateName(o.state), "(id ", o.id, ", set_at_ms ",
                                 o.set_at_ms, ", until_ms ", o.until_ms, ")"));
  }
  return parts.empty() ? "none" : absl::StrJoin(parts, " ");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return Usage("give one DATA_DIR");
  const std::string arg = argv[1];
  if (arg == "--help" || arg == "-h") {
    std::printf("usage: presence_inspect DATA_DIR\n"
                "Dumps a file store folder without writing to it: a checksum report, then its\n"
                "users, devices, offsets and history. Exit 0 intact, 3 damaged, 2 error.\n");
    return 0;
  }
  const fs::path dir(arg);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Usage(absl::StrCat("no such folder: ", arg).c_str());

  char tmpl[] = "/tmp/presence-inspect.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return Usage("cannot make a temporary folder");
  const fs::path copy(tmpl);
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ignored;
      fs::remove_all(p, ignored);
    }
  } cleanup{copy};

  std::printf("folder %s\n", fs::absolute(dir).string().c_str());
  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file()) names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  for (const std::string& n : names) {
    std::printf("  file %s %ju bytes\n", n.c_str(), static_cast<uintmax_t>(fs::file_size(dir / n, ec)));
  }
  std::string error;
  if (!CopyFolder(dir, copy, &error)) return Usage(error.c_str());

  presence::FileStoreOptions o;
  o.sync = presence::SyncPolicy::kNever;
  o.create_if_missing = false;
  o.compact_after_bytes = 0;
  absl::StatusOr<std::unique_ptr<presence::FileStore>> store = presence::FileStore::Open(copy.string(), o);
  if (!store.ok()) {
    return Usage(absl::StrCat("cannot open the file store: ", store.status().ToString()).c_str());
  }

  const presence::RecoveryStats r = (*store)->recovery();
  const bool damaged = r.snapshots_rejected > 0 || r.torn_records > 0 || r.corrupt_records > 0 ||
                       r.bytes_dropped > 0 || r.segments_dropped > 0;
  std::printf("checksums %s\n", damaged ? "DAMAGED" : "ok");
  std::printf("  snapshot %s (%ju records), %ju rejected\n", r.snapshot.empty() ? "none" : r.snapshot.c_str(),
              static_cast<uintmax_t>(r.snapshot_records), static_cast<uintmax_t>(r.snapshots_rejected));
  std::printf("  segments replayed %ju, frames %ju, entries %ju\n", static_cast<uintmax_t>(r.segments_replayed),
              static_cast<uintmax_t>(r.log_records), static_cast<uintmax_t>(r.log_entries));
  std::printf("  torn frames %ju, corrupt frames %ju, bytes dropped %ju, segments dropped %ju\n",
              static_cast<uintmax_t>(r.torn_records), static_cast<uintmax_t>(r.corrupt_records),
              static_cast<uintmax_t>(r.bytes_dropped), static_cast<uintmax_t>(r.segments_dropped));
  for (const std::string& p : r.problems) std::printf("  problem %s\n", p.c_str());

  Collect c;
  if (absl::Status st = (*store)->store()->Load(&c); !st.ok()) {
    return Usage(absl::StrCat("cannot load the records: ", st.ToString()).c_str());
  }
  std::sort(c.users.begin(), c.users.end(),
            [](const auto& a, const auto& b) { return a.user_id < b.user_id; });
  std::sort(c.devices.begin(), c.devices.end(), [](const auto& a, const auto& b) {
    return std::tie(a.user_id, a.device_id) < std::tie(b.user_id, b.device_id);
  });
  std::printf("users %zu\n", c.users.size());
  for (const presence::UserRecord& u : c.users) {
    std::printf("  user %s state %s self %s last_seen_ms %jd version %ju overrides %s\n", u.user_id.c_str(),
                std::string(presence::StateName(u.state)).c_str(),
                std::string(presence::StateName(u.self_state)).c_str(), static_cast<intmax_t>(u.last_seen_ms),
                static_cast<uintmax_t>(u.version), Overrides(u).c_str());
  }
  std::printf("devices %zu\n", c.devices.size());
  for (const presence::DeviceRecord& d : c.devices) {
    int64_t last = 0;
    for (int64_t t : d.last_signal_ms) last = std::max(last, t);
    std::printf("  device %s/%s platform %s session %ju %s gateway %s last_signal_ms %jd\n", d.user_id.c_str(),
                d.device_id.c_str(), std::string(presence::PlatformName(d.platform)).c_str(),
                static_cast<uintmax_t>(d.session_id), d.closed ? "closed" : "open",
                d.gateway.empty() ? "-" : d.gateway.c_str(), static_cast<intmax_t>(last));
  }
  std::printf("offsets %zu\n", c.offsets.size());
  for (const presence::CommittedOffset& off : c.offsets) {
    std::printf("  partition %u next %ju\n", off.partition, static_cast<uintmax_t>(off.offset));
  }
  // The history of every user the folder names.
  std::set<std::string> ids;
  for (const auto& u : c.users) ids.insert(u.user_id);
  for (const auto& d : c.devices) ids.insert(d.user_id);
  std::vector<presence::Transition> history;
  for (const std::string& id : ids) {
    auto h = (*store)->history()->Query(id, 0, std::numeric_limits<int64_t>::max());
    if (!h.ok()) return Usage(absl::StrCat("cannot read the history: ", h.status().ToString()).c_str());
    history.insert(history.end(), h->begin(), h->end());
  }
  std::printf("history %zu\n", history.size());
  for (const presence::Transition& t : history) {
    std::printf("  transition %s at_ms %jd %s -> %s (self %s) cause %s version %ju\n", t.user_id.c_str(),
                static_cast<intmax_t>(t.at_ms), std::string(presence::StateName(t.previous)).c_str(),
                std::string(presence::StateName(t.state)).c_str(),
                std::string(presence::StateName(t.self_state)).c_str(),
                std::string(presence::CauseName(t.cause)).c_str(), static_cast<uintmax_t>(t.version));
  }
  return damaged ? 3 : 0;
}
