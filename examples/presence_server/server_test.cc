// Integration tests of the example server over loopback: a real server (in
// this process, on its own thread, port 0) and Beast clients for HTTP and
// WebSocket; the last tests start the presence_server program itself.
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "json.h"
#include "server.h"

namespace presence_server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

constexpr char kConfig[] =
    "user alice tok-alice bob carol\n"
    "user bob tok-bob alice\n"
    "user carol tok-carol\n"
    "user eve tok-eve\n"
    "topic team alice bob carol\n"
    "operator root\n";

std::string TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "presence_server_test.XXXXXX").string();
  char* made = mkdtemp(tmpl.data());
  EXPECT_NE(made, nullptr);
  return tmpl;
}

struct HttpResult {
  int status = 0;
  std::string body;
  Json json;
};

HttpResult Http(uint16_t port, http::verb method, const std::string& target, const std::string& token = "",
                const std::string& body = "") {
  net::io_context ioc;
  tcp::socket socket(ioc);
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req(method, target, 11);
  req.set(http::field::host, "127.0.0.1");
  if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
  if (!body.empty() || method == http::verb::post) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.prepare_payload();
  http::write(socket, req);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  beast::error_code ec;
  http::read(socket, buf, res, ec);
  HttpResult out;
  out.status = res.result_int();
  out.body = res.body();
  absl::StatusOr<Json> j = ParseJson(out.body);
  if (j.ok()) out.json = std::move(*j);
  return out;
}

std::string Str(const Json& j, const char* key) {
  const Json* v = j.Find(key);
  return v != nullptr && v->is_string() ? v->as_string() : "";
}

// A WebSocket client with a read always pending; Next() runs its io_context
// until a message arrives, the connection closes or time runs out.
class WsClient {
 public:
  // Connects and upgrades; on a refused upgrade, returns false and
  // *status holds the HTTP status.
  bool Connect(uint16_t port, const std::string& target, int* status = nullptr, int rcvbuf = 0) {
    if (rcvbuf > 0) {
      ws_.next_layer().open(tcp::v4());
      ws_.next_layer().set_option(net::socket_base::receive_buffer_size(rcvbuf));
    }
    ws_.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    websocket::response_type res;
    beast::error_code ec;
    ws_.handshake(res, "127.0.0.1", target, ec);
    if (status != nullptr) *status = res.result_int();
    if (ec) {
      std::fprintf(stderr, "handshake %s: %s (HTTP %d)\n", target.c_str(), ec.message().c_str(),
                   res.result_int());
      return false;
    }
    return true;
  }

  void StartReading() {
    ws_.async_read(buf_, [this](beast::error_code ec, size_t) {
      if (ec) {
        closed_ = true;
        close_ec_ = ec;
        return;
      }
      inbox_.push_back(beast::buffers_to_string(buf_.data()));
      buf_.consume(buf_.size());
      StartReading();
    });
  }

  void Send(const std::string& text, bool binary = false) {
    bool done = false;
    ws_.binary(binary);
    ws_.async_write(net::buffer(text), [&](beast::error_code, size_t) { done = true; });
    if (ioc_.stopped()) ioc_.restart();
    while (!done && ioc_.run_one_for(5s) > 0) {
    }
  }

