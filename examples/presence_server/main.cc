// presence_server: the seed design's presence API over HTTP and WebSocket,
// with a live web page. See docs/example-server.md and server.h.
//
//   presence_server [--port N] [--simulate N] [--auth FILE] ... (--help)
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/string_view.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server.h"

#ifndef PRESENCE_SERVER_WEB_DIR
#define PRESENCE_SERVER_WEB_DIR "web"
#endif

namespace {

constexpr char kUsage[] =
    "usage: presence_server [flags]\n"
    "  --bind ADDR             address to listen on (default 127.0.0.1)\n"
    "  --port N                port (default 8080; 0 picks a free one)\n"
    "  --data-dir DIR          the file store's folder (default ./presence-data)\n"
    "  --sync every|interval|never   the file store's sync policy (default interval)\n"
    "  --auth FILE             users, tokens, friends, topics, operators (see docs/example-server.md)\n"
    "  --tokens-file FILE      more users: lines (or commas) of TOKEN=USER; also read from the\n"
    "                          PRESENCE_TOKENS environment variable. Tokens are 16 to 128 bytes.\n"
    "                          (with none of these: four demo users, alice bob carol dave,\n"
    "                          with random tokens printed at start)\n"
    "  --simulate N            N synthetic clients with jittery heartbeats, in topic\n"
    "                          'workspace' (the demo users join it; with --auth, name who\n"
    "                          may watch it in a 'topic workspace ...' line)\n"
    "  --seed X                seed of the simulation (default 1)\n"
    "  --exit-after SECONDS    stop by itself (for CI); default: run until SIGINT/SIGTERM\n"
    "  --stop-timeout SECONDS  after SIGINT/SIGTERM, exit anyway (status 1) when the clean stop\n"
    "                          (clients closed, last tick, partitions handed over) takes longer,\n"
    "                          or at a second signal (default 15)\n"
    "  --web-dir DIR           the page's files (default: the source tree's web/)\n"
    "  --max-message-bytes N   largest WebSocket message (default 16384)\n"
    "  --max-subscriptions N   users + topics per connection (default 1000)\n"
    "  --max-queue-bytes N     unread bytes before a client is a slow consumer (default 1048576)\n"
    "  --max-connections N     open connections, HTTP and WebSocket (default 50000)\n"
    "  --max-connections-per-ip N    from one address (default 256)\n"
    "  --max-connections-per-user N  WebSockets of one user (default 16)\n"
    "  --tls-cert FILE --tls-key FILE  serve https and wss (PEM certificate chain and key)\n"
    "  --metrics-bind ADDR:PORT      /metrics with no token on this plain-HTTP address too\n"
    "                          (on the main port /metrics needs an operator's token)\n"
    "  --allowed-origin ORIGIN pages that may open a WebSocket (repeat; default: the\n"
    "                          server's own page)\n"
    "  --trusted-proxy ADDR    a proxy in front (repeat): the client of its requests is the last\n"
    "                          address of X-Forwarded-For (for the failed-login limit)\n"
    "  --allowed-host NAME     Host names answered (repeat; default: loopback names when\n"
    "                          bound to loopback, any otherwise)\n"
    "  --verbose               log connections to stderr\n"
    "cluster node (docs/scale-out.md, \"presence_server as a cluster\"; README, \"Running a cluster\"):\n"
    "  --role gateway|engine|both    gateways hold clients and publish their signals; engines own\n"
    "                          partitions (Kafka consumer group) and write the shared store\n"
    "  --kafka-brokers HOST:PORT,...  the bus (required with --role)\n"
    "  --kafka-topic NAME      the topic (default presence; it must exist)\n"
    "  --partitions N          its partition count (default 12; every node the same)\n"
    "  --kafka-config KEY=VALUE      a librdkafka property for every client (repeat)\n"
    "  --store SPEC            the engines' shared store: redis://HOST:PORT[/PREFIX],\n"
    "                          postgresql://..., or file (--data-dir; one node, --role both)\n"
    "  --node-id NAME          this node's gateway id and group member name (default <role>-<pid>)\n"
    "  --session-timeout-ms N  the engines' group session timeout (default 3500)\n"
    "  --bus-flush-ms N        a gateway publishes its clients' signals every N ms, one batch\n"
    "                          per partition (default 20; 1 to 1000)\n"
    "  --bus-heartbeat-flush-ms N  a heartbeat that changes nothing may wait N ms for that\n"
    "                          batch (default 200, or --bus-flush-ms if longer; --bus-flush-ms\n"
    "                          to 1000); a connect, a disconnect or an activity brings it forward\n";

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

std::string RandomToken() {
  std::random_device rd;
  std::string out;
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 24; ++i) out.push_back(kHex[rd() & 15]);
  return out;
}

