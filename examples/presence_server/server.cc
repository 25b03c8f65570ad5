// File: examples/presence_server/server.cc
//
// Everything runs on one thread: the io_context's. Sessions are owned by
// shared_ptrs held by their pending operations and, for WebSocket sessions,
// by the server's table (until Finish). Nothing here takes a lock.
#include "server.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <deque>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <utility>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client_message.h"
#include "json.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/v1/presence.pb.h"

namespace presence_server {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

namespace pb = ::presence::v1;
using presence::Activity;
using presence::DeviceHandle;
using presence::DisconnectKind;
using presence::SubscriberId;

int64_t MonoMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

const char* StateWire(presence::State s) {
  switch (s) {
    case presence::State::kOffline: return "offline";
    case presence::State::kAway: return "away";
    case presence::State::kOnline: return "online";
    case presence::State::kDnd: return "dnd";
  }
  return "offline";
}

const char* PbStateWire(int s) {
  switch (s) {
    case pb::STATE_AWAY: return "away";
    case pb::STATE_ONLINE: return "online";
    case pb::STATE_DND: return "dnd";
    default: return "offline";
  }
}

void AppendDevices(std::string* out, const presence::DeviceSummary& d) {
  absl::StrAppend(out, "{\"web\":", d.count(presence::Platform::kWeb),
                  ",\"desktop\":", d.count(presence::Platform::kDesktop),
                  ",\"mobile\":", d.count(presence::Platform::kMobile),
                  ",\"console\":", d.count(presence::Platform::kConsole),
                  ",\"other\":", d.count(presence::Platform::kOther), "}");
}

void AppendPbUser(std::string* out, const pb::UserState& u) {
  out->append("{\"user_id\":");
  AppendJsonString(out, u.user_id());
  if (u.removed()) {
    out->append(",\"removed\":true}");
    return;
  }
  const pb::DeviceSummary& d = u.devices();
  absl::StrAppend(out, ",\"state\":\"", PbStateWire(u.state()), "\",\"last_seen_ms\":", u.last_seen_ms(),
                  ",\"version\":", u.version(), ",\"devices\":{\"web\":", d.web(),
                  ",\"desktop\":", d.desktop(), ",\"mobile\":", d.mobile(),
                  ",\"console\":", d.console(), ",\"other\":", d.other(), "}}");
}

// The JSON of one encoded part of a batch: its list users and its topic
// sections, each a comma-separated run of objects.
struct PartJson {
  std::string users;
  std::string topics;
};

PartJson PartToJson(const std::string& bytes) {
  PartJson out;
  pb::DiffBatch part;
  if (!part.ParseFromString(bytes)) return out;  // never: the library encoded it
  for (const pb::UserState& u : part.users()) {
    if (!out.users.empty()) out.users.push_back(',');
    AppendPbUser(&out.users, u);
  }
  for (const pb::TopicSection& t : part.topics()) {
    if (!out.topics.empty()) out.topics.push_back(',');
    out.topics.append("{\"topic\":");
    AppendJsonString(&out.topics, t.topic());
    absl::StrAppend(&out.topics, ",\"full\":", t.full() ? "true" : "false");
    if (t.left()) out.topics.append(",\"left\":true");
    if (t.has_counts()) {
      absl::StrAppend(&out.topics, ",\"counts\":{\"online\":", t.counts().online(),
                      ",\"away\":", t.counts().away(), ",\"dnd\":", t.counts().dnd(),
                      ",\"offline\":", t.counts().offline(), "}");
    }
    out.topics.append(",\"users\":[");
    bool first = true;
    for (const pb::UserState& u : t.users()) {
      if (!first) out.topics.push_back(',');
      first = false;
      AppendPbUser(&out.topics, u);
    }
    out.topics.append("]}");
  }
  return out;
}

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

bool PercentDecode(absl::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+') {
      out->push_back(' ');
    } else if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int v = 0;
      for (int k = 1; k <= 2; ++k) {
        char h = in[i + k];
        v <<= 4;
        if (h >= '0' && h <= '9') v |= h - '0';
        else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
        else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
        else return false;
      }
      out->push_back(static_cast<char>(v));
      i += 2;
    } else {
      out->push_back(c);
    }
  }
  return true;
}

std::optional<Target> ParseTarget(absl::string_view target) {
  Target t;
  size_t q = target.find('?');
  if (!PercentDecode(target.substr(0, q), &t.path)) return std::nullopt;
  if (q == absl::string_view::npos) return t;
  for (absl::string_view pair : absl::StrSplit(target.substr(q + 1), '&', absl::SkipEmpty())) {
    size_t eq = pair.find('=');
    std::string k, v;
    if (!PercentDecode(pair.substr(0, eq), &k)) return std::nullopt;
    if (eq != absl::string_view::npos && !PercentDecode(pair.substr(eq + 1), &v)) return std::nullopt;
    t.params.emplace_back(std::move(k), std::move(v));
  }
  return t;
}

std::string ErrorJson(absl::string_view code, absl::string_view message, absl::string_view extra = {}) {
  std::string out = "{\"error\":";
  AppendJsonString(&out, code);
  out.append(",\"message\":");
  AppendJsonString(&out, message);
  out.append(extra.data(), extra.size());
  out.append("}");
  return out;
}

std::string JsonStringArray(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out.push_back(',');
    AppendJsonString(&out, v[i]);
  }
  out.push_back(']');
  return out;
}

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
  uint64_t ticks = 0;
  double tick_seconds_sum = 0;
  double tick_seconds_max = 0;
};

}  // namespace

class WsSession;
class HttpSession;

// ---- The server -------------------------------------------------------------

class Server::Impl : public presence::Sink {
 public:
  explicit Impl(ServerOptions options)
      : opts_(std::move(options)), acceptor_(ioc_), tick_timer_(ioc_), exit_timer_(ioc_),
        signals_(ioc_), rng_(opts_.seed) {}

  absl::Status Init();
  void Run();
  void Stop() {
    net::post(ioc_, [this] { BeginShutdown(); });
  }
  uint16_t port() const { return port_; }

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

  http::response<http::string_body> HandleHttp(const http::request<http::string_body>& req);
  void StartWebSocket(tcp::socket socket, http::request<http::string_body> req);
  void Register(SubscriberId id, std::shared_ptr<WsSession> s) { sessions_[id] = std::move(s); }
  void Unregister(SubscriberId id) { sessions_.erase(id); }

 private:
  void DoAccept();
  void ScheduleTick();
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
  http::response<http::string_body> GetHistory(const Target& t, const std::string& viewer);

  ServerOptions opts_;
  net::io_context ioc_{1};
  tcp::acceptor acceptor_;
  net::steady_timer tick_timer_;
  net::steady_timer exit_timer_;
  net::signal_set signals_;
  std::chrono::steady_clock::time_point next_tick_;
  std::chrono::steady_clock::time_point shutdown_deadline_;
  uint16_t port_ = 0;
  bool shutting_down_ = false;
  uint64_t last_session_id_ = 0;
  uint64_t connections_ = 0;

