// File: examples/presence_server/server.cc
//
// The listener and its limits: Server::Impl's start (page, store, engine,
// fan-out, socket), the accept loop, WebSocket admission (token, platform,
// device id, max_connections), the tick with its sweep of idle and slow
// clients, the simulated clients, shutdown; and the helpers the units
// share. See server_internal.h for the map of the three units.
#include "server.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "json.h"
#include "presence/bus.h"
#include "server_internal.h"

namespace presence_server {

int64_t MonoMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

namespace {

const char* PbStateWire(int s) {
  switch (s) {
    case pb::STATE_AWAY: return "away";
    case pb::STATE_ONLINE: return "online";
    case pb::STATE_DND: return "dnd";
    default: return "offline";
  }
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

}  // namespace

std::string TokenOf(const http::request<http::string_body>& req) {
  auto auth = req.find(http::field::authorization);
  if (auth != req.end() && auth->value().starts_with("Bearer ")) {
    return std::string(auth->value().substr(7));
  }
  return std::string();
}

std::string LogSafe(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out.append("\\x");
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
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

std::string ErrorJson(absl::string_view code, absl::string_view message, absl::string_view extra) {
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

  // Simulated users join the simulation's topic, and no one else: who may
  // read whom is the access config's alone (a config that wants its people
  // to watch the crowd names them in the topic).
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
    opts_.access.AddTopicMembers(opts_.simulate_topic, members);
  }

  // The durable state, the engine and the fan-out: the file store, unless a
  // cluster node shares another (cluster.h).
  const ClusterOptions& co = opts_.cluster;
  if (co.role == ClusterRole::kNone || co.store == "file") {
    presence::FileStoreOptions fo;
    fo.sync = opts_.sync;
    absl::StatusOr<std::unique_ptr<presence::FileStore>> fs = presence::FileStore::Open(opts_.data_dir, fo);
    if (!fs.ok()) return fs.status();
    file_store_ = std::move(*fs);
    opts_.engine.store = file_store_->store();
    opts_.engine.history = file_store_->history();
  }
  // Silent WebSocket clients are pinged (ws_session.cc); on a cluster node
  // the devices' owner is another process, which probes nothing.
  if (co.role == ClusterRole::kNone) opts_.engine.prober = this;
  if (co.role != ClusterRole::kNone) {
    if (opts_.simulate > 0) {
      return absl::InvalidArgumentError("--simulate drives a local engine: it is for one process, not a cluster node");
    }
    absl::StatusOr<std::unique_ptr<Cluster>> cluster = Cluster::Create(co, &opts_.engine);
    if (!cluster.ok()) return cluster.status();
    cluster_ = std::move(*cluster);
  }
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
  if (cluster_ != nullptr) {
    absl::Status st =
        cluster_->Attach(
            engine_.get(), fanout_.get(), [this](const presence::Signal& s) { ReplacedElsewhere(s); },
            [this](int64_t issued_at_ms, uint32_t partition) { DrainedHere(issued_at_ms, partition); });
    if (!st.ok()) return st;
  }

  for (const std::string& p : opts_.trusted_proxies) {
    beast::error_code ec;
    net::ip::address a = net::ip::make_address(p, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("--trusted-proxy ", p, ": not an IP address"));
    trusted_proxies_.push_back(a);
  }
  if (absl::Status st = InitTls(); !st.ok()) return st;
  if (absl::Status st = RaiseFdLimit(); !st.ok()) return st;
  if (absl::Status st = Listen(&acceptor_, opts_.bind_address, opts_.port, "--bind/--port"); !st.ok()) return st;
  port_ = acceptor_.local_endpoint().port();
  if (!opts_.metrics_bind.empty()) {
    size_t colon = opts_.metrics_bind.rfind(':');
    int port = -1;
    if (colon == std::string::npos || !absl::SimpleAtoi(opts_.metrics_bind.substr(colon + 1), &port) ||
        port < 0 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("--metrics-bind ", opts_.metrics_bind, ": give ADDRESS:PORT, e.g. 127.0.0.1:9464"));
    }
    std::string host = opts_.metrics_bind.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    absl::Status st = Listen(&metrics_acceptor_, host, static_cast<uint16_t>(port), "--metrics-bind");
    if (!st.ok()) return st;
    metrics_port_ = metrics_acceptor_.local_endpoint().port();
  }
  return absl::OkStatus();
}

absl::Status Server::Impl::InitTls() {
  if (opts_.tls_cert_file.empty() && opts_.tls_key_file.empty()) return absl::OkStatus();
  if (opts_.tls_cert_file.empty() || opts_.tls_key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
  }
  tls_ = std::make_unique<net::ssl::context>(net::ssl::context::tls_server);
  tls_->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                    net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1 |
                    net::ssl::context::single_dh_use);
  beast::error_code ec;
  tls_->use_certificate_chain_file(opts_.tls_cert_file, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls-cert ", opts_.tls_cert_file, ": ", ec.message()));
  tls_->use_private_key_file(opts_.tls_key_file, net::ssl::context::pem, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls-key ", opts_.tls_key_file, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status Server::Impl::RaiseFdLimit() {
  // Each connection is a descriptor; the store, the listeners and the
  // process need a few more. Raise the soft limit as far as the caps need
  // (and the hard limit allows); past that, lower the cap and say so, so
  // that accept never fails for want of descriptors.
  constexpr size_t kReserve = 64;
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return absl::InternalError("getrlimit(RLIMIT_NOFILE) failed");
  const rlim_t want = static_cast<rlim_t>(opts_.max_connections + kReserve);
  if (lim.rlim_cur < want) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max == RLIM_INFINITY ? want : std::min(want, lim.rlim_max);
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  fd_limit_ = lim.rlim_cur;
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < want) {
    if (lim.rlim_cur <= kReserve * 2) {
      return absl::FailedPreconditionError(
          absl::StrCat("the file descriptor limit is ", lim.rlim_cur, " (ulimit -n): too low to serve"));
    }
    size_t cap = static_cast<size_t>(lim.rlim_cur) - kReserve;
    std::fprintf(stderr,
                 "presence_server: --max-connections lowered from %zu to %zu: the file descriptor limit is %llu "
                 "(raise it with ulimit -n)\n",
                 opts_.max_connections, cap, static_cast<unsigned long long>(lim.rlim_cur));
    opts_.max_connections = cap;
  }
  return absl::OkStatus();
}

absl::Status Server::Impl::Listen(tcp::acceptor* acceptor, const std::string& address, uint16_t port,
                                  const char* flag) {
  beast::error_code ec;
  net::ip::address addr = net::ip::make_address(address, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat(flag, " ", address, ": ", ec.message()));
  tcp::endpoint ep(addr, port);
  acceptor->open(ep.protocol(), ec);
  if (!ec) acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(ep, ec);
  if (!ec) acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ":", port, ": ", ec.message()));
  return absl::OkStatus();
}

