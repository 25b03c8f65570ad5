// The cluster test (issue 15; README "Running a cluster", docs/scale-out.md
// "presence_server as a cluster"): presence_server processes as a cluster on
// loopback, broken under load.
//
//   * librdkafka's mock cluster in its own process (presence_mock_kafka), a
//     real redis-server (the engines' shared store), 3 engine nodes and 2
//     gateway nodes (presence_server --role ...);
//   * 2 x PRESENCE_CLUSTER_PAIRS (default 1000) WebSocket clients, one
//     device each, heartbeating every second: user aNNNNN on gateway A
//     watches bNNNNN on gateway B, and bNNNNN watches aNNNNN;
//   * PRESENCE_CLUSTER_REPS (default 20) repetitions of: 200 activity flips,
//     SIGKILL of one engine, 200 more flips right after, convergence; the
//     same with SIGTERM of another engine; both restarted, the three sharing
//     the partitions again.
//
// Checked, exactly: every acknowledged flip reaches the watcher on the other
// gateway; no watcher ever sees its friend OFFLINE while the friend stays
// connected (a false OFFLINE from the failover); at the end every watcher's
// view equals every user's last acknowledged state, GET /presence through
// each gateway agrees with it, a device connecting again through the other
// gateway gets its older connection closed, and a clean "bye" on one gateway shows
// OFFLINE on the other well before a timeout would have; every failover
// converges within 30 s. Measured, not asserted (printed as
// CLUSTER lines, kept in benchmarks/RESULTS.md): the RTO, from the SIGKILL
// until every flip made just before and after it is seen, p50 and p99 (and
// the same for the clean stop), and of it the group's takeover (until the
// other engines serve every partition); and the cross-gateway visibility of
// a flip to ONLINE, before the faults, p50 and p99.
// Waits are on conditions with deadlines.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <future>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "adapters/testing/servers.h"
#include "gtest/gtest.h"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using presence::testing_servers::Process;
using presence::testing_servers::TempFolder;
using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

constexpr int kPartitions = 12;
constexpr int kSessionTimeoutMs = 3500;

int EnvInt(const char* name, int fallback) {
  const char* v = getenv(name);
  int out = 0;
  return v != nullptr && absl::SimpleAtoi(v, &out) && out >= 0 ? out : fallback;
}

int64_t MsSince(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// Waits until `done()` (polled every `poll_ms`) or `timeout_ms`; whether it
// held. Conditions that read the engines' /metrics poll every 100 ms: each
// asks the broker for the end offset of every partition the engine owns, on
// the engine's io thread.
bool WaitFor(const std::function<bool()>& done, int64_t timeout_ms, int poll_ms = 20) {
  const TimePoint start = Clock::now();
  while (!done()) {
    if (MsSince(start) > timeout_ms) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
  return true;
}

std::string Token(const std::string& user) { return "token-" + user + "-0123456789"; }

// The (user_id, state, version) entries of a server message (a snapshot, a
// diff, or GET /presence's answer); entries without a state (removed) are
// skipped. The test's own reading of the wire, not the server's parser.
struct Entry {
  std::string user;
  std::string state;
  uint64_t version = 0;
};
std::vector<Entry> EntriesOf(const std::string& msg) {
  std::vector<Entry> out;
  const std::string key = "{\"user_id\":\"";
  for (size_t at = msg.find(key); at != std::string::npos; at = msg.find(key, at + 1)) {
    const size_t begin = at + key.size(), end = msg.find('"', begin);
    const size_t next = msg.find(key, begin);
    const size_t st = msg.find("\"state\":\"", begin), ver = msg.find("\"version\":", begin);
    if (end == std::string::npos || st == std::string::npos || (next != std::string::npos && st > next)) continue;
    Entry e;
    e.user = msg.substr(begin, end - begin);
    const size_t sb = st + 9;
    e.state = msg.substr(sb, msg.find('"', sb) - sb);
    if (ver != std::string::npos && (next == std::string::npos || ver < next)) {
      e.version = std::strtoull(msg.c_str() + ver + 10, nullptr, 10);
    }
    out.push_back(std::move(e));
  }
  return out;
}

// The "state" of each transition of a GET /presence/history answer, in order.
[[maybe_unused]] std::vector<std::string> StatesOf(const std::string& history) {
  std::vector<std::string> out;
  const std::string key = "\"state\":\"";
  for (size_t at = history.find(key); at != std::string::npos; at = history.find(key, at + 1)) {
    const size_t begin = at + key.size();
    out.push_back(history.substr(begin, history.find('"', begin) - begin));
  }
  return out;
}

// A plain HTTP request on loopback: status and body (status 0 when
// unreachable).
std::pair<int, std::string> HttpCall(http::verb verb, int port, const std::string& target, const std::string& token,
                                     const std::string& body = "") {
  try {
    net::io_context ioc;
    beast::tcp_stream s(ioc);
    s.expires_after(std::chrono::seconds(10));
    s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)));
    http::request<http::string_body> req(verb, target, 11);
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::authorization, "Bearer " + token);
    if (!body.empty()) req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    http::write(s, req);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(s, buf, res);
    return {res.result_int(), res.body()};
  } catch (const std::exception&) {
    return {0, ""};
  }
}
std::pair<int, std::string> HttpGet(int port, const std::string& target, const std::string& token) {
  return HttpCall(http::verb::get, port, target, token);
}

// Whether the node answers /healthz within `timeout`: its io thread is not
// held (a blocking call would hold a synchronous request as long).
bool AnswersWithin(int port, std::chrono::milliseconds timeout) {
  net::io_context ioc;
  beast::tcp_stream s(ioc);
  http::request<http::string_body> req(http::verb::get, "/healthz", 11);
  req.set(http::field::host, "127.0.0.1");
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  bool answered = false;
  s.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)),
                  [&](beast::error_code ec) {
                    if (ec) return;
                    http::async_write(s, req, [&](beast::error_code ec, size_t) {
                      if (ec) return;
                      http::async_read(s, buf, res, [&](beast::error_code ec, size_t) {
                        answered = !ec && res.result_int() == 200;
                      });
                    });
                  });
  ioc.run_for(timeout);
  return answered;
}

// presencectl, the operator's command line, against the node on `port` as
// the operator "op", its output kept in `folder`: its exit status (-1: it
// did not exit normally within 30 s) and what it printed.
std::pair<int, std::string> Ctl(const std::string& folder, int port, const std::vector<std::string>& args) {
  static int runs = 0;
  const std::string log = absl::StrCat(folder, "/presencectl-", ++runs, ".log");
  std::vector<std::string> argv = {"/usr/bin/env", "python3", PRESENCE_CTL, "--server",
                                   absl::StrCat("http://127.0.0.1:", port), "--token", Token("op")};
  argv.insert(argv.end(), args.begin(), args.end());
  auto p = Process::Spawn(argv, log, -1);
  if (!p.ok()) return {-1, p.status().ToString()};
  const int status = (*p)->Wait(30000);
  return {status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1,
          presence::testing_servers::Tail(log, 4000)};
}

// One metric's value in Prometheus text (-1 when absent).
int64_t Metric(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::strtoll(text.c_str() + at + name.size() + 2, nullptr, 10);
}

// ---- The processes ------------------------------------------------------------

struct Node {
  std::string id;
  std::vector<std::string> args;  // without --port
  int port = 0;
  std::unique_ptr<Process> process;
};

// The engines' shared store: redis-server, or PostgreSQL (which also keeps
// the history that GET /presence/history reads through any gateway).
enum class SharedStore { kRedis, kPostgres };

class Cluster {
 public:
  explicit Cluster(int pairs = Pairs(), SharedStore store = SharedStore::kRedis) : pairs_(pairs) {
    folder_ = TempFolder::Make("cluster").value();
    kafka_log_ = folder_->path() + "/kafka.log";
    kafka_ = Process::Spawn({PRESENCE_MOCK_KAFKA, "--partitions", std::to_string(kPartitions)}, kafka_log_, -1)
                 .value();
    EXPECT_TRUE(WaitFor([&] { return !Bootstrap().empty(); }, 20000)) << "the mock cluster never started";
    if (store == SharedStore::kRedis) {
      redis_ = presence::testing_servers::RedisServer::Start("everysec").value();
      store_ = absl::StrCat("redis://127.0.0.1:", redis_->port(), "/cluster:");
    } else {
#ifdef PRESENCE_CLUSTER_POSTGRES
      postgres_ = presence::testing_servers::PostgresServer::Start({"fsync=off"}).value();
      store_ = absl::StrCat("postgresql://presence@127.0.0.1:", postgres_->port(), "/postgres?connect_timeout=5");
#else
      ADD_FAILURE() << "built without PostgreSQL";
#endif
    }
    std::ofstream auth(folder_->path() + "/auth.txt");
    for (int i = 0; i < pairs_; ++i) {
      auth << "user " << User('a', i) << " " << Token(User('a', i)) << " " << User('b', i) << "\n";
      auth << "user " << User('b', i) << " " << Token(User('b', i)) << " " << User('a', i) << "\n";
    }
    auth << "user op " << Token("op") << "\noperator op\n";
  }
  ~Cluster() {
    for (Node* n : All()) {
      if (n->process) n->process->Stop(SIGKILL);
    }
  }