  std::optional<std::string> Next(std::chrono::milliseconds timeout = 5s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    if (ioc_.stopped()) ioc_.restart();
    while (inbox_.empty() && !closed_ && std::chrono::steady_clock::now() < deadline) {
      ioc_.run_one_for(std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now()));
    }
    if (inbox_.empty()) return std::nullopt;
    std::string m = std::move(inbox_.front());
    inbox_.pop_front();
    return m;
  }

  // The next message whose "type" is `type` (others are skipped), or
  // nullopt.
  std::optional<Json> NextOfType(const std::string& type, std::chrono::milliseconds timeout = 5s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      std::optional<std::string> m =
          Next(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
      if (!m) return std::nullopt;
      absl::StatusOr<Json> j = ParseJson(*m);
      EXPECT_TRUE(j.ok()) << "the server sent invalid JSON: " << *m;
      if (j.ok() && Str(*j, "type") == type) return std::move(*j);
    }
    return std::nullopt;
  }

  // Reads batches until `user` has `state` in this client's view (its list
  // or any topic), or time runs out.
  bool WaitForState(const std::string& user, const std::string& state, std::chrono::milliseconds timeout) {
    if (last_[user] == state) return true;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      std::optional<std::string> m =
          Next(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
      if (!m) return false;
      absl::StatusOr<Json> j = ParseJson(*m);
      if (!j.ok()) return false;
      if (getenv("WS_TRACE")) std::fprintf(stderr, "<- %s\n", m->c_str());
      std::string type = Str(*j, "type");
      if (type != "snapshot" && type != "diff") continue;
      auto scan = [&](const Json* users) {
        if (users == nullptr) return;
        for (const Json& u : users->items()) last_[Str(u, "user_id")] = Str(u, "state");
      };
      scan(j->Find("users"));
      if (const Json* topics = j->Find("topics")) {
        for (const Json& t : topics->items()) scan(t.Find("users"));
      }
      if (last_[user] == state) return true;
    }
    return false;
  }

  void Drop() {
    beast::error_code ec;
    ws_.next_layer().close(ec);
  }
  void CloseCleanly() {
    bool done = false;
    ws_.async_close(websocket::close_code::normal, [&](beast::error_code) { done = true; });
    if (ioc_.stopped()) ioc_.restart();
    while (!done && ioc_.run_one_for(3s) > 0) {
    }
  }
  bool closed() const { return closed_; }
  websocket::close_reason reason() const { return ws_.reason(); }
  void Poll(std::chrono::milliseconds d) {
    if (ioc_.stopped()) ioc_.restart();
    ioc_.run_for(d);
  }

 private:
  net::io_context ioc_;
  websocket::stream<tcp::socket> ws_{ioc_};
  beast::flat_buffer buf_;
  std::deque<std::string> inbox_;
  bool closed_ = false;
  beast::error_code close_ec_;
  std::map<std::string, std::string> last_;
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir();
    Start();
  }

  void Start(std::function<void(ServerOptions&)> tweak = {}) {
    ServerOptions o;
    o.port = 0;
    o.data_dir = dir_;
    o.web_dir = PRESENCE_SERVER_WEB_DIR;
    EXPECT_TRUE(o.access.AddConfig(kConfig).ok());
    EXPECT_TRUE(o.access.AddTokens("tok-root=root").ok());
    o.max_message_bytes = 1024;
    o.max_subscriptions = 3;
    o.max_queue_bytes = 16 * 1024;
    o.write_stall_ms = 2000;
    o.socket_send_buffer = 8192;
    o.message_rate = 1e6;
    o.message_burst = 1e6;
    if (tweak) tweak(o);
    absl::StatusOr<std::unique_ptr<Server>> s = Server::Create(std::move(o));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    port_ = server_->port();
    thread_ = std::thread([this] { server_->Run(); });
  }

  void StopServer() {
    if (!server_) return;
    server_->Stop();
    thread_.join();
    server_.reset();
  }

  void TearDown() override {
    StopServer();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Connects as `token`'s user and reads the welcome.
  std::unique_ptr<WsClient> Connect(const std::string& token, const std::string& device = "d1") {
    auto c = std::make_unique<WsClient>();
    EXPECT_TRUE(c->Connect(port_, "/presence/stream?token=" + token + "&device_id=" + device));
    c->StartReading();
    std::optional<Json> w = c->NextOfType("welcome");
    EXPECT_TRUE(w.has_value());
    return c;
  }

  std::string dir_;
  std::unique_ptr<Server> server_;
  uint16_t port_ = 0;
  std::thread thread_;
};