  std::unique_ptr<presence::FileStore> file_store_;
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
  WsSession(Server::Impl* server, tcp::socket socket)
      : server_(server), ws_(std::move(socket)) {}

  void Start(http::request<http::string_body> req, std::string user_id, std::string device_id,
             presence::Platform platform) {
    user_id_ = std::move(user_id);
    device_id_ = std::move(device_id);
    platform_ = platform;
    const ServerOptions& o = server_->opts();
    tokens_ = o.message_burst;
    last_refill_ms_ = MonoMs();
    beast::get_lowest_layer(ws_).expires_never();
    websocket::stream_base::timeout to{};
    to.handshake_timeout = std::chrono::seconds(10);
    to.idle_timeout = std::chrono::milliseconds(o.idle_timeout_ms);
    to.keep_alive_pings = true;
    ws_.set_option(to);
    ws_.read_message_max(o.max_frame_bytes);
    ws_.auto_fragment(false);
    ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
      res.set(http::field::server, "presence_server");
    }));
    ws_.async_accept(req, [self = shared_from_this()](beast::error_code ec) { self->OnAccept(ec); });
  }

  void OnAccept(beast::error_code ec) {
    if (ec) {
      ++server_->metrics().ws_rejected;
      return;
    }
    if (server_->shutting_down()) {
      ForceClose();
      return;
    }
    presence::SubscriberOptions so;
    so.owner_user_id = user_id_;
    so.sink = server_;
    absl::StatusOr<SubscriberId> sub = server_->fanout()->Subscribe(so);
    if (!sub.ok()) {
      SendError("internal", std::string(sub.status().message()), "");
      CloseWith(websocket::close_code::try_again_later, "cannot subscribe");
      return;
    }
    sub_ = *sub;
    server_->Register(sub_, shared_from_this());
    registered_ = true;
    ++server_->metrics().ws_accepted;

    session_id_ = server_->NextSessionId();
    presence::Signal s;
    s.user_id = user_id_;
    s.device_id = device_id_;
    s.session_id = session_id_;
    s.platform = platform_;
    s.source = presence::Source::kApp;
    s.activity = Activity::kActive;
    s.gateway = "presence_server";
    s.trace_id = session_id_;
    absl::StatusOr<DeviceHandle> h = server_->engine()->Connect(s);
    if (!h.ok()) {
      SendError(h.status().code() == absl::StatusCode::kResourceExhausted ? "too_many_devices" : "bad_request",
                std::string(h.status().message()), "");
      CloseWith(websocket::close_code::policy_error, "cannot connect the device");
      return;
    }
    handle_ = *h;

    const Access& a = server_->access();
    std::vector<std::string> friends = a.FriendsOf(user_id_);
    std::vector<std::string> topics = a.TopicsOf(user_id_);
    const ServerOptions& o = server_->opts();
    std::string hello = "{\"type\":\"welcome\",\"user_id\":";
    AppendJsonString(&hello, user_id_);
    hello.append(",\"device_id\":");
    AppendJsonString(&hello, device_id_);
    absl::StrAppend(&hello, ",\"session_id\":", session_id_, ",\"subscriber_id\":", sub_,
                    ",\"operator\":", a.IsOperator(user_id_) ? "true" : "false",
                    ",\"friends\":", JsonStringArray(friends), ",\"topics\":", JsonStringArray(topics),
                    ",\"heartbeat_interval_ms\":", server_->engine()->options().app.interval_ms,
                    ",\"server_time_ms\":", server_->engine()->NowMs(),
                    ",\"limits\":{\"max_message_bytes\":", o.max_message_bytes,
                    ",\"max_subscriptions\":", o.max_subscriptions,
                    ",\"max_queue_bytes\":", o.max_queue_bytes, ",\"message_rate\":", o.message_rate,
                    ",\"message_burst\":", o.message_burst, "}}");
    Send(std::move(hello));
    if (o.verbose) {
      std::fprintf(stderr, "ws: %s/%s connected (subscriber %llu)\n", user_id_.c_str(),
                   device_id_.c_str(), static_cast<unsigned long long>(sub_));
    }
    DoRead();
  }

  // Queues one text message; the slow-consumer bound applies.
  void Send(std::string msg) {
    if (closing_ || finished_) return;
    const ServerOptions& o = server_->opts();
    if (queued_bytes_ + msg.size() > o.max_queue_bytes) {
      SlowConsumer("its unread messages passed the queue limit");
      return;
    }
    queued_bytes_ += msg.size();
    queue_.push_back(std::move(msg));
    if (!writing_) DoWrite();
  }

  void SendError(absl::string_view code, absl::string_view message, absl::string_view id_json) {
    server_->CountError(code);
    std::string e = "{\"type\":\"error\",\"code\":";
    AppendJsonString(&e, code);
    e.append(",\"message\":");
    AppendJsonString(&e, message);
    if (!id_json.empty()) absl::StrAppend(&e, ",\"id\":", id_json);
    e.append("}");
    Send(std::move(e));
  }

  // Closes with `code` once what is queued has been written.
  void CloseWith(websocket::close_code code, std::string reason) {
    if (closing_ || finished_) return;
    closing_ = true;
    close_deadline_ms_ = MonoMs() + 3000;
    close_reason_ = websocket::close_reason(code, reason);
    if (!writing_) DoClose();
  }

  void ForceClose() {
    beast::error_code ec;
    beast::get_lowest_layer(ws_).socket().close(ec);
    Finish();
  }

  // Called every second by the server's sweep.
  void Check(int64_t now) {
    if (finished_) return;
    if (closing_ && now > close_deadline_ms_) {
      ForceClose();
    } else if (writing_ && now - write_started_ms_ > server_->opts().write_stall_ms) {
      ++server_->metrics().slow_consumers;
      server_->CountError("slow_consumer");
      ForceClose();  // the socket is not draining: no error can be sent
    }
  }

  const std::string& user_id() const { return user_id_; }

 private:
  void SlowConsumer(absl::string_view why) {
    ++server_->metrics().slow_consumers;
    server_->CountError("slow_consumer");
    // Drop what waits (keep a message being written), then say why and close.
    while (queue_.size() > (writing_ ? 1u : 0u)) {
      queued_bytes_ -= queue_.back().size();
      queue_.pop_back();
    }
    std::string e = "{\"type\":\"error\",\"code\":\"slow_consumer\",\"message\":";
    AppendJsonString(&e, absl::StrCat("disconnected: ", why, " (",
                                      server_->opts().max_queue_bytes, " bytes)"));
    e.append("}");
    queued_bytes_ += e.size();
    queue_.push_back(std::move(e));
    if (!writing_) DoWrite();
    CloseWith(websocket::close_code::policy_error, "slow consumer");
  }

  void DoWrite() {
    writing_ = true;
    write_started_ms_ = MonoMs();
    ws_.text(true);
    ws_.async_write(net::buffer(queue_.front()),
                    [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnWrite(ec, n); });
  }

  void OnWrite(beast::error_code ec, size_t n) {
    writing_ = false;
    if (ec) {
      Finish();
      return;
    }
    ++server_->metrics().ws_messages_out;
    server_->metrics().ws_bytes_out += n;
    queued_bytes_ -= queue_.front().size();
    queue_.pop_front();
    if (!queue_.empty() && !finished_) {
      DoWrite();
    } else if (closing_ && !finished_) {
      DoClose();
    }
  }

  void DoClose() {
    if (close_started_) return;
    close_started_ = true;
    writing_ = true;  // a close is a write: nothing else may start
    ws_.async_close(close_reason_, [self = shared_from_this()](beast::error_code) { self->Finish(); });
  }

  void DoRead() {
    ws_.async_read_some(buffer_, 4096, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->OnRead(ec);
    });
  }

  void OnRead(beast::error_code ec) {
    if (ec) {
      if (ec == websocket::error::message_too_big) server_->CountError("message_too_big");
      Finish();
      return;
    }
    const ServerOptions& o = server_->opts();
    if (discarding_ || buffer_.size() > o.max_message_bytes) {
      discarding_ = true;
      discarded_ += buffer_.size();
      buffer_.consume(buffer_.size());
    }
    if (ws_.is_message_done()) {
      ++server_->metrics().ws_messages_in;
      if (discarding_) {
        SendError("message_too_big",
                  absl::StrCat("a message of ", discarded_, "+ bytes is over the limit of ",
                               o.max_message_bytes, " bytes; it was discarded"),
                  "");
        discarding_ = false;
        discarded_ = 0;
      } else if (!ws_.got_text()) {
        buffer_.consume(buffer_.size());
        SendError("bad_message", "binary messages are not accepted; send JSON text", "");
      } else {
        std::string text = beast::buffers_to_string(buffer_.data());
        buffer_.consume(buffer_.size());
        if (RateLimited()) {
          SendError("rate_limited",
                    absl::StrCat("more than ", o.message_rate, " messages per second; message dropped"), "");
        } else {
          Handle(text);
        }
      }
    }
    if (!finished_ && !close_started_) DoRead();
  }

  bool RateLimited() {
    const ServerOptions& o = server_->opts();
    int64_t now = MonoMs();
    tokens_ = std::min(o.message_burst, tokens_ + (now - last_refill_ms_) * o.message_rate / 1000.0);
    last_refill_ms_ = now;
    if (tokens_ < 1) return true;
    tokens_ -= 1;
    return false;
  }

  void Handle(absl::string_view text) {
    absl::StatusOr<ClientMessage> parsed = ParseClientMessage(text);
    if (!parsed.ok()) {
      SendError(ErrorCodeOf(parsed.status()), parsed.status().message(), "");
      return;
    }
    ClientMessage& m = *parsed;
    switch (m.type) {
      case ClientMessageType::kHeartbeat:
      case ClientMessageType::kActivity:
        Beat(m);
        break;
      case ClientMessageType::kSubscribe:
        Subscribe(m);
        break;
      case ClientMessageType::kUnsubscribe:
        Unsubscribe(m);
        break;
      case ClientMessageType::kBye:
        if (handle_.valid()) {
          server_->engine()->Disconnect(handle_, DisconnectKind::kClean).IgnoreError();
          handle_ = {};
        }
        CloseWith(websocket::close_code::normal, "bye");
        break;
    }
  }

  void Beat(const ClientMessage& m) {
    if (!handle_.valid()) return;
    if (m.activity) activity_ = *m.activity;
    absl::Status st = server_->engine()->Beat(handle_, activity_, m.source);
    if (st.code() == absl::StatusCode::kNotFound) {
      // The device was connected again elsewhere with a newer session.
      handle_ = {};
      SendError("session_replaced",
                "this device connected again with a newer session; this connection is closed", m.id_json);
      CloseWith(websocket::close_code::policy_error, "session replaced");
    } else if (st.code() == absl::StatusCode::kResourceExhausted) {
      // The engine's own flood limit (Options::max_signals_per_device_per_sec).
      SendError("rate_limited", st.message(), m.id_json);
    } else if (!st.ok()) {
      SendError("bad_request", st.message(), m.id_json);
    }
  }

  void Subscribe(const ClientMessage& m) {
    const Access& a = server_->access();
    std::vector<std::string> unknown, forbidden, unknown_topics, add_users, add_topics;
    for (const std::string& u : m.users) {
      if (!a.UserExists(u)) unknown.push_back(u);
      else if (!a.MayRead(user_id_, u)) forbidden.push_back(u);
      else if (!users_.contains(u) &&
               std::find(add_users.begin(), add_users.end(), u) == add_users.end()) add_users.push_back(u);
    }
    for (const std::string& t : m.topics) {
      if (!a.TopicExists(t)) unknown_topics.push_back(t);
      else if (!a.MayJoin(user_id_, t)) forbidden.push_back(t);
      else if (!topics_.contains(t) &&
               std::find(add_topics.begin(), add_topics.end(), t) == add_topics.end()) add_topics.push_back(t);
    }
    if (!unknown.empty()) {
      SendErrorWith("unknown_user", "no such user; nothing was subscribed", m.id_json,
                    absl::StrCat(",\"user_ids\":", JsonStringArray(unknown)));
      return;
    }
    if (!unknown_topics.empty()) {
      SendErrorWith("unknown_topic", "no such topic; nothing was subscribed", m.id_json,
                    absl::StrCat(",\"topics\":", JsonStringArray(unknown_topics)));
      return;
    }
    if (!forbidden.empty()) {
      SendErrorWith("forbidden", "you may not watch these; nothing was subscribed", m.id_json,
                    absl::StrCat(",\"ids\":", JsonStringArray(forbidden)));
      return;
    }
    size_t total = users_.size() + topics_.size() + add_users.size() + add_topics.size();
    if (total > server_->opts().max_subscriptions) {
      SendError("too_many_subscriptions",
                absl::StrCat("a connection may watch at most ", server_->opts().max_subscriptions,
                             " users and topics; this would make ", total, "; nothing was subscribed"),
                m.id_json);
      return;
    }
    if (!add_users.empty()) {
      std::vector<absl::string_view> ids(add_users.begin(), add_users.end());
      absl::Status st = server_->fanout()->AddUsers(sub_, ids);
      if (!st.ok()) {
        SendError("too_many_subscriptions", st.message(), m.id_json);
        return;
      }
      users_.insert(add_users.begin(), add_users.end());
    }
    for (const std::string& t : add_topics) {
      absl::Status st = server_->fanout()->Join(sub_, t);
      if (!st.ok()) {
        SendError(st.code() == absl::StatusCode::kResourceExhausted ? "too_many_subscriptions" : "bad_request",
                  st.message(), m.id_json);
        return;
      }
      topics_.insert(t);
    }
    SendAck("subscribed", m.id_json);
  }

  void Unsubscribe(const ClientMessage& m) {
    std::vector<absl::string_view> remove;
    for (const std::string& u : m.users) {
      if (users_.contains(u)) remove.push_back(u);
    }
    if (!remove.empty()) {
      server_->fanout()->RemoveUsers(sub_, remove).IgnoreError();
      for (absl::string_view u : remove) users_.erase(u);
    }
    for (const std::string& t : m.topics) {
      if (topics_.erase(t) > 0) server_->fanout()->Leave(sub_, t).IgnoreError();
    }
    SendAck("unsubscribed", m.id_json);
  }

  void SendAck(absl::string_view type, absl::string_view id_json) {
    std::vector<std::string> users(users_.begin(), users_.end()), topics(topics_.begin(), topics_.end());
    std::sort(users.begin(), users.end());
    std::sort(topics.begin(), topics.end());
    std::string out = absl::StrCat("{\"type\":\"", type, "\"");
    if (!id_json.empty()) absl::StrAppend(&out, ",\"id\":", id_json);
    absl::StrAppend(&out, ",\"users\":", JsonStringArray(users), ",\"topics\":", JsonStringArray(topics), "}");
    Send(std::move(out));
  }

  void SendErrorWith(absl::string_view code, absl::string_view message, absl::string_view id_json,
                     absl::string_view extra) {
    server_->CountError(code);
    std::string e = "{\"type\":\"error\",\"code\":";
    AppendJsonString(&e, code);
    e.append(",\"message\":");
    AppendJsonString(&e, message);
    if (!id_json.empty()) absl::StrAppend(&e, ",\"id\":", id_json);
    e.append(extra.data(), extra.size());
    e.append("}");
    Send(std::move(e));
  }

  // Once, however the connection ended: the device disconnects (abruptly,
  // unless the client said bye: then it already did, cleanly) and the
  // subscriber is closed.
  void Finish() {
    if (finished_) return;
    finished_ = true;
    if (handle_.valid()) {
      server_->engine()->Disconnect(handle_, DisconnectKind::kAbrupt).IgnoreError();
      handle_ = {};
    }
    if (registered_) {
      server_->fanout()->Close(sub_).IgnoreError();
      if (server_->opts().verbose) {
        std::fprintf(stderr, "ws: %s/%s closed\n", user_id_.c_str(), device_id_.c_str());
      }
      registered_ = false;
      server_->Unregister(sub_);  // may drop the last reference but one: ours is in the handler
    }
  }

  Server::Impl* server_;
  websocket::stream<beast::tcp_stream> ws_;
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

  std::string user_id_, device_id_;
  presence::Platform platform_ = presence::Platform::kWeb;
  uint64_t session_id_ = 0;
  DeviceHandle handle_;
  SubscriberId sub_ = 0;
  Activity activity_ = Activity::kActive;
  absl::flat_hash_set<std::string> users_, topics_;
  double tokens_ = 0;
  int64_t last_refill_ms_ = 0;
};