void Server::Impl::Run() {
  DoAccept(&acceptor_, false);
  if (metrics_acceptor_.is_open()) DoAccept(&metrics_acceptor_, true);
  next_tick_ = std::chrono::steady_clock::now();
  ScheduleTick();
  if (opts_.exit_after_s > 0) {
    exit_timer_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(opts_.exit_after_s * 1000)));
    exit_timer_.async_wait([this](beast::error_code ec) {
      if (!ec) BeginShutdown();
    });
  }
  ioc_.run();
  // Everything is closed: publish and persist the end (the sessions' last
  // disconnects first: their flush may not have come).
  if (cluster_ != nullptr) {
    cluster_->Flush();
    cluster_->BeforeTick();
  }
  engine_->Tick();
  if (cluster_ != nullptr) cluster_->Close();  // an engine hands its partitions over at once
  if (file_store_ != nullptr) file_store_->Sync().IgnoreError();
}

void Server::Impl::BeginShutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  beast::error_code ec;
  acceptor_.close(ec);
  metrics_acceptor_.close(ec);
  tick_timer_.cancel();
  exit_timer_.cancel();
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

ConnectionSlot::~ConnectionSlot() { server_->ReleaseConnection(ip_); }

void Server::Impl::ReleaseConnection(const net::ip::address& ip) {
  --open_connections_;
  auto it = open_by_ip_.find(ip);
  if (it != open_by_ip_.end() && --it->second == 0) open_by_ip_.erase(it);
}

