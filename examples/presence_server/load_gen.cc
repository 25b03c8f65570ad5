// presence_server_load: a bounded WebSocket load on a presence_server over
// loopback (examples/presence_server/load.sh runs it).
//
// N clients connect (at most --parallel handshakes at a time), each as user
// load-NNNNN with token load-token-00000NNNNN (in an Authorization header), subscribes to its --friends next users,
// and sends a heartbeat every second with +-20% jitter, reading everything
// the server sends. After the ramp it holds for --seconds, then closes every
// connection. With --server-pid it reads the server's CPU time and resident
// memory from /proc before, after the ramp and after the hold, and prints
// them per connection.
//
//   presence_server_load --port P --clients N [--seconds S] [--friends F]
//                        [--parallel K] [--server-pid PID]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

struct Flags {
  int port = 0;
  int clients = 1000;
  int seconds = 30;
  int friends = 5;
  int parallel = 200;
  int server_pid = 0;
};

struct Stats {
  int connected = 0;
  int failed = 0;
  int closed_early = 0;
  uint64_t beats = 0;
  uint64_t messages = 0;
  uint64_t bytes = 0;
  uint64_t errors = 0;  // {"type":"error"} messages
};

struct ProcSample {
  double cpu_s = 0;   // utime + stime
  long rss_kb = 0;
};

ProcSample Sample(int pid) {
  ProcSample s;
  if (pid <= 0) return s;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t close = text.rfind(')');
  if (close != std::string::npos) {
    std::istringstream rest(text.substr(close + 2));
    std::string field;
    std::vector<std::string> f;
    while (rest >> field) f.push_back(field);
    // After the name: state(0) ... utime is field 14 overall, index 11 here.
    if (f.size() > 12) {
      s.cpu_s = (std::stod(f[11]) + std::stod(f[12])) / sysconf(_SC_CLK_TCK);
    }
  }
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kb = std::atol(line.c_str() + 6);
  }
  return s;
}

class Client : public std::enable_shared_from_this<Client> {
 public:
  Client(net::io_context& ioc, int index, const Flags& flags, Stats* stats, std::mt19937* rng)
      : ws_(ioc), timer_(ioc), index_(index), flags_(flags), stats_(stats), rng_(rng) {}