// ---- HTTP session -------------------------------------------------------------

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(Server::Impl* server, tcp::socket socket) : server_(server), stream_(std::move(socket)) {}

  void Start() { DoRead(); }

 private:
  void DoRead() {
    parser_.emplace();
    parser_->body_limit(server_->opts().max_http_body_bytes);
    parser_->header_limit(16 * 1024);
    stream_.expires_after(std::chrono::seconds(30));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == net::error::operation_aborted ||
        ec == beast::error::timeout || ec == net::error::eof || ec == net::error::connection_reset) {
      Shutdown();
      return;
    }
    if (ec) {
      // The request cannot be read: say why, then close.
      http::status status = http::status::bad_request;
      std::string code = "bad_request";
      if (ec == http::error::body_limit) {
        status = http::status::payload_too_large;
        code = "body_too_large";
      } else if (ec == http::error::header_limit) {
        status = http::status::request_header_fields_too_large;
        code = "headers_too_large";
      }
      std::string message = code == "body_too_large"
                                ? absl::StrCat("the request body is over the limit of ",
                                               server_->opts().max_http_body_bytes, " bytes")
                                : absl::StrCat("cannot read the request: ", ec.message());
      auto res = std::make_shared<http::response<http::string_body>>(status, 11);
      res->set(http::field::content_type, "application/json");
      res->set(http::field::connection, "close");
      res->body() = ErrorJson(code, message);
      res->prepare_payload();
      res->keep_alive(false);
      ++server_->metrics().http_requests;
      ++server_->metrics().http_by_status[static_cast<int>(status)];
      Write(std::move(res));
      return;
    }
    http::request<http::string_body> req = parser_->release();
    if (websocket::is_upgrade(req)) {
      stream_.expires_never();
      server_->StartWebSocket(stream_.release_socket(), std::move(req));
      return;
    }
    auto res = std::make_shared<http::response<http::string_body>>(server_->HandleHttp(req));
    Write(std::move(res));
  }

  void Write(std::shared_ptr<http::response<http::string_body>> res) {
    res_ = std::move(res);
    stream_.expires_after(std::chrono::seconds(30));
    http::async_write(stream_, *res_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec || !self->res_->keep_alive()) {
        self->Shutdown();
        return;
      }
      self->res_.reset();
      self->DoRead();
    });
  }

  void Shutdown() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
  }

  Server::Impl* server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<http::response<http::string_body>> res_;
};