TEST_F(ServerTest, GetPresenceNeedsATokenAndChecksWhoMaySee) {
  HttpResult r = Http(port_, http::verb::get, "/presence?user_ids=alice,bob", "tok-alice");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.json.Find("users")->items().size(), 2u);
  EXPECT_EQ(Str(r.json.Find("users")->items()[1], "state"), "offline");
  EXPECT_TRUE(r.json.Find("now_ms")->is_int());

  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=alice").status, 401);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=alice", "wrong").status, 401);
  r = Http(port_, http::verb::get, "/presence?user_ids=alice&token=tok-alice");
  EXPECT_EQ(r.status, 200);

  r = Http(port_, http::verb::get, "/presence?user_ids=bob,mallory", "tok-alice");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Str(r.json, "error"), "unknown_user");
  EXPECT_NE(r.body.find("mallory"), std::string::npos);

  r = Http(port_, http::verb::get, "/presence?user_ids=eve", "tok-alice");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(Str(r.json, "error"), "forbidden");
  // bob watches alice, not carol; the team topic makes them mates though.
  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=carol", "tok-bob").status, 200);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=alice", "tok-eve").status, 403);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=eve", "tok-root").status, 200);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence", "tok-alice").status, 400);
}

TEST_F(ServerTest, StreamShowsOnlineThenOfflineAfterAnAbruptDrop) {
  std::unique_ptr<WsClient> alice = Connect("tok-alice");
  alice->Send(R"({"type":"subscribe","id":1,"users":["alice","bob"]})");
  std::optional<Json> ack = alice->NextOfType("subscribed");
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->Find("id")->as_int(), 1);
  EXPECT_TRUE(alice->WaitForState("alice", "online", 3s));

  std::unique_ptr<WsClient> bob = Connect("tok-bob", "phone");
  EXPECT_TRUE(alice->WaitForState("bob", "online", 3s));
  HttpResult r = Http(port_, http::verb::get, "/presence?user_ids=bob", "tok-alice");
  const Json& b = r.json.Find("users")->items()[0];
  EXPECT_EQ(Str(b, "state"), "online");
  EXPECT_EQ(b.Find("devices")->Find("web")->as_int(), 1);

  // Heartbeats keep bob online; then his socket drops without a goodbye:
  // offline once the grace (1.5 s) has passed.
  for (int i = 0; i < 3; ++i) {
    bob->Send(R"({"type":"heartbeat"})");
    bob->Poll(300ms);
  }
  bob->Drop();
  auto dropped = std::chrono::steady_clock::now();
  EXPECT_TRUE(alice->WaitForState("bob", "offline", 8s));
  EXPECT_GE(std::chrono::steady_clock::now() - dropped, 1400ms);
}

// docs/design.md rule 9: a client that sends no heartbeat but answers the
// server's WebSocket pings (a Beast stream does while it reads) stays online
// past offline_after; once it stops answering, it goes offline when its
// offline_after has passed, its probes given up.
TEST_F(ServerTest, AClientThatOnlyAnswersPingsStaysOnline) {
  StopServer();
  Start([](ServerOptions& o) {
    o.engine.app = {500, 2000};  // probed at 1, 1.25, 1.5 and 1.75 s of silence; DEAD at 2 s
    o.engine.probe_margin_ms = 500;
    o.engine.probe_retry_ms = 250;
  });
  auto metric = [&](const std::string& name) -> int64_t {
    const std::string body = Http(port_, http::verb::get, "/metrics").body;
    const size_t at = body.find("\n" + name + " ");
    int64_t v = -1;
    if (at != std::string::npos) {
      v = std::strtoll(body.c_str() + at + name.size() + 2, nullptr, 10);
    }
    return v;
  };
  auto bob_state = [&] {
    HttpResult r = Http(port_, http::verb::get, "/presence?user_ids=bob", "tok-alice");
    return Str(r.json.Find("users")->items()[0], "state");
  };
  std::unique_ptr<WsClient> bob = Connect("tok-bob", "phone");
  const auto connected = std::chrono::steady_clock::now();
  const auto deadline = connected + 30s;
  while (metric("presence_probes_answered_total") < 5 && std::chrono::steady_clock::now() < deadline) {
    bob->Poll(50ms);  // reads, and so answers the pings
    ASSERT_EQ(bob_state(), "online");
  }
  ASSERT_GE(metric("presence_probes_answered_total"), 5);
  EXPECT_GE(std::chrono::steady_clock::now() - connected, 4s);  // twice offline_after, no heartbeat
  EXPECT_EQ(bob_state(), "online");
  EXPECT_EQ(metric("presence_probes_given_up_total"), 0);
  EXPECT_EQ(metric("presence_probes_late_total"), 0);

  // bob's stream is no longer read: the pings go unanswered, and a watcher
  // sees him go offline.
  std::unique_ptr<WsClient> alice = Connect("tok-alice");
  alice->Send(R"({"type":"subscribe","users":["bob"]})");
  ASSERT_TRUE(alice->WaitForState("bob", "online", 3s));
  EXPECT_TRUE(alice->WaitForState("bob", "offline", 10s));
  EXPECT_GE(metric("presence_probes_given_up_total"), 1);
  // Both connections are still open: the probes told, not a disconnect.
  EXPECT_EQ(metric("presence_server_ws_connections"), 2);
}

