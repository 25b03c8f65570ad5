// File: examples/presence_server/server.h
//
// presence_server: the seed design's HTTP and WebSocket API over a
// presence::Engine, a presence::Fanout and a presence::FileStore, on
// Boost.Beast. One thread runs everything: the sockets, the engine's Tick
// every 100 ms (on an io_context timer), the fan-out's delivery (a
// presence::Sink that turns each DiffBatch into JSON for its WebSocket) and
// the simulated clients. docs/example-server.md documents the API.
//
//   presence_server::ServerOptions o;
//   o.port = 0;                                   // any free port
//   o.access.AddConfig("user alice tok-a bob\nuser bob tok-b alice\n");
//   auto server = presence_server::Server::Create(std::move(o)).value();
//   std::thread t([&] { server->Run(); });
//   ... talk to 127.0.0.1:server->port() ...
//   server->Stop();
//   t.join();
#ifndef PRESENCE_EXAMPLES_SERVER_SERVER_H_
#define PRESENCE_EXAMPLES_SERVER_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "access.h"
#include "cluster.h"
#include "presence/fanout.h"
#include "presence/file_store.h"
#include "presence/options.h"

namespace presence_server {

struct ServerOptions {
  std::string bind_address = "127.0.0.1";
  uint16_t port = 8080;  // 0: any free port (see Server::port())

  // https and wss on the port, with this certificate chain and key (PEM
  // files); both empty: plain http and ws.
  std::string tls_cert_file;
  std::string tls_key_file;

  // "ADDRESS:PORT": /metrics (and /healthz) also on this plain-HTTP
  // listener, with no token: for a scraper on a private address. On the
  // main port /metrics always needs an operator's token.
  std::string metrics_bind;

  // The Host names the server answers to; empty: by default, loopback names
  // only when bound to loopback (a DNS-rebinding page is refused), any name
  // otherwise. Others get 421.
  std::vector<std::string> allowed_hosts;
  // The origins ("https://chat.example.com") whose pages may open a
  // WebSocket; empty: the page's own (the Host asked for, http or https).
  // A request without Origin (not a browser) is not checked.
  std::vector<std::string> allowed_origins;
  // Addresses of proxies in front (nginx): for a request from one of them,
  // the client is the last address of its X-Forwarded-For, so that the
  // failed-login limit is per client, not per proxy. From anyone else the
  // header is ignored (a client could forge it).
  std::vector<std::string> trusted_proxies;

  // The file store's folder (created when missing), and its sync policy.
  // kInterval: a crash of the process loses nothing, an OS crash at most the
  // last 100 ms; the event loop never waits for an fdatasync.
  std::string data_dir = "presence-data";
  presence::SyncPolicy sync = presence::SyncPolicy::kInterval;

  // Where index.html, app.js and style.css are read from at start.
  std::string web_dir;

  // Tokens, users, friends, topics, operators (access.h).
  Access access;

  // Synthetic clients run inside the server, through the engine's API.
  int simulate = 0;
  std::string simulate_topic = "workspace";
  uint64_t seed = 1;

  // Stop by itself after this many seconds (0: run until Stop()).
  double exit_after_s = 0;
  // Print one line per connection and error to stderr.
  bool verbose = false;

  int64_t tick_ms = 100;

  // ---- Limits (each answered with a clear error; see docs/example-server.md)
  // A WebSocket message above this is discarded with a "message_too_big"
  // error; the connection stays. Above max_frame_bytes the connection is
  // closed with status 1009.
  size_t max_message_bytes = 16 * 1024;
  size_t max_frame_bytes = 1 << 20;
  size_t max_http_body_bytes = 16 * 1024;
  // Users plus topics one connection may watch.
  size_t max_subscriptions = 1000;
  // Bytes queued for a WebSocket client that has not read them yet; past
  // it, or when one write has waited write_stall_ms, the client is a slow
  // consumer: it gets a "slow_consumer" error and is disconnected.
  size_t max_queue_bytes = 1 << 20;
  int64_t write_stall_ms = 10000;
  // SO_SNDBUF of WebSocket sockets (0: the system's default, which grows to
  // megabytes): what the kernel holds for a client beyond max_queue_bytes.
  int socket_send_buffer = 0;
  // Messages a client may send: a token bucket (per second, burst).
  double message_rate = 20;
  double message_burst = 60;
  // Entries in one history answer, oldest first. An answer that had more says
  // "truncated":true and "next_from_ms", where the next page starts.
  size_t max_history_entries = 10000;
  // Open connections, HTTP and WebSocket, before auth and after: in all,
  // from one address, and WebSockets of one user. Past the first two a new
  // connection is closed at accept; past the third it gets
  // "too_many_connections". At start the process's file descriptor limit is
  // raised to fit max_connections, or max_connections lowered to fit it.
  size_t max_connections = 50000;
  size_t max_connections_per_ip = 256;
  size_t max_connections_per_user = 16;
  // Time to read one HTTP request (headers and body; a TLS handshake counts
  // too), and to wait for the next on a keep-alive connection.
  int64_t request_timeout_ms = 10000;
  // A WebSocket client that sent no Authorization header must send its
  // {"type":"auth"} message within this.
  int64_t auth_timeout_ms = 5000;
  // Failed logins (a wrong token) one address may make: a burst, refilled
  // at a rate; past it, every login from there is refused with 429 until
  // the bucket refills.
  int failed_auth_burst = 10;
  double failed_auth_per_minute = 10;
  // A WebSocket client that sends no message for this long is disconnected
  // (it should send a heartbeat every second); pings do not count.
  int64_t idle_timeout_ms = 30000;

  // A node of a cluster (cluster.h, docs/scale-out.md): its role, Kafka and
  // the shared store. Role kNone (the default): one process, file store.
  ClusterOptions cluster;

  presence::Options engine;  // store and history are set to the file store's (or the cluster's)
  presence::FanoutOptions fanout;
};

class Server {
 public:
  // Opens the file store, creates the engine and the fan-out, binds the
  // port. Errors: the store's (a locked or unreadable folder), a port in use,
  // a missing web folder.
  static absl::StatusOr<std::unique_ptr<Server>> Create(ServerOptions options);
  ~Server();

  uint16_t port() const;
  // The --metrics-bind listener's port (0 without one).
  uint16_t metrics_port() const;
  // "http://127.0.0.1:8080/" (https with TLS)
  std::string url() const;

  // Serves on the calling thread until Stop() (or exit_after_s), then closes
  // every connection and makes a last Tick, so that the store holds the end.
  void Run();
  // From any thread.
  void Stop();

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace presence_server

#endif  // PRESENCE_EXAMPLES_SERVER_SERVER_H_