// ---- Server::Impl -------------------------------------------------------------

absl::Status Server::Impl::Init() {
  // The web page.
  for (const char* name : {"index.html", "app.js", "style.css"}) {
    std::ifstream in(opts_.web_dir + "/" + name, std::ios::binary);
    if (!in) {
      return absl::NotFoundError(absl::StrCat("cannot read ", opts_.web_dir, "/", name, " (--web-dir)"));
    }
    std::stringstream ss;
    ss << in.rdbuf();
    static_files_[std::string("/") + name] = ss.str();
  }
  std::string index = static_files_["/index.html"];
  static_files_["/"] = std::move(index);

  // Simulated users join the simulation's topic; every user with a token
  // joins it too, so that the demo's people see the crowd.
  if (opts_.simulate > 0) {
    std::vector<std::string> members;
    for (int i = 1; i <= opts_.simulate; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "sim-%04d", i);
      members.emplace_back(name);
      SimClient c;
      c.user_id = name;
      std::uniform_int_distribution<int> pick(0, 9);
      int p = pick(rng_);
      c.platform = p < 6 ? presence::Platform::kWeb : p < 8 ? presence::Platform::kDesktop
                                                          : presence::Platform::kMobile;
      c.device_id = std::string(presence::PlatformName(c.platform)) + "-1";
      // Start staggered over the first 3 s.
      c.down_until = std::uniform_int_distribution<int64_t>(0, 3000)(rng_);
      sims_.push_back(std::move(c));
    }
    for (const std::string& u : opts_.access.TokenUsers()) members.push_back(u);
    opts_.access.AddTopicMembers(opts_.simulate_topic, members);
  }

  // The durable state, the engine and the fan-out.
  presence::FileStoreOptions fo;
  fo.sync = opts_.sync;
  absl::StatusOr<std::unique_ptr<presence::FileStore>> fs = presence::FileStore::Open(opts_.data_dir, fo);
  if (!fs.ok()) return fs.status();
  file_store_ = std::move(*fs);
  opts_.engine.store = file_store_->store();
  opts_.engine.history = file_store_->history();
  absl::StatusOr<std::unique_ptr<presence::Engine>> engine = presence::Engine::Create(opts_.engine);
  if (!engine.ok()) return engine.status();
  engine_ = std::move(*engine);
  absl::StatusOr<std::unique_ptr<presence::Fanout>> fanout = presence::Fanout::Create(engine_.get(), opts_.fanout);
  if (!fanout.ok()) return fanout.status();
  fanout_ = std::move(*fanout);
  for (const auto& [topic, members] : opts_.access.topics()) {
    std::vector<absl::string_view> ids(members.begin(), members.end());
    if (absl::Status st = fanout_->AddMembers(topic, ids); !st.ok()) return st;
  }

  // The socket.
  beast::error_code ec;
  net::ip::address addr = net::ip::make_address(opts_.bind_address, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--bind ", opts_.bind_address, ": ", ec.message()));
  tcp::endpoint ep(addr, opts_.port);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", opts_.bind_address, ":", opts_.port, ": ", ec.message()));
  }
  port_ = acceptor_.local_endpoint().port();
  return absl::OkStatus();
}