void Server::Impl::DoAccept(tcp::acceptor* acceptor, bool metrics_listener) {
  acceptor->async_accept(ioc_, [this, acceptor, metrics_listener](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || shutting_down_) return;
      // Out of descriptors (the caps are below the limit, so only when
      // something else holds them) and the like: try again shortly.
      auto t = std::make_shared<net::steady_timer>(ioc_, std::chrono::milliseconds(50));
      t->async_wait([this, t, acceptor, metrics_listener](beast::error_code) {
        if (!shutting_down_) DoAccept(acceptor, metrics_listener);
      });
      return;
    }
    net::ip::address ip = socket.remote_endpoint(ec).address();
    if (ec) {
      DoAccept(acceptor, metrics_listener);
      return;  // gone already
    }
    // The caps, before a byte is read: a client past them is closed at once.
    const char* refused = nullptr;
    size_t& from_ip = open_by_ip_[ip];
    if (open_connections_ >= opts_.max_connections) {
      refused = "total";
    } else if (from_ip >= opts_.max_connections_per_ip) {
      refused = "per_ip";
    }
    if (refused != nullptr) {
      if (from_ip == 0) open_by_ip_.erase(ip);
      ++metrics_.refused[refused];
      socket.close(ec);
      DoAccept(acceptor, metrics_listener);
      return;
    }
    ++open_connections_;
    ++from_ip;
    Peer peer;
    peer.slot = std::make_shared<ConnectionSlot>(this, ip);
    peer.metrics_listener = metrics_listener;
    socket.set_option(tcp::no_delay(true), ec);
    if (tls_ && !metrics_listener) {
      peer.tls = true;
      ServeHttp(this, FlexStream(std::move(socket), *tls_), std::move(peer));
    } else {
      ServeHttp(this, FlexStream(std::move(socket)), std::move(peer));
    }
    DoAccept(acceptor, metrics_listener);
  });
}

absl::StatusOr<std::string> Server::Impl::Authenticate(absl::string_view token, const net::ip::address& ip) {
  if (token.empty()) {
    // Not a guess: no bucket is charged.
    ++metrics_.auth_failures;
    return absl::UnauthenticatedError("a valid token is needed (Authorization: Bearer TOKEN)");
  }
  const int64_t now = MonoMs();
  auto it = auth_failures_.find(ip);
  if (it != auth_failures_.end()) {
    AuthBucket& b = it->second;
    b.tokens = std::min<double>(opts_.failed_auth_burst,
                                b.tokens + (now - b.refilled_ms) * opts_.failed_auth_per_minute / 60000.0);
    b.refilled_ms = now;
    if (b.tokens < 1) {
      ++metrics_.auth_throttled;
      return absl::ResourceExhaustedError(
          "too many failed logins from this address; try again in a minute");
    }
  }
  std::optional<std::string> user = opts_.access.Authenticate(token);
  if (user) return std::move(*user);
  ++metrics_.auth_failures;
  if (it == auth_failures_.end()) {
    it = auth_failures_.emplace(ip, AuthBucket{static_cast<double>(opts_.failed_auth_burst), now}).first;
  }
  it->second.tokens -= 1;
  return absl::UnauthenticatedError("a valid token is needed (Authorization: Bearer TOKEN)");
}

bool Server::Impl::AdmitUserConnection(const std::string& user) {
  size_t& n = ws_by_user_[user];
  if (n >= opts_.max_connections_per_user) {
    if (n == 0) ws_by_user_.erase(user);
    return false;
  }
  ++n;
  return true;
}

