// File: examples/presence_server/server_internal.h
//
// The insides of presence_server, shared by its three units:
//   * server.cc: the listener and the limits: Server::Impl's start, accept
//     loop, WebSocket admission, tick, simulated clients and shutdown;
//   * http_routes.cc: the HTTP session and the routes of the seed design's
//     API (GET /presence, overrides, history, /metrics, the page);
//   * ws_session.cc: one WebSocket client (heartbeats, subscriptions, the
//     slow-consumer and rate bounds) and the JSON of diff batches;
//   * operator_routes.cc: the operator API (/operator/...).
// Everything runs on one thread: the io_context's. Sessions are owned by
// shared_ptrs held by their pending operations and, for WebSocket sessions,
// by the server's table (until Finish). Nothing here takes a lock.
#ifndef PRESENCE_EXAMPLES_SERVER_SERVER_INTERNAL_H_
#define PRESENCE_EXAMPLES_SERVER_SERVER_INTERNAL_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "client_message.h"
#include "flex_stream.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/prober.h"
#include "presence/v1/presence.pb.h"
#include "server.h"

namespace presence_server {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace pb = ::presence::v1;
using presence::Activity;
using presence::DeviceHandle;
using presence::DisconnectKind;
using presence::SubscriberId;

// Milliseconds on the steady clock (timeouts, the slow-consumer stall).
int64_t MonoMs();

// The JSON of one encoded part of a batch: its list users and its topic
// sections, each a comma-separated run of objects.
struct PartJson {
  std::string users;
  std::string topics;
};

// A URL's path and its decoded query parameters.
struct Target {
  std::string path;
  std::vector<std::pair<std::string, std::string>> params;

  const std::string* Get(absl::string_view key) const {
    for (const auto& [k, v] : params) {
      if (k == key) return &v;
    }
    return nullptr;
  }
};

// A request target split into its path and decoded parameters; nullopt when
// its percent-encoding is broken.
std::optional<Target> ParseTarget(absl::string_view target);

// The token a request carries: its Authorization bearer, or "".
std::string TokenOf(const http::request<http::string_body>& req);

// `text` for a log line: printable ASCII as is, every other byte as \xHH
// (a client's id can forge no line).
std::string LogSafe(absl::string_view text);

// {"error":code,"message":message<extra>}: the body of every HTTP error.
std::string ErrorJson(absl::string_view code, absl::string_view message, absl::string_view extra = {});

// A JSON array of strings.
std::string JsonStringArray(const std::vector<std::string>& v);

// Counters the server exports on /metrics beside the library's.
struct ServerMetrics {
  uint64_t http_requests = 0;
  absl::flat_hash_map<int, uint64_t> http_by_status;
  uint64_t ws_accepted = 0;
  uint64_t ws_rejected = 0;
  uint64_t ws_messages_in = 0;
  uint64_t ws_messages_out = 0;
  uint64_t ws_bytes_out = 0;
  uint64_t batches_out = 0;
  absl::flat_hash_map<std::string, uint64_t> client_errors;  // by code
  uint64_t slow_consumers = 0;
  uint64_t idle_disconnects = 0;
  // Connections closed at accept, by reason ("total", "per_ip").
  absl::flat_hash_map<std::string, uint64_t> refused;
  uint64_t tls_handshake_failures = 0;
  uint64_t auth_failures = 0;
  uint64_t auth_throttled = 0;
  uint64_t ticks = 0;
  double tick_seconds_sum = 0;
  double tick_seconds_max = 0;
};

// The status and JSON body of an operator route (operator_routes.cc).
struct OperatorReply {
  http::status status;
  std::string body;
};

class WsSession;

// Hashes an address (Asio gives none) for the per-address tables.
struct IpHash {
  size_t operator()(const net::ip::address& a) const {
    if (a.is_v4()) return absl::HashOf(a.to_v4().to_uint());
    net::ip::address_v6::bytes_type b = a.to_v6().to_bytes();
    return absl::HashOf(absl::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
  }
};

// One open connection counted against the caps (max_connections, per IP)
// from its accept until this is destroyed; it moves from the HTTP session
// to the WebSocket session on an upgrade.
class ConnectionSlot {
 public:
  ConnectionSlot(Server::Impl* server, net::ip::address ip) : server_(server), ip_(std::move(ip)) {}
  ConnectionSlot(const ConnectionSlot&) = delete;
  ConnectionSlot& operator=(const ConnectionSlot&) = delete;
  ~ConnectionSlot();
  const net::ip::address& ip() const { return ip_; }

