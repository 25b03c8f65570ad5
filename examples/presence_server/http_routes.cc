// File: examples/presence_server/http_routes.cc
//
// The HTTP side of presence_server: one keep-alive HTTP session per
// connection (with the body and header limits), and the routes of the seed
// design's API: GET /presence, POST and DELETE /presence/override,
// GET /presence/history, /metrics, and the page.
#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "json.h"
#include "server_internal.h"

namespace presence_server {

namespace {

const char* StateWire(presence::State s) {
  switch (s) {
    case presence::State::kOffline: return "offline";
    case presence::State::kAway: return "away";
    case presence::State::kOnline: return "online";
    case presence::State::kDnd: return "dnd";
  }
  return "offline";
}

void AppendDevices(std::string* out, const presence::DeviceSummary& d) {
  absl::StrAppend(out, "{\"web\":", d.count(presence::Platform::kWeb),
                  ",\"desktop\":", d.count(presence::Platform::kDesktop),
                  ",\"mobile\":", d.count(presence::Platform::kMobile),
                  ",\"console\":", d.count(presence::Platform::kConsole),
                  ",\"other\":", d.count(presence::Platform::kOther), "}");
}

// ---- HTTP session -------------------------------------------------------------

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(Server::Impl* server, FlexStream stream, Peer peer)
      : server_(server), stream_(std::move(stream)), peer_(std::move(peer)) {}

  void Start() {
    if (!stream_.is_tls()) {
      DoRead();
      return;
    }
    // The handshake is part of the first request's time.
    stream_.tcp().expires_after(std::chrono::milliseconds(server_->opts().request_timeout_ms));
    stream_.tls()->async_handshake(net::ssl::stream_base::server,
                                   [self = shared_from_this()](beast::error_code ec) {
                                     if (ec) {
                                       ++self->server_->metrics().tls_handshake_failures;
                                       self->Shutdown();
                                       return;
                                     }
                                     self->DoRead();
                                   });
  }

 private:
  void DoRead() {
    parser_.emplace();
    parser_->body_limit(server_->opts().max_http_body_bytes);
    parser_->header_limit(16 * 1024);
    // One deadline for the whole request, from the end of the one before:
    // a client trickling a byte at a time gets no more time than one that
    // sends nothing.
    stream_.tcp().expires_after(std::chrono::milliseconds(server_->opts().request_timeout_ms));
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
      stream_.tcp().expires_never();
      server_->StartWebSocket(std::move(stream_), std::move(req), std::move(peer_));
      return;
    }
    auto res = std::make_shared<http::response<http::string_body>>(server_->HandleHttp(req, peer_));
    Write(std::move(res));
  }

  void Write(std::shared_ptr<http::response<http::string_body>> res) {
    res_ = std::move(res);
    stream_.tcp().expires_after(std::chrono::milliseconds(server_->opts().request_timeout_ms));
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
    stream_.tcp().socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.tcp().socket().close(ec);
  }

  Server::Impl* server_;
  FlexStream stream_;
  Peer peer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<http::response<http::string_body>> res_;
};

// Says whether a history answer was cut short, and where its next page
// starts (the time of the first entry left out; entries at that same
// millisecond come again).
template <typename Entry>
void AppendPage(std::string* out, const std::vector<Entry>& all, size_t max) {
  const bool cut = all.size() > max;
  absl::StrAppend(out, ",\"truncated\":", cut ? "true" : "false");
  if (cut) absl::StrAppend(out, ",\"next_from_ms\":", all[max].at_ms);
}

}  // namespace

