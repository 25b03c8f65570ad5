// Real servers for the adapters' tests and benchmark: a redis-server or a
// PostgreSQL started on a free loopback port with a throwaway data folder,
// owned by the test process (they die with it: PR_SET_PDEATHSIG), which can
// kill and restart them on the same port and data to play a crash.
//
// PostgreSQL refuses to run as root; as root, initdb and postgres run as the
// `postgres` system user (created by Debian's postgresql package). Binaries
// come from $PRESENCE_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin;
// redis-server from $PATH. scripts/install-deps.sh installs both.
//
// Start fails with a message that says what is missing; tests report it as
// a failure, never as a skip.
#ifndef PRESENCE_ADAPTERS_TESTING_SERVERS_H_
#define PRESENCE_ADAPTERS_TESTING_SERVERS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace presence::testing_servers {

// One child process with its log file.
class Process {
 public:
  ~Process();  // SIGKILLs it if still running
  // Starts `argv` (argv[0] an absolute path) with stdout and stderr appended
  // to `log`, as `run_as` (a uid; -1: this process's).
  static absl::StatusOr<std::unique_ptr<Process>> Spawn(const std::vector<std::string>& argv,
                                                         const std::string& log, int run_as);
  // Sends `signal` and waits for the exit (SIGKILL after timeout_ms).
  void Stop(int signal, int64_t timeout_ms = 10000);
  // Waits for the exit; its status as from waitpid, or -1 after timeout_ms.
  int Wait(int64_t timeout_ms);
  bool running();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
};

// A throwaway folder under $TMPDIR (or /tmp), removed with its contents.
class TempFolder {
 public:
  static absl::StatusOr<std::unique_ptr<TempFolder>> Make(const std::string& tag);
  ~TempFolder();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A port on 127.0.0.1 that was free a moment ago.
absl::StatusOr<int> FreePort();
// The last `bytes` of a file (for error messages).
std::string Tail(const std::string& path, size_t bytes = 2000);

class RedisServer {
 public:
  // redis-server with the AOF on (appendonly yes, appendfsync `fsync`) and
  // no RDB snapshots.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(const std::string& appendfsync = "always");
  ~RedisServer();
  int port() const { return port_; }
  const std::string& folder() const { return folder_->path(); }
  // SIGKILL: a crash of the server process.
  void Kill();
  // Starts it again on the same port and folder; waits until it answers.
  absl::Status Restart();
  bool running() { return process_ != nullptr && process_->running(); }
  pid_t pid() const { return process_ != nullptr ? process_->pid() : -1; }

 private:
  absl::Status Launch();
  std::unique_ptr<TempFolder> folder_;
  std::unique_ptr<Process> process_;
  std::string appendfsync_;
  int port_ = 0;
};

class PostgresServer {
 public:
  // initdb (trust authentication, superuser "presence"), then postgres.
  // `extra` are more -c settings, e.g. {"fsync=off"}.
  static absl::StatusOr<std::unique_ptr<PostgresServer>> Start(
      const std::vector<std::string>& extra = {});
  ~PostgresServer();
  int port() const { return port_; }
  // A libpq connection string for the "postgres" database.
  std::string conninfo() const;
  // Immediate shutdown (SIGQUIT): no checkpoint, recovery on the next start,
  // as after a crash.
  void Kill();
  absl::Status Restart();
  bool running() { return process_ != nullptr && process_->running(); }
  // The postmaster; its backends are its children.
  pid_t pid() const { return process_ != nullptr ? process_->pid() : -1; }

 private:
  absl::Status Launch();
  std::unique_ptr<TempFolder> folder_;
  std::unique_ptr<Process> process_;
  std::string bindir_;
  std::vector<std::string> extra_;
  int run_as_ = -1;
  int port_ = 0;
};

}  // namespace presence::testing_servers

#endif  // PRESENCE_ADAPTERS_TESTING_SERVERS_H_