  static int Pairs() { return EnvInt("PRESENCE_CLUSTER_PAIRS", 1000); }
  int pairs() const { return pairs_; }
  static std::string User(char side, int i) {
    char b[16];
    std::snprintf(b, sizeof b, "%c%05d", side, i);
    return b;
  }

  std::string Bootstrap() const {
    std::ifstream in(kafka_log_);
    std::string word, value;
    while (in >> word) {
      if (word == "bootstrap" && in >> value) return value;
    }
    return "";
  }

  // A node's flags: its role and name, then what every node shares.
  std::vector<std::string> Args(const std::string& role, const std::string& id) const {
    return {"--role", role, "--node-id", id, "--kafka-brokers", Bootstrap(), "--partitions",
            std::to_string(kPartitions), "--store", store_,
            "--kafka-config", "fetch.wait.max.ms=10", "--kafka-config", "max.in.flight.requests.per.connection=1",
            "--session-timeout-ms", std::to_string(kSessionTimeoutMs), "--auth", folder_->path() + "/auth.txt",
            "--max-connections-per-ip", "100000"};
  }

  void StartAll() {
    for (int e = 0; e < 3; ++e) {
      engines_[e].id = absl::StrCat("engine-", e + 1);
      engines_[e].args = Args("engine", engines_[e].id);
      Start(&engines_[e]);
    }
    for (int g = 0; g < 2; ++g) {
      gateways_[g].id = g == 0 ? "gateway-a" : "gateway-b";
      gateways_[g].args = Args("gateway", gateways_[g].id);
      Start(&gateways_[g]);
    }
  }
  // StartAll, then waits until every node answers and the engines share
  // the partitions out.
  ::testing::AssertionResult StartAllAndShare() {
    StartAll();
    for (Node* n : All()) {
      if (!WaitFor([&] { return Answers(n); }, 30000)) {
        return ::testing::AssertionFailure() << n->id << " never answered:\n" << Log(n);
      }
    }
    if (!WaitFor([&] { return Shared(); }, 60000, 100)) {
      return ::testing::AssertionFailure() << "the engines never shared the partitions out: "
                                           << absl::StrJoin(Owned(), ",");
    }
    return ::testing::AssertionSuccess();
  }
  // The broker goes, as a crash would take it.
  void KillKafka() { kafka_->Stop(SIGKILL); }

  void Start(Node* n) {
    n->port = presence::testing_servers::FreePort().value();
    std::vector<std::string> argv = {PRESENCE_SERVER_BINARY, "--port", std::to_string(n->port)};
    argv.insert(argv.end(), n->args.begin(), n->args.end());
    n->process = Process::Spawn(argv, folder_->path() + "/" + n->id + ".log", -1).value();
  }

  // Partitions each engine serves now (-1: it does not answer).
  std::vector<int64_t> Owned() {
    std::vector<int64_t> out;
    for (Node& e : engines_) {
      auto [status, body] = HttpGet(e.port, "/metrics", Token("op"));
      out.push_back(status == 200 ? Metric(body, "presence_owned_partitions") : -1);
    }
    return out;
  }
  // The three engines share all partitions, each serving some.
  bool Shared() {
    int64_t sum = 0;
    for (int64_t n : Owned()) {
      if (n <= 0) return false;
      sum += n;
    }
    return sum == kPartitions;
  }
  // The engines but those `gone` serve all partitions between them.
  bool SharedWithout(const std::vector<Node*>& gone) {
    int64_t sum = 0;
    for (Node& e : engines_) {
      if (std::find(gone.begin(), gone.end(), &e) != gone.end()) continue;
      auto [status, body] = HttpGet(e.port, "/metrics", Token("op"));
      if (status != 200) return false;
      sum += Metric(body, "presence_owned_partitions");
    }
    return sum == kPartitions;
  }
  bool Answers(Node* n) { return HttpGet(n->port, "/healthz", "").first == 200; }
  // A metric summed over the engines (-1: one does not answer).
  int64_t EnginesSum(const std::string& name) {
    int64_t sum = 0;
    for (Node& e : engines_) {
      auto [status, body] = HttpGet(e.port, "/metrics", Token("op"));
      if (status != 200) return -1;
      sum += std::max<int64_t>(0, Metric(body, name));
    }
    return sum;
  }

  Node* engine(int i) { return &engines_[i]; }
  Node* gateway(int i) { return &gateways_[i]; }
  std::vector<Node*> All() {
    return {&engines_[0], &engines_[1], &engines_[2], &gateways_[0], &gateways_[1]};
  }
  std::string Log(Node* n, size_t bytes = 2000) {
    return presence::testing_servers::Tail(folder_->path() + "/" + n->id + ".log", bytes);
  }

 private:
  std::unique_ptr<TempFolder> folder_;
  std::string kafka_log_;
  std::unique_ptr<Process> kafka_;
  const int pairs_;
  std::unique_ptr<presence::testing_servers::RedisServer> redis_;
#ifdef PRESENCE_CLUSTER_POSTGRES
  std::unique_ptr<presence::testing_servers::PostgresServer> postgres_;
#endif
  std::string store_;
  Node engines_[3], gateways_[2];
};

// ---- The clients (all on one io thread) -------------------------------------

struct Client;

struct Flip {
  std::string target;  // "active" or "idle"
  TimePoint sent;
  bool acked = false;
  int64_t ack_ms = -1;  // from sent: the gateway took it (published it to the bus)
  bool seen = false;    // by the watcher on the other gateway
  int64_t visible_ms = -1;
};

struct Client {
  Client(net::io_context& ioc, std::string u, std::string f, int p)
      : user(std::move(u)), friend_id(std::move(f)), port(p), ws(ioc), beat(ioc) {}

  std::string user, friend_id;
  int port;
  websocket::stream<beast::tcp_stream> ws;
  beast::flat_buffer buf;
  std::vector<std::string> out;
  bool writing = false;
  net::steady_timer beat;
  bool welcomed = false, closed = false, failed = false;
  bool replaced = false;  // told session_replaced (then closed by the server)
  TimePoint welcomed_at;
  // What the client was acknowledged (its truth), and its flip in flight.
  std::string activity = "active";
  std::optional<Flip> flip;
  int next_id = 1;
  // Its view of its friend.
  std::string friend_state;
  uint64_t friend_version = 0;
  bool friend_seen_online = false;
  TimePoint friend_changed_at;  // when the friend's state last changed in the view
  int false_offline = 0;
  Client* watcher = nullptr;  // the friend's client: who watches this user
  // Messages sent with an id by Clients::Probe: when, then how long their
  // ack took.
  std::map<int, TimePoint> probes;
  std::map<int, int64_t> probe_ack_ms;
  bool quiet = false;  // sends no more heartbeats of its own
};

std::string Expected(const std::string& activity) { return activity == "active" ? "online" : "away"; }

class Clients {
 public:
  explicit Clients(Cluster* c) : work_(net::make_work_guard(ioc_)) {
    for (int i = 0; i < c->pairs(); ++i) {
      a_.push_back(std::make_unique<Client>(ioc_, Cluster::User('a', i), Cluster::User('b', i), c->gateway(0)->port));
      b_.push_back(std::make_unique<Client>(ioc_, Cluster::User('b', i), Cluster::User('a', i), c->gateway(1)->port));
      a_.back()->watcher = b_.back().get();
      b_.back()->watcher = a_.back().get();
    }
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~Clients() {
    work_.reset();
    ioc_.stop();
    thread_.join();
  }

  // Runs f on the io thread and returns its result.
  template <typename F>
  auto OnIo(F f) -> decltype(f()) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    net::post(ioc_, [&task] { task(); });
    return result.get();
  }