TEST_F(ServerTest, ByeIsACleanDisconnect) {
  std::unique_ptr<WsClient> alice = Connect("tok-alice");
  alice->Send(R"({"type":"subscribe","users":["bob"]})");
  ASSERT_TRUE(alice->NextOfType("subscribed").has_value());
  std::unique_ptr<WsClient> bob = Connect("tok-bob");
  ASSERT_TRUE(alice->WaitForState("bob", "online", 3s));
  std::this_thread::sleep_for(1100ms);  // past the dwell
  bob->Send(R"({"type":"bye"})");
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(alice->WaitForState("bob", "offline", 3s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1400ms);  // no grace for a clean one
  bob->Poll(500ms);
  EXPECT_TRUE(bob->closed());
  EXPECT_EQ(bob->reason().code, websocket::close_code::normal);
}

TEST_F(ServerTest, OverridesAreTheUsersOwn) {
  std::unique_ptr<WsClient> alice = Connect("tok-alice");
  alice->Send(R"({"type":"subscribe","users":["alice"]})");
  ASSERT_TRUE(alice->WaitForState("alice", "online", 3s));

  HttpResult r = Http(port_, http::verb::post, "/presence/override", "tok-alice", R"({"state":"dnd"})");
  ASSERT_EQ(r.status, 200) << r.body;
  int64_t id = r.json.Find("override_id")->as_int();
  EXPECT_TRUE(alice->WaitForState("alice", "dnd", 3s));
  r = Http(port_, http::verb::get, "/presence?user_ids=alice", "tok-bob");
  EXPECT_EQ(Str(r.json.Find("users")->items()[0], "state"), "dnd");

  // Nobody sets another's state, not even an operator.
  r = Http(port_, http::verb::post, "/presence/override", "tok-bob", R"({"state":"dnd","user_id":"alice"})");
  EXPECT_EQ(r.status, 403);
  r = Http(port_, http::verb::post, "/presence/override", "tok-root", R"({"state":"dnd","user_id":"alice"})");
  EXPECT_EQ(r.status, 403);
  // Revoking: the user or an operator.
  EXPECT_EQ(Http(port_, http::verb::delete_, absl::StrCat("/presence/override?user_id=alice&override_id=", id),
                 "tok-bob")
                .status,
            403);
  r = Http(port_, http::verb::delete_, absl::StrCat("/presence/override?override_id=", id), "tok-alice");
  EXPECT_EQ(r.status, 200) << r.body;
  r = Http(port_, http::verb::delete_, absl::StrCat("/presence/override?override_id=", id), "tok-alice");
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(alice->WaitForState("alice", "online", 3s));

  // Invisible: offline to others, itself still sees its own state.
  r = Http(port_, http::verb::post, "/presence/override", "tok-alice", R"({"state":"invisible","duration_ms":60000})");
  ASSERT_EQ(r.status, 200) << r.body;
  std::this_thread::sleep_for(300ms);
  r = Http(port_, http::verb::get, "/presence?user_ids=alice", "tok-bob");
  EXPECT_EQ(Str(r.json.Find("users")->items()[0], "state"), "offline");
  EXPECT_TRUE(r.json.Find("users")->items()[0].Find("override")->is_null());
  r = Http(port_, http::verb::get, "/presence?user_ids=alice", "tok-alice");
  EXPECT_EQ(Str(r.json.Find("users")->items()[0], "state"), "online");
  EXPECT_EQ(r.json.Find("users")->items()[0].Find("overrides")->items().size(), 1u);
  r = Http(port_, http::verb::delete_, "/presence/override?user_id=alice&all=true", "tok-root");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.Find("revoked")->as_int(), 1);

  r = Http(port_, http::verb::post, "/presence/override", "tok-alice", R"({"state":"dnd")");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Str(r.json, "error"), "malformed_json");
  r = Http(port_, http::verb::post, "/presence/override", "tok-alice", R"({"state":"sleeping"})");
  EXPECT_EQ(Str(r.json, "error"), "bad_message");
  r = Http(port_, http::verb::post, "/presence/override", "tok-alice", R"({"state":"dnd","until_ms":5})");
  EXPECT_EQ(r.status, 400);  // in the past
  r = Http(port_, http::verb::delete_, "/presence/override", "tok-alice");
  EXPECT_EQ(r.status, 400);
}