 private:
  Server::Impl* server_;
  net::ip::address ip_;
};

// What a request came through.
struct Peer {
  std::shared_ptr<ConnectionSlot> slot;
  // The client a WebSocket's upgrade came from (ClientIp); HTTP requests
  // ask ClientIp each, as a proxy's keep-alive connection carries many.
  net::ip::address client;
  bool tls = false;
  bool metrics_listener = false;  // --metrics-bind: /metrics and /healthz only
};

// Reads HTTP requests on `stream` (after its TLS handshake, if it has one)
// and answers them (http_routes.cc); hands a WebSocket upgrade to
// server->StartWebSocket.
void ServeHttp(Server::Impl* server, FlexStream stream, Peer peer);

// ---- The server -------------------------------------------------------------

class Server::Impl : public presence::Sink, public presence::Prober {
 public:
  explicit Impl(ServerOptions options)
      : opts_(std::move(options)), acceptor_(ioc_), metrics_acceptor_(ioc_), tick_timer_(ioc_), flush_timer_(ioc_), exit_timer_(ioc_),
        rng_(opts_.seed) {}

  absl::Status Init();
  void Run();
  void Stop() {
    net::post(ioc_, [this] { BeginShutdown(); });
  }
  uint16_t port() const { return port_; }
  uint16_t metrics_port() const { return metrics_port_; }

  // presence::Sink: called from Engine::Tick, on the io thread.
  void Deliver(SubscriberId subscriber, const presence::Batch& batch) override;

  // Used by sessions.
  const ServerOptions& opts() const { return opts_; }
  presence::Engine* engine() { return engine_.get(); }
  presence::Fanout* fanout() { return fanout_.get(); }
  const Access& access() const { return opts_.access; }
  ServerMetrics& metrics() { return metrics_; }
  bool shutting_down() const { return shutting_down_; }
  uint64_t NextSessionId() {
    // Grows across restarts (the store remembers session ids): time-based.
    uint64_t t = static_cast<uint64_t>(presence::SystemClock()->NowMs()) << 12;
    last_session_id_ = std::max(last_session_id_ + 1, t);
    return last_session_id_;
  }
  uint64_t NextConnectionNumber() { return ++connections_; }
  void CountError(absl::string_view code) { ++metrics_.client_errors[std::string(code)]; }
  net::ssl::context* tls() { return tls_.get(); }

  // The device calls of WebSocket sessions, and GET: to the engine, or on a
  // cluster node to the bus and the cluster's view (cluster.h). `s` names
  // the device, its session, and the signal's source and activity.
  absl::StatusOr<DeviceHandle> ConnectDevice(const presence::Signal& s);
  // `done` hears the outcome: at once from the engine; on a cluster node
  // once the bus took the signal (at its flush). `changed`: the signal
  // changes the device's activity or source (a cluster node sends it at
  // once; a heartbeat that changes nothing may wait, ScheduleFlush).
  void BeatDevice(DeviceHandle h, const presence::Signal& s, bool changed,
                  std::function<void(const absl::Status&)> done);
  void DisconnectDevice(DeviceHandle h, const presence::Signal& s, DisconnectKind kind);
  std::vector<presence::UserPresence> GetUsers(absl::Span<const absl::string_view> users,
                                               absl::string_view viewer);
  // Whether this node serves clients (every node but a cluster engine).
  bool ServesClients() const { return cluster_ == nullptr || cluster_->serves_clients(); }
  Cluster* cluster() { return cluster_.get(); }