  void ConnectAll() {
    OnIo([this] {
      for (auto* side : {&a_, &b_}) {
        for (auto& c : *side) Connect(c.get());
      }
      return 0;
    });
  }
  // Another connection of `c`'s user and device, through gateway `port`.
  Client* ConnectAgain(Client* c, int port) {
    return OnIo([&] {
      extra_.push_back(std::make_unique<Client>(ioc_, c->user, c->friend_id, port));
      Client* again = extra_.back().get();
      again->watcher = c->watcher;
      Connect(again);
      return again;
    });
  }
  std::vector<Client*> all() {
    std::vector<Client*> out;
    for (auto* side : {&a_, &b_}) {
      for (auto& c : *side) out.push_back(c.get());
    }
    return out;
  }

  // Flips the activity of `users` (each has no flip in flight).
  void FlipAll(const std::vector<Client*>& users) {
    OnIo([&] {
      for (Client* c : users) {
        Flip f;
        f.target = c->activity == "active" ? "idle" : "active";
        f.sent = Clock::now();
        const int id = c->next_id++;
        c->flip = f;
        Send(c, absl::StrCat("{\"type\":\"activity\",\"activity\":\"", f.target, "\",\"id\":", id, "}"));
      }
      return 0;
    });
  }
  // Sends `c` the JSON object `open` (without its closing brace) with a new
  // id, whose ack AckMs then times.
  int Probe(Client* c, const std::string& open) {
    return OnIo([&] {
      const int id = c->next_id++;
      c->probes[id] = Clock::now();
      Send(c, absl::StrCat(open, ",\"id\":", id, "}"));
      return id;
    });
  }
  // How long the ack of probe `id` took; -1 while none came.
  int64_t AckMs(Client* c, int id) {
    return OnIo([&] {
      auto it = c->probe_ack_ms.find(id);
      return it == c->probe_ack_ms.end() ? int64_t{-1} : it->second;
    });
  }
  // Every flip of `users` acknowledged and seen by its watcher.
  bool FlipsSeen(const std::vector<Client*>& users) {
    return OnIo([&] {
      for (Client* c : users) {
        if (c->flip && !(c->flip->acked && c->flip->seen)) return false;
      }
      return true;
    });
  }
  // Every client is welcomed and saw its friend online.
  bool EveryoneSawTheirFriendOnline() {
    return OnIo([&] {
      for (Client* c : all()) {
        if (!c->welcomed || !c->friend_seen_online) return false;
      }
      return true;
    });
  }
  // How `c`'s watcher (on the other gateway) sees c's user now.
  std::string SeenAs(Client* c) {
    return OnIo([&] { return c->watcher->friend_state; });
  }
  // Each watcher's view equals its friend's acknowledged state; the users
  // whose watcher is wrong.
  std::vector<std::string> WrongViews() {
    return OnIo([&] {
      std::vector<std::string> wrong;
      for (Client* c : all()) {
        if (c->closed) continue;
        const std::string want = Expected(c->activity);
        if (c->watcher->friend_state != want) wrong.push_back(c->user + " shows " + c->watcher->friend_state);
      }
      return wrong;
    });
  }

  // The client protocol.
  void Connect(Client* c) {
    c->ws.next_layer().async_connect(
        tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(c->port)),
        [this, c](beast::error_code ec) {
          if (ec) return Fail(c);
          c->ws.set_option(websocket::stream_base::decorator([c](websocket::request_type& req) {
            req.set(http::field::authorization, "Bearer " + Token(c->user));
          }));
          c->ws.async_handshake("127.0.0.1", "/presence/stream?device_id=web-1", [this, c](beast::error_code ec) {
            if (ec) return Fail(c);
            Send(c, absl::StrCat("{\"type\":\"subscribe\",\"id\":0,\"users\":[\"", c->friend_id, "\"]}"));
            Read(c);
            Beat(c);
          });
        });
  }
  void Beat(Client* c) {
    // Every 1.5 to 2 s: within the engines' 4 s timeout, at half the bus
    // load of the page's one a second (the mock cluster serves one batch of
    // records per partition per fetch).
    std::uniform_int_distribution<int> jitter(1500, 2000);
    c->beat.expires_after(std::chrono::milliseconds(jitter(rng_)));
    c->beat.async_wait([this, c](beast::error_code ec) {
      if (ec || c->closed || c->quiet) return;
      Send(c, "{\"type\":\"heartbeat\"}");
      Beat(c);
    });
  }
  void Bye(Client* c) {
    Send(c, "{\"type\":\"bye\"}");
    c->closed = true;
    c->beat.cancel();
  }
  void Send(Client* c, std::string msg) {
    c->out.push_back(std::move(msg));
    if (!c->writing) Write(c);
  }
  void Write(Client* c) {
    if (c->out.empty() || c->failed) {
      c->writing = false;
      return;
    }
    c->writing = true;
    auto msg = std::make_shared<std::string>(std::move(c->out.front()));
    c->out.erase(c->out.begin());
    c->ws.async_write(net::buffer(*msg), [this, c, msg](beast::error_code ec, size_t) {
      if (ec) return Fail(c);
      Write(c);
    });
  }
  void Read(Client* c) {
    c->ws.async_read(c->buf, [this, c](beast::error_code ec, size_t) {
      if (ec) {
        if (!c->closed) Fail(c);
        return;
      }
      const std::string msg = beast::buffers_to_string(c->buf.data());
      c->buf.consume(c->buf.size());
      OnMessage(c, msg);
      Read(c);
    });
  }
  void OnMessage(Client* c, const std::string& msg) {
    const TimePoint now = Clock::now();
    if (msg.rfind("{\"type\":\"welcome\"", 0) == 0) {
      c->welcomed = true;
      c->welcomed_at = now;
    } else if (msg.rfind("{\"type\":\"ack\"", 0) == 0) {
      int id = -1;
      const size_t at = msg.find("\"id\":");
      if (at != std::string::npos) id = std::atoi(msg.c_str() + at + 5);
      if (auto probe = c->probes.find(id); probe != c->probes.end()) {
        c->probe_ack_ms[id] = std::chrono::duration_cast<std::chrono::milliseconds>(now - probe->second).count();
        c->probes.erase(probe);
      } else if (c->flip && !c->flip->acked) {
        c->flip->acked = true;
        c->flip->ack_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - c->flip->sent).count();
        c->activity = c->flip->target;  // acknowledged: the truth now
      }
    } else if (msg.find("\"session_replaced\"") != std::string::npos) {
      c->replaced = true;
      c->closed = true;  // the close that follows is no failure
      c->beat.cancel();
    } else if (msg.rfind("{\"type\":\"error\"", 0) == 0) {
      ++errors_;
      if (errors_ <= 5) std::printf("CLUSTER error to %s: %s\n", c->user.c_str(), msg.c_str());
    } else {
      if (msg.find("{\"user_id\":\"" + c->friend_id + "\",\"removed\":true}") != std::string::npos) {
        c->friend_state = "removed";  // erased: as if it never existed
        c->friend_version = 0;
      }
      for (const Entry& e : EntriesOf(msg)) {
        if (e.user != c->friend_id || e.version <= c->friend_version) continue;
        c->friend_version = e.version;
        if (e.state != c->friend_state) c->friend_changed_at = now;
        c->friend_state = e.state;
        if (e.state == "online") c->friend_seen_online = true;
        Client* f = c->watcher;  // the friend's own client
        if (e.state == "offline" && c->friend_seen_online && !f->closed) ++c->false_offline;
        if (f->flip && !f->flip->seen && e.state == Expected(f->flip->target)) {
          f->flip->seen = true;
          f->flip->visible_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - f->flip->sent).count();
        }
      }
    }
  }
  void Fail(Client* c) {
    if (!c->failed) ++failures_;
    c->failed = true;
    c->beat.cancel();
  }

  int failures() { return OnIo([this] { return failures_; }); }
  int errors() { return OnIo([this] { return errors_; }); }
  const std::vector<std::unique_ptr<Client>>& a() const { return a_; }
  const std::vector<std::unique_ptr<Client>>& b() const { return b_; }

 private:
  net::io_context ioc_{1};
  net::executor_work_guard<net::io_context::executor_type> work_;
  std::vector<std::unique_ptr<Client>> a_, b_, extra_;
  std::mt19937 rng_{15};
  int failures_ = 0, errors_ = 0;
  std::thread thread_;
};