TEST_F(ServerTest, HistoryIsFullForTheUserAndPublicForOthers) {
  std::unique_ptr<WsClient> bob = Connect("tok-bob");
  std::this_thread::sleep_for(1200ms);
  bob->Send(R"({"type":"bye"})");
  std::this_thread::sleep_for(500ms);

  HttpResult r = Http(port_, http::verb::get, "/presence/history?user_id=bob", "tok-bob");
  ASSERT_EQ(r.status, 200) << r.body;
  const Json* tr = r.json.Find("transitions");
  ASSERT_GE(tr->items().size(), 2u) << r.body;
  EXPECT_EQ(Str(tr->items()[0], "state"), "online");
  EXPECT_EQ(Str(tr->items()[0], "cause"), "signal");
  EXPECT_EQ(Str(tr->items()[1], "state"), "offline");
  EXPECT_EQ(Str(tr->items()[1], "cause"), "disconnect");
  EXPECT_NE(r.json.Find("time_in_states_ms"), nullptr);

  r = Http(port_, http::verb::get, "/presence/history?user_id=bob", "tok-alice");
  ASSERT_EQ(r.status, 200);
  EXPECT_FALSE(r.json.Find("full")->as_bool());
  EXPECT_EQ(r.json.Find("transitions")->items()[0].Find("cause"), nullptr);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=bob", "tok-eve").status, 403);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=zed", "tok-eve").status, 404);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=bob&from=x", "tok-bob").status, 400);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=bob&from=10&to=5", "tok-bob").status, 400);
  // Times out of range are refused, never computed with (UBSan runs this).
  EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=bob&to=-9223372036854775808",
                 "tok-bob")
                .status,
            400);
  EXPECT_EQ(Http(port_, http::verb::get,
                 "/presence/history?user_id=bob&from=-9223372036854775808&to=5", "tok-bob")
                .status,
            400);
  r = Http(port_, http::verb::get, "/presence/history?user_id=bob&from=0&to=9223372036854775807",
           "tok-bob");
  EXPECT_EQ(r.status, 200) << r.body;

  // The history is in the file store: it survives a restart.
  StopServer();
  Start();
  r = Http(port_, http::verb::get, "/presence/history?user_id=bob", "tok-bob");
  ASSERT_EQ(r.status, 200);
  EXPECT_GE(r.json.Find("transitions")->items().size(), 2u) << r.body;
}

