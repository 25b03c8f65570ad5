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

#include "absl/status/statusor.h"
#include "access.h"
#include "presence/fanout.h"
#include "presence/file_store.h"
#include "presence/options.h"

namespace presence_server {

struct ServerOptions {
  std::string bind_address = "127.0.0.1";
  uint16_t port = 8080;  // 0: any free port (see Server::port())

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
  // Stop on SIGINT and SIGTERM (the program sets it; tests do not).
  bool handle_signals = false;
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
  size_t max_connections = 50000;
  // A WebSocket client silent this long is disconnected (it should send a
  // heartbeat every second).
  int64_t idle_timeout_ms = 30000;

  presence::Options engine;  // store and history are set to the file store's
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
  // "http://127.0.0.1:8080/"
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