int64_t Percentile(std::vector<int64_t> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

// ---- The test -------------------------------------------------------------------

// On failure, the end of every node's log (the folder goes with the test).
struct LogsOnFailure {
  Cluster* cluster;
  ~LogsOnFailure() {
    if (!::testing::Test::HasFailure()) return;
    for (Node* n : cluster->All()) std::printf("---- %s:\n%s\n", n->id.c_str(), cluster->Log(n, 8000).c_str());
  }
};

TEST(Cluster, TwoGatewaysThreeEnginesFailingOverUnderLoad) {
  Cluster cluster;
  LogsOnFailure logs{&cluster};
  ASSERT_TRUE(cluster.StartAllAndShare());

  Clients clients(&cluster);
  const TimePoint ramp = Clock::now();
  clients.ConnectAll();
  const std::vector<Client*> all = clients.all();
  ASSERT_TRUE(WaitFor([&] { return clients.EveryoneSawTheirFriendOnline(); }, 60000))
      << "not every watcher saw its friend online: " << clients.OnIo([&] {
           int welcomed = 0, online = 0;
           std::string example;
           for (Client* c : all) {
             welcomed += c->welcomed;
             online += c->friend_seen_online;
             if (example.empty() && !c->friend_seen_online) example = c->user + " sees " + c->friend_state;
           }
           int failed = 0;
           for (Client* c : all) failed += c->failed;
           return absl::StrCat(welcomed, " welcomed, ", online, " saw online (", example, "), ", failed, " failed");
         });
  const int64_t ramp_ms = MsSince(ramp);
  EXPECT_EQ(clients.failures(), 0);

  // Before the faults: flips seen across the gateways.
  std::mt19937 rng(1);
  // Up to n users whose last change is older than the engines' dwell (1 s,
  // docs/design.md rule 7), so that a flip is published as it comes, and
  // whose last flip was seen.
  auto eligible = [&](size_t n) {
    return clients.OnIo([&] {
      std::vector<Client*> v = all, out;
      std::shuffle(v.begin(), v.end(), rng);
      const TimePoint now = Clock::now();
      for (Client* c : v) {
        if (out.size() == n) break;
        if (now - c->watcher->friend_changed_at < std::chrono::milliseconds(1100)) continue;
        if (c->flip && !c->flip->seen) continue;
        out.push_back(c);
      }
      return out;
    });
  };
  // n of them, once there are (the dwell of the last changes passes).
  auto pick = [&](size_t n) {
    std::vector<Client*> out;
    WaitFor([&] { return (out = eligible(n)).size() == n; }, 10000);
    return out;
  };
  // Before the faults: flips seen across the gateways. Each batch goes
  // AWAY, then (once the dwell passed) ONLINE again: the second is what a
  // watcher on the other gateway waits for when a friend comes back.
  std::vector<int64_t> online_visible, ack_latency;
  for (int round = 0; round < 2; ++round) {
    const std::vector<Client*> batch = pick(400);
    ASSERT_EQ(batch.size(), 400u);
    for (int step = 0; step < 2; ++step) {
      if (step == 1) {
        // The dwell of the first flip passes.
        ASSERT_TRUE(WaitFor(
            [&] {
              return clients.OnIo([&] {
                for (Client* c : batch) {
                  if (Clock::now() - c->watcher->friend_changed_at < std::chrono::milliseconds(1100)) return false;
                }
                return true;
              });
            },
            10000));
      }
      clients.FlipAll(batch);
      ASSERT_TRUE(WaitFor([&] { return clients.FlipsSeen(batch); }, 20000)) << "flips before the faults";
      clients.OnIo([&] {
        for (Client* c : batch) {
          if (c->flip->target == "active") online_visible.push_back(c->flip->visible_ms);
          ack_latency.push_back(c->flip->ack_ms);
        }
        return 0;
      });
    }
  }
  ASSERT_EQ(online_visible.size(), 800u);

  // The faults: under load, a SIGKILL, then a clean stop (SIGTERM), each
  // timed from the fault until every flip made just before and just after
  // it is seen across the gateways; then both restart and rejoin.
  // 20 in CI: a repetition takes 12 to 14 s on the shared 2-core machine
  // (most of it the mock's group timing: a crash is noticed after the 3.5 s
  // session timeout, rounded up to its 1 s check, and its rebalance waits
  // 2.5 s more). PRESENCE_CLUSTER_REPS=200 for a soak.
  const int reps = EnvInt("PRESENCE_CLUSTER_REPS", 20);
  std::vector<int64_t> rto, handover, takeover;
  // Returns the time to convergence (-1: none within 30 s); `taken` gets
  // the time until the other two engines serve all partitions (what the
  // group takes; the rest of the RTO is the new owners' catch-up).
  // `gone`: the engines down meanwhile (the SIGKILLed one, during the stop).
  auto fault = [&](Node* n, int signal, const char* what, int rep, std::vector<Node*> gone,
                   int64_t* taken) -> int64_t {
    gone.push_back(n);
    const std::vector<Client*> before = pick(200);
    EXPECT_FALSE(before.empty());
    clients.FlipAll(before);  // in flight at the fault
    const TimePoint at = Clock::now();
    kill(n->process->pid(), signal);
    std::vector<Client*> fresh;
    for (Client* c : eligible(200)) {
      if (std::find(before.begin(), before.end(), c) == before.end()) fresh.push_back(c);
    }
    clients.FlipAll(fresh);
    // Watched on a thread of its own: an engine busy taking partitions
    // answers /metrics late, which must not delay the convergence check.
    // Every 100 ms, as WaitFor says.
    std::atomic<bool> over{false};
    std::atomic<int64_t> taken_ms{-1};
    std::thread watch([&] {
      while (!over.load() && !cluster.SharedWithout(gone)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (!over.load()) taken_ms.store(MsSince(at));
    });
    const bool converged = WaitFor([&] { return clients.FlipsSeen(before) && clients.FlipsSeen(fresh); }, 30000);
    const int64_t ms = MsSince(at);
    WaitFor([&] { return taken_ms.load() >= 0; }, 10000);
    over.store(true);
    watch.join();
    *taken = taken_ms.load();
    EXPECT_TRUE(converged) << "rep " << rep << ": flips not seen 30 s after the " << what << " of " << n->id;
    std::printf("CLUSTER rep %d: %s of %s, %zu + %zu flips, all seen %lld ms after (the others served every "
                "partition after %lld ms)\n",
                rep, what, n->id.c_str(), before.size(), fresh.size(), static_cast<long long>(ms),
                static_cast<long long>(*taken));
    std::fflush(stdout);
    return converged ? ms : -1;
  };
  for (int rep = 0; rep < reps; ++rep) {
    const TimePoint rep_start = Clock::now();
    Node* k = cluster.engine(rep % 3);
    Node* s = cluster.engine((rep + 1) % 3);
    int64_t taken = -1;
    const int64_t r = fault(k, SIGKILL, "SIGKILL", rep, {}, &taken);
    ASSERT_GE(r, 0);
    rto.push_back(r);
    if (taken >= 0) takeover.push_back(taken);
    const int64_t h = fault(s, SIGTERM, "SIGTERM", rep, {k}, &taken);
    ASSERT_GE(h, 0);
    handover.push_back(h);
    k->process->Wait(10000);
    EXPECT_NE(s->process->Wait(20000), -1) << s->id << " did not stop on SIGTERM:\n" << cluster.Log(s);
    const TimePoint restart = Clock::now();
    cluster.Start(k);
    cluster.Start(s);
    ASSERT_TRUE(WaitFor([&] { return cluster.Shared(); }, 60000, 100))
        << "rep " << rep << ": the restarted engines never got partitions: " << absl::StrJoin(cluster.Owned(), ",");
    std::printf("CLUSTER rep %d: restarted engines shared the partitions %lld ms after the restart; "
                "the repetition took %lld ms\n",
                rep, static_cast<long long>(MsSince(restart)), static_cast<long long>(MsSince(rep_start)));
    std::fflush(stdout);
  }

  // The end: every view is the truth, through the fan-out and GET.
  std::vector<std::string> wrong;
  WaitFor([&] { return (wrong = clients.WrongViews()).empty(); }, 20000);
  EXPECT_TRUE(wrong.empty()) << wrong.size() << " wrong views, e.g. " << (wrong.empty() ? "" : wrong[0]);
  int false_offline = 0, get_wrong = 0;
  clients.OnIo([&] {
    for (Client* c : all) false_offline += c->false_offline;
    return 0;
  });
  const std::vector<std::pair<std::string, std::string>> truth = clients.OnIo([&] {
    std::vector<std::pair<std::string, std::string>> t;
    for (Client* c : all) t.emplace_back(c->user, Expected(c->activity));
    return t;
  });
  for (int g = 0; g < 2; ++g) {
    for (size_t i = 0; i < truth.size(); i += 500) {
      std::string ids;
      for (size_t j = i; j < std::min(truth.size(), i + 500); ++j) absl::StrAppend(&ids, j > i ? "," : "", truth[j].first);
      auto [status, body] = HttpGet(cluster.gateway(g)->port, "/presence?user_ids=" + ids, Token("op"));
      ASSERT_EQ(status, 200) << body;
      const std::vector<Entry> got = EntriesOf(body);
      ASSERT_EQ(got.size(), std::min<size_t>(500, truth.size() - i));
      for (size_t j = 0; j < got.size(); ++j) get_wrong += got[j].state != truth[i + j].second;
    }
  }
  EXPECT_EQ(get_wrong, 0) << "GET through a gateway disagrees with the acknowledged states";

  // A device that connects again through the other gateway: the gateway
  // of its older connection closes that one (session_replaced), as one
  // server does for a device that connects twice.
  {
    Client* before = clients.a().back().get();
    Client* again = clients.ConnectAgain(before, cluster.gateway(1)->port);
    const TimePoint at = Clock::now();
    const bool replaced = WaitFor([&] { return clients.OnIo([&] { return before->replaced; }); }, 10000);
    EXPECT_TRUE(replaced) << before->user << "'s older connection on gateway A was not closed";
    std::printf("CLUSTER a device connected again on gateway B: its connection on gateway A closed %lld ms after\n",
                static_cast<long long>(MsSince(at)));
    EXPECT_TRUE(clients.OnIo([&] { return again->welcomed && !again->replaced && !again->failed; }));
  }

  // A clean bye on gateway B reaches the watchers on gateway A as OFFLINE,
  // through the bus, well before the 4 s timeout.
  std::vector<Client*> leaving;
  for (int i = 0; i < std::min(50, cluster.pairs()); ++i) leaving.push_back(clients.b()[i].get());
  const TimePoint bye_at = Clock::now();
  clients.OnIo([&] {
    for (Client* c : leaving) clients.Bye(c);
    return 0;
  });
  const bool offline = WaitFor(
      [&] {
        return clients.OnIo([&] {
          for (Client* c : leaving) {
            if (c->watcher->friend_state != "offline") return false;
          }
          return true;
        });
      },
      10000);
  const int64_t bye_ms = MsSince(bye_at);
  EXPECT_TRUE(offline) << "a clean bye never showed OFFLINE on the other gateway";
  EXPECT_LT(bye_ms, 3000) << "a clean bye took a timeout's time: it did not travel the bus";

  const int64_t rto_p50 = Percentile(rto, 0.5), rto_p99 = Percentile(rto, 0.99);
  const int64_t vis_p50 = Percentile(online_visible, 0.5), vis_p99 = Percentile(online_visible, 0.99);
  std::printf("CLUSTER clients=%zu (2 gateways) engines=3 partitions=%d session_timeout_ms=%d reps=%d\n", all.size(),
              kPartitions, kSessionTimeoutMs, reps);
  std::printf("CLUSTER ramp_ms=%lld (every watcher saw its friend online)\n", static_cast<long long>(ramp_ms));
  std::printf("CLUSTER rto_ms p50=%lld p99=%lld max=%lld (SIGKILL of an engine to every flip seen, n=%zu)\n",
              static_cast<long long>(rto_p50), static_cast<long long>(rto_p99),
              static_cast<long long>(rto.empty() ? -1 : *std::max_element(rto.begin(), rto.end())), rto.size());
  std::printf("CLUSTER takeover_ms p50=%lld p99=%lld (SIGKILL to the other engines serving every partition)\n",
              static_cast<long long>(Percentile(takeover, 0.5)), static_cast<long long>(Percentile(takeover, 0.99)));
  std::printf("CLUSTER handover_ms p50=%lld p99=%lld (SIGTERM of an engine to every flip seen)\n",
              static_cast<long long>(Percentile(handover, 0.5)), static_cast<long long>(Percentile(handover, 0.99)));
  std::printf("CLUSTER online_visibility_ms p50=%lld p99=%lld (n=%zu, across gateways, before the faults)\n",
              static_cast<long long>(vis_p50), static_cast<long long>(vis_p99), online_visible.size());
  std::printf("CLUSTER ack_ms p50=%lld p99=%lld (activity sent to the gateway's ack: on the bus)\n",
              static_cast<long long>(Percentile(ack_latency, 0.5)),
              static_cast<long long>(Percentile(ack_latency, 0.99)));
  std::printf("CLUSTER false_offline=%d wrong_views=%zu get_wrong=%d client_failures=%d server_errors=%d "
              "bye_offline_ms=%lld\n",
              false_offline, wrong.size(), get_wrong, clients.failures(), clients.errors(),
              static_cast<long long>(bye_ms));
  std::fflush(stdout);
  EXPECT_EQ(false_offline, 0) << "a watcher saw a connected friend OFFLINE";
  EXPECT_EQ(clients.failures(), 0) << "WebSocket connections failed";
  EXPECT_EQ(clients.errors(), 0) << "the gateways answered errors";
  // Issue 15's targets (RTO p99 at most 2 x the session timeout + 1 s,
  // visibility p99 at most 300 ms) are figures of a quiet machine, printed
  // and kept in RESULTS.md, not asserted: a loaded CI machine stretches
  // them. What is asserted is above, and each failover within 30 s.
  std::printf("CLUSTER targets: rto_p99<=%d %s, online_visibility_p99<=300 %s\n", 2 * kSessionTimeoutMs + 1000,
              rto_p99 >= 0 && rto_p99 <= 2 * kSessionTimeoutMs + 1000 ? "met" : "MISSED",
              vis_p99 >= 0 && vis_p99 <= 300 ? "met" : "MISSED");
}

// Overrides and history through any gateway (issue 15: "GET, history and
// overrides work from any gateway"): an override set through one gateway
// and revoked through the other reaches its user's owner and shows on the
// watcher of the other gateway; the gateway refuses what the single server
// refuses, with the same errors; with PostgreSQL as the shared store, the
// history reads the same through both gateways, and rule 8 holds there (a
// viewer gets the public view, an invisible stretch as OFFLINE, no causes;
// a stranger gets 403). A few clients, about 15 s.
TEST(Cluster, OverridesAndHistoryThroughEitherGateway) {
#ifdef PRESENCE_CLUSTER_POSTGRES
  Cluster cluster(3, SharedStore::kPostgres);
#else
  Cluster cluster(3, SharedStore::kRedis);
#endif
  LogsOnFailure logs{&cluster};
  ASSERT_TRUE(cluster.StartAllAndShare());
  Clients clients(&cluster);
  clients.ConnectAll();
  ASSERT_TRUE(WaitFor([&] { return clients.EveryoneSawTheirFriendOnline(); }, 30000));
  const int port_a = cluster.gateway(0)->port, port_b = cluster.gateway(1)->port;
  Client* a0 = clients.a()[0].get();  // on gateway A, watched from gateway B
  Client* a1 = clients.a()[1].get();
  auto shows = [&](Client* c, const std::string& state) {
    return WaitFor([&] { return clients.SeenAs(c) == state; }, 10000);
  };

  // Set through gateway A: accepted with the id the gateway chose; the
  // watcher on gateway B sees DND.
  const TimePoint set_at = Clock::now();
  auto [set_status, set_body] =
      HttpCall(http::verb::post, port_a, "/presence/override", Token(a0->user), "{\"state\":\"dnd\"}");
  ASSERT_EQ(set_status, 202) << set_body;
  EXPECT_NE(set_body.find("\"user_id\":\"" + a0->user + "\",\"state\":\"dnd\",\"until_ms\":0,\"accepted\":true"),
            std::string::npos)
      << set_body;
  const size_t id_at = set_body.find("\"override_id\":");
  ASSERT_NE(id_at, std::string::npos) << set_body;
  const uint64_t id = std::strtoull(set_body.c_str() + id_at + 14, nullptr, 10);
  EXPECT_GE(id, uint64_t{1} << 52);
  EXPECT_LT(id, uint64_t{1} << 53) << "an id a JavaScript number holds exactly";
  EXPECT_TRUE(shows(a0, "dnd")) << a0->user << " shows " << clients.SeenAs(a0);
  std::printf("CLUSTER override set through gateway A seen DND on gateway B after %lld ms\n",
              static_cast<long long>(MsSince(set_at)));
  // GET through either gateway shows it as the single server does: the
  // override to a0's friend, and to a0 itself its stack with the id.
  const std::string dnd_shown = "\"override\":{\"state\":\"dnd\",\"until_ms\":0}";
  const std::string dnd_listed = absl::StrCat("\"overrides\":[{\"override_id\":", id, ",\"state\":\"dnd\"");
  auto get = [&](int port, Client* of, const std::string& viewer) {
    return HttpGet(port, "/presence?user_ids=" + of->user, Token(viewer)).second;
  };
  for (int port : {port_a, port_b}) {
    EXPECT_TRUE(WaitFor([&] { return get(port, a0, a0->user).find(dnd_listed) != std::string::npos; }, 10000))
        << get(port, a0, a0->user);
    EXPECT_NE(get(port, a0, a0->user).find(dnd_shown), std::string::npos) << get(port, a0, a0->user);
    const std::string to_friend = get(port, a0, a0->watcher->user);
    EXPECT_NE(to_friend.find(dnd_shown), std::string::npos) << to_friend;
    EXPECT_EQ(to_friend.find("\"overrides\""), std::string::npos) << "the stack is a0's own: " << to_friend;
  }
  // Revoked through gateway B, by its id: ONLINE again (after the engines'
  // 1 s dwell, docs/design.md rule 7).
  const TimePoint revoke_at = Clock::now();
  auto [revoke_status, revoke_body] = HttpCall(http::verb::delete_, port_b,
                                               absl::StrCat("/presence/override?override_id=", id), Token(a0->user));
  ASSERT_EQ(revoke_status, 202) << revoke_body;
  EXPECT_EQ(revoke_body, "{\"accepted\":true}");
  EXPECT_TRUE(shows(a0, "online")) << a0->user << " shows " << clients.SeenAs(a0);
  std::printf("CLUSTER override revoked through gateway B seen ONLINE on gateway B after %lld ms\n",
              static_cast<long long>(MsSince(revoke_at)));
  // Invisible through gateway B, for an hour: OFFLINE to the watcher, though
  // connected; cleared (all=true) through gateway A: ONLINE again.
  auto [inv_status, inv_body] = HttpCall(http::verb::post, port_b, "/presence/override", Token(a1->user),
                                         "{\"state\":\"invisible\",\"duration_ms\":3600000}");
  ASSERT_EQ(inv_status, 202) << inv_body;
  EXPECT_TRUE(shows(a1, "offline")) << a1->user << " shows " << clients.SeenAs(a1);
  // Through either gateway (rule 8): to its friend OFFLINE with no
  // override and no device; to itself its true state, the INVISIBLE
  // override and its device.
  for (int port : {port_a, port_b}) {
    EXPECT_TRUE(WaitFor(
        [&] { return get(port, a1, a1->user).find("\"override\":{\"state\":\"invisible\"") != std::string::npos; },
        10000))
        << get(port, a1, a1->user);
    const std::string own = get(port, a1, a1->user);
    EXPECT_NE(own.find("\"state\":\"online\""), std::string::npos) << own;
    EXPECT_NE(own.find("\"devices\":{\"web\":1"), std::string::npos) << own;
    const std::string to_friend = get(port, a1, a1->watcher->user);
    EXPECT_NE(to_friend.find("\"state\":\"offline\""), std::string::npos) << to_friend;
    EXPECT_NE(to_friend.find("\"override\":null"), std::string::npos) << to_friend;
    EXPECT_NE(to_friend.find("\"devices\":{\"web\":0"), std::string::npos) << to_friend;
    EXPECT_EQ(to_friend.find("invisible"), std::string::npos) << to_friend;
  }
  auto [clear_status, clear_body] =
      HttpCall(http::verb::delete_, port_a, "/presence/override?all=true", Token(a1->user));
  ASSERT_EQ(clear_status, 202) << clear_body;
  EXPECT_TRUE(shows(a1, "online")) << a1->user << " shows " << clients.SeenAs(a1);

  // Refused at the gateway as the single server refuses, nothing published.
  auto refused = [&](http::verb verb, const std::string& target, const std::string& body, int status,
                     const std::string& code) {
    auto [got, answer] = HttpCall(verb, port_a, target, Token(a0->user), body);
    EXPECT_EQ(got, status) << target << " " << body << ": " << answer;
    EXPECT_NE(answer.find("\"error\":\"" + code + "\""), std::string::npos) << answer;
  };
  refused(http::verb::post, "/presence/override", "{\"state\":\"asleep\"}", 400, "bad_message");
  refused(http::verb::post, "/presence/override", "{\"state\":\"dnd\",\"until_ms\":1}", 400, "bad_request");
  refused(http::verb::post, "/presence/override", "{\"state\":\"dnd\",\"user_id\":\"" + a1->user + "\"}", 403,
          "forbidden");
  refused(http::verb::delete_, "/presence/override?all=true&user_id=" + a1->user, "", 403, "forbidden");
  refused(http::verb::delete_, "/presence/override?override_id=x", "", 400, "bad_request");
  // A bulk revoke through gateway B (docs/operations.md): a command for
  // every partition, which each owner applies to its users. b0's AWAY and
  // b1's DND, set through gateway A within the window, go; b2's AWAY, set
  // after it, stays.
  auto wall_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  Client* b0 = clients.b()[0].get();
  Client* b1 = clients.b()[1].get();
  Client* b2 = clients.b()[2].get();
  // (The servers' clock is CLOCK_REALTIME_COARSE: a few ms behind this
  // one's at most; the window has 50 ms of room on each side.)
  const int64_t window_from = wall_ms() - 50;
  for (auto [c, state] : {std::pair{b0, "away"}, std::pair{b1, "dnd"}}) {
    auto [status, body] = HttpCall(http::verb::post, port_a, "/presence/override", Token(c->user),
                                   absl::StrCat("{\"state\":\"", state, "\"}"));
    ASSERT_EQ(status, 202) << body;
    EXPECT_TRUE(shows(c, state)) << c->user << " shows " << clients.SeenAs(c);
  }
  const int64_t window_to = wall_ms();
  ASSERT_TRUE(WaitFor([&] { return wall_ms() > window_to + 50; }, 1000));  // b2's is set after the window
  auto [late_status, late_body] =
      HttpCall(http::verb::post, port_a, "/presence/override", Token(b2->user), "{\"state\":\"away\"}");
  ASSERT_EQ(late_status, 202) << late_body;
  EXPECT_TRUE(shows(b2, "away")) << b2->user << " shows " << clients.SeenAs(b2);
  auto [bulk_status, bulk_body] =
      HttpCall(http::verb::post, port_b,
               absl::StrCat("/operator/overrides/revoke?set_from_ms=", window_from, "&set_to_ms=", window_to),
               Token("op"));
  ASSERT_EQ(bulk_status, 202) << bulk_body;
  EXPECT_EQ(bulk_body, absl::StrCat("{\"set_from_ms\":", window_from, ",\"set_to_ms\":", window_to,
                                    ",\"accepted\":true,\"partitions\":", kPartitions, "}"));
  EXPECT_TRUE(shows(b0, "online")) << b0->user << " shows " << clients.SeenAs(b0);
  EXPECT_TRUE(shows(b1, "online")) << b1->user << " shows " << clients.SeenAs(b1);
  EXPECT_TRUE(WaitFor([&] { return cluster.EnginesSum("presence_partition_commands_total{action=\"revoke_overrides\"}") == kPartitions; }, 10000));
  EXPECT_EQ(cluster.EnginesSum("presence_partition_command_changes_total{action=\"revoke_overrides\"}"), 2);
  EXPECT_EQ(clients.SeenAs(b2), "away");
  EXPECT_NE(get(port_b, b2, b2->user).find("\"overrides\":[{"), std::string::npos) << get(port_b, b2, b2->user);
  auto [b2_clear, b2_clear_body] = HttpCall(http::verb::delete_, port_b, "/presence/override?all=true", Token(b2->user));
  ASSERT_EQ(b2_clear, 202) << b2_clear_body;
  EXPECT_TRUE(shows(b2, "online")) << b2->user << " shows " << clients.SeenAs(b2);
  refused(http::verb::post, "/operator/overrides/revoke?set_from_ms=2&set_to_ms=1", "", 403, "forbidden");
  auto [bad_window, bad_window_body] =
      HttpCall(http::verb::post, port_b, "/operator/overrides/revoke?set_from_ms=2&set_to_ms=1", Token("op"));
  EXPECT_EQ(bad_window, 400) << bad_window_body;
  // A set past the user's most overrides (16) is refused at the gateway, as
  // one server refuses it, once the owner's change carried the 16 it holds;
  // cleared, it may set again.
  for (int i = 0; i < 16; ++i) {
    auto [status, body] =
        HttpCall(http::verb::post, port_a, "/presence/override", Token(b1->user), "{\"state\":\"away\"}");
    ASSERT_EQ(status, 202) << body;
  }
  auto held = [&] {
    const std::string own = get(port_b, b1, b1->user);
    size_t n = 0;
    for (size_t at = own.find("\"override_id\""); at != std::string::npos; at = own.find("\"override_id\"", at + 1)) ++n;
    return n;
  };
  EXPECT_TRUE(WaitFor([&] { return held() == 16; }, 10000)) << get(port_b, b1, b1->user);
  auto [over_status, over_body] =
      HttpCall(http::verb::post, port_b, "/presence/override", Token(b1->user), "{\"state\":\"dnd\"}");
  EXPECT_EQ(over_status, 429) << over_body;
  EXPECT_NE(over_body.find("\"limit_reached\""), std::string::npos) << over_body;
  auto [b1_clear, b1_clear_body] = HttpCall(http::verb::delete_, port_a, "/presence/override?all=true", Token(b1->user));
  ASSERT_EQ(b1_clear, 202) << b1_clear_body;
  EXPECT_TRUE(WaitFor([&] { return held() == 0; }, 10000)) << get(port_b, b1, b1->user);
  EXPECT_TRUE(shows(b1, "online")) << b1->user << " shows " << clients.SeenAs(b1);

  // The same through presencectl, for a window nothing was set in.
  auto ctl_folder = TempFolder::Make("presencectl").value();
  auto [ctl_revoke, ctl_revoke_out] =
      Ctl(ctl_folder->path(), port_b, {"overrides", "revoke", "--set-between", "1000", "2000"});
  EXPECT_EQ(ctl_revoke, 0) << ctl_revoke_out;
  EXPECT_EQ(ctl_revoke_out, absl::StrCat("accepted for ", kPartitions,
                                         " partition(s): every override set between 1970-01-01T00:00:01.000Z and "
                                         "1970-01-01T00:00:02.000Z is revoked by its owner\n"))
      << ctl_revoke_out;

  // A rebuild is each engine's own: it reloads the partitions it owns from
  // the shared store and reads the bus on from their committed offsets;
  // nobody sees a change. A gateway holds no user to reload.
  auto [rebuild_status, rebuild_out] = Ctl(ctl_folder->path(), cluster.engine(0)->port, {"rebuild"});
  EXPECT_EQ(rebuild_status, 0) << rebuild_out;
  EXPECT_EQ(rebuild_out.rfind("rebuilt: ", 0), 0u) << rebuild_out;
  EXPECT_EQ(HttpCall(http::verb::post, cluster.engine(0)->port, "/operator/rebuild", Token(a0->user)).first, 403);
  auto [gw_rebuild, gw_rebuild_body] = HttpCall(http::verb::post, port_a, "/operator/rebuild", Token("op"));
  EXPECT_EQ(gw_rebuild, 404) << gw_rebuild_body;
  EXPECT_NE(gw_rebuild_body.find("\"not_an_engine\""), std::string::npos) << gw_rebuild_body;
  EXPECT_EQ(clients.SeenAs(a0), "online");
  EXPECT_EQ(clients.SeenAs(a1), "online");

  // An erasure through gateway B of a user of gateway A (docs/design.md
  // section 4), after its clean logout: its watcher on gateway B is told
  // to drop it, and GET through either gateway answers it unknown, as if
  // it never existed. An engine node serves no such route (clients and
  // operators go through a gateway).
  Client* a2 = clients.a()[2].get();
  clients.OnIo([&] {
    clients.Bye(a2);
    return 0;
  });
  EXPECT_TRUE(shows(a2, "offline")) << a2->user << " shows " << clients.SeenAs(a2);
  auto [erase_status, erase_body] =
      HttpCall(http::verb::post, port_b, "/operator/erase?user_id=" + a2->user, Token("op"));
  ASSERT_EQ(erase_status, 202) << erase_body;
  EXPECT_EQ(erase_body, "{\"erased\":\"" + a2->user + "\",\"accepted\":true}");
  EXPECT_TRUE(shows(a2, "removed")) << a2->user << " shows " << clients.SeenAs(a2);
  const std::string never = "\"known\":false,\"state\":\"offline\",\"last_seen_ms\":0";
  for (int port : {port_a, port_b}) {
    for (const std::string& viewer : {a2->watcher->user, std::string("op")}) {
      EXPECT_TRUE(WaitFor(
          [&] { return HttpGet(port, "/presence?user_ids=" + a2->user, Token(viewer)).second.find(never) != std::string::npos; },
          10000))
          << HttpGet(port, "/presence?user_ids=" + a2->user, Token(viewer)).second;
    }
  }
  auto [engine_erase, engine_erase_body] =
      HttpCall(http::verb::post, cluster.engine(0)->port, "/operator/erase?user_id=" + a2->user, Token("op"));
  EXPECT_EQ(engine_erase, 404) << engine_erase_body;
  EXPECT_NE(engine_erase_body.find("\"not_a_gateway\""), std::string::npos) << engine_erase_body;
#ifdef PRESENCE_CLUSTER_POSTGRES
  for (int port : {port_a, port_b}) {
    auto [status, body] = HttpGet(port, "/presence/history?user_id=" + a2->user, Token("op"));
    EXPECT_EQ(status, 200) << body;
    EXPECT_TRUE(StatesOf(body).empty()) << "the history kept the erased user: " << body;
  }
#endif

#ifdef PRESENCE_CLUSTER_POSTGRES
  // History through either gateway, from PostgreSQL. a0's own (full): the
  // DND with its cause. Its friend b0 (public, rule 8): the DND, no causes.
  // a1 seen by its friend: the invisible hour as OFFLINE, never showing it
  // was a choice; a1 itself sees it was online all along. A stranger: 403.
  auto history = [&](int port, Client* of, const std::string& viewer) {
    return HttpGet(port, "/presence/history?user_id=" + of->user, Token(viewer));
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        auto [status, body] = history(port_b, a1, a1->user);
        return status == 200 && StatesOf(body).size() >= 3;  // online, invisible, back
      },
      10000, 100))
      << history(port_b, a1, a1->user).second;
  for (int port : {port_a, port_b}) {
    SCOPED_TRACE(port == port_a ? "gateway A" : "gateway B");
    auto [own_status, own] = history(port, a0, a0->user);
    ASSERT_EQ(own_status, 200) << own;
    EXPECT_NE(own.find("\"full\":true"), std::string::npos) << own;
    EXPECT_NE(own.find("\"state\":\"dnd\",\"self_state\":\"dnd\",\"cause\":\"override\""), std::string::npos) << own;
    auto [pub_status, pub] = history(port, a0, clients.b()[0]->user);
    ASSERT_EQ(pub_status, 200) << pub;
    EXPECT_NE(pub.find("\"full\":false"), std::string::npos) << pub;
    EXPECT_NE(pub.find("\"state\":\"dnd\""), std::string::npos) << pub;
    EXPECT_EQ(pub.find("\"cause\""), std::string::npos) << pub;
    auto [inv_pub_status, inv_pub] = history(port, a1, clients.b()[1]->user);
    ASSERT_EQ(inv_pub_status, 200) << inv_pub;
    const std::vector<std::string> states = StatesOf(inv_pub);
    EXPECT_NE(std::find(states.begin(), states.end(), "offline"), states.end()) << inv_pub;
    EXPECT_EQ(inv_pub.find("invisible"), std::string::npos) << inv_pub;
    EXPECT_EQ(inv_pub.find("self_state"), std::string::npos) << inv_pub;
    auto [inv_own_status, inv_own] = history(port, a1, a1->user);
    ASSERT_EQ(inv_own_status, 200) << inv_own;
    EXPECT_NE(inv_own.find("\"state\":\"offline\",\"self_state\":\"online\",\"cause\":\"override\""),
              std::string::npos)
        << inv_own;
    EXPECT_EQ(history(port, a1, a0->user).first, 403) << "a0 is no friend of a1";
  }
#endif

  // Gateway B is drained through gateway A (the runbook's "Draining a
  // gateway"): every owner disconnects, cleanly, the devices of its
  // partitions that came through B; B, reading the command, disconnects
  // them too, tells its clients session_replaced and closes them; the
  // watchers on A see B's users go offline. A's users stay. (That the
  // owners' drain alone does it: PartitionCommands.* in scaleout_test.)
  auto [bad_drain, bad_drain_body] =
      HttpCall(http::verb::post, port_a, "/operator/drain?gateway=" + std::string(200, 'g'), Token("op"));
  EXPECT_EQ(bad_drain, 400) << bad_drain_body;
  const TimePoint drain_at = Clock::now();
  auto [drain_status, drain_out] = Ctl(ctl_folder->path(), port_a, {"drain", cluster.gateway(1)->id});
  ASSERT_EQ(drain_status, 0) << drain_out;
  EXPECT_EQ(drain_out, absl::StrCat("accepted for ", kPartitions, " partition(s): each engine drains its devices of gateway ",
                                    cluster.gateway(1)->id, "\n"));
  const auto b_all = [&](const std::function<bool(Client*)>& pred) {
    return clients.OnIo([&] {
      for (const auto& c : clients.b()) {
        if (!pred(c.get())) return false;
      }
      return true;
    });
  };
  // (a2, who logged out, watches nothing any more.)
  EXPECT_TRUE(WaitFor(
      [&] { return b_all([](Client* c) { return c->watcher->closed || c->watcher->friend_state == "offline"; }); },
      15000));
  std::printf("CLUSTER drain of gateway B through gateway A: its %zu users offline on gateway A after %lld ms\n",
              clients.b().size(), static_cast<long long>(MsSince(drain_at)));
  EXPECT_TRUE(WaitFor([&] { return b_all([](Client* c) { return c->replaced; }); }, 15000));
  // Every owner applied its copy and drained B's devices of its partition:
  // B's own disconnects follow the copy it read, in the same partition.
  EXPECT_TRUE(WaitFor(
      [&] { return cluster.EnginesSum("presence_partition_commands_total{action=\"drain\"}") == kPartitions; },
      10000));
  EXPECT_EQ(cluster.EnginesSum("presence_partition_command_changes_total{action=\"drain\"}"),
            static_cast<int64_t>(clients.b().size()));
  EXPECT_EQ(clients.SeenAs(a0), "online");
  auto [no_gateway, no_gateway_body] = HttpCall(http::verb::post, port_a, "/operator/drain", Token("op"));
  EXPECT_EQ(no_gateway, 400) << no_gateway_body;
  EXPECT_EQ(clients.failures(), 0);
  EXPECT_EQ(clients.errors(), 0);
}