// docs/design.md rule 8 over REST: while bob is invisible, what alice reads of
// him (state, last_seen, version, devices) does not move, whatever he does;
// each step waits until bob's own view shows it.
TEST_F(ServerTest, WhatAnInvisibleUserDoesChangesNothingOthersRead) {
  std::unique_ptr<WsClient> bob = Connect("tok-bob");
  bob->Send(R"({"type":"heartbeat"})");
  auto view = [&](const std::string& token) {
    HttpResult r = Http(port_, http::verb::get, "/presence?user_ids=bob", token);
    EXPECT_EQ(r.status, 200) << r.body;
    const Json& u = r.json.Find("users")->items()[0];
    std::string devices;
    for (const auto& [platform, n] : u.Find("devices")->members()) {
      absl::StrAppend(&devices, platform, "=", n.as_int(), " ");
    }
    return absl::StrCat(Str(u, "state"), " last_seen=", u.Find("last_seen_ms")->as_int(),
                        " version=", u.Find("version")->as_int(), " devices=", devices);
  };
  // Waits, with a deadline, until `token`'s view of bob has `part` in it.
  auto wait_for = [&](const std::string& token, const std::string& part) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    std::string v;
    while (std::chrono::steady_clock::now() < deadline) {
      v = view(token);
      if (v.find(part) != std::string::npos) return v;
      bob->Poll(20ms);
    }
    ADD_FAILURE() << "waited for '" << part << "', last view: " << v;
    return v;
  };
  wait_for("tok-alice", "online");
  HttpResult r = Http(port_, http::verb::post, "/presence/override", "tok-bob",
                      R"({"state":"invisible","duration_ms":60000})");
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string hidden = wait_for("tok-alice", "offline");

  // A second device, then idle, then active again: each shows in his own view.
  std::unique_ptr<WsClient> phone = Connect("tok-bob", "phone");
  phone->Send(R"({"type":"heartbeat"})");
  wait_for("tok-bob", "web=2");
  EXPECT_EQ(view("tok-alice"), hidden);
  bob->Send(R"({"type":"activity","activity":"idle"})");
  phone->Send(R"({"type":"activity","activity":"idle"})");
  wait_for("tok-bob", "away");
  EXPECT_EQ(view("tok-alice"), hidden);
  bob->Send(R"({"type":"heartbeat","activity":"active"})");
  wait_for("tok-bob", "online");
  EXPECT_EQ(view("tok-alice"), hidden);
  phone->CloseCleanly();
  wait_for("tok-bob", "web=1");
  EXPECT_EQ(view("tok-alice"), hidden);
}

TEST_F(ServerTest, BadWebSocketInputGetsClearErrorsAndTheConnectionStays) {
  std::unique_ptr<WsClient> alice = Connect("tok-alice");
  auto expect_error = [&](const std::string& send, const std::string& code, bool binary = false) {
    alice->Send(send, binary);
    std::optional<Json> e = alice->NextOfType("error");
    ASSERT_TRUE(e.has_value()) << send;
    EXPECT_EQ(Str(*e, "code"), code) << send;
    EXPECT_FALSE(Str(*e, "message").empty());
  };
  expect_error("{\"type\":", "malformed_json");
  expect_error("[]", "bad_message");
  expect_error(R"({"type":"warp"})", "bad_message");
  expect_error(R"({"type":"subscribe","users":["mallory"]})", "unknown_user");
  expect_error(R"({"type":"subscribe","users":["eve"]})", "forbidden");
  expect_error(R"({"type":"subscribe","topics":["nope"]})", "unknown_topic");
  expect_error(std::string(2000, 'x'), "message_too_big");
  expect_error(R"({"type":"heartbeat"})", "bad_message", /*binary=*/true);
  // Three subscriptions allowed: alice, bob, carol and the team are four.
  expect_error(R"({"type":"subscribe","users":["alice","bob","carol"],"topics":["team"]})",
               "too_many_subscriptions");
  // Still connected, still served.
  alice->Send(R"({"type":"subscribe","id":"ok","users":["bob"],"topics":["team"]})");
  std::optional<Json> ack = alice->NextOfType("subscribed");
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(Str(*ack, "id"), "ok");
  EXPECT_EQ(ack->Find("topics")->items().size(), 1u);

  HttpResult m = Http(port_, http::verb::get, "/metrics");
  EXPECT_NE(m.body.find("presence_server_client_errors_total{code=\"malformed_json\"} 1"), std::string::npos);
}