void Server::Impl::Run() {
  DoAccept();
  next_tick_ = std::chrono::steady_clock::now();
  ScheduleTick();
  if (opts_.exit_after_s > 0) {
    exit_timer_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(opts_.exit_after_s * 1000)));
    exit_timer_.async_wait([this](beast::error_code ec) {
      if (!ec) BeginShutdown();
    });
  }
  if (opts_.handle_signals) {
    signals_.add(SIGINT);
    signals_.add(SIGTERM);
    signals_.async_wait([this](beast::error_code ec, int) {
      if (!ec) BeginShutdown();
    });
  }
  ioc_.run();
  // Everything is closed: publish and persist the end.
  engine_->Tick();
  file_store_->Sync().IgnoreError();
}

void Server::Impl::BeginShutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  beast::error_code ec;
  acceptor_.close(ec);
  tick_timer_.cancel();
  exit_timer_.cancel();
  signals_.cancel();
  std::vector<std::shared_ptr<WsSession>> all;
  for (auto& [id, s] : sessions_) all.push_back(s);
  for (auto& s : all) s->CloseWith(websocket::close_code::going_away, "server shutting down");
  // Sessions that do not finish their close handshake in 2 s are cut.
  shutdown_deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  WaitForSessions();
}

void Server::Impl::WaitForSessions() {
  auto t = std::make_shared<net::steady_timer>(ioc_, std::chrono::milliseconds(20));
  t->async_wait([this, t](beast::error_code) {
    if (!sessions_.empty() && std::chrono::steady_clock::now() < shutdown_deadline_) {
      WaitForSessions();
      return;
    }
    std::vector<std::shared_ptr<WsSession>> left;
    for (auto& [id, s] : sessions_) left.push_back(s);
    for (auto& s : left) s->ForceClose();
    for (SimClient& c : sims_) {
      if (c.connected) engine_->Disconnect(c.handle, DisconnectKind::kAbrupt).IgnoreError();
      c.connected = false;
    }
    ioc_.stop();
  });
}

void Server::Impl::DoAccept() {
  acceptor_.async_accept(ioc_, [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || shutting_down_) return;
      // Out of file descriptors and the like: try again shortly.
      auto t = std::make_shared<net::steady_timer>(ioc_, std::chrono::milliseconds(50));
      t->async_wait([this, t](beast::error_code) {
        if (!shutting_down_) DoAccept();
      });
      return;
    }
    socket.set_option(tcp::no_delay(true), ec);
    std::make_shared<HttpSession>(this, std::move(socket))->Start();
    DoAccept();
  });
}

void Server::Impl::StartWebSocket(tcp::socket socket, http::request<http::string_body> req) {
  ++metrics_.http_requests;
  auto reject = [&](http::status status, absl::string_view code, absl::string_view message) {
    ++metrics_.ws_rejected;
    ++metrics_.http_by_status[static_cast<int>(status)];
    CountError(code);
    auto res = std::make_shared<http::response<http::string_body>>(status, req.version());
    res->set(http::field::content_type, "application/json");
    res->keep_alive(false);
    res->body() = ErrorJson(code, message);
    res->prepare_payload();
    auto stream = std::make_shared<beast::tcp_stream>(std::move(socket));
    stream->expires_after(std::chrono::seconds(5));
    http::async_write(*stream, *res, [stream, res](beast::error_code, size_t) {
      beast::error_code ec;
      stream->socket().shutdown(tcp::socket::shutdown_both, ec);
    });
  };
  std::optional<Target> t = ParseTarget(absl::string_view(req.target().data(), req.target().size()));
  if (!t || t->path != "/presence/stream") {
    reject(http::status::not_found, "not_found", "WebSocket endpoint is /presence/stream");
    return;
  }
  std::string token;
  auto auth = req.find(http::field::authorization);
  if (auth != req.end() && auth->value().starts_with("Bearer ")) {
    token = std::string(auth->value().substr(7));
  } else if (const std::string* q = t->Get("token")) {
    token = *q;
  }
  std::optional<std::string> user = opts_.access.Authenticate(token);
  if (!user) {
    reject(http::status::unauthorized, "unauthorized", "a valid token is needed (?token= or Authorization: Bearer)");
    return;
  }
  if (sessions_.size() >= opts_.max_connections || shutting_down_) {
    reject(http::status::service_unavailable, "too_many_connections", "the server is full; try again later");
    return;
  }
  presence::Platform platform = presence::Platform::kWeb;
  if (const std::string* p = t->Get("platform")) {
    std::optional<presence::Platform> parsed = PlatformFromName(*p);
    if (!parsed) {
      reject(http::status::bad_request, "bad_request", "platform must be web, desktop, mobile, console or other");
      return;
    }
    platform = *parsed;
  }
  std::string device;
  if (const std::string* d = t->Get("device_id")) {
    if (d->empty() || d->size() > presence::kMaxDeviceIdBytes) {
      reject(http::status::bad_request, "bad_request", "device_id must be 1 to 128 bytes");
      return;
    }
    device = *d;
  } else {
    device = absl::StrCat(presence::PlatformName(platform), "-", NextConnectionNumber());
  }
  ++metrics_.http_by_status[101];
  if (opts_.socket_send_buffer > 0) {
    beast::error_code ec;
    socket.set_option(net::socket_base::send_buffer_size(opts_.socket_send_buffer), ec);
  }
  std::make_shared<WsSession>(this, std::move(socket))
      ->Start(std::move(req), std::move(*user), std::move(device), platform);
}

void Server::Impl::ScheduleTick() {
  next_tick_ += std::chrono::milliseconds(opts_.tick_ms);
  auto now = std::chrono::steady_clock::now();
  if (next_tick_ < now) next_tick_ = now;  // fell behind: do not burst
  tick_timer_.expires_at(next_tick_);
  tick_timer_.async_wait([this](beast::error_code ec) {
    if (ec || shutting_down_) return;
    OnTick();
    ScheduleTick();
  });
}

