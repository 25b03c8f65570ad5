// File: examples/presence_server/ws_session.cc
//
// One WebSocket client of presence_server: its device (connect, heartbeats,
// bye), its subscriber (users and topics, within max_subscriptions), its
// outbound queue (the slow-consumer bound), its message rate, and the close
// handshake.
#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "json.h"
#include "server_internal.h"

namespace presence_server {

void WsSession::Start(http::request<http::string_body> req, std::optional<std::string> user,
                      std::string device_id, presence::Platform platform) {
  if (user) user_id_ = std::move(*user);
  device_id_ = std::move(device_id);
  platform_ = platform;
  const ServerOptions& o = server_->opts();
  tokens_ = o.message_burst;
  last_refill_ms_ = MonoMs();
  last_message_ms_ = last_refill_ms_;
  ws_.next_layer().tcp().expires_never();
  // Beast's own timeout finds dead sockets (a ping when silent, closed when
  // not even the pong comes back); the idle timeout of the protocol, which
  // pings do not reset, is Check's.
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

void WsSession::OnAccept(beast::error_code ec) {
  if (ec) {
    ++server_->metrics().ws_rejected;
    return;
  }
  if (server_->shutting_down()) {
    ForceClose();
    return;
  }
  if (!user_id_.empty()) {
    Admit();
  } else {
    auth_timer_.expires_after(std::chrono::milliseconds(server_->opts().auth_timeout_ms));
    auth_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->admitted_ || self->closing_ || self->finished_) return;
      self->SendError("unauthorized",
                      absl::StrCat("no \"auth\" message within ", self->server_->opts().auth_timeout_ms, " ms"),
                      "");
      self->CloseWith(websocket::close_code::policy_error, "unauthorized");
    });
  }
  if (!finished_ && !close_started_) DoRead();
}

void WsSession::Authenticate(const ClientMessage& m) {
  if (m.type != ClientMessageType::kAuth) {
    SendError("unauthorized", "the first message must be {\"type\":\"auth\",\"token\":...}", m.id_json);
    CloseWith(websocket::close_code::policy_error, "unauthorized");
    return;
  }
  absl::StatusOr<std::string> user = server_->Authenticate(m.token, peer_.client);
  if (!user.ok()) {
    const bool throttled = user.status().code() == absl::StatusCode::kResourceExhausted;
    SendError(throttled ? "too_many_failures" : "unauthorized", user.status().message(), m.id_json);
    CloseWith(websocket::close_code::policy_error, "unauthorized");
    return;
  }
  user_id_ = std::move(*user);
  Admit();
}

void WsSession::Admit() {
  if (!server_->AdmitUserConnection(user_id_)) {
    SendError("too_many_connections",
              absl::StrCat("this user has ", server_->opts().max_connections_per_user,
                           " connections open already (the limit)"),
              "");
    CloseWith(websocket::close_code::try_again_later, "too many connections");
    return;
  }
  admitted_ = true;
  auth_timer_.cancel();
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
  absl::StatusOr<DeviceHandle> h = server_->ConnectDevice(s);
  if (!h.ok()) {
    SendError(h.status().code() == absl::StatusCode::kResourceExhausted ? "too_many_devices" : "bad_request",
              std::string(h.status().message()), "");
    CloseWith(websocket::close_code::policy_error, "cannot connect the device");
    return;
  }
  handle_ = *h;
  server_->ClaimDevice(user_id_, device_id_, shared_from_this());
  // A pong whose payload is a probe id this connection was pinged with
  // answers the probe; others (Beast's keep-alive pings, forged ids) do not.
  ws_.control_callback([this](websocket::frame_type kind, beast::string_view payload) {
    uint64_t id = 0;
    const absl::string_view text(payload.data(), payload.size());
    if (kind != websocket::frame_type::pong || !absl::SimpleAtoi(text, &id)) return;
    auto it = std::find(probes_.begin(), probes_.end(), id);
    if (it == probes_.end()) return;
    probes_.erase(it);
    server_->engine()->AnswerProbe(id).IgnoreError();  // a late answer is counted, nothing more
  });

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
                  ",\"message_burst\":", o.message_burst, ",\"idle_timeout_ms\":", o.idle_timeout_ms, "}}");
  Send(std::move(hello));
  if (o.verbose) {
    std::fprintf(stderr, "ws: %s/%s connected (subscriber %llu)\n", LogSafe(user_id_).c_str(),
                 LogSafe(device_id_).c_str(), static_cast<unsigned long long>(sub_));
  }
}

