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

// What both servers share: a folder, a port, the process, and how a test
// crashes and restarts it.
class TestServer {
 public:
  virtual ~TestServer();  // stops it (stop_signal), and the folder goes
  int port() const { return port_; }
  const std::string& folder() const { return folder_->path(); }
  // The server process (PostgreSQL: the postmaster; its backends are its
  // children).
  pid_t pid() const { return process_ != nullptr ? process_->pid() : -1; }
  bool running() { return process_ != nullptr && process_->running(); }
  // A crash of the server process (crash_signal), waited for.
  void Kill();
  // Starts it again on the same port and folder; waits until it answers.
  absl::Status Restart();

 protected:
  TestServer(int crash_signal, int stop_signal) : crash_signal_(crash_signal), stop_signal_(stop_signal) {}
  // Launch on a free port (three tries: a free port may be taken meanwhile).
  absl::Status LaunchOnAFreePort();
  // Starts Command() as RunAs(), logging to Log(), and waits until Answers();
  // when the process exits or 30 s pass first, says why from its log.
  absl::Status Launch();
  virtual std::vector<std::string> Command() const = 0;
  virtual bool Answers() const = 0;
  virtual std::string Log() const = 0;
  virtual int RunAs() const { return -1; }

  std::unique_ptr<TempFolder> folder_;
  std::unique_ptr<Process> process_;
  int port_ = 0;

 private:
  const int crash_signal_;
  const int stop_signal_;
};

class RedisServer final : public TestServer {
 public:
  // redis-server with the AOF on (appendonly yes, appendfsync `appendfsync`)
  // and no RDB snapshots. Kill is SIGKILL.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(const std::string& appendfsync = "always");

 private:
  RedisServer();
  std::vector<std::string> Command() const override;
  bool Answers() const override;
  std::string Log() const override { return folder() + "/redis.log"; }
  std::string bin_;
  std::string appendfsync_;
};

class PostgresServer final : public TestServer {
 public:
  // initdb (trust authentication, superuser "presence"), then postgres.
  // `extra` are more -c settings, e.g. {"fsync=off"}. Kill is an immediate
  // shutdown (SIGQUIT): no checkpoint, recovery on the next start, as after
  // a crash.
  static absl::StatusOr<std::unique_ptr<PostgresServer>> Start(
      const std::vector<std::string>& extra = {});
  // A libpq connection string for the "postgres" database.
  std::string conninfo() const;

 private:
  PostgresServer();
  std::vector<std::string> Command() const override;
  bool Answers() const override;
  std::string Log() const override { return folder() + "/postgres.log"; }
  int RunAs() const override { return run_as_; }
  std::string bindir_;
  std::vector<std::string> extra_;
  int run_as_ = -1;
};

}  // namespace presence::testing_servers

#endif  // PRESENCE_ADAPTERS_TESTING_SERVERS_H_