void Server::Impl::OnTick() {
  auto start = std::chrono::steady_clock::now();
  SimStep(engine_->NowMs());
  engine_->Tick();  // publishes; the fan-out delivers to Deliver() from here
  part_cache_.clear();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++metrics_.ticks;
  metrics_.tick_seconds_sum += s;
  metrics_.tick_seconds_max = std::max(metrics_.tick_seconds_max, s);
  if (metrics_.ticks % std::max<int64_t>(1, 1000 / opts_.tick_ms) == 0) Sweep();
}

void Server::Impl::Sweep() {
  int64_t now = MonoMs();
  std::vector<std::shared_ptr<WsSession>> all;
  all.reserve(sessions_.size());
  for (auto& [id, s] : sessions_) all.push_back(s);
  for (auto& s : all) s->Check(now);
}

void Server::Impl::SimStep(int64_t now) {
  if (sims_.empty()) return;
  if (sim_start_ < 0) sim_start_ = now;
  const int64_t t = now - sim_start_;
  std::uniform_real_distribution<double> u(0, 1);
  for (SimClient& c : sims_) {
    if (!c.connected) {
      if (t < c.down_until) continue;
      presence::Signal s;
      s.user_id = c.user_id;
      s.device_id = c.device_id;
      s.session_id = NextSessionId();
      s.platform = c.platform;
      s.gateway = "simulator";
      absl::StatusOr<DeviceHandle> h = engine_->Connect(s);
      if (!h.ok()) continue;
      c.handle = *h;
      c.connected = true;
      c.activity = Activity::kActive;
      c.next_beat = t + std::uniform_int_distribution<int64_t>(700, 1300)(rng_);
      continue;
    }
    if (t < c.next_beat) continue;
    c.next_beat = t + std::uniform_int_distribution<int64_t>(700, 1300)(rng_);  // jitter
    if (t < c.silent_until) continue;  // its network lost these
    double r = u(rng_);
    if (r < 0.004) {  // closes the lid: abrupt, back in 3 to 20 s
      engine_->Disconnect(c.handle, DisconnectKind::kAbrupt).IgnoreError();
      c.connected = false;
      c.down_until = t + std::uniform_int_distribution<int64_t>(3000, 20000)(rng_);
      continue;
    }
    if (r < 0.006) {  // loses the network for 6 s: a timeout, then back
      c.silent_until = t + 6000;
      continue;
    }
    if (r < 0.007) {  // do not disturb for 20 to 60 s
      engine_
          ->SetOverride(c.user_id, presence::OverrideState::kDnd,
                        now + std::uniform_int_distribution<int64_t>(20000, 60000)(rng_))
          .IgnoreError();
    }
    if (r > 0.99) c.activity = c.activity == Activity::kActive ? Activity::kIdle : Activity::kActive;
    if (!engine_->Beat(c.handle, c.activity).ok()) c.connected = false;
  }
}

void Server::Impl::Deliver(SubscriberId subscriber, const presence::Batch& batch) {
  auto it = sessions_.find(subscriber);
  if (it == sessions_.end()) return;
  ++metrics_.batches_out;
  std::shared_ptr<WsSession> s = it->second;  // Send may finish and unregister it
  s->Send(BatchToJson(batch));
}

std::string Server::Impl::BatchToJson(const presence::Batch& batch) {
  std::string users, topics;
  for (const std::shared_ptr<const std::string>& part : batch.parts) {
    auto it = part_cache_.find(part.get());
    if (it == part_cache_.end()) {
      it = part_cache_.emplace(part.get(), std::make_pair(part, PartToJson(*part))).first;
    }
    const PartJson& pj = it->second.second;
    if (!pj.users.empty()) {
      if (!users.empty()) users.push_back(',');
      users.append(pj.users);
    }
    if (!pj.topics.empty()) {
      if (!topics.empty()) topics.push_back(',');
      topics.append(pj.topics);
    }
  }
  return absl::StrCat("{\"type\":\"", batch.snapshot ? "snapshot" : "diff", "\",\"seq\":", batch.sequence,
                      ",\"now_ms\":", engine_->NowMs(), ",\"users\":[", users, "],\"topics\":[", topics,
                      "]}");
}

// ---- HTTP routes ------------------------------------------------------------

namespace {

http::response<http::string_body> Reply(http::status status, std::string body,
                                        absl::string_view type = "application/json") {
  http::response<http::string_body> res(status, 11);
  res.set(http::field::server, "presence_server");
  res.set(http::field::content_type, std::string(type));
  res.set(http::field::cache_control, "no-store");
  res.body() = std::move(body);
  return res;
}

http::response<http::string_body> Error(http::status status, absl::string_view code, absl::string_view message,
                                        absl::string_view extra = {}) {
  return Reply(status, ErrorJson(code, message, extra));
}

http::response<http::string_body> FromEngineError(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kInvalidArgument: return Error(http::status::bad_request, "bad_request", st.message());
    case absl::StatusCode::kNotFound: return Error(http::status::not_found, "not_found", st.message());
    case absl::StatusCode::kResourceExhausted:
      return Error(http::status::too_many_requests, "limit_reached", st.message());
    default: return Error(http::status::internal_server_error, "internal", st.message());
  }
}

}  // namespace

http::response<http::string_body> Server::Impl::HandleHttp(const http::request<http::string_body>& req) {
  ++metrics_.http_requests;
  http::response<http::string_body> res = [&]() -> http::response<http::string_body> {
    std::optional<Target> t = ParseTarget(absl::string_view(req.target().data(), req.target().size()));
    if (!t) return Error(http::status::bad_request, "bad_request", "malformed URL encoding");
    const bool get = req.method() == http::verb::get || req.method() == http::verb::head;

    // Public: the page, its files, the metrics, a health check.
    auto file = static_files_.find(t->path);
    if (file != static_files_.end()) {
      if (!get) return Error(http::status::method_not_allowed, "method_not_allowed", "use GET");
      absl::string_view type = "text/html; charset=utf-8";
      if (absl::EndsWith(t->path, ".js")) type = "text/javascript; charset=utf-8";
      if (absl::EndsWith(t->path, ".css")) type = "text/css; charset=utf-8";
      return Reply(http::status::ok, file->second, type);
    }
    if (t->path == "/metrics") {
      if (!get) return Error(http::status::method_not_allowed, "method_not_allowed", "use GET");
      return Reply(http::status::ok, Metrics(), "text/plain; version=0.0.4; charset=utf-8");
    }
    if (t->path == "/healthz") return Reply(http::status::ok, "{\"ok\":true}");

    const bool known_path = t->path == "/presence" || t->path == "/presence/override" ||
                            t->path == "/presence/history" || t->path == "/presence/stream";
    if (!known_path) return Error(http::status::not_found, "not_found", absl::StrCat("no route ", t->path));

    // Everything else needs a token.
    std::string token;
    auto auth = req.find(http::field::authorization);
    if (auth != req.end() && auth->value().starts_with("Bearer ")) {
      token = std::string(auth->value().substr(7));
    } else if (const std::string* q = t->Get("token")) {
      token = *q;
    }
    std::optional<std::string> viewer = opts_.access.Authenticate(token);
    if (!viewer) {
      return Error(http::status::unauthorized, "unauthorized",
                   "a valid token is needed (Authorization: Bearer TOKEN, or ?token=)");
    }
    if (t->path == "/presence") {
      if (!get) return Error(http::status::method_not_allowed, "method_not_allowed", "use GET");
      return GetPresence(*t, *viewer);
    }
    if (t->path == "/presence/override") {
      if (req.method() == http::verb::post) return PostOverride(req, *viewer);
      if (req.method() == http::verb::delete_) return DeleteOverride(*t, *viewer);
      return Error(http::status::method_not_allowed, "method_not_allowed", "use POST or DELETE");
    }
    if (t->path == "/presence/history") {
      if (!get) return Error(http::status::method_not_allowed, "method_not_allowed", "use GET");
      return GetHistory(*t, *viewer);
    }
    return Error(http::status::bad_request, "bad_request", "/presence/stream is a WebSocket: send an upgrade");
  }();
  res.version(req.version());
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  if (req.method() == http::verb::head) res.body().clear();
  ++metrics_.http_by_status[res.result_int()];
  if (res.result_int() >= 400) {
    // Count client errors by code, like the WebSocket's.
    absl::StatusOr<Json> j = ParseJson(res.body());
    if (j.ok() && j->Find("error") && j->Find("error")->is_string()) CountError(j->Find("error")->as_string());
  }
  return res;
}

