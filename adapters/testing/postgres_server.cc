// The PostgreSQL server of the adapters' tests (servers.h): initdb into a
// throwaway folder, then postgres on a free loopback port, as the `postgres`
// user when this process is root.
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "adapters/testing/servers.h"

namespace presence::testing_servers {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// $PRESENCE_PG_BINDIR, else the newest /usr/lib/postgresql/<version>/bin.
std::string FindBinDir() {
  if (const char* dir = getenv("PRESENCE_PG_BINDIR"); dir != nullptr && *dir) return dir;
  std::error_code ec;
  int best = -1;
  std::string found;
  for (const auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string name = e.path().filename().string();
    const int version = atoi(name.c_str());
    const std::string bin = e.path().string() + "/bin";
    if (version > best && access((bin + "/initdb").c_str(), X_OK) == 0 &&
        access((bin + "/postgres").c_str(), X_OK) == 0) {
      best = version;
      found = bin;
    }
  }
  return found;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresServer>> PostgresServer::Start(
    const std::vector<std::string>& extra) {
  auto s = std::unique_ptr<PostgresServer>(new PostgresServer());
  s->extra_ = extra;
  s->bindir_ = FindBinDir();
  if (s->bindir_.empty()) {
    return absl::FailedPreconditionError(
        "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb (Debian package "
        "postgresql; scripts/install-deps.sh installs it), and $PRESENCE_PG_BINDIR is not set");
  }
  auto folder = TempFolder::Make("pg");
  if (!folder.ok()) return folder.status();
  s->folder_ = std::move(*folder);
  if (geteuid() == 0) {
    // PostgreSQL refuses to run as root.
    const passwd* pw = getpwnam("postgres");
    if (pw == nullptr) {
      return absl::FailedPreconditionError(
          "running as root, and there is no `postgres` user to run PostgreSQL as (Debian's "
          "postgresql package creates it; scripts/install-deps.sh installs it)");
    }
    s->run_as_ = static_cast<int>(pw->pw_uid);
    if (chown(s->folder_->path().c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      return absl::InternalError(absl::StrCat("chown ", s->folder_->path(), " to postgres failed"));
    }
  }
  const std::string log = s->folder_->path() + "/initdb.log";
  auto initdb = Process::Spawn({s->bindir_ + "/initdb", "-D", s->folder_->path() + "/data", "-U",
                                "presence", "-A", "trust", "--no-sync", "-E", "UTF8",
                                "--locale=C"},
                               log, s->run_as_);
  if (!initdb.ok()) return initdb.status();
  const int status = (*initdb)->Wait(120000);
  if (status != 0) {
    return absl::UnavailableError(
        absl::StrCat("initdb failed (status ", status, "); its log ends with:\n", Tail(log)));
  }
  absl::Status last;
  for (int attempt = 0; attempt < 3; ++attempt) {  // the free port may be taken meanwhile
    auto port = FreePort();
    if (!port.ok()) return port.status();
    s->port_ = *port;
    last = s->Launch();
    if (last.ok()) return s;
  }
  return last;
}

std::string PostgresServer::conninfo() const {
  return absl::StrCat("host=127.0.0.1 port=", port_, " user=presence dbname=postgres connect_timeout=5");
}

absl::Status PostgresServer::Launch() {
  const std::string log = folder_->path() + "/postgres.log";
  std::vector<std::string> argv = {bindir_ + "/postgres",
                                   "-D",
                                   folder_->path() + "/data",
                                   "-p",
                                   absl::StrCat(port_),
                                   "-k",
                                   folder_->path(),
                                   "-c",
                                   "listen_addresses=127.0.0.1",
                                   "-c",
                                   "max_connections=40",
                                   "-c",
                                   "shared_buffers=32MB"};
  for (const std::string& e : extra_) {
    argv.push_back("-c");
    argv.push_back(e);
  }
  auto p = Process::Spawn(argv, log, run_as_);
  if (!p.ok()) return p.status();
  process_ = std::move(*p);
  const std::string info = conninfo();
  const int64_t deadline = NowMs() + 30000;
  while (NowMs() < deadline) {
    if (PQping(info.c_str()) == PQPING_OK) return absl::OkStatus();
    if (!process_->running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  process_->Stop(SIGKILL);
  return absl::UnavailableError(absl::StrCat("postgres on port ", port_,
                                             " did not start; its log ends with:\n", Tail(log)));
}

PostgresServer::~PostgresServer() {
  // A fast shutdown; a kill if it takes too long.
  if (process_ != nullptr) process_->Stop(SIGINT, 10000);
}

void PostgresServer::Kill() {
  if (process_ != nullptr) process_->Stop(SIGQUIT);
}

absl::Status PostgresServer::Restart() {
  Kill();
  return Launch();
}

}  // namespace presence::testing_servers