  http::response<http::string_body> HandleHttp(const http::request<http::string_body>& req, const Peer& peer);
  void StartWebSocket(FlexStream stream, http::request<http::string_body> req, Peer peer);
  void Register(SubscriberId id, std::shared_ptr<WsSession> s) { sessions_[id] = std::move(s); }
  void Unregister(SubscriberId id) { sessions_.erase(id); }

  // The user `token` belongs to, under the failed-auth limit of `ip`: an
  // address that failed failed_auth_burst times is refused for a while
  // (kResourceExhausted) before the token is even looked at; a wrong token
  // is kUnauthenticated and charges the address's bucket (a missing one is
  // kUnauthenticated too, but no guess, and charges nothing).
  absl::StatusOr<std::string> Authenticate(absl::string_view token, const net::ip::address& ip);
  // A WebSocket connection of `user` opens (false: the user has
  // max_connections_per_user already) or closes.
  bool AdmitUserConnection(const std::string& user);
  void ReleaseUserConnection(const std::string& user);
  // Whether the request's Host is one this server answers to (a DNS
  // rebinding page sends its own), and whether a browser's Origin may open a
  // WebSocket here.
  bool HostAllowed(const http::request<http::string_body>& req) const;
  bool OriginAllowed(const http::request<http::string_body>& req) const;
  void ReleaseConnection(const net::ip::address& ip);
  // Who sent `req`: the connection's address, or for a trusted proxy the
  // last address in X-Forwarded-For.
  net::ip::address ClientIp(const http::request<http::string_body>& req, const Peer& peer) const;
  // The WebSocket session that holds a user's device now: a newer one
  // replaces (and closes) the one before at once.
  void ClaimDevice(const std::string& user, const std::string& device, const std::shared_ptr<WsSession>& s);
  void ReleaseDevice(const std::string& user, const std::string& device, const WsSession* s);
  // A cluster gateway: another node published a signal of `s`'s device; a
  // connection of it here with an older session is closed (Replaced).
  void ReplacedElsewhere(const presence::Signal& s);
  // An operator drained this cluster gateway (Cluster::Attach): its
  // connections of the users of `partition` that began before
  // `issued_at_ms` + kDrainHeardAfterMs are closed (WsSession::Drained).
  void DrainedHere(int64_t issued_at_ms, uint32_t partition);

  // presence::Prober (docs/design.md rule 9), called from Engine::Tick on the
  // io thread: the WebSocket connection that holds the probed device gets a
  // ping frame, and its pong answers the probe (ws_session.cc).
  void Probe(const presence::ProbeRequest& request) override;

 private:
  absl::Status InitTls();
  absl::Status RaiseFdLimit();
  absl::Status Listen(tcp::acceptor* acceptor, const std::string& address, uint16_t port, const char* flag);
  void DoAccept(tcp::acceptor* acceptor, bool metrics_listener);
  void ScheduleTick();
  // A cluster node publishes what its sessions queued ClusterOptions::flush_ms
  // after it was queued, or heartbeat_flush_ms when `soon` is false (a
  // heartbeat that changes nothing), whichever comes first (Cluster::Flush):
  // one bus call for all of them, so that each partition gets one batch of
  // records rather than one record at a time (a reader fetches a batch per
  // partition per round trip).
  void ScheduleFlush(bool soon);
  void OnTick();
  void BeginShutdown();
  void WaitForSessions();
  void Sweep();
  void SimStep(int64_t now);
  std::string Metrics() const;
  std::string BatchToJson(const presence::Batch& batch);