http::response<http::string_body> Server::Impl::GetPresence(const Target& t, const std::string& viewer) {
  std::vector<std::string> ids;
  for (const auto& [k, v] : t.params) {
    if (k != "user_ids" && k != "user_id") continue;
    for (absl::string_view id : absl::StrSplit(v, ',', absl::SkipEmpty())) ids.emplace_back(id);
  }
  if (ids.empty()) return Error(http::status::bad_request, "bad_request", "give user_ids=a,b,c");
  if (ids.size() > 1000) return Error(http::status::bad_request, "bad_request", "at most 1000 user_ids at once");
  std::vector<std::string> unknown, forbidden;
  for (const std::string& id : ids) {
    if (id.size() > presence::kMaxUserIdBytes || !opts_.access.UserExists(id)) unknown.push_back(id);
    else if (!opts_.access.MayRead(viewer, id)) forbidden.push_back(id);
  }
  if (!unknown.empty()) {
    return Error(http::status::not_found, "unknown_user", "no such user",
                 absl::StrCat(",\"user_ids\":", JsonStringArray(unknown)));
  }
  if (!forbidden.empty()) {
    return Error(http::status::forbidden, "forbidden", "you may not see these users",
                 absl::StrCat(",\"user_ids\":", JsonStringArray(forbidden)));
  }
  std::vector<absl::string_view> views(ids.begin(), ids.end());
  std::vector<presence::UserPresence> got = engine_->Get(views, viewer);
  std::string out = absl::StrCat("{\"now_ms\":", engine_->NowMs(), ",\"users\":[");
  for (size_t i = 0; i < got.size(); ++i) {
    const presence::UserPresence& p = got[i];
    if (i > 0) out.push_back(',');
    out.append("{\"user_id\":");
    AppendJsonString(&out, ids[i]);
    absl::StrAppend(&out, ",\"known\":", p.known ? "true" : "false", ",\"state\":\"", StateWire(p.state),
                    "\",\"last_seen_ms\":", p.last_seen_ms, ",\"freshness_ms\":", p.freshness_ms,
                    ",\"version\":", p.version, ",\"devices\":");
    AppendDevices(&out, p.devices);
    if (p.has_override) {
      absl::StrAppend(&out, ",\"override\":{\"state\":\"", presence::OverrideStateName(p.override_state),
                      "\",\"until_ms\":", p.override_until_ms, "}");
    } else {
      out.append(",\"override\":null");
    }
    if (ids[i] == viewer) {
      // The user's own stack, so that a client can show and revoke each.
      absl::StatusOr<std::vector<presence::OverrideInfo>> list = engine_->ListOverrides(viewer);
      out.append(",\"overrides\":[");
      if (list.ok()) {
        for (size_t k = 0; k < list->size(); ++k) {
          const presence::OverrideInfo& o = (*list)[k];
          absl::StrAppend(&out, k > 0 ? "," : "", "{\"override_id\":", o.id, ",\"state\":\"",
                          presence::OverrideStateName(o.state), "\",\"set_at_ms\":", o.set_at_ms,
                          ",\"until_ms\":", o.until_ms, "}");
        }
      }
      out.append("]");
    }
    out.append("}");
  }
  out.append("]}");
  return Reply(http::status::ok, std::move(out));
}

http::response<http::string_body> Server::Impl::PostOverride(const http::request<http::string_body>& req,
                                                             const std::string& viewer) {
  absl::StatusOr<OverrideRequest> r = ParseOverrideRequest(req.body());
  if (!r.ok()) return Error(http::status::bad_request, ErrorCodeOf(r.status()), r.status().message());
  std::string user = r->user_id.empty() ? viewer : r->user_id;
  if (!opts_.access.UserExists(user)) return Error(http::status::not_found, "unknown_user", "no such user");
  if (user != viewer) {
    return Error(http::status::forbidden, "forbidden", "a user may only set its own state");
  }
  int64_t until = r->until_ms;
  if (r->duration_ms > 0) until = engine_->NowMs() + r->duration_ms;
  absl::StatusOr<uint64_t> id = engine_->SetOverride(user, r->state, until);
  if (!id.ok()) return FromEngineError(id.status());
  std::string out = absl::StrCat("{\"override_id\":", *id, ",\"user_id\":");
  AppendJsonString(&out, user);
  absl::StrAppend(&out, ",\"state\":\"", presence::OverrideStateName(r->state), "\",\"until_ms\":", until, "}");
  return Reply(http::status::ok, std::move(out));
}

http::response<http::string_body> Server::Impl::DeleteOverride(const Target& t, const std::string& viewer) {
  std::string user = viewer;
  if (const std::string* u = t.Get("user_id")) user = *u;
  if (!opts_.access.UserExists(user)) return Error(http::status::not_found, "unknown_user", "no such user");
  if (!opts_.access.MayRevokeFor(viewer, user)) {
    return Error(http::status::forbidden, "forbidden", "only the user or an operator may revoke its overrides");
  }
  const std::string* id_text = t.Get("override_id");
  const std::string* all = t.Get("all");
  if (id_text != nullptr) {
    uint64_t id = 0;
    if (!absl::SimpleAtoi(*id_text, &id)) {
      return Error(http::status::bad_request, "bad_request", "override_id must be a number");
    }
    absl::Status st = engine_->RevokeOverride(user, id);
    if (!st.ok()) return FromEngineError(st);
    return Reply(http::status::ok, "{\"revoked\":1}");
  }
  if (all != nullptr && (*all == "true" || *all == "1")) {
    absl::StatusOr<size_t> n = engine_->ClearOverrides(user);
    if (!n.ok()) {
      if (n.status().code() == absl::StatusCode::kNotFound) return Reply(http::status::ok, "{\"revoked\":0}");
      return FromEngineError(n.status());
    }
    return Reply(http::status::ok, absl::StrCat("{\"revoked\":", *n, "}"));
  }
  return Error(http::status::bad_request, "bad_request", "give override_id=N, or all=true");
}