void Server::Impl::ReleaseUserConnection(const std::string& user) {
  auto it = ws_by_user_.find(user);
  if (it != ws_by_user_.end() && --it->second == 0) ws_by_user_.erase(it);
}

void Server::Impl::ClaimDevice(const std::string& user, const std::string& device,
                               const std::shared_ptr<WsSession>& s) {
  std::weak_ptr<WsSession>& slot = ws_by_device_[std::make_pair(user, device)];
  std::shared_ptr<WsSession> before = slot.lock();
  slot = s;
  if (before && before != s) before->Replaced();
}

void Server::Impl::ReplacedElsewhere(const presence::Signal& s) {
  auto it = ws_by_device_.find(std::make_pair(std::string(s.user_id), std::string(s.device_id)));
  if (it == ws_by_device_.end()) return;
  std::shared_ptr<WsSession> holder = it->second.lock();
  // Session ids grow with time on every node: the newer session wins, as
  // at the owner. (An older one still heartbeating elsewhere is that node's
  // to close.)
  if (holder && holder->session_id() < s.session_id) holder->Replaced();
}

void Server::Impl::DrainedHere(int64_t issued_at_ms, uint32_t partition) {
  // Session ids are the time in ms shifted left by 12 (NextSessionId);
  // issued_at_ms is at most 2^50. Every connection the owner may have
  // drained began before the drain's margin ended (presence/types.h). Only
  // the copy's partition: its owner read the drain before the disconnects
  // published here, and a client that connects again is not closed by the
  // copy of another partition.
  const uint64_t before = static_cast<uint64_t>(issued_at_ms + presence::kDrainHeardAfterMs) << 12;
  std::vector<std::shared_ptr<WsSession>> drained;
  for (const auto& [device, session] : ws_by_device_) {
    if (presence::PartitionFor(device.first, cluster_->partitions()) != partition) continue;
    std::shared_ptr<WsSession> holder = session.lock();
    if (holder && holder->session_id() < before) drained.push_back(std::move(holder));
  }
  for (const auto& s : drained) s->Drained();
}

void Server::Impl::ReleaseDevice(const std::string& user, const std::string& device, const WsSession* s) {
  auto it = ws_by_device_.find(std::make_pair(user, device));
  if (it == ws_by_device_.end()) return;
  std::shared_ptr<WsSession> holder = it->second.lock();
  if (!holder || holder.get() == s) ws_by_device_.erase(it);
}

namespace {

// The host part of a Host header or an origin's authority: "[::1]:8080" ->
// "::1", "example.com:443" -> "example.com"; lower case.
std::string HostOnly(absl::string_view authority) {
  std::string h = absl::AsciiStrToLower(authority);
  if (!h.empty() && h.front() == '[') {
    size_t close = h.find(']');
    return close == std::string::npos ? h : h.substr(1, close - 1);
  }
  size_t colon = h.find(':');
  return colon == std::string::npos ? h : h.substr(0, colon);
}

bool IsLoopbackName(absl::string_view host) {
  if (host == "localhost") return true;
  beast::error_code ec;
  net::ip::address a = net::ip::make_address(std::string(host), ec);
  return !ec && a.is_loopback();
}

}  // namespace

net::ip::address Server::Impl::ClientIp(const http::request<http::string_body>& req, const Peer& peer) const {
  const net::ip::address& from = peer.slot->ip();
  if (std::find(trusted_proxies_.begin(), trusted_proxies_.end(), from) == trusted_proxies_.end()) return from;
  auto it = req.find("X-Forwarded-For");
  if (it == req.end()) return from;
  absl::string_view list(it->value().data(), it->value().size());
  size_t comma = list.rfind(',');
  absl::string_view last = absl::StripAsciiWhitespace(comma == absl::string_view::npos ? list : list.substr(comma + 1));
  beast::error_code ec;
  net::ip::address client = net::ip::make_address(std::string(last), ec);
  return ec ? from : client;
}