// A heartbeat that changes nothing waits on its gateway up to
// --bus-heartbeat-flush-ms before the bus takes it (its ack says when it
// did); a change of activity goes within --bus-flush-ms and takes along
// what waits.
TEST(Cluster, AHeartbeatThatChangesNothingWaitsForTheSlowerFlush) {
  Cluster cluster(/*pairs=*/1);
  LogsOnFailure logs{&cluster};
  Node* engine = cluster.engine(0);
  engine->id = "engine-1";
  engine->args = cluster.Args("engine", engine->id);
  cluster.Start(engine);
  for (int g = 0; g < 2; ++g) {
    Node* n = cluster.gateway(g);
    n->id = g == 0 ? "gateway-a" : "gateway-b";
    n->args = cluster.Args("gateway", n->id);
    n->args.insert(n->args.end(), {"--bus-heartbeat-flush-ms", "1000"});
    cluster.Start(n);
  }
  ASSERT_TRUE(WaitFor([&] { return cluster.Owned()[0] == kPartitions; }, 60000));
  ASSERT_TRUE(WaitFor([&] { return cluster.Answers(cluster.gateway(0)) && cluster.Answers(cluster.gateway(1)); },
                      30000));
  Clients clients(&cluster);
  clients.ConnectAll();
  ASSERT_TRUE(WaitFor([&] { return clients.EveryoneSawTheirFriendOnline(); }, 30000));
  Client* a0 = clients.a()[0].get();
  clients.OnIo([&] {
    a0->quiet = true;  // only the probes below queue on gateway A
    a0->beat.cancel();
    return 0;
  });
  auto acked = [&](int id) {
    EXPECT_TRUE(WaitFor([&] { return clients.AckMs(a0, id) >= 0; }, 10000)) << "no ack of " << id;
    return clients.AckMs(a0, id);
  };
  const int64_t idle = acked(clients.Probe(a0, "{\"type\":\"activity\",\"activity\":\"idle\""));
  EXPECT_LT(idle, 900) << "a change of activity waited for the heartbeats' flush";
  // Nothing waits now: the heartbeat's flush is the one it scheduled.
  const int64_t beat = acked(clients.Probe(a0, "{\"type\":\"heartbeat\""));
  EXPECT_GE(beat, 1000) << "a heartbeat that changes nothing went before its flush";
  const int beat_id = clients.Probe(a0, "{\"type\":\"heartbeat\"");
  const int active_id = clients.Probe(a0, "{\"type\":\"activity\",\"activity\":\"active\"");
  const int64_t active = acked(active_id), beat_before = acked(beat_id);
  EXPECT_LT(active, 900);
  EXPECT_LT(beat_before, 900) << "the activity's flush took the heartbeat before it along";
  std::printf("CLUSTER acks with --bus-heartbeat-flush-ms 1000: activity %lld ms, heartbeat alone %lld ms, "
              "heartbeat then activity %lld and %lld ms\n",
              static_cast<long long>(idle), static_cast<long long>(beat), static_cast<long long>(beat_before),
              static_cast<long long>(active));
  EXPECT_TRUE(WaitFor([&] { return clients.SeenAs(a0) == "online"; }, 10000)) << clients.SeenAs(a0);
  EXPECT_EQ(clients.failures(), 0);
  EXPECT_EQ(clients.errors(), 0);
}