TEST_F(ServerTest, TopicsDeliverTheirMembers) {
  std::unique_ptr<WsClient> carol = Connect("tok-carol");
  carol->Send(R"({"type":"subscribe","topics":["team"]})");
  ASSERT_TRUE(carol->NextOfType("subscribed").has_value());
  std::unique_ptr<WsClient> bob = Connect("tok-bob");
  EXPECT_TRUE(carol->WaitForState("bob", "online", 3s));
  EXPECT_TRUE(carol->WaitForState("carol", "online", 3s));
}

// The HTTP answer to a WebSocket upgrade request.
HttpResult Upgrade(uint16_t port, const std::string& target) {
  net::io_context ioc;
  tcp::socket socket(ioc);
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req(http::verb::get, target, 11);
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::connection, "Upgrade");
  req.set(http::field::upgrade, "websocket");
  req.set(http::field::sec_websocket_version, "13");
  req.set(http::field::sec_websocket_key, "dGhlIHNhbXBsZSBub25jZQ==");
  http::write(socket, req);
  beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.skip(false);
  beast::error_code ec;
  http::read(socket, buf, parser, ec);
  HttpResult out;
  out.status = parser.get().result_int();
  out.body = parser.get().body();
  absl::StatusOr<Json> j = ParseJson(out.body);
  if (j.ok()) out.json = std::move(*j);
  return out;
}

TEST_F(ServerTest, RefusedUpgrades) {
  HttpResult r = Upgrade(port_, "/presence/stream");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(Str(r.json, "error"), "unauthorized");
  EXPECT_EQ(Upgrade(port_, "/presence/stream?token=nope").status, 401);
  EXPECT_EQ(Upgrade(port_, "/elsewhere?token=tok-alice").status, 404);
  EXPECT_EQ(Upgrade(port_, "/presence/stream?token=tok-alice&platform=toaster").status, 400);
  EXPECT_EQ(Upgrade(port_, "/presence/stream?token=tok-alice").status, 101);
}

TEST_F(ServerTest, BadHttpInput) {
  EXPECT_EQ(Http(port_, http::verb::get, "/nowhere").status, 404);
  EXPECT_EQ(Http(port_, http::verb::put, "/presence/override", "tok-alice", "{}").status, 405);
  HttpResult r = Http(port_, http::verb::post, "/presence/override", "tok-alice", std::string(64 * 1024, ' '));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(Str(r.json, "error"), "body_too_large");
  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=%zz", "tok-alice").status, 400);
  EXPECT_EQ(Http(port_, http::verb::get, "/healthz").status, 200);  // still up
}