bool Server::Impl::HostAllowed(const http::request<http::string_body>& req) const {
  auto it = req.find(http::field::host);
  if (it == req.end()) return false;  // HTTP/1.1 requires it
  const std::string host = HostOnly(absl::string_view(it->value().data(), it->value().size()));
  if (!opts_.allowed_hosts.empty()) {
    return std::find(opts_.allowed_hosts.begin(), opts_.allowed_hosts.end(), host) != opts_.allowed_hosts.end();
  }
  // By default a server bound to loopback answers only to loopback names,
  // which a DNS-rebinding page cannot send; one bound to a public address
  // answers to any name (give --allowed-host to narrow it).
  beast::error_code ec;
  net::ip::address bound = net::ip::make_address(opts_.bind_address, ec);
  if (!ec && bound.is_loopback()) return IsLoopbackName(host);
  return true;
}

bool Server::Impl::OriginAllowed(const http::request<http::string_body>& req) const {
  auto it = req.find(http::field::origin);
  if (it == req.end()) return true;  // not a browser: its token is its proof
  const std::string origin = absl::AsciiStrToLower(absl::string_view(it->value().data(), it->value().size()));
  if (!opts_.allowed_origins.empty()) {
    for (const std::string& o : opts_.allowed_origins) {
      if (absl::AsciiStrToLower(o) == origin) return true;
    }
    return false;
  }
  // By default only the page's own origin: the host it asked for, over
  // http or https (a TLS front such as nginx passes the Host on, but speaks
  // plain HTTP to this server).
  auto host = req.find(http::field::host);
  if (host == req.end()) return false;
  const std::string self = absl::AsciiStrToLower(absl::string_view(host->value().data(), host->value().size()));
  return origin == absl::StrCat("http://", self) || origin == absl::StrCat("https://", self);
}

absl::StatusOr<DeviceHandle> Server::Impl::ConnectDevice(const presence::Signal& s) {
  if (cluster_ == nullptr) return engine_->Connect(s);
  cluster_->Queue(s, std::nullopt, /*connect=*/true, nullptr);  // refused: the heartbeats that follow connect it
  ScheduleFlush(/*soon=*/true);
  return DeviceHandle{s.session_id};  // the owner keys the device by its ids, not by a handle
}

void Server::Impl::BeatDevice(DeviceHandle h, const presence::Signal& s, bool changed,
                              std::function<void(const absl::Status&)> done) {
  if (cluster_ == nullptr) {
    done(engine_->Beat(h, s.activity, s.source));
    return;
  }
  cluster_->Queue(s, std::nullopt, /*connect=*/false, std::move(done));
  ScheduleFlush(/*soon=*/changed);
}

void Server::Impl::DisconnectDevice(DeviceHandle h, const presence::Signal& s, DisconnectKind kind) {
  if (cluster_ == nullptr) {
    engine_->Disconnect(h, kind).IgnoreError();
    return;
  }
  // Refused only while the bus fails with the buffer full: the owner then
  // times the device out, as it would a lost connection.
  cluster_->Queue(s, kind, /*connect=*/false, nullptr);
  ScheduleFlush(/*soon=*/true);
}

void Server::Impl::ScheduleFlush(bool soon) {
  const auto at = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(soon ? opts_.cluster.flush_ms : HeartbeatFlushMs(opts_.cluster));
  if (flush_scheduled_ && flush_at_ <= at) return;
  flush_scheduled_ = true;
  flush_at_ = at;
  flush_timer_.expires_at(at);  // brought forward: the wait for the later time ends
  flush_timer_.async_wait([this, at](beast::error_code) {
    if (flush_at_ != at) return;  // brought forward since: that wait flushes
    flush_scheduled_ = false;
    cluster_->Flush();
  });
}

std::vector<presence::UserPresence> Server::Impl::GetUsers(absl::Span<const absl::string_view> users,
                                                           absl::string_view viewer) {
  return cluster_ == nullptr ? engine_->Get(users, viewer) : cluster_->Get(users, viewer);
}