// SIGINT and SIGTERM, on a thread of their own: the server's io thread can
// be held for seconds by a call to an unreachable broker or store, and a
// stop must not wait on it. The first signal asks the server to stop
// cleanly; when that takes longer than the stop timeout, or at a second
// signal, the process exits at once (for a cluster engine, as a crash would:
// the group hands its partitions over after the session timeout, and the new
// owner replays the bus). Before the server exists, a signal exits at once.
class SignalThread {
 public:
  explicit SignalThread(double stop_timeout_s) : stop_timeout_(stop_timeout_s) {
    // Blocked here, before any other thread starts (threads inherit the
    // mask): only sigtimedwait below takes them.
    // A shell's background job inherits SIGINT ignored: an ignored signal
    // would be dropped, not waited for.
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    thread_ = std::thread([this] { Loop(); });
  }
  ~SignalThread() {
    done_.store(true);
    thread_.join();
  }
  // From here a signal stops `server`.
  void Serve(presence_server::Server* server) {
    std::lock_guard<std::mutex> lock(mu_);
    server_ = server;
  }
  // The server is gone: the clean stop is over.
  void Stopped() {
    std::lock_guard<std::mutex> lock(mu_);
    server_ = nullptr;
    served_ = true;
  }

 private:
  void Loop() {
    const timespec poll = {0, 100 * 1000 * 1000};  // to see done_
    std::optional<std::chrono::steady_clock::time_point> first;  // the first signal
    while (!done_.load()) {
      const int sig = sigtimedwait(&set_, nullptr, &poll);
      std::lock_guard<std::mutex> lock(mu_);
      if (sig <= 0) {
        if (first && server_ != nullptr && std::chrono::steady_clock::now() - *first > stop_timeout_) {
          Exit(absl::StrCat("the clean stop took longer than ", stop_timeout_.count(),
                            " s (--stop-timeout): exiting without it"));
        }
        continue;
      }
      if (served_) continue;  // stopped already: main returns
      if (server_ == nullptr) Exit(absl::StrCat("signal ", sig, " before the server started: exiting"));
      if (first) Exit(absl::StrCat("signal ", sig, " again: exiting without the clean stop"));
      first = std::chrono::steady_clock::now();
      std::fprintf(stderr, "presence_server: signal %d: stopping (a second signal exits at once)\n", sig);
      server_->Stop();
    }
  }
  [[noreturn]] static void Exit(const std::string& why) {
    std::fprintf(stderr, "presence_server: %s\n", why.c_str());
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(1);
  }

  const std::chrono::duration<double> stop_timeout_;
  sigset_t set_;
  std::atomic<bool> done_{false};
  std::mutex mu_;
  presence_server::Server* server_ = nullptr;  // guarded by mu_
  bool served_ = false;                        // guarded by mu_
  std::thread thread_;
};

}  // namespace

