// The PostgreSQL server of the adapters' tests (servers.h): initdb into a
// throwaway folder, then postgres on a free loopback port, as the `postgres`
// user when this process is root.
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "adapters/testing/servers.h"

namespace presence::testing_servers {
namespace {

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

PostgresServer::PostgresServer() : TestServer(SIGQUIT, SIGINT) {}

absl::StatusOr<std::unique_ptr<PostgresServer>> PostgresServer::Start(
    const std::vector<std::string>& extra) {
  auto s = std::unique_ptr<PostgresServer>(new PostgresServer());
  s->extra_ = extra;
  s->bindir_ = FindBinDir();
  if (s->bindir_.empty() || access((s->bindir_ + "/initdb").c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "PostgreSQL is not installed: no initdb in ",
        s->bindir_.empty() ? "/usr/lib/postgresql/*/bin" : s->bindir_,
        " (Debian package postgresql; scripts/install-deps.sh installs it; $PRESENCE_PG_BINDIR "
        "names another folder)"));
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
    if (chown(s->folder().c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      return absl::InternalError(absl::StrCat("chown ", s->folder(), " to postgres failed"));
    }
  }
  const std::string log = s->folder() + "/initdb.log";
  auto initdb = Process::Spawn({s->bindir_ + "/initdb", "-D", s->folder() + "/data", "-U",
                                "presence", "-A", "trust", "--no-sync", "-E", "UTF8",
                                "--locale=C"},
                               log, s->run_as_);
  if (!initdb.ok()) return initdb.status();
  const int status = (*initdb)->Wait(120000);
  if (status != 0) {
    return absl::UnavailableError(
        absl::StrCat("initdb failed (status ", status, "); its log ends with:\n", Tail(log)));
  }
  if (auto st = s->LaunchOnAFreePort(); !st.ok()) return st;
  return s;
}

std::string PostgresServer::conninfo() const {
  return absl::StrCat("host=127.0.0.1 port=", port_,
                      " user=presence dbname=postgres connect_timeout=5");
}

std::vector<std::string> PostgresServer::Command() const {
  std::vector<std::string> argv = {bindir_ + "/postgres", "-D", folder() + "/data", "-p",
                                   absl::StrCat(port_), "-k", folder(),
                                   "-c", "listen_addresses=127.0.0.1",
                                   "-c", "max_connections=40",
                                   "-c", "shared_buffers=32MB"};
  for (const std::string& e : extra_) {
    argv.push_back("-c");
    argv.push_back(e);
  }
  return argv;
}

bool PostgresServer::Answers() const { return PQping(conninfo().c_str()) == PQPING_OK; }

}  // namespace presence::testing_servers