void Server::Impl::StartWebSocket(FlexStream stream, http::request<http::string_body> req, Peer peer) {
  ++metrics_.http_requests;
  auto reject = [&](http::status status, absl::string_view code, absl::string_view message) {
    ++metrics_.ws_rejected;
    ++metrics_.http_by_status[static_cast<int>(status)];
    CountError(code);
    struct Rejection {
      FlexStream stream;
      http::response<http::string_body> res;
      std::shared_ptr<ConnectionSlot> slot;
    };
    auto r = std::make_shared<Rejection>(Rejection{std::move(stream), {status, req.version()}, peer.slot});
    r->res.set(http::field::content_type, "application/json");
    r->res.keep_alive(false);
    r->res.body() = ErrorJson(code, message);
    r->res.prepare_payload();
    r->stream.tcp().expires_after(std::chrono::seconds(5));
    http::async_write(r->stream, r->res, [r](beast::error_code, size_t) {
      beast::error_code ec;
      r->stream.tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
    });
  };
  std::optional<Target> t = ParseTarget(absl::string_view(req.target().data(), req.target().size()));
  if (peer.metrics_listener || !t || t->path != "/presence/stream") {
    reject(http::status::not_found, "not_found", "the WebSocket endpoint is /presence/stream");
    return;
  }
  if (!ServesClients()) {
    reject(http::status::not_found, "not_a_gateway", "this node is a cluster engine: clients connect to a gateway");
    return;
  }
  if (!HostAllowed(req)) {
    reject(http::status::misdirected_request, "bad_host", "this server does not answer to that Host");
    return;
  }
  if (!OriginAllowed(req)) {
    reject(http::status::forbidden, "bad_origin", "WebSocket connections from this origin are not allowed");
    return;
  }
  // A client that can set headers proves itself now; a browser cannot, and
  // sends {"type":"auth"} first (never the token in the URL, where logs and
  // history keep it).
  std::optional<std::string> user;
  if (std::string token = TokenOf(req); !token.empty()) {
    absl::StatusOr<std::string> u = Authenticate(token, ClientIp(req, peer));
    if (!u.ok()) {
      const bool throttled = u.status().code() == absl::StatusCode::kResourceExhausted;
      reject(throttled ? http::status::too_many_requests : http::status::unauthorized,
             throttled ? "too_many_failures" : "unauthorized", u.status().message());
      return;
    }
    user = std::move(*u);
  }
  if (shutting_down_) {
    reject(http::status::service_unavailable, "shutting_down", "the server is stopping; try again later");
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
    stream.tcp().socket().set_option(net::socket_base::send_buffer_size(opts_.socket_send_buffer), ec);
  }
  peer.client = ClientIp(req, peer);
  std::make_shared<WsSession>(this, std::move(stream), std::move(peer))
      ->Start(std::move(req), std::move(user), std::move(device), platform);
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
  if (cluster_ != nullptr) cluster_->BeforeTick();  // bus in, remote changes to the fan-out
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
  // Addresses whose failed-auth bucket has filled up again are forgotten.
  for (auto it = auth_failures_.begin(); it != auth_failures_.end();) {
    const AuthBucket& b = it->second;
    if (b.tokens + (now - b.refilled_ms) * opts_.failed_auth_per_minute / 60000.0 >= opts_.failed_auth_burst) {
      auth_failures_.erase(it++);
    } else {
      ++it;
    }
  }
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

// ---- Server ---------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Server>> Server::Create(ServerOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  if (absl::Status st = impl->Init(); !st.ok()) return st;
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() {
  // The cluster's ownership and feed use the engine and the fan-out, which
  // go before it (it holds the bus and the store they use): let them go
  // first. Run did already, unless Init failed half-way.
  if (impl_->cluster() != nullptr) impl_->cluster()->Close();
}
uint16_t Server::port() const { return impl_->port(); }
uint16_t Server::metrics_port() const { return impl_->metrics_port(); }
std::string Server::url() const {
  return absl::StrCat(impl_->tls() != nullptr ? "https://" : "http://", impl_->opts().bind_address, ":",
                      impl_->port(), "/");
}
void Server::Run() { impl_->Run(); }
void Server::Stop() { impl_->Stop(); }

}  // namespace presence_server