int main(int argc, char** argv) {
  presence_server::ServerOptions o;
  o.web_dir = PRESENCE_SERVER_WEB_DIR;
  double stop_timeout_s = 15;
  bool have_users = false;
  std::string auth_file;
  std::vector<std::string> token_specs;

  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "presence_server: %s needs a value\n%s", argv[i], kUsage);
        std::exit(2);
      }
      *out = argv[++i];
    };
    auto number = [&](auto* out) {
      std::string v;
      value(&v);
      if (!absl::SimpleAtoi(v, out)) {
        std::fprintf(stderr, "presence_server: %s wants a number, got '%s'\n", std::string(a).c_str(), v.c_str());
        std::exit(2);
      }
    };
    std::string v;
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--bind") {
      value(&o.bind_address);
    } else if (a == "--port") {
      int port = 0;
      number(&port);
      if (port < 0 || port > 65535) {
        std::fprintf(stderr, "presence_server: --port must be 0 to 65535\n");
        return 2;
      }
      o.port = static_cast<uint16_t>(port);
    } else if (a == "--data-dir") {
      value(&o.data_dir);
    } else if (a == "--sync") {
      value(&v);
      if (v == "every") o.sync = presence::SyncPolicy::kEveryWrite;
      else if (v == "interval") o.sync = presence::SyncPolicy::kInterval;
      else if (v == "never") o.sync = presence::SyncPolicy::kNever;
      else {
        std::fprintf(stderr, "presence_server: --sync is every, interval or never\n");
        return 2;
      }
    } else if (a == "--auth") {
      value(&auth_file);
    } else if (a == "--tokens") {
      std::fprintf(stderr,
                   "presence_server: --tokens is gone: tokens on the command line are visible to every local "
                   "user. Put TOKEN=USER lines in a file for --tokens-file, or in PRESENCE_TOKENS\n");
      return 2;
    } else if (a == "--tokens-file") {
      value(&v);
      std::string text;
      if (!ReadFile(v, &text)) {
        std::fprintf(stderr, "presence_server: cannot read --tokens-file %s\n", v.c_str());
        return 2;
      }
      token_specs.push_back(std::move(text));
    } else if (a == "--tls-cert") {
      value(&o.tls_cert_file);
    } else if (a == "--tls-key") {
      value(&o.tls_key_file);
    } else if (a == "--metrics-bind") {
      value(&o.metrics_bind);
    } else if (a == "--allowed-origin") {
      value(&v);
      o.allowed_origins.push_back(v);
    } else if (a == "--trusted-proxy") {
      value(&v);
      o.trusted_proxies.push_back(v);
    } else if (a == "--allowed-host") {
      value(&v);
      o.allowed_hosts.push_back(v);
    } else if (a == "--max-connections-per-ip") {
      number(&o.max_connections_per_ip);
    } else if (a == "--max-connections-per-user") {
      number(&o.max_connections_per_user);
    } else if (a == "--simulate") {
      number(&o.simulate);
      if (o.simulate < 0 || o.simulate > 100000) {
        std::fprintf(stderr, "presence_server: --simulate must be 0 to 100000\n");
        return 2;
      }
    } else if (a == "--seed") {
      number(&o.seed);
    } else if (a == "--exit-after") {
      value(&v);
      if (!absl::SimpleAtod(v, &o.exit_after_s) || o.exit_after_s < 0) {
        std::fprintf(stderr, "presence_server: --exit-after wants seconds\n");
        return 2;
      }
    } else if (a == "--stop-timeout") {
      value(&v);
      if (!absl::SimpleAtod(v, &stop_timeout_s) || !(stop_timeout_s > 0)) {
        std::fprintf(stderr, "presence_server: --stop-timeout wants seconds, more than 0\n");
        return 2;
      }
    } else if (a == "--web-dir") {
      value(&o.web_dir);
    } else if (a == "--max-message-bytes") {
      number(&o.max_message_bytes);
    } else if (a == "--max-subscriptions") {
      number(&o.max_subscriptions);
    } else if (a == "--max-queue-bytes") {
      number(&o.max_queue_bytes);
    } else if (a == "--max-connections") {
      number(&o.max_connections);
    } else if (a == "--verbose") {
      o.verbose = true;
    } else if (a == "--role") {
      value(&v);
      absl::StatusOr<presence_server::ClusterRole> role = presence_server::ParseClusterRole(v);
      if (!role.ok()) {
        std::fprintf(stderr, "presence_server: %s\n", std::string(role.status().message()).c_str());
        return 2;
      }
      o.cluster.role = *role;
    } else if (a == "--kafka-brokers") {
      value(&o.cluster.brokers);
    } else if (a == "--kafka-topic") {
      value(&o.cluster.topic);
    } else if (a == "--partitions") {
      number(&o.cluster.partitions);
    } else if (a == "--kafka-config") {
      value(&v);
      const size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::fprintf(stderr, "presence_server: --kafka-config wants KEY=VALUE\n");
        return 2;
      }
      o.cluster.kafka_config.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else if (a == "--store") {
      value(&o.cluster.store);
    } else if (a == "--node-id") {
      value(&o.cluster.node_id);
    } else if (a == "--session-timeout-ms") {
      number(&o.cluster.session_timeout_ms);
    } else if (a == "--bus-flush-ms") {
      number(&o.cluster.flush_ms);
    } else if (a == "--bus-heartbeat-flush-ms") {
      number(&o.cluster.heartbeat_flush_ms);
    } else {
      std::fprintf(stderr, "presence_server: unknown flag %s\n%s", argv[i], kUsage);
      return 2;
    }
  }

  if (!auth_file.empty()) {
    std::string text;
    if (!ReadFile(auth_file, &text)) {
      std::fprintf(stderr, "presence_server: cannot read --auth %s\n", auth_file.c_str());
      return 2;
    }
    if (absl::Status st = o.access.AddConfig(text); !st.ok()) {
      std::fprintf(stderr, "presence_server: --auth %s: %s\n", auth_file.c_str(), std::string(st.message()).c_str());
      return 2;
    }
    have_users = true;
  }
  if (const char* env = std::getenv("PRESENCE_TOKENS"); env != nullptr && *env != '\0') {
    token_specs.emplace_back(env);
  }
  for (const std::string& spec : token_specs) {
    if (absl::Status st = o.access.AddTokens(spec); !st.ok()) {
      std::fprintf(stderr, "presence_server: %s\n", std::string(st.message()).c_str());
      return 2;
    }
    have_users = true;
  }
  std::vector<std::pair<std::string, std::string>> demo;  // user, token
  if (!have_users) {
    // Demo users: four friends in one team, tokens new at every start.
    const std::vector<std::string> names = {"alice", "bob", "carol", "dave"};
    for (const std::string& n : names) {
      std::string token = RandomToken();
      demo.emplace_back(n, token);
      o.access.AddToken(token, n).IgnoreError();
      for (const std::string& f : names) {
        if (f != n) o.access.AddWatch(n, f);
      }
    }
    o.access.AddTopicMembers("team", names);
    // The demo's people watch the simulated crowd: this demo config says so.
    if (o.simulate > 0) o.access.AddTopicMembers(o.simulate_topic, names);
  }

  SignalThread signals(stop_timeout_s);
  absl::StatusOr<std::unique_ptr<presence_server::Server>> server =
      presence_server::Server::Create(o);
  if (!server.ok()) {
    std::fprintf(stderr, "presence_server: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  const std::string url = (*server)->url();
  std::printf("presence_server: listening on %s\n", url.c_str());
  if ((*server)->metrics_port() != 0) {
    std::string host = o.metrics_bind.substr(0, o.metrics_bind.rfind(':'));
    std::printf("presence_server: metrics on http://%s:%u/metrics\n", host.c_str(), (*server)->metrics_port());
  }
  if (o.cluster.role == presence_server::ClusterRole::kNone) {
    std::printf("presence_server: data in %s (file store), %d simulated client(s)%s\n", o.data_dir.c_str(),
                o.simulate, o.exit_after_s > 0 ? absl::StrCat(", exits after ", o.exit_after_s, " s").c_str() : "");
  } else {
    std::printf("presence_server: cluster node, role %s, topic %s (%u partitions), store %s\n",
                o.cluster.role == presence_server::ClusterRole::kGateway  ? "gateway"
                : o.cluster.role == presence_server::ClusterRole::kEngine ? "engine"
                                                                          : "both",
                o.cluster.topic.c_str(), o.cluster.partitions,
                // The scheme only: a connection string may hold a password.
                o.cluster.store == "file" ? o.data_dir.c_str()
                                          : o.cluster.store.substr(0, o.cluster.store.find(':')).c_str());
  }
  for (const auto& [user, token] : demo) {
    // In the fragment, which the browser never sends; the page moves it to
    // its session storage and takes it out of the address bar.
    std::printf("  open %s#token=%s   (as %s)\n", url.c_str(), token.c_str(), user.c_str());
  }
  std::fflush(stdout);
  signals.Serve(server->get());
  (*server)->Run();
  server->reset();  // (closes the bus and the store: under the stop timeout too)
  signals.Stopped();
  std::printf("presence_server: stopped\n");
  return 0;
}