  // HTTP handlers; `viewer` is the authenticated user.
  http::response<http::string_body> GetPresence(const Target& t, const std::string& viewer);
  http::response<http::string_body> PostOverride(const http::request<http::string_body>& req,
                                                 const std::string& viewer);
  http::response<http::string_body> DeleteOverride(const Target& t, const std::string& viewer);
  http::response<http::string_body> PublishRevoke(const std::string& user, presence::OverrideOp op, uint64_t id);
  http::response<http::string_body> GetHistory(const Target& t, const std::string& viewer);
  http::response<http::string_body> GetDeviceHistory(const std::string& user, const std::string& device,
                                                     int64_t from, int64_t to, const std::string& viewer);
  // /operator/...: drain, rebuild, erase, bulk revoke (operator_routes.cc);
  // `caller` is the authenticated user.
  OperatorReply HandleOperator(const http::request<http::string_body>& req, const Target& t,
                               const std::string& caller);
  OperatorReply Erase(const Target& t);  // POST /operator/erase
  // A cluster gateway's POST /operator/drain and /operator/overrides/revoke.
  OperatorReply PublishForEveryPartition(const Target& t);

  ServerOptions opts_;
  net::io_context ioc_{1};
  std::unique_ptr<net::ssl::context> tls_;
  tcp::acceptor acceptor_;
  tcp::acceptor metrics_acceptor_;
  net::steady_timer tick_timer_;
  net::steady_timer flush_timer_;  // a cluster node's publishes (ScheduleFlush)
  net::steady_timer exit_timer_;
  std::chrono::steady_clock::time_point next_tick_;
  std::chrono::steady_clock::time_point shutdown_deadline_;
  uint16_t port_ = 0;
  uint16_t metrics_port_ = 0;
  uint64_t fd_limit_ = 0;
  std::vector<net::ip::address> trusted_proxies_;
  bool shutting_down_ = false;
  uint64_t last_session_id_ = 0;
  uint64_t connections_ = 0;

  // The caps: open connections in all, by address, WebSocket connections by
  // user; and the failed-auth bucket of each address that failed lately.
  size_t open_connections_ = 0;
  absl::flat_hash_map<net::ip::address, size_t, IpHash> open_by_ip_;
  absl::flat_hash_map<std::string, size_t> ws_by_user_;
  absl::flat_hash_map<std::pair<std::string, std::string>, std::weak_ptr<WsSession>> ws_by_device_;
  struct AuthBucket {
    double tokens = 0;
    int64_t refilled_ms = 0;
  };
  absl::flat_hash_map<net::ip::address, AuthBucket, IpHash> auth_failures_;

  std::unique_ptr<presence::FileStore> file_store_;  // null on a cluster node with a shared store
  std::unique_ptr<Cluster> cluster_;                  // null: one process
  bool flush_scheduled_ = false;
  std::chrono::steady_clock::time_point flush_at_;  // when the scheduled flush runs
  std::unique_ptr<presence::Engine> engine_;
  std::unique_ptr<presence::Fanout> fanout_;
  absl::flat_hash_map<SubscriberId, std::shared_ptr<WsSession>> sessions_;
  // JSON of shared batch parts, valid for one Tick (a topic's section is
  // turned into JSON once for all of its subscribers).
  absl::flat_hash_map<const std::string*, std::pair<std::shared_ptr<const std::string>, PartJson>>
      part_cache_;
  absl::flat_hash_map<std::string, std::string> static_files_;  // path -> body
  ServerMetrics metrics_;

  // Simulated clients (--simulate).
  struct SimClient {
    std::string user_id;
    std::string device_id;
    presence::Platform platform = presence::Platform::kWeb;
    DeviceHandle handle;
    bool connected = false;
    int64_t next_beat = 0;
    int64_t down_until = 0;     // disconnected until
    int64_t silent_until = 0;   // connected but its heartbeats are lost
    Activity activity = Activity::kActive;
  };
  std::vector<SimClient> sims_;
  int64_t sim_start_ = -1;
  std::mt19937_64 rng_;
};

// ---- WebSocket session -------------------------------------------------------

class WsSession : public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(Server::Impl* server, FlexStream stream, Peer peer)
      : server_(server), ws_(std::move(stream)), peer_(std::move(peer)), auth_timer_(ws_.get_executor()) {}

