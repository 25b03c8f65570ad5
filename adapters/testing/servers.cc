// Child processes, throwaway folders and free ports for the adapters' tests,
// and the redis-server they start (servers.h).
#include "adapters/testing/servers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace presence::testing_servers {

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string FindOnPath(const std::string& name) {
  const char* path = getenv("PATH");
  std::string all = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  all += ":/usr/sbin:/sbin";
  size_t start = 0;
  while (start <= all.size()) {
    size_t end = all.find(':', start);
    if (end == std::string::npos) end = all.size();
    std::string candidate = absl::StrCat(all.substr(start, end - start), "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

}  // namespace

// ---- Process --------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Process>> Process::Spawn(const std::vector<std::string>& argv,
                                                        const std::string& log, int run_as) {
  // Everything the child needs is made before fork: after it, only
  // async-signal-safe calls.
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  gid_t gid = 0;
  if (run_as >= 0) {
    const passwd* pw = getpwuid(static_cast<uid_t>(run_as));
    if (pw == nullptr) return absl::FailedPreconditionError(absl::StrCat("no user has uid ", run_as));
    gid = pw->pw_gid;
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out < 0 || in < 0) _exit(126);
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    if (run_as >= 0) {
      if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(static_cast<uid_t>(run_as)) != 0) {
        _exit(125);
      }
    }
    // Paths are absolute; the test's folder may be closed to `run_as`.
    if (chdir("/") != 0) _exit(123);
    // Dies with the test (set after setuid, which clears it).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(124);
    execv(args[0], args.data());
    _exit(127);
  }
  auto p = std::unique_ptr<Process>(new Process());
  p->pid_ = pid;
  return p;
}

Process::~Process() {
  if (pid_ > 0 && !exited_) Stop(SIGKILL);
}

bool Process::running() {
  if (exited_) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) exited_ = true;
  return !exited_;
}

int Process::Wait(int64_t timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      exited_ = true;
      return r == pid_ ? status : 0;
    }
    if (NowMs() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void Process::Stop(int signal, int64_t timeout_ms) {
  if (exited_ || pid_ <= 0) return;
  kill(pid_, signal);
  if (Wait(timeout_ms) == -1) {
    kill(pid_, SIGKILL);
    Wait(60000);
  }
}

// ---- Folders, ports, logs -----------------------------------------------------------

absl::StatusOr<std::unique_ptr<TempFolder>> TempFolder::Make(const std::string& tag) {
  const char* base = getenv("TMPDIR");
  std::string tmpl =
      absl::StrCat(base != nullptr && *base ? base : "/tmp", "/presence-", tag, "-XXXXXX");
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", tmpl, ": ", strerror(errno)));
  }
  auto f = std::unique_ptr<TempFolder>(new TempFolder());
  f->path_ = buf.data();
  return f;
}

TempFolder::~TempFolder() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

absl::StatusOr<int> FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return absl::InternalError(absl::StrCat("bind: ", strerror(errno)));
  }
  close(fd);
  return ntohs(addr.sin_port);
}

std::string Tail(const std::string& path, size_t bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

// ---- redis-server -----------------------------------------------------------------

namespace {

// PING over a fresh socket: true on +PONG.
bool RedisAnswers(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  bool ok = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      send(fd, "PING\r\n", 6, MSG_NOSIGNAL) == 6) {
    char buf[16] = {};
    ok = recv(fd, buf, sizeof buf - 1, 0) >= 5 && strncmp(buf, "+PONG", 5) == 0;
  }
  close(fd);
  return ok;
}

}  // namespace

// ---- TestServer -------------------------------------------------------------------

TestServer::~TestServer() {
  if (process_ != nullptr) process_->Stop(stop_signal_);
}

void TestServer::Kill() {
  if (process_ != nullptr) process_->Stop(crash_signal_);
}

absl::Status TestServer::Restart() {
  Kill();
  return Launch();
}

absl::Status TestServer::LaunchOnAFreePort() {
  absl::Status last;
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto port = FreePort();
    if (!port.ok()) return port.status();
    port_ = *port;
    last = Launch();
    if (last.ok()) return last;
  }
  return last;
}

absl::Status TestServer::Launch() {
  auto p = Process::Spawn(Command(), Log(), RunAs());
  if (!p.ok()) return p.status();
  process_ = std::move(*p);
  const int64_t deadline = NowMs() + 30000;
  while (NowMs() < deadline) {
    if (Answers()) return absl::OkStatus();
    if (!process_->running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  process_->Stop(SIGKILL);
  return absl::UnavailableError(absl::StrCat(Command()[0], " on port ", port_,
                                             " did not start; its log ends with:\n", Tail(Log())));
}

// ---- redis-server -------------------------------------------------------------------

RedisServer::RedisServer() : TestServer(SIGKILL, SIGKILL) {}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(const std::string& appendfsync) {
  auto s = std::unique_ptr<RedisServer>(new RedisServer());
  s->appendfsync_ = appendfsync;
  s->bin_ = FindOnPath("redis-server");
  if (s->bin_.empty()) {
    return absl::FailedPreconditionError(
        "redis-server is not installed (Debian package redis-server; scripts/install-deps.sh "
        "installs it)");
  }
  auto folder = TempFolder::Make("redis");
  if (!folder.ok()) return folder.status();
  s->folder_ = std::move(*folder);
  if (auto st = s->LaunchOnAFreePort(); !st.ok()) return st;
  return s;
}

std::vector<std::string> RedisServer::Command() const {
  return {bin_, "--port", absl::StrCat(port_), "--bind", "127.0.0.1", "--dir", folder(),
          "--appendonly", "yes", "--appendfsync", appendfsync_, "--save", "", "--daemonize", "no",
          "--protected-mode", "no", "--logfile", ""};
}

bool RedisServer::Answers() const { return RedisAnswers(port_); }

}  // namespace presence::testing_servers