// A SIGTERM stops a node within its --stop-timeout even when no broker is
// left to hand its partitions over to: the clean stop would wait on Kafka
// calls (each up to the bus's 10 s request timeout, on the io thread). A
// second signal does not wait for the timeout. Each signal comes while the
// engine's io thread is held by such a call (its reads at the partitions'
// ends ask the gone leader at least once a second), which the test sees as
// /healthz going unanswered.
TEST(Cluster, AnEngineStopsWithinItsStopTimeoutWhenKafkaIsGone) {
  Cluster cluster;
  LogsOnFailure logs{&cluster};
  Node* timed = cluster.engine(0);
  Node* twice = cluster.engine(1);
  for (auto [n, timeout] : {std::pair{timed, "2"}, std::pair{twice, "60"}}) {
    n->id = n == timed ? "engine-1" : "engine-2";
    n->args = cluster.Args("engine", n->id);
    n->args.insert(n->args.end(), {"--stop-timeout", timeout});
    cluster.Start(n);
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::vector<int64_t> owned = cluster.Owned();
        return owned[0] > 0 && owned[1] > 0 && owned[0] + owned[1] == kPartitions;
      },
      60000));
  cluster.KillKafka();
  auto held = [&](Node* n) {
    const auto second = std::chrono::seconds(1);
    return WaitFor([&] { return !AnswersWithin(n->port, second) && !AnswersWithin(n->port, second); }, 30000);
  };
  ASSERT_TRUE(held(timed)) << "engine-1's io thread was never held by the gone broker";

  TimePoint at = Clock::now();
  kill(timed->process->pid(), SIGTERM);
  int status = timed->process->Wait(15000);
  ASSERT_NE(status, -1) << "still running 15 s after SIGTERM";
  std::printf("CLUSTER stop without Kafka: %lld ms (--stop-timeout 2)\n", static_cast<long long>(MsSince(at)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  EXPECT_NE(cluster.Log(timed).find("the clean stop took longer than 2 s"), std::string::npos);

  ASSERT_TRUE(held(twice)) << "engine-2's io thread was never held by the gone broker";
  kill(twice->process->pid(), SIGTERM);
  ASSERT_TRUE(WaitFor([&] { return cluster.Log(twice).find("stopping") != std::string::npos; }, 10000));
  at = Clock::now();
  kill(twice->process->pid(), SIGTERM);
  status = twice->process->Wait(10000);
  ASSERT_NE(status, -1) << "still running 10 s after a second SIGTERM";
  std::printf("CLUSTER second SIGTERM to exit: %lld ms\n", static_cast<long long>(MsSince(at)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  EXPECT_NE(cluster.Log(twice).find("again: exiting without the clean stop"), std::string::npos);
}

}  // namespace