void ServeHttp(Server::Impl* server, FlexStream stream, Peer peer) {
  std::make_shared<HttpSession>(server, std::move(stream), std::move(peer))->Start();
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

http::response<http::string_body> Server::Impl::HandleHttp(const http::request<http::string_body>& req,
                                                             const Peer& peer) {
  ++metrics_.http_requests;
  http::response<http::string_body> res = [&]() -> http::response<http::string_body> {
    std::optional<Target> t = ParseTarget(absl::string_view(req.target().data(), req.target().size()));
    if (!t) return Error(http::status::bad_request, "bad_request", "malformed URL encoding");
    const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
    if (!HostAllowed(req)) {
      return Error(http::status::misdirected_request, "bad_host", "this server does not answer to that Host");
    }

    // The metrics listener (--metrics-bind) serves the metrics alone, to
    // whoever reaches its address.
    if (peer.metrics_listener) {
      if (t->path == "/healthz") return Reply(http::status::ok, "{\"ok\":true}");
      if (t->path != "/metrics") return Error(http::status::not_found, "not_found", "this listener serves /metrics");
      if (!get) return Error(http::status::method_not_allowed, "method_not_allowed", "use GET");
      return Reply(http::status::ok, Metrics(), "text/plain; version=0.0.4; charset=utf-8");
    }

    // Public: the page, its files, a health check.
    auto file = static_files_.find(t->path);
    if (file != static_files_.end()) {
      if (!get) return Error(http::status::method_not_allowed, "method_not_allowed", "use GET");
      absl::string_view type = "text/html; charset=utf-8";
      if (absl::EndsWith(t->path, ".js")) type = "text/javascript; charset=utf-8";
      if (absl::EndsWith(t->path, ".css")) type = "text/css; charset=utf-8";
      return Reply(http::status::ok, file->second, type);
    }
    if (t->path == "/healthz") return Reply(http::status::ok, "{\"ok\":true}");

    const bool known_path = t->path == "/presence" || t->path == "/presence/override" ||
                            t->path == "/presence/history" || t->path == "/presence/stream" ||
                            t->path == "/metrics" || absl::StartsWith(t->path, "/operator/");
    if (!known_path) return Error(http::status::not_found, "not_found", absl::StrCat("no route ", t->path));
    // An engine node serves its metrics and its operator's rebuild.
    if (!ServesClients() && t->path != "/metrics" && t->path != "/operator/rebuild") {
      return Error(http::status::not_found, "not_a_gateway",
                   "this node is a cluster engine: clients connect to a gateway");
    }

    // Everything else needs a token (in the Authorization header: a token
    // in a URL ends up in logs and browser history).
    absl::StatusOr<std::string> viewer = Authenticate(TokenOf(req), ClientIp(req, peer));
    if (!viewer.ok()) {
      if (viewer.status().code() == absl::StatusCode::kResourceExhausted) {
        return Error(http::status::too_many_requests, "too_many_failures", viewer.status().message());
      }
      return Error(http::status::unauthorized, "unauthorized", viewer.status().message());
    }
    if (absl::StartsWith(t->path, "/operator/")) {
      OperatorReply r = HandleOperator(req, *t, *viewer);
      return Reply(r.status, std::move(r.body));
    }
    if (t->path == "/metrics") {
      // Operators only: the metrics count devices, so anyone else could
      // watch an invisible user connect.
      if (!opts_.access.IsOperator(*viewer)) {
        return Error(http::status::forbidden, "forbidden", "the metrics are for operators");
      }
      if (!get) return Error(http::status::method_not_allowed, "method_not_allowed", "use GET");
      return Reply(http::status::ok, Metrics(), "text/plain; version=0.0.4; charset=utf-8");
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
  // 403 before 404: whom the viewer may not read it cannot tell from whom
  // does not exist; only those it may read can be unknown (an operator's).
  std::vector<std::string> unknown, forbidden;
  for (const std::string& id : ids) {
    if (!opts_.access.MayRead(viewer, id)) forbidden.push_back(id);
    else if (id.size() > presence::kMaxUserIdBytes || !opts_.access.UserExists(id)) unknown.push_back(id);
  }
  if (!forbidden.empty()) {
    return Error(http::status::forbidden, "forbidden", "you may not see these users",
                 absl::StrCat(",\"user_ids\":", JsonStringArray(forbidden)));
  }
  if (!unknown.empty()) {
    return Error(http::status::not_found, "unknown_user", "no such user",
                 absl::StrCat(",\"user_ids\":", JsonStringArray(unknown)));
  }
  std::vector<absl::string_view> views(ids.begin(), ids.end());
  std::vector<presence::UserPresence> got = GetUsers(views, viewer);
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
      absl::StatusOr<std::vector<presence::OverrideInfo>> list =
          cluster_ == nullptr ? engine_->ListOverrides(viewer) : cluster_->ListOverrides(viewer);
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
  if (user != viewer) {
    return Error(http::status::forbidden, "forbidden", "a user may only set its own state");
  }
  int64_t until = r->until_ms;
  if (r->duration_ms > 0) until = engine_->NowMs() + r->duration_ms;
  // A cluster gateway publishes the set, with the id it chose, for the
  // user's owner (checked here as the engine would check it): accepted,
  // applied when the owner reads it.
  absl::StatusOr<uint64_t> id;
  if (cluster_ != nullptr) {
    // The owner would refuse a set past the user's most overrides, after
    // this 202, where nobody hears of it: refused here as one server does,
    // from the user's stack as its latest change carried it. (Sets not yet
    // published in a change are not counted there; the owner counts its
    // refusal of those.)
    if (auto held = cluster_->ListOverrides(user);
        held.ok() && held->size() >= static_cast<size_t>(engine_->options().max_overrides_per_user)) {
      return FromEngineError(absl::ResourceExhaustedError("user has the most overrides allowed"));
    }
    presence::OverrideCommand c;
    c.op = presence::OverrideOp::kSet;
    c.user_id = user;
    c.state = r->state;
    c.until_ms = until;
    id = cluster_->PublishOverride(c);
  } else {
    id = engine_->SetOverride(user, r->state, until);
  }
  if (!id.ok()) return FromEngineError(id.status());
  std::string out = absl::StrCat("{\"override_id\":", *id, ",\"user_id\":");
  AppendJsonString(&out, user);
  absl::StrAppend(&out, ",\"state\":\"", presence::OverrideStateName(r->state), "\",\"until_ms\":", until);
  if (cluster_ != nullptr) {
    out.append(",\"accepted\":true}");
    return Reply(http::status::accepted, std::move(out));
  }
  out.append("}");
  return Reply(http::status::ok, std::move(out));
}

// A revoke (one id, or all) on a cluster gateway: published for the user's
// owner, which applies it when it reads it; how many it removes is not
// known here.
http::response<http::string_body> Server::Impl::PublishRevoke(const std::string& user, presence::OverrideOp op,
                                                              uint64_t id) {
  presence::OverrideCommand c;
  c.op = op;
  c.user_id = user;
  c.override_id = id;
  absl::StatusOr<uint64_t> published = cluster_->PublishOverride(c);
  if (!published.ok()) return FromEngineError(published.status());
  return Reply(http::status::accepted, "{\"accepted\":true}");
}

http::response<http::string_body> Server::Impl::DeleteOverride(const Target& t, const std::string& viewer) {
  std::string user = viewer;
  if (const std::string* u = t.Get("user_id")) user = *u;
  if (!opts_.access.MayRevokeFor(viewer, user)) {
    return Error(http::status::forbidden, "forbidden", "only the user or an operator may revoke its overrides");
  }
  if (!opts_.access.UserExists(user)) return Error(http::status::not_found, "unknown_user", "no such user");
  const std::string* id_text = t.Get("override_id");
  const std::string* all = t.Get("all");
  if (id_text != nullptr) {
    uint64_t id = 0;
    if (!absl::SimpleAtoi(*id_text, &id)) {
      return Error(http::status::bad_request, "bad_request", "override_id must be a number");
    }
    if (cluster_ != nullptr) return PublishRevoke(user, presence::OverrideOp::kRevoke, id);
    absl::Status st = engine_->RevokeOverride(user, id);
    if (!st.ok()) return FromEngineError(st);
    return Reply(http::status::ok, "{\"revoked\":1}");
  }
  if (all != nullptr && (*all == "true" || *all == "1")) {
    if (cluster_ != nullptr) return PublishRevoke(user, presence::OverrideOp::kClear, 0);
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
  if (!opts_.access.MayRead(viewer, *user)) {
    return Error(http::status::forbidden, "forbidden", "you may not see this user");
  }
  if (!opts_.access.UserExists(*user)) return Error(http::status::not_found, "unknown_user", "no such user");
  // Times are ms on the engine's clock, never negative: a negative one is
  // refused (and an hour back from `to` cannot overflow).
  int64_t now = engine_->NowMs();
  int64_t to = now, from = 0;
  if (const std::string* s = t.Get("to"); s && (!absl::SimpleAtoi(*s, &to) || to < 0)) {
    return Error(http::status::bad_request, "bad_request", "to must be a time in ms, >= 0");
  }
  if (const std::string* s = t.Get("from"); s && (!absl::SimpleAtoi(*s, &from) || from < 0)) {
    return Error(http::status::bad_request, "bad_request", "from must be a time in ms, >= 0");
  } else if (!s) {
    from = std::max<int64_t>(to - 3600 * 1000, 0);
  }
  if (from > to) return Error(http::status::bad_request, "bad_request", "from is after to");
  if (const std::string* device = t.Get("device_id")) return GetDeviceHistory(*user, *device, from, to, viewer);
  // The user itself and operators see the audit trail; others see what the
  // engine answers anyone but the user: the public view (docs/design.md rule 8),
  // whose entries carry no cause or trace id.
  const bool full = *user == viewer || opts_.access.IsOperator(viewer);
  const absl::string_view as = full ? absl::string_view(*user) : absl::string_view(viewer);
  absl::StatusOr<std::vector<presence::Transition>> h = engine_->History(*user, from, to, as);
  if (!h.ok()) return FromEngineError(h.status());
  std::string out = "{\"user_id\":";
  AppendJsonString(&out, *user);
  absl::StrAppend(&out, ",\"from_ms\":", from, ",\"to_ms\":", to, ",\"full\":", full ? "true" : "false",
                  ",\"transitions\":[");
  const size_t n = std::min(h->size(), opts_.max_history_entries);
  for (size_t i = 0; i < n; ++i) {
    const presence::Transition& tr = (*h)[i];
    if (i > 0) out.push_back(',');
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
  AppendPage(&out, *h, opts_.max_history_entries);
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

// One device's audit (docs/design.md section 4): the user's own and operators'
// only (rule 8); anyone else who may read the user gets 403, whether or not
// the device exists.
http::response<http::string_body> Server::Impl::GetDeviceHistory(const std::string& user, const std::string& device,
                                                                 int64_t from, int64_t to,
                                                                 const std::string& viewer) {
  if (user != viewer && !opts_.access.IsOperator(viewer)) {
    return Error(http::status::forbidden, "forbidden", "a device's history is only its user's and operators'");
  }
  absl::StatusOr<std::vector<presence::DeviceTransition>> h = engine_->DeviceHistory(user, device, from, to, user);
  if (!h.ok()) return FromEngineError(h.status());
  std::string out = "{\"user_id\":";
  AppendJsonString(&out, user);
  out.append(",\"device_id\":");
  AppendJsonString(&out, device);
  absl::StrAppend(&out, ",\"from_ms\":", from, ",\"to_ms\":", to, ",\"device_transitions\":[");
  const size_t n = std::min(h->size(), opts_.max_history_entries);
  for (size_t i = 0; i < n; ++i) {
    const presence::DeviceTransition& tr = (*h)[i];
    if (i > 0) out.push_back(',');
    absl::StrAppend(&out, "{\"at_ms\":", tr.at_ms, ",\"session_id\":", tr.session_id, ",\"event\":\"",
                    presence::DeviceEventName(tr.event), "\",\"platform\":\"", presence::PlatformName(tr.platform),
                    "\"}");
  }
  out.append("]");
  AppendPage(&out, *h, opts_.max_history_entries);
  out.append("}");
  return Reply(http::status::ok, std::move(out));
}

std::string Server::Impl::Metrics() const {
  std::string out = engine_->RenderMetrics();
  out.append(fanout_->RenderMetrics());
  if (cluster_ != nullptr) out.append(cluster_->RenderMetrics());
  if (file_store_ != nullptr) out.append(file_store_->RenderMetrics());
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
  gauge("presence_server_connections", "Open connections, HTTP and WebSocket, authenticated or not.",
        open_connections_);
  gauge("presence_server_max_connections", "The cap on open connections (after the fd limit check).",
        opts_.max_connections);
  gauge("presence_server_fd_limit", "The process's file descriptor limit (soft), as raised at start.", fd_limit_);
  absl::StrAppend(&out,
                  "# HELP presence_server_connections_refused_total Connections closed at accept, by cap.\n"
                  "# TYPE presence_server_connections_refused_total counter\n");
  for (const char* reason : {"per_ip", "total"}) {
    auto it = metrics_.refused.find(reason);
    absl::StrAppend(&out, "presence_server_connections_refused_total{reason=\"", reason, "\"} ",
                    it == metrics_.refused.end() ? 0 : it->second, "\n");
  }
  counter("presence_server_idle_disconnects_total", "WebSocket clients closed for sending nothing.",
          metrics_.idle_disconnects);
  counter("presence_server_tls_handshake_failures_total", "TLS handshakes that failed or timed out.",
          metrics_.tls_handshake_failures);
  counter("presence_server_auth_failures_total", "Logins with a wrong or missing token.", metrics_.auth_failures);
  counter("presence_server_auth_throttled_total",
          "Logins refused because their address failed too often lately.", metrics_.auth_throttled);
  counter("presence_server_ticks_total", "Engine ticks run by the server's timer.", metrics_.ticks);
  counter("presence_server_tick_seconds_total", "Time spent in ticks (engine, fan-out, JSON, simulation).",
          metrics_.tick_seconds_sum);
  gauge("presence_server_tick_seconds_max", "Longest tick so far.", metrics_.tick_seconds_max);
  return out;
}

}  // namespace presence_server