  // Accepts the upgrade. `user` is the one the request's Authorization
  // header proved; without it, the client's first message must be "auth"
  // within auth_timeout_ms.
  void Start(http::request<http::string_body> req, std::optional<std::string> user, std::string device_id,
             presence::Platform platform);

  // Queues one text message; the slow-consumer bound applies.
  void Send(std::string msg);

  void SendError(absl::string_view code, absl::string_view message, absl::string_view id_json);

  // Closes with `code` once what is queued has been written.
  void CloseWith(websocket::close_code code, std::string reason);

  void ForceClose();

  // Called every second by the server's sweep (for admitted sessions): the
  // idle timeout, the close and write stalls.
  void Check(int64_t now);

  const std::string& user_id() const { return user_id_; }

  // Sends a ping frame whose payload is the probe id, when this connection
  // carries device session `session_id`; a pong with that payload answers
  // the probe (Engine::AnswerProbe).
  void Ping(uint64_t session_id, uint64_t probe_id);

  // A newer connection took this one's device: say so and close.
  void Replaced();
  // An operator drained this cluster gateway: disconnect the device
  // cleanly, tell the client session_replaced (it connects again) and close.
  void Drained();
  // The device session this connection carries (0 before it is admitted).
  uint64_t session_id() const { return session_id_; }

 private:
  void OnAccept(beast::error_code ec);

  // The client is who it says: count it against its user's cap, subscribe,
  // connect its device, say welcome.
  void Admit();

  void Authenticate(const ClientMessage& m);

  void SlowConsumer(absl::string_view why);

  void DoWrite();

  void OnWrite(beast::error_code ec, size_t n);

  void DoClose();

  void DoRead();

  void OnRead(beast::error_code ec);

  bool RateLimited();

  void Handle(absl::string_view text);

  void Beat(const ClientMessage& m);
  // What became of a heartbeat or activity message with request id `id_json`.
  void OnBeat(const absl::Status& st, const std::string& id_json);

  void Subscribe(const ClientMessage& m);

  void Unsubscribe(const ClientMessage& m);

  void SendAck(absl::string_view type, absl::string_view id_json);

  // A signal of this session's device (it views this session's ids).
  presence::Signal DeviceSignal(presence::Source source) const;

  void SendErrorWith(absl::string_view code, absl::string_view message, absl::string_view id_json,
                     absl::string_view extra);

  // Once, however the connection ended: the device disconnects (abruptly,
  // unless the client said bye: then it already did, cleanly) and the
  // subscriber is closed.
  void Finish();

  Server::Impl* server_;
  websocket::stream<FlexStream> ws_;
  Peer peer_;
  net::steady_timer auth_timer_;  // until the "auth" message, when there was no header
  beast::flat_buffer buffer_;
  bool discarding_ = false;
  size_t discarded_ = 0;

  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  int64_t write_started_ms_ = 0;
  bool closing_ = false;
  bool close_started_ = false;
  int64_t close_deadline_ms_ = 0;
  websocket::close_reason close_reason_;
  bool finished_ = false;
  bool registered_ = false;
  bool admitted_ = false;        // authenticated and counted against its user's cap
  int64_t last_message_ms_ = 0;  // the idle timeout counts from here

  std::string user_id_, device_id_;
  presence::Platform platform_ = presence::Platform::kWeb;
  uint64_t session_id_ = 0;
  DeviceHandle handle_;
  SubscriberId sub_ = 0;
  Activity activity_ = Activity::kActive;
  presence::Source source_ = presence::Source::kApp;  // of the last heartbeat
  absl::flat_hash_set<std::string> users_, topics_;
  double tokens_ = 0;
  int64_t last_refill_ms_ = 0;
  // Probes (Ping): the ids pinged and not yet answered (the last few), and
  // one that waits for the ping in flight (Beast sends one at a time).
  void SendPing(uint64_t probe_id);
  std::deque<uint64_t> probes_;
  bool pinging_ = false;
  uint64_t ping_waiting_ = 0;
};

}  // namespace presence_server

#endif  // PRESENCE_EXAMPLES_SERVER_SERVER_INTERNAL_H_