void WsSession::Send(std::string msg) {
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

void WsSession::SendError(absl::string_view code, absl::string_view message, absl::string_view id_json) {
  SendErrorWith(code, message, id_json, {});
}

void WsSession::CloseWith(websocket::close_code code, std::string reason) {
  if (closing_ || finished_) return;
  closing_ = true;
  close_deadline_ms_ = MonoMs() + 3000;
  close_reason_ = websocket::close_reason(code, reason);
  if (!writing_) DoClose();
}

void WsSession::ForceClose() {
  beast::error_code ec;
  ws_.next_layer().tcp().socket().close(ec);
  Finish();
}

void WsSession::Check(int64_t now) {
  if (finished_) return;
  const ServerOptions& o = server_->opts();
  if (closing_ && now > close_deadline_ms_) {
    ForceClose();
  } else if (writing_ && now - write_started_ms_ > o.write_stall_ms) {
    ++server_->metrics().slow_consumers;
    server_->CountError("slow_consumer");
    ForceClose();  // the socket is not draining: no error can be sent
  } else if (!closing_ && now - last_message_ms_ > o.idle_timeout_ms) {
    ++server_->metrics().idle_disconnects;
    SendError("idle_timeout", absl::StrCat("no message for ", o.idle_timeout_ms,
                                           " ms; a client sends a heartbeat every second"), "");
    CloseWith(websocket::close_code::policy_error, "idle");
  }
}

void WsSession::SlowConsumer(absl::string_view why) {
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

void WsSession::DoWrite() {
  writing_ = true;
  write_started_ms_ = MonoMs();
  ws_.text(true);
  ws_.async_write(net::buffer(queue_.front()),
                  [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnWrite(ec, n); });
}

void WsSession::OnWrite(beast::error_code ec, size_t n) {
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

void WsSession::DoClose() {
  if (close_started_) return;
  close_started_ = true;
  writing_ = true;  // a close is a write: nothing else may start
  ws_.async_close(close_reason_, [self = shared_from_this()](beast::error_code) { self->Finish(); });
}

void WsSession::DoRead() {
  ws_.async_read_some(buffer_, 4096, [self = shared_from_this()](beast::error_code ec, size_t) {
    self->OnRead(ec);
  });
}

void WsSession::OnRead(beast::error_code ec) {
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
    last_message_ms_ = MonoMs();
    // Every message counts against the rate, whatever it turns out to be.
    if (RateLimited()) {
      SendError("rate_limited",
                absl::StrCat("more than ", o.message_rate, " messages per second; message dropped"), "");
    } else if (discarding_) {
      SendError("message_too_big",
                absl::StrCat("a message of ", discarded_, "+ bytes is over the limit of ",
                             o.max_message_bytes, " bytes; it was discarded"),
                "");
    } else if (!ws_.got_text()) {
      SendError("bad_message", "binary messages are not accepted; send JSON text", "");
    } else {
      Handle(beast::buffers_to_string(buffer_.data()));
    }
    buffer_.consume(buffer_.size());
    discarding_ = false;
    discarded_ = 0;
  }
  if (!finished_ && !close_started_) DoRead();
}

bool WsSession::RateLimited() {
  const ServerOptions& o = server_->opts();
  int64_t now = MonoMs();
  tokens_ = std::min(o.message_burst, tokens_ + (now - last_refill_ms_) * o.message_rate / 1000.0);
  last_refill_ms_ = now;
  if (tokens_ < 1) return true;
  tokens_ -= 1;
  return false;
}

void WsSession::Handle(absl::string_view text) {
  absl::StatusOr<ClientMessage> parsed = ParseClientMessage(text);
  if (!parsed.ok()) {
    SendError(ErrorCodeOf(parsed.status()), parsed.status().message(), "");
    if (!admitted_) CloseWith(websocket::close_code::policy_error, "unauthorized");
    return;
  }
  ClientMessage& m = *parsed;
  if (!admitted_) {
    if (!closing_ && user_id_.empty()) Authenticate(m);
    return;
  }
  switch (m.type) {
    case ClientMessageType::kAuth:
      SendError("bad_message", "this connection is authenticated already", m.id_json);
      break;
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
        server_->DisconnectDevice(handle_, DeviceSignal(presence::Source::kApp), DisconnectKind::kClean);
        handle_ = {};
      }
      CloseWith(websocket::close_code::normal, "bye");
      break;
  }
}

void WsSession::Replaced() {
  handle_ = {};
  SendError("session_replaced", "this device connected again with a newer session; this connection is closed",
            "");
  CloseWith(websocket::close_code::policy_error, "session replaced");
}

void WsSession::Drained() {
  // A clean disconnect, as a bye: of a device the owners drained already it
  // changes nothing, and one they did not drain (it came just after the
  // drain) goes offline now rather than at its timeout.
  if (handle_.valid()) {
    server_->DisconnectDevice(handle_, DeviceSignal(presence::Source::kApp), DisconnectKind::kClean);
    handle_ = {};
  }
  SendError("session_replaced", "an operator drained this gateway: connect again", "");
  CloseWith(websocket::close_code::policy_error, "gateway drained");
}

void WsSession::Beat(const ClientMessage& m) {
  if (!handle_.valid()) return;
  // A heartbeat that changes nothing only keeps the device alive.
  const bool changed = m.type == ClientMessageType::kActivity || (m.activity && *m.activity != activity_) ||
                       m.source != source_;
  if (m.activity) activity_ = *m.activity;
  source_ = m.source;
  server_->BeatDevice(handle_, DeviceSignal(m.source), changed,
                      [self = weak_from_this(), id = m.id_json](const absl::Status& st) {
                        if (auto s = self.lock()) s->OnBeat(st, id);
                      });
}

void WsSession::OnBeat(const absl::Status& st, const std::string& id_json) {
  if (finished_) return;
  if (st.ok() && !id_json.empty()) {
    // Asked for: the signal is taken (by the engine, or on a cluster
    // gateway by the bus), so the client knows what reached the server.
    Send(absl::StrCat("{\"type\":\"ack\",\"id\":", id_json, "}"));
  } else if (st.code() == absl::StatusCode::kNotFound) {
    // The device was connected again with a newer session (by another
    // server, say: this one closes the older connection when it admits).
    Replaced();
  } else if (st.code() == absl::StatusCode::kResourceExhausted) {
    // The engine's own flood limit (Options::max_signals_per_device_per_sec).
    SendError("rate_limited", st.message(), id_json);
  } else if (!st.ok()) {
    SendError("bad_request", st.message(), id_json);
  }
}

void WsSession::Subscribe(const ClientMessage& m) {
  const Access& a = server_->access();
  std::vector<std::string> unknown, forbidden, unknown_topics, add_users, add_topics;
  // 403 before 404, as over HTTP: only what the user may read can be unknown.
  for (const std::string& u : m.users) {
    if (!a.MayRead(user_id_, u)) forbidden.push_back(u);
    else if (!a.UserExists(u)) unknown.push_back(u);
    else if (!users_.contains(u) &&
             std::find(add_users.begin(), add_users.end(), u) == add_users.end()) add_users.push_back(u);
  }
  for (const std::string& t : m.topics) {
    if (!a.IsOperator(user_id_) && !a.MayJoin(user_id_, t)) forbidden.push_back(t);
    else if (!a.TopicExists(t)) unknown_topics.push_back(t);
    else if (!topics_.contains(t) &&
             std::find(add_topics.begin(), add_topics.end(), t) == add_topics.end()) add_topics.push_back(t);
  }
  if (!forbidden.empty()) {
    SendErrorWith("forbidden", "you may not watch these; nothing was subscribed", m.id_json,
                  absl::StrCat(",\"ids\":", JsonStringArray(forbidden)));
    return;
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

void WsSession::Unsubscribe(const ClientMessage& m) {
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

void WsSession::SendAck(absl::string_view type, absl::string_view id_json) {
  std::vector<std::string> users(users_.begin(), users_.end()), topics(topics_.begin(), topics_.end());
  std::sort(users.begin(), users.end());
  std::sort(topics.begin(), topics.end());
  std::string out = absl::StrCat("{\"type\":\"", type, "\"");
  if (!id_json.empty()) absl::StrAppend(&out, ",\"id\":", id_json);
  absl::StrAppend(&out, ",\"users\":", JsonStringArray(users), ",\"topics\":", JsonStringArray(topics), "}");
  Send(std::move(out));
}

void WsSession::SendErrorWith(absl::string_view code, absl::string_view message, absl::string_view id_json,
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

presence::Signal WsSession::DeviceSignal(presence::Source source) const {
  presence::Signal s;
  s.user_id = user_id_;
  s.device_id = device_id_;
  s.session_id = session_id_;
  s.platform = platform_;
  s.source = source;
  s.activity = activity_;
  return s;
}

void WsSession::Finish() {
  if (finished_) return;
  finished_ = true;
  auth_timer_.cancel();
  if (handle_.valid()) {
    server_->DisconnectDevice(handle_, DeviceSignal(presence::Source::kApp), DisconnectKind::kAbrupt);
    handle_ = {};
  }
  if (admitted_) {
    server_->ReleaseUserConnection(user_id_);
    server_->ReleaseDevice(user_id_, device_id_, this);
  }
  if (registered_) {
    server_->fanout()->Close(sub_).IgnoreError();
    if (server_->opts().verbose) {
      std::fprintf(stderr, "ws: %s/%s closed\n", LogSafe(user_id_).c_str(), LogSafe(device_id_).c_str());
    }
    registered_ = false;
    server_->Unregister(sub_);  // may drop the last reference but one: ours is in the handler
  }
}

void Server::Impl::Probe(const presence::ProbeRequest& request) {
  auto it = ws_by_device_.find(
      std::make_pair(std::string(request.user_id), std::string(request.device_id)));
  if (it == ws_by_device_.end()) return;  // not a WebSocket client (--simulate), or gone
  if (std::shared_ptr<WsSession> s = it->second.lock()) s->Ping(request.session_id, request.probe_id);
}

void WsSession::Ping(uint64_t session_id, uint64_t probe_id) {
  if (closing_ || finished_ || session_id != session_id_) return;
  constexpr size_t kKept = 8;  // enough for every probe of one silence
  probes_.push_back(probe_id);
  if (probes_.size() > kKept) probes_.pop_front();
  if (pinging_) {
    ping_waiting_ = probe_id;  // a newer probe replaces an older one that waits
    return;
  }
  SendPing(probe_id);
}

void WsSession::SendPing(uint64_t probe_id) {
  pinging_ = true;
  ws_.async_ping(websocket::ping_data(absl::StrCat(probe_id).c_str()),
                 [self = shared_from_this()](beast::error_code ec) {
                   self->pinging_ = false;
                   const uint64_t next = std::exchange(self->ping_waiting_, 0);
                   if (!ec && next != 0 && !self->closing_ && !self->finished_) self->SendPing(next);
                 });
}

}  // namespace presence_server