http::response<http::string_body> Server::Impl::GetHistory(const Target& t, const std::string& viewer) {
  const std::string* user = t.Get("user_id");
  if (user == nullptr || user->empty()) return Error(http::status::bad_request, "bad_request", "give user_id=");
  if (!opts_.access.UserExists(*user)) return Error(http::status::not_found, "unknown_user", "no such user");
  if (!opts_.access.MayRead(viewer, *user)) {
    return Error(http::status::forbidden, "forbidden", "you may not see this user");
  }
  int64_t now = engine_->NowMs();
  int64_t to = now, from = now - 3600 * 1000;
  if (const std::string* s = t.Get("to"); s && !absl::SimpleAtoi(*s, &to)) {
    return Error(http::status::bad_request, "bad_request", "to must be a time in ms");
  }
  if (const std::string* s = t.Get("from"); s && !absl::SimpleAtoi(*s, &from)) {
    return Error(http::status::bad_request, "bad_request", "from must be a time in ms");
  } else if (!s) {
    from = to - 3600 * 1000;
  }
  if (from > to) return Error(http::status::bad_request, "bad_request", "from is after to");
  // The user itself and operators see the audit trail; others see what the
  // engine answers anyone but the user: the public view (DESIGN.md rule 8),
  // whose entries carry no cause or trace id.
  const bool full = *user == viewer || opts_.access.IsOperator(viewer);
  const absl::string_view as = full ? absl::string_view(*user) : absl::string_view(viewer);
  absl::StatusOr<std::vector<presence::Transition>> h = engine_->History(*user, from, to, as);
  if (!h.ok()) return FromEngineError(h.status());
  std::string out = "{\"user_id\":";
  AppendJsonString(&out, *user);
  absl::StrAppend(&out, ",\"from_ms\":", from, ",\"to_ms\":", to, ",\"full\":", full ? "true" : "false",
                  ",\"transitions\":[");
  bool first = true;
  size_t n = 0;
  for (const presence::Transition& tr : *h) {
    if (++n > 10000) break;
    if (!first) out.push_back(',');
    first = false;
    absl::StrAppend(&out, "{\"at_ms\":", tr.at_ms, ",\"version\":", tr.version, ",\"previous\":\"",
                    StateWire(tr.previous), "\",\"state\":\"", StateWire(tr.state), "\"");
    if (full) {
      absl::StrAppend(&out, ",\"self_state\":\"", StateWire(tr.self_state), "\",\"cause\":\"",
                      presence::CauseName(tr.cause), "\",\"trace_id\":", tr.trace_id,
                      ",\"last_seen_ms\":", tr.last_seen_ms);
    }
    out.append("}");
  }
  out.append("]");
  if (full) {
    absl::StatusOr<presence::StateDurations> d = engine_->TimeInStates(*user, from, to, as);
    if (d.ok()) {
      absl::StrAppend(&out, ",\"time_in_states_ms\":{\"online\":", d->online_ms, ",\"away\":", d->away_ms,
                      ",\"dnd\":", d->dnd_ms, ",\"offline\":", d->offline_ms, "}");
    }
  }
  out.append("}");
  return Reply(http::status::ok, std::move(out));
}

std::string Server::Impl::Metrics() const {
  std::string out = engine_->RenderMetrics();
  out.append(fanout_->RenderMetrics());
  out.append(file_store_->RenderMetrics());
  auto counter = [&](absl::string_view name, absl::string_view help, auto value) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " counter\n", name, " ", value, "\n");
  };
  auto gauge = [&](absl::string_view name, absl::string_view help, auto value) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " gauge\n", name, " ", value, "\n");
  };
  gauge("presence_server_ws_connections", "Open WebSocket connections.", sessions_.size());
  counter("presence_server_ws_accepted_total", "WebSocket connections accepted.", metrics_.ws_accepted);
  counter("presence_server_ws_rejected_total", "WebSocket upgrades refused (auth, limits, bad handshake).",
          metrics_.ws_rejected);
  counter("presence_server_ws_messages_received_total", "WebSocket messages received.", metrics_.ws_messages_in);
  counter("presence_server_ws_messages_sent_total", "WebSocket messages written.", metrics_.ws_messages_out);
  counter("presence_server_ws_bytes_sent_total", "WebSocket bytes written.", metrics_.ws_bytes_out);
  counter("presence_server_batches_delivered_total", "Fan-out batches turned into JSON.", metrics_.batches_out);
  counter("presence_server_slow_consumer_disconnects_total",
          "Clients disconnected because they did not read their messages.", metrics_.slow_consumers);
  gauge("presence_server_simulated_clients", "Synthetic clients (--simulate).", sims_.size());
  absl::StrAppend(&out,
                  "# HELP presence_server_http_requests_total HTTP requests, by status.\n"
                  "# TYPE presence_server_http_requests_total counter\n");
  std::vector<std::pair<int, uint64_t>> by_status(metrics_.http_by_status.begin(), metrics_.http_by_status.end());
  std::sort(by_status.begin(), by_status.end());
  for (const auto& [code, n] : by_status) {
    absl::StrAppend(&out, "presence_server_http_requests_total{code=\"", code, "\"} ", n, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP presence_server_client_errors_total Errors answered to clients, by code.\n"
                  "# TYPE presence_server_client_errors_total counter\n");
  std::vector<std::pair<std::string, uint64_t>> errors(metrics_.client_errors.begin(),
                                                       metrics_.client_errors.end());
  std::sort(errors.begin(), errors.end());
  for (const auto& [code, n] : errors) {
    absl::StrAppend(&out, "presence_server_client_errors_total{code=\"", code, "\"} ", n, "\n");
  }
  counter("presence_server_ticks_total", "Engine ticks run by the server's timer.", metrics_.ticks);
  counter("presence_server_tick_seconds_total", "Time spent in ticks (engine, fan-out, JSON, simulation).",
          metrics_.tick_seconds_sum);
  gauge("presence_server_tick_seconds_max", "Longest tick so far.", metrics_.tick_seconds_max);
  return out;
}

// ---- Server ---------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Server>> Server::Create(ServerOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  if (absl::Status st = impl->Init(); !st.ok()) return st;
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;
uint16_t Server::port() const { return impl_->port(); }
std::string Server::url() const {
  return absl::StrCat("http://", impl_->opts().bind_address, ":", impl_->port(), "/");
}
void Server::Run() { impl_->Run(); }
void Server::Stop() { impl_->Stop(); }

}  // namespace presence_server