  template <typename Done>
  void Start(Done done) {
    auto self = shared_from_this();
    ws_.next_layer().async_connect(
        tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(flags_.port)),
        [self, done](beast::error_code ec) {
          if (ec) {
            ++self->stats_->failed;
            done();
            return;
          }
          char token[48];
          std::snprintf(token, sizeof token, "load-token-%010d", self->index_);
          self->ws_.set_option(websocket::stream_base::decorator(
              [auth = std::string("Bearer ") + token](websocket::request_type& req) {
                req.set(http::field::authorization, auth);
              }));
          const char* target = "/presence/stream?device_id=d1&platform=web";
          self->ws_.async_handshake("127.0.0.1", target, [self, done](beast::error_code ec2) {
            if (ec2) {
              ++self->stats_->failed;
              done();
              return;
            }
            ++self->stats_->connected;
            self->open_ = true;
            done();
            self->Subscribe();
            self->Read();
            self->ScheduleBeat();
          });
        });
  }

  void Close() {
    stopping_ = true;
    timer_.cancel();
    if (!open_) return;
    beast::error_code ec;
    ws_.next_layer().shutdown(tcp::socket::shutdown_both, ec);
    ws_.next_layer().close(ec);
  }

 private:
  void Subscribe() {
    std::string msg = "{\"type\":\"subscribe\",\"users\":[";
    for (int k = 1; k <= flags_.friends; ++k) {
      char id[32];
      std::snprintf(id, sizeof id, "%s\"load-%05d\"", k > 1 ? "," : "", (index_ + k - 1) % flags_.clients + 1);
      msg += id;
    }
    msg += "]}";
    Write(std::move(msg));
  }

  void ScheduleBeat() {
    std::uniform_int_distribution<int> jitter(800, 1200);
    timer_.expires_after(std::chrono::milliseconds(jitter(*rng_)));
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->stopping_) return;
      self->Write("{\"type\":\"heartbeat\"}");
      ++self->stats_->beats;
      self->ScheduleBeat();
    });
  }

  void Write(std::string msg) {
    if (writing_) return;  // a heartbeat that finds a write in flight is skipped
    writing_ = true;
    out_ = std::move(msg);
    ws_.async_write(net::buffer(out_), [self = shared_from_this()](beast::error_code, size_t) {
      self->writing_ = false;
    });
  }

  void Read() {
    ws_.async_read(buf_, [self = shared_from_this()](beast::error_code ec, size_t n) {
      if (ec) {
        if (!self->stopping_) ++self->stats_->closed_early;
        self->open_ = false;
        self->timer_.cancel();
        return;
      }
      ++self->stats_->messages;
      self->stats_->bytes += n;
      if (n > 16 && std::string_view(static_cast<const char*>(self->buf_.data().data()), 16) ==
                        "{\"type\":\"error\",") {
        ++self->stats_->errors;
      }
      self->buf_.consume(n);
      self->Read();
    });
  }

  websocket::stream<tcp::socket> ws_;
  net::steady_timer timer_;
  beast::flat_buffer buf_;
  std::string out_;
  int index_;
  const Flags& flags_;
  Stats* stats_;
  std::mt19937* rng_;
  bool writing_ = false;
  bool open_ = false;
  bool stopping_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    int* target = a == "--port" ? &f.port : a == "--clients" ? &f.clients : a == "--seconds" ? &f.seconds
                : a == "--friends" ? &f.friends : a == "--parallel" ? &f.parallel
                : a == "--server-pid" ? &f.server_pid : nullptr;
    if (target == nullptr || !absl::SimpleAtoi(argv[i + 1], target)) {
      std::fprintf(stderr, "usage: presence_server_load --port P --clients N [--seconds S] [--friends F] "
                           "[--parallel K] [--server-pid PID]\n");
      return 2;
    }
  }
  if (f.port <= 0 || f.clients <= 0) {
    std::fprintf(stderr, "presence_server_load: --port and --clients are needed\n");
    return 2;
  }
  f.friends = std::min(f.friends, f.clients - 1);

  net::io_context ioc(1);
  Stats stats;
  std::mt19937 rng(42);
  std::vector<std::shared_ptr<Client>> clients;
  clients.reserve(f.clients);
  for (int i = 1; i <= f.clients; ++i) clients.push_back(std::make_shared<Client>(ioc, i, f, &stats, &rng));

  const ProcSample before = Sample(f.server_pid);
  const ProcSample self_before = Sample(getpid());
  auto t0 = std::chrono::steady_clock::now();

  // Ramp: keep `parallel` handshakes in flight.
  size_t next = 0;
  int in_flight = 0;
  std::function<void()> launch = [&] {
    while (in_flight < f.parallel && next < clients.size()) {
      ++in_flight;
      clients[next++]->Start([&] {
        --in_flight;
        launch();
      });
    }
  };
  launch();
  while (stats.connected + stats.failed < f.clients &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(600)) {
    ioc.run_for(std::chrono::milliseconds(50));
  }
  double ramp_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ioc.run_for(std::chrono::seconds(3));  // subscriptions and snapshots settle
  const ProcSample ramped = Sample(f.server_pid);
  const uint64_t beats0 = stats.beats, msgs0 = stats.messages, bytes0 = stats.bytes;
  auto t1 = std::chrono::steady_clock::now();
  ioc.run_for(std::chrono::seconds(f.seconds));
  double hold_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  const ProcSample held = Sample(f.server_pid);
  const ProcSample self_held = Sample(getpid());

  for (auto& c : clients) c->Close();
  ioc.run_for(std::chrono::seconds(1));

  std::printf("clients            %d connected, %d failed, %d still connecting, %d closed by the server early\n",
              stats.connected, stats.failed, f.clients - stats.connected - stats.failed, stats.closed_early);
  std::printf("ramp               %.1f s (%.0f connections/s)\n", ramp_s, stats.connected / ramp_s);
  std::printf("hold               %.1f s: %.0f heartbeats/s sent, %.0f messages/s received (%.0f KB/s)\n",
              hold_s, (stats.beats - beats0) / hold_s, (stats.messages - msgs0) / hold_s,
              (stats.bytes - bytes0) / hold_s / 1024);
  std::printf("error messages     %llu\n", static_cast<unsigned long long>(stats.errors));
  if (f.server_pid > 0 && stats.connected > 0) {
    double cpu = (held.cpu_s - ramped.cpu_s) / hold_s;
    std::printf("server RSS         %.1f MB before, %.1f MB with %d connections: %.1f KB per connection\n",
                before.rss_kb / 1024.0, held.rss_kb / 1024.0, stats.connected,
                double(held.rss_kb - before.rss_kb) / stats.connected);
    std::printf("server CPU, ramp   %.1f s: %.0f us per connection set up (connect, subscribe, snapshot)\n",
                ramped.cpu_s - before.cpu_s, (ramped.cpu_s - before.cpu_s) * 1e6 / stats.connected);
    std::printf("server CPU         %.1f%% of one core while holding: %.2f us per heartbeat, "
                "%.1f us per connection per second\n",
                cpu * 100, cpu * 1e6 / ((stats.beats - beats0) / hold_s), cpu * 1e6 / stats.connected);
    std::printf("load generator CPU %.1f s\n", self_held.cpu_s - self_before.cpu_s);
  }
  return stats.connected == f.clients && stats.closed_early == 0 ? 0 : 1;
}