TEST_F(ServerTest, PageAndMetrics) {
  HttpResult page = Http(port_, http::verb::get, "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("<title>presence</title>"), std::string::npos);
  EXPECT_EQ(Http(port_, http::verb::get, "/app.js").status, 200);
  EXPECT_EQ(Http(port_, http::verb::get, "/style.css").status, 200);
  std::unique_ptr<WsClient> bob = Connect("tok-bob");
  std::this_thread::sleep_for(300ms);
  HttpResult m = Http(port_, http::verb::get, "/metrics");
  EXPECT_EQ(m.status, 200);
  for (const char* name : {"# TYPE presence_server_ws_connections gauge", "presence_server_ws_connections 1",
                           "presence_fanout_subscribers", "presence_file_store_bytes_written_total",
                           "presence_server_http_requests_total{code=\"200\"}"}) {
    EXPECT_NE(m.body.find(name), std::string::npos) << name;
  }
}

TEST_F(ServerTest, SlowConsumerIsDisconnected) {
  // A client that never reads, with a tiny receive buffer, asks for many
  // answers: the server's queue for it passes 16 KiB, it gets cut off, and
  // the server goes on serving everyone else.
  WsClient slow;
  ASSERT_TRUE(slow.Connect(port_, "/presence/stream?token=tok-carol", nullptr, 4096));
  std::string junk = "{";
  for (int i = 0; i < 4000; ++i) slow.Send(junk);
  bool cut = false;
  for (int i = 0; i < 100 && !cut; ++i) {
    std::this_thread::sleep_for(100ms);
    HttpResult m = Http(port_, http::verb::get, "/metrics");
    cut = m.body.find("presence_server_slow_consumer_disconnects_total 0") == std::string::npos;
  }
  EXPECT_TRUE(cut);
  if (!cut) std::fprintf(stderr, "%s\n", Http(port_, http::verb::get, "/metrics").body.c_str());
  slow.StartReading();
  while (slow.Next(3s)) {
  }
  EXPECT_TRUE(slow.closed());
  EXPECT_EQ(Http(port_, http::verb::get, "/healthz").status, 200);
  std::unique_ptr<WsClient> alice = Connect("tok-alice");
  alice->Send(R"({"type":"subscribe","users":["bob"]})");
  EXPECT_TRUE(alice->NextOfType("subscribed").has_value());
}

TEST_F(ServerTest, RateLimitedClientsAreToldSo) {
  StopServer();
  Start([](ServerOptions& o) {
    o.message_rate = 5;
    o.message_burst = 5;
  });
  std::unique_ptr<WsClient> alice = Connect("tok-alice");
  for (int i = 0; i < 10; ++i) alice->Send(R"({"type":"heartbeat"})");
  std::optional<Json> e = alice->NextOfType("error");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(Str(*e, "code"), "rate_limited");
}

TEST_F(ServerTest, SimulatedClientsComeOnline) {
  StopServer();
  Start([](ServerOptions& o) { o.simulate = 20; });
  std::this_thread::sleep_for(4s);
  std::string ids;
  for (int i = 1; i <= 20; ++i) absl::StrAppend(&ids, i > 1 ? "," : "", "sim-", i < 10 ? "000" : "00", i);
  HttpResult r = Http(port_, http::verb::get, "/presence?user_ids=" + ids, "tok-alice");
  ASSERT_EQ(r.status, 200) << r.body;
  int online = 0;
  for (const Json& u : r.json.Find("users")->items()) online += Str(u, "state") != "offline";
  EXPECT_GE(online, 15);
}

// ---- The program ----------------------------------------------------------

TEST(ServerProgram, PrintsItsUrlAndExitsAfterTheGivenTime) {
  std::string dir = TempDir();
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    execl(PRESENCE_SERVER_BINARY, PRESENCE_SERVER_BINARY, "--port", "0", "--data-dir", dir.c_str(),
          "--tokens", "t1=alice", "--simulate", "5", "--exit-after", "3", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  FILE* f = fdopen(out[0], "r");
  char line[512];
  ASSERT_NE(fgets(line, sizeof line, f), nullptr);
  std::string first = line;
  ASSERT_TRUE(absl::StartsWith(first, "presence_server: listening on http://127.0.0.1:")) << first;
  int port = std::atoi(first.c_str() + first.rfind(':') + 1);
  ASSERT_GT(port, 0);
  HttpResult r = Http(static_cast<uint16_t>(port), http::verb::get, "/presence?user_ids=alice", "t1");
  EXPECT_EQ(r.status, 200) << r.body;
  int status = 0;
  auto start = std::chrono::steady_clock::now();
  while (waitpid(pid, &status, WNOHANG) == 0 && std::chrono::steady_clock::now() - start < 15s) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(WIFEXITED(status)) << "still running after --exit-after";
  if (!WIFEXITED(status)) kill(pid, SIGKILL);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  fclose(f);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(ServerProgram, RejectsBadFlags) {
  std::string cmd = std::string(PRESENCE_SERVER_BINARY) + " --port 99999 >/dev/null 2>&1";
  int rc = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  cmd = std::string(PRESENCE_SERVER_BINARY) + " --bogus >/dev/null 2>&1";
  rc = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 2);
}

}  // namespace
}  // namespace presence_server
