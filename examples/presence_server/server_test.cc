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
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

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
    "user alice tok-alice-0123456789 bob carol\n"
    "user bob tok-bob-0123456789 alice\n"
    "user carol tok-carol-0123456789\n"
    "user eve tok-eve-0123456789\n"
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
                const std::string& body = "", const std::string& host = "127.0.0.1",
                const std::string& forwarded_for = "") {
  net::io_context ioc;
  tcp::socket socket(ioc);
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req(method, target, 11);
  req.set(http::field::host, host);
  if (!forwarded_for.empty()) req.set("X-Forwarded-For", forwarded_for);
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
  // A failed read leaves `res` as constructed, whose status is 200: not an
  // answer (a connection closed at accept, say).
  out.status = ec ? 0 : res.result_int();
  out.body = res.body();
  absl::StatusOr<Json> j = ParseJson(out.body);
  if (j.ok()) out.json = std::move(*j);
  return out;
}

// Polls `done` until it holds or `timeout` passes: a condition with a
// deadline, never a fixed sleep.
bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

std::string Str(const Json& j, const char* key) {
  const Json* v = j.Find(key);
  return v != nullptr && v->is_string() ? v->as_string() : "";
}

// A WebSocket client with a read always pending; Next() runs its io_context
// until a message arrives, the connection closes or time runs out.
class WsClient {
 public:
  // Connects and upgrades, with `token` in an Authorization header (none:
  // the client must send {"type":"auth"} itself); on a refused upgrade,
  // returns false and *status holds the HTTP status. `source` binds the
  // client's end to another loopback address.
  bool Connect(uint16_t port, const std::string& target, const std::string& token = "", int* status = nullptr,
               int rcvbuf = 0, const std::string& source = "") {
    if (rcvbuf > 0 || !source.empty()) ws_.next_layer().open(tcp::v4());
    if (rcvbuf > 0) ws_.next_layer().set_option(net::socket_base::receive_buffer_size(rcvbuf));
    if (!source.empty()) ws_.next_layer().bind(tcp::endpoint(net::ip::make_address(source), 0));
    ws_.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    if (!token.empty()) {
      ws_.set_option(websocket::stream_base::decorator([token](websocket::request_type& req) {
        req.set(http::field::authorization, "Bearer " + token);
      }));
    }
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
    EXPECT_TRUE(o.access.AddTokens("tok-root-0123456789=root").ok());
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
    EXPECT_TRUE(c->Connect(port_, "/presence/stream?device_id=" + device, token));
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
  HttpResult r = Http(port_, http::verb::get, "/presence?user_ids=alice,bob", "tok-alice-0123456789");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.json.Find("users")->items().size(), 2u);
  EXPECT_EQ(Str(r.json.Find("users")->items()[1], "state"), "offline");
  EXPECT_TRUE(r.json.Find("now_ms")->is_int());

  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=alice").status, 401);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=alice", "wrong").status, 401);
  // A token in the URL is not read: URLs end up in logs and histories.
  r = Http(port_, http::verb::get, "/presence?user_ids=alice&token=tok-alice-0123456789");
  EXPECT_EQ(r.status, 401);

  // 403 before 404: to alice, a user that does not exist is as forbidden as
  // one she may not see, so she cannot list who exists; an operator, who
  // may see anyone, learns that it does not exist.
  r = Http(port_, http::verb::get, "/presence?user_ids=bob,mallory", "tok-alice-0123456789");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(Str(r.json, "error"), "forbidden");
  EXPECT_EQ(r.body, Http(port_, http::verb::get, "/presence?user_ids=bob,mallory", "tok-alice-0123456789").body);
  HttpResult stranger = Http(port_, http::verb::get, "/presence?user_ids=bob,eve", "tok-alice-0123456789");
  EXPECT_EQ(stranger.status, 403);
  EXPECT_EQ(Str(stranger.json, "error"), "forbidden");
  r = Http(port_, http::verb::get, "/presence?user_ids=bob,mallory", "tok-root-0123456789");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Str(r.json, "error"), "unknown_user");
  EXPECT_NE(r.body.find("mallory"), std::string::npos);

  r = Http(port_, http::verb::get, "/presence?user_ids=eve", "tok-alice-0123456789");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(Str(r.json, "error"), "forbidden");
  // bob watches alice, not carol; the team topic makes them mates though.
  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=carol", "tok-bob-0123456789").status, 200);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=alice", "tok-eve-0123456789").status, 403);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=eve", "tok-root-0123456789").status, 200);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence", "tok-alice-0123456789").status, 400);
}

TEST_F(ServerTest, StreamShowsOnlineThenOfflineAfterAnAbruptDrop) {
  std::unique_ptr<WsClient> alice = Connect("tok-alice-0123456789");
  alice->Send(R"({"type":"subscribe","id":1,"users":["alice","bob"]})");
  std::optional<Json> ack = alice->NextOfType("subscribed");
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->Find("id")->as_int(), 1);
  EXPECT_TRUE(alice->WaitForState("alice", "online", 3s));

  std::unique_ptr<WsClient> bob = Connect("tok-bob-0123456789", "phone");
  EXPECT_TRUE(alice->WaitForState("bob", "online", 3s));
  HttpResult r = Http(port_, http::verb::get, "/presence?user_ids=bob", "tok-alice-0123456789");
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
    const std::string body = Http(port_, http::verb::get, "/metrics", "tok-root-0123456789").body;
    const size_t at = body.find("\n" + name + " ");
    int64_t v = -1;
    if (at != std::string::npos) {
      v = std::strtoll(body.c_str() + at + name.size() + 2, nullptr, 10);
    }
    return v;
  };
  auto bob_state = [&] {
    HttpResult r = Http(port_, http::verb::get, "/presence?user_ids=bob", "tok-alice-0123456789");
    return Str(r.json.Find("users")->items()[0], "state");
  };
  std::unique_ptr<WsClient> bob = Connect("tok-bob-0123456789", "phone");
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
  std::unique_ptr<WsClient> alice = Connect("tok-alice-0123456789");
  alice->Send(R"({"type":"subscribe","users":["bob"]})");
  ASSERT_TRUE(alice->WaitForState("bob", "online", 3s));
  EXPECT_TRUE(alice->WaitForState("bob", "offline", 10s));
  EXPECT_GE(metric("presence_probes_given_up_total"), 1);
  // Both connections are still open: the probes told, not a disconnect.
  EXPECT_EQ(metric("presence_server_ws_connections"), 2);
}

TEST_F(ServerTest, ByeIsACleanDisconnect) {
  std::unique_ptr<WsClient> alice = Connect("tok-alice-0123456789");
  alice->Send(R"({"type":"subscribe","users":["bob"]})");
  ASSERT_TRUE(alice->NextOfType("subscribed").has_value());
  std::unique_ptr<WsClient> bob = Connect("tok-bob-0123456789");
  ASSERT_TRUE(alice->WaitForState("bob", "online", 3s));
  bob->Send(R"({"type":"bye"})");
  ASSERT_TRUE(alice->WaitForState("bob", "offline", 5s));
  // A clean disconnect, with no grace: its cause says so (an abrupt end
  // would be a timeout after the grace).
  HttpResult h = Http(port_, http::verb::get, "/presence/history?user_id=bob", "tok-bob-0123456789");
  ASSERT_EQ(h.status, 200) << h.body;
  const std::vector<Json>& tr = h.json.Find("transitions")->items();
  ASSERT_FALSE(tr.empty()) << h.body;
  EXPECT_EQ(Str(tr.back(), "state"), "offline");
  EXPECT_EQ(Str(tr.back(), "cause"), "disconnect");
  EXPECT_TRUE(WaitUntil([&] {
    bob->Poll(20ms);
    return bob->closed();
  }));
  EXPECT_EQ(bob->reason().code, websocket::close_code::normal);
}

TEST_F(ServerTest, OverridesAreTheUsersOwn) {
  std::unique_ptr<WsClient> alice = Connect("tok-alice-0123456789");
  alice->Send(R"({"type":"subscribe","users":["alice"]})");
  ASSERT_TRUE(alice->WaitForState("alice", "online", 3s));

  HttpResult r = Http(port_, http::verb::post, "/presence/override", "tok-alice-0123456789", R"({"state":"dnd"})");
  ASSERT_EQ(r.status, 200) << r.body;
  int64_t id = r.json.Find("override_id")->as_int();
  EXPECT_TRUE(alice->WaitForState("alice", "dnd", 3s));
  r = Http(port_, http::verb::get, "/presence?user_ids=alice", "tok-bob-0123456789");
  EXPECT_EQ(Str(r.json.Find("users")->items()[0], "state"), "dnd");

  // Nobody sets another's state, not even an operator.
  r = Http(port_, http::verb::post, "/presence/override", "tok-bob-0123456789", R"({"state":"dnd","user_id":"alice"})");
  EXPECT_EQ(r.status, 403);
  r = Http(port_, http::verb::post, "/presence/override", "tok-root-0123456789", R"({"state":"dnd","user_id":"alice"})");
  EXPECT_EQ(r.status, 403);
  // Revoking: the user or an operator.
  EXPECT_EQ(Http(port_, http::verb::delete_, absl::StrCat("/presence/override?user_id=alice&override_id=", id),
                 "tok-bob-0123456789")
                .status,
            403);
  r = Http(port_, http::verb::delete_, absl::StrCat("/presence/override?override_id=", id), "tok-alice-0123456789");
  EXPECT_EQ(r.status, 200) << r.body;
  r = Http(port_, http::verb::delete_, absl::StrCat("/presence/override?override_id=", id), "tok-alice-0123456789");
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(alice->WaitForState("alice", "online", 3s));

  // Invisible: offline to others, itself still sees its own state.
  r = Http(port_, http::verb::post, "/presence/override", "tok-alice-0123456789", R"({"state":"invisible","duration_ms":60000})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(WaitUntil([&] {
    r = Http(port_, http::verb::get, "/presence?user_ids=alice", "tok-bob-0123456789");
    return Str(r.json.Find("users")->items()[0], "state") == "offline";
  }));
  EXPECT_TRUE(r.json.Find("users")->items()[0].Find("override")->is_null());
  r = Http(port_, http::verb::get, "/presence?user_ids=alice", "tok-alice-0123456789");
  EXPECT_EQ(Str(r.json.Find("users")->items()[0], "state"), "online");
  EXPECT_EQ(r.json.Find("users")->items()[0].Find("overrides")->items().size(), 1u);
  r = Http(port_, http::verb::delete_, "/presence/override?user_id=alice&all=true", "tok-root-0123456789");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.Find("revoked")->as_int(), 1);

  r = Http(port_, http::verb::post, "/presence/override", "tok-alice-0123456789", R"({"state":"dnd")");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Str(r.json, "error"), "malformed_json");
  r = Http(port_, http::verb::post, "/presence/override", "tok-alice-0123456789", R"({"state":"sleeping"})");
  EXPECT_EQ(Str(r.json, "error"), "bad_message");
  r = Http(port_, http::verb::post, "/presence/override", "tok-alice-0123456789", R"({"state":"dnd","until_ms":5})");
  EXPECT_EQ(r.status, 400);  // in the past
  r = Http(port_, http::verb::delete_, "/presence/override", "tok-alice-0123456789");
  EXPECT_EQ(r.status, 400);
}

// A history answer holds at most max_history_entries, the oldest first, and
// says where the rest starts; the next page, from there, has it.
TEST_F(ServerTest, ALongHistoryComesInPages) {
  StopServer();
  Start([](ServerOptions& o) { o.max_history_entries = 1; });
  std::unique_ptr<WsClient> bob = Connect("tok-bob-0123456789");
  HttpResult online;
  EXPECT_TRUE(WaitUntil([&] {
    online = Http(port_, http::verb::get, "/presence/history?user_id=bob", "tok-bob-0123456789");
    return online.status == 200 && !online.json.Find("transitions")->items().empty();
  })) << online.body;
  bob->Send(R"({"type":"bye"})");
  for (const std::string path : {"/presence/history?user_id=bob", "/presence/history?user_id=bob&device_id=d1"}) {
    const std::string list = path.find("device_id") == std::string::npos ? "transitions" : "device_transitions";
    HttpResult r;
    // Online then offline (connect then dead_clean): two entries, one a page.
    EXPECT_TRUE(WaitUntil([&] {
      r = Http(port_, http::verb::get, path, "tok-bob-0123456789");
      const Json* t = r.status == 200 ? r.json.Find("truncated") : nullptr;
      return t != nullptr && t->as_bool();
    }, 8s)) << r.body;
    ASSERT_EQ(r.json.Find(list)->items().size(), 1u) << r.body;
    const int64_t first = r.json.Find(list)->items()[0].Find("at_ms")->as_int();
    ASSERT_NE(r.json.Find("next_from_ms"), nullptr) << r.body;
    const int64_t next = r.json.Find("next_from_ms")->as_int();
    ASSERT_GE(next, first) << r.body;
    r = Http(port_, http::verb::get, path + "&from=" + std::to_string(next), "tok-bob-0123456789");
    ASSERT_EQ(r.status, 200) << r.body;
    ASSERT_EQ(r.json.Find(list)->items().size(), 1u) << r.body;
    EXPECT_FALSE(r.json.Find("truncated")->as_bool()) << r.body;
    EXPECT_EQ(r.json.Find(list)->items()[0].Find("at_ms")->as_int(), next) << r.body;
  }
}

TEST_F(ServerTest, HistoryIsFullForTheUserAndPublicForOthers) {
  std::unique_ptr<WsClient> bob = Connect("tok-bob-0123456789");
  HttpResult r;
  // Online, then a clean goodbye and (after the dwell) offline: wait for
  // each in the trail.
  EXPECT_TRUE(WaitUntil([&] {
    r = Http(port_, http::verb::get, "/presence/history?user_id=bob", "tok-bob-0123456789");
    return r.status == 200 && !r.json.Find("transitions")->items().empty();
  })) << r.body;
  bob->Send(R"({"type":"bye"})");
  EXPECT_TRUE(WaitUntil([&] {
    r = Http(port_, http::verb::get, "/presence/history?user_id=bob", "tok-bob-0123456789");
    return r.status == 200 && r.json.Find("transitions")->items().size() >= 2;
  }, 8s)) << r.body;
  const Json* tr = r.json.Find("transitions");
  ASSERT_GE(tr->items().size(), 2u) << r.body;
  EXPECT_FALSE(r.json.Find("truncated")->as_bool()) << r.body;
  EXPECT_EQ(Str(tr->items()[0], "state"), "online");
  EXPECT_EQ(Str(tr->items()[0], "cause"), "signal");
  EXPECT_EQ(Str(tr->items()[1], "state"), "offline");
  EXPECT_EQ(Str(tr->items()[1], "cause"), "disconnect");
  EXPECT_NE(r.json.Find("time_in_states_ms"), nullptr);

  r = Http(port_, http::verb::get, "/presence/history?user_id=bob", "tok-alice-0123456789");
  ASSERT_EQ(r.status, 200);
  EXPECT_FALSE(r.json.Find("full")->as_bool());
  EXPECT_EQ(r.json.Find("transitions")->items()[0].Find("cause"), nullptr);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=bob", "tok-eve-0123456789").status, 403);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=zed", "tok-eve-0123456789").status, 403);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=zed", "tok-root-0123456789").status, 404);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=bob&from=x", "tok-bob-0123456789").status, 400);
  EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=bob&from=10&to=5", "tok-bob-0123456789").status, 400);
  // Times out of range are refused, never computed with (UBSan runs this).
  EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=bob&to=-9223372036854775808",
                 "tok-bob-0123456789")
                .status,
            400);
  EXPECT_EQ(Http(port_, http::verb::get,
                 "/presence/history?user_id=bob&from=-9223372036854775808&to=5", "tok-bob-0123456789")
                .status,
            400);
  r = Http(port_, http::verb::get, "/presence/history?user_id=bob&from=0&to=9223372036854775807",
           "tok-bob-0123456789");
  EXPECT_EQ(r.status, 200) << r.body;

  // One device's audit: bob's own and operators' only.
  const std::string dev = "/presence/history?user_id=bob&device_id=d1";
  EXPECT_TRUE(WaitUntil([&] {
    r = Http(port_, http::verb::get, dev, "tok-bob-0123456789");
    return r.status == 200 && r.json.Find("device_transitions")->items().size() >= 2;
  }, 8s)) << r.body;
  const Json* dt = r.json.Find("device_transitions");
  ASSERT_GE(dt->items().size(), 2u) << r.body;
  EXPECT_EQ(Str(dt->items()[0], "event"), "connect");
  EXPECT_EQ(Str(dt->items().back(), "event"), "dead_clean");
  // The answer's transitions (its window moves with the clock).
  auto transitions = [](const std::string& body) { return body.substr(body.find("\"device_transitions\"")); };
  const std::string bobs = transitions(r.body);
  r = Http(port_, http::verb::get, dev, "tok-root-0123456789");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(transitions(r.body), bobs);
  // alice may read bob, eve may not: neither reads his devices, and the
  // answer is the same whether the device exists or not.
  for (const char* who : {"tok-alice-0123456789", "tok-eve-0123456789"}) {
    EXPECT_EQ(Http(port_, http::verb::get, dev, who).status, 403) << who;
    EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=bob&device_id=nope", who).status, 403)
        << who;
  }
  EXPECT_EQ(Http(port_, http::verb::get, "/presence/history?user_id=bob&device_id=", "tok-bob-0123456789").status,
            400);

  // The history is in the file store: it survives a restart.
  StopServer();
  Start();
  r = Http(port_, http::verb::get, "/presence/history?user_id=bob", "tok-bob-0123456789");
  ASSERT_EQ(r.status, 200);
  EXPECT_GE(r.json.Find("transitions")->items().size(), 2u) << r.body;
  r = Http(port_, http::verb::get, dev, "tok-bob-0123456789");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(transitions(r.body), bobs);
}

// docs/design.md rule 8 over REST: while bob is invisible, what alice reads of
// him (state, last_seen, version, devices) does not move, whatever he does;
// each step waits until bob's own view shows it.
TEST_F(ServerTest, WhatAnInvisibleUserDoesChangesNothingOthersRead) {
  std::unique_ptr<WsClient> bob = Connect("tok-bob-0123456789");
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
  wait_for("tok-alice-0123456789", "online");
  HttpResult r = Http(port_, http::verb::post, "/presence/override", "tok-bob-0123456789",
                      R"({"state":"invisible","duration_ms":60000})");
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string hidden = wait_for("tok-alice-0123456789", "offline");

  // A second device, then idle, then active again: each shows in his own view.
  std::unique_ptr<WsClient> phone = Connect("tok-bob-0123456789", "phone");
  phone->Send(R"({"type":"heartbeat"})");
  wait_for("tok-bob-0123456789", "web=2");
  EXPECT_EQ(view("tok-alice-0123456789"), hidden);
  bob->Send(R"({"type":"activity","activity":"idle"})");
  phone->Send(R"({"type":"activity","activity":"idle"})");
  wait_for("tok-bob-0123456789", "away");
  EXPECT_EQ(view("tok-alice-0123456789"), hidden);
  bob->Send(R"({"type":"heartbeat","activity":"active"})");
  wait_for("tok-bob-0123456789", "online");
  EXPECT_EQ(view("tok-alice-0123456789"), hidden);
  phone->CloseCleanly();
  wait_for("tok-bob-0123456789", "web=1");
  EXPECT_EQ(view("tok-alice-0123456789"), hidden);
}

TEST_F(ServerTest, BadWebSocketInputGetsClearErrorsAndTheConnectionStays) {
  std::unique_ptr<WsClient> alice = Connect("tok-alice-0123456789");
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
  // 403 before 404, as over HTTP.
  expect_error(R"({"type":"subscribe","users":["mallory"]})", "forbidden");
  expect_error(R"({"type":"subscribe","users":["eve"]})", "forbidden");
  expect_error(R"({"type":"subscribe","topics":["nope"]})", "forbidden");
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

  HttpResult m = Http(port_, http::verb::get, "/metrics", "tok-root-0123456789");
  EXPECT_NE(m.body.find("presence_server_client_errors_total{code=\"malformed_json\"} 1"), std::string::npos);

  // An operator, who may watch anyone, is told what does not exist.
  std::unique_ptr<WsClient> root = Connect("tok-root-0123456789");
  root->Send(R"({"type":"subscribe","users":["mallory"]})");
  std::optional<Json> e = root->NextOfType("error");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(Str(*e, "code"), "unknown_user");
  root->Send(R"({"type":"subscribe","topics":["nope"]})");
  e = root->NextOfType("error");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(Str(*e, "code"), "unknown_topic");
}

TEST_F(ServerTest, TopicsDeliverTheirMembers) {
  std::unique_ptr<WsClient> carol = Connect("tok-carol-0123456789");
  carol->Send(R"({"type":"subscribe","topics":["team"]})");
  ASSERT_TRUE(carol->NextOfType("subscribed").has_value());
  std::unique_ptr<WsClient> bob = Connect("tok-bob-0123456789");
  EXPECT_TRUE(carol->WaitForState("bob", "online", 3s));
  EXPECT_TRUE(carol->WaitForState("carol", "online", 3s));
}

// The HTTP answer to a WebSocket upgrade request, with a bearer token and
// a browser's Origin when given.
HttpResult Upgrade(uint16_t port, const std::string& target, const std::string& token = "",
                   const std::string& origin = "", const std::string& host = "127.0.0.1") {
  net::io_context ioc;
  tcp::socket socket(ioc);
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req(http::verb::get, target, 11);
  req.set(http::field::host, host);
  if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
  if (!origin.empty()) req.set(http::field::origin, origin);
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
  const std::string alice = "tok-alice-0123456789";
  HttpResult r = Upgrade(port_, "/presence/stream", "wrong-token-0123456789");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(Str(r.json, "error"), "unauthorized");
  EXPECT_EQ(Upgrade(port_, "/elsewhere", alice).status, 404);
  EXPECT_EQ(Upgrade(port_, "/presence/stream?platform=toaster", alice).status, 400);
  EXPECT_EQ(Upgrade(port_, "/presence/stream", alice).status, 101);
  // Without a header the upgrade is accepted: the first message must be
  // "auth" (WebSocketAuth below).
  EXPECT_EQ(Upgrade(port_, "/presence/stream").status, 101);

  // A browser page of another origin may not open a WebSocket here (cross-
  // site WebSocket hijacking); the page's own origin may, over http or https.
  r = Upgrade(port_, "/presence/stream", alice, "http://evil.example");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(Str(r.json, "error"), "bad_origin");
  EXPECT_EQ(Upgrade(port_, "/presence/stream", "", "null").status, 403);
  EXPECT_EQ(Upgrade(port_, "/presence/stream", alice, "http://127.0.0.1").status, 101);
  EXPECT_EQ(Upgrade(port_, "/presence/stream", alice, "https://127.0.0.1").status, 101);

  // A DNS-rebinding page names its own host: refused, before any token.
  r = Upgrade(port_, "/presence/stream", alice, "http://rebind.example", "rebind.example");
  EXPECT_EQ(r.status, 421);
  EXPECT_EQ(Str(r.json, "error"), "bad_host");
}

TEST_F(ServerTest, AllowedOriginsAndHostsAreTheOperatorsChoice) {
  StopServer();
  Start([](ServerOptions& o) {
    o.allowed_origins = {"https://chat.example.com"};
    o.allowed_hosts = {"chat.example.com"};
  });
  const std::string alice = "tok-alice-0123456789";
  EXPECT_EQ(Upgrade(port_, "/presence/stream", alice, "https://chat.example.com", "chat.example.com").status, 101);
  EXPECT_EQ(Upgrade(port_, "/presence/stream", alice, "http://chat.example.com", "chat.example.com").status, 403);
  EXPECT_EQ(Upgrade(port_, "/presence/stream", alice, "https://chat.example.com", "127.0.0.1").status, 421);
  EXPECT_EQ(Http(port_, http::verb::get, "/healthz", "", "", "chat.example.com:443").status, 200);
  EXPECT_EQ(Http(port_, http::verb::get, "/healthz", "", "", "127.0.0.1").status, 421);
}

TEST_F(ServerTest, WebSocketAuthIsTheFirstMessage) {
  // The page's way: no header, then {"type":"auth"}.
  WsClient c;
  ASSERT_TRUE(c.Connect(port_, "/presence/stream?device_id=tab"));
  c.StartReading();
  c.Send(R"({"type":"heartbeat"})");  // anything else first is refused
  std::optional<Json> e = c.NextOfType("error");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(Str(*e, "code"), "unauthorized");
  EXPECT_TRUE(WaitUntil([&] {
    c.Poll(20ms);
    return c.closed();
  }));
  EXPECT_EQ(c.reason().code, websocket::close_code::policy_error);

  WsClient ok;
  ASSERT_TRUE(ok.Connect(port_, "/presence/stream?device_id=tab"));
  ok.StartReading();
  ok.Send(R"({"type":"auth","token":"tok-alice-0123456789"})");
  std::optional<Json> w = ok.NextOfType("welcome");
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(Str(*w, "user_id"), "alice");
  ok.Send(R"({"type":"subscribe","users":["bob"]})");
  EXPECT_TRUE(ok.NextOfType("subscribed").has_value());
  ok.Send(R"({"type":"auth","token":"tok-bob-0123456789"})");  // once is enough
  e = ok.NextOfType("error");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(Str(*e, "code"), "bad_message");

  WsClient wrong;
  ASSERT_TRUE(wrong.Connect(port_, "/presence/stream"));
  wrong.StartReading();
  wrong.Send(R"({"type":"auth","token":"not-a-token-0123456789"})");
  e = wrong.NextOfType("error");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(Str(*e, "code"), "unauthorized");
}

TEST_F(ServerTest, AClientThatNeverAuthenticatesIsClosed) {
  StopServer();
  Start([](ServerOptions& o) { o.auth_timeout_ms = 200; });
  WsClient c;
  ASSERT_TRUE(c.Connect(port_, "/presence/stream"));
  c.StartReading();
  std::optional<Json> e = c.NextOfType("error", 5s);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(Str(*e, "code"), "unauthorized");
  EXPECT_TRUE(WaitUntil([&] {
    c.Poll(20ms);
    return c.closed();
  }));
}

TEST_F(ServerTest, FailedLoginsAreLimitedPerAddress) {
  StopServer();
  Start([](ServerOptions& o) {
    o.failed_auth_burst = 3;
    o.failed_auth_per_minute = 1;
  });
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=alice", "guess-0123456789-" + std::to_string(i))
                  .status,
              401);
  }
  // Past the burst even the right token is refused (the guesser cannot tell
  // a hit), over HTTP and WebSocket, until the bucket refills.
  HttpResult r = Http(port_, http::verb::get, "/presence?user_ids=alice", "tok-alice-0123456789");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(Str(r.json, "error"), "too_many_failures");
  EXPECT_EQ(Upgrade(port_, "/presence/stream", "tok-alice-0123456789").status, 429);
  // Another address is not affected.
  WsClient other;
  ASSERT_TRUE(other.Connect(port_, "/presence/stream", "tok-alice-0123456789", nullptr, 0, "127.0.0.2"));
  other.StartReading();
  EXPECT_TRUE(other.NextOfType("welcome").has_value());
}

TEST_F(ServerTest, BadHttpInput) {
  EXPECT_EQ(Http(port_, http::verb::get, "/nowhere").status, 404);
  EXPECT_EQ(Http(port_, http::verb::put, "/presence/override", "tok-alice-0123456789", "{}").status, 405);
  HttpResult r = Http(port_, http::verb::post, "/presence/override", "tok-alice-0123456789", std::string(64 * 1024, ' '));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(Str(r.json, "error"), "body_too_large");
  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=%zz", "tok-alice-0123456789").status, 400);
  EXPECT_EQ(Http(port_, http::verb::get, "/healthz").status, 200);  // still up
}

// Behind a proxy every client comes from the proxy's address: with
// --trusted-proxy the failed-login limit is per client (X-Forwarded-For),
// and from anyone else the header is ignored, so it cannot be used to dodge.
TEST_F(ServerTest, FailedLoginsBehindATrustedProxyAreCountedPerClient) {
  auto guess = [&](const std::string& xff, const std::string& token) {
    return Http(port_, http::verb::get, "/presence?user_ids=alice", token, "", "127.0.0.1", xff).status;
  };
  StopServer();
  Start([](ServerOptions& o) {
    o.failed_auth_burst = 2;
    o.failed_auth_per_minute = 1;
    o.trusted_proxies = {"127.0.0.1"};
  });
  EXPECT_EQ(guess("203.0.113.5", "guess-0123456789-a"), 401);
  EXPECT_EQ(guess("198.51.100.1, 203.0.113.5", "guess-0123456789-b"), 401);  // the last hop counts
  EXPECT_EQ(guess("203.0.113.5", "tok-alice-0123456789"), 429);
  EXPECT_EQ(guess("203.0.113.6", "tok-alice-0123456789"), 200);  // another client behind it
  EXPECT_EQ(guess("", "tok-alice-0123456789"), 200);             // the proxy itself

  // Not trusted: the header changes nothing.
  StopServer();
  Start([](ServerOptions& o) {
    o.failed_auth_burst = 2;
    o.failed_auth_per_minute = 1;
  });
  EXPECT_EQ(guess("203.0.113.7", "guess-0123456789-c"), 401);
  EXPECT_EQ(guess("203.0.113.8", "guess-0123456789-d"), 401);
  EXPECT_EQ(guess("203.0.113.9", "tok-alice-0123456789"), 429);
}

TEST_F(ServerTest, PageAndMetrics) {
  HttpResult page = Http(port_, http::verb::get, "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("<title>presence</title>"), std::string::npos);
  EXPECT_EQ(Http(port_, http::verb::get, "/app.js").status, 200);
  EXPECT_EQ(Http(port_, http::verb::get, "/style.css").status, 200);
  std::unique_ptr<WsClient> bob = Connect("tok-bob-0123456789");
  // The metrics are an operator's: they count devices, so anyone else could
  // watch an invisible user connect.
  EXPECT_EQ(Http(port_, http::verb::get, "/metrics").status, 401);
  EXPECT_EQ(Http(port_, http::verb::get, "/metrics", "tok-bob-0123456789").status, 403);
  EXPECT_EQ(Http(port_, http::verb::get, "/metrics", "tok-root-0123456789", "", "rebind.example:80").status, 421);
  HttpResult m;
  EXPECT_TRUE(WaitUntil([&] {
    m = Http(port_, http::verb::get, "/metrics", "tok-root-0123456789");
    return m.body.find("presence_server_ws_connections 1") != std::string::npos;
  }));
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
  ASSERT_TRUE(slow.Connect(port_, "/presence/stream", "tok-carol-0123456789", nullptr, 4096));
  std::string junk = "{";
  for (int i = 0; i < 4000; ++i) slow.Send(junk);
  EXPECT_TRUE(WaitUntil(
      [&] {
        HttpResult m = Http(port_, http::verb::get, "/metrics", "tok-root-0123456789");
        return m.body.find("presence_server_slow_consumer_disconnects_total 0") == std::string::npos;
      },
      10s));
  slow.StartReading();
  while (slow.Next(3s)) {
  }
  EXPECT_TRUE(slow.closed());
  EXPECT_EQ(Http(port_, http::verb::get, "/healthz").status, 200);
  std::unique_ptr<WsClient> alice = Connect("tok-alice-0123456789");
  alice->Send(R"({"type":"subscribe","users":["bob"]})");
  EXPECT_TRUE(alice->NextOfType("subscribed").has_value());
}

TEST_F(ServerTest, RateLimitedClientsAreToldSo) {
  StopServer();
  Start([](ServerOptions& o) {
    o.message_rate = 5;
    o.message_burst = 5;
  });
  std::unique_ptr<WsClient> alice = Connect("tok-alice-0123456789");
  for (int i = 0; i < 10; ++i) alice->Send(R"({"type":"heartbeat"})");
  std::optional<Json> e = alice->NextOfType("error");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(Str(*e, "code"), "rate_limited");
}

TEST_F(ServerTest, SimulatedClientsComeOnline) {
  StopServer();
  Start([](ServerOptions& o) {
    o.simulate = 20;
    o.access.AddTopicMembers("workspace", {"alice"});  // the config names who watches the crowd
  });
  std::string ids;
  for (int i = 1; i <= 20; ++i) absl::StrAppend(&ids, i > 1 ? "," : "", "sim-", i < 10 ? "000" : "00", i);
  // They connect over their first 3 s; most stay on (a few drop, by design).
  HttpResult r;
  int online = 0;
  EXPECT_TRUE(WaitUntil(
      [&] {
        r = Http(port_, http::verb::get, "/presence?user_ids=" + ids, "tok-alice-0123456789");
        online = 0;
        if (r.status != 200) return false;
        for (const Json& u : r.json.Find("users")->items()) online += Str(u, "state") != "offline";
        return online >= 15;
      },
      15s))
      << online << " online: " << r.body;
  // --simulate widens nobody's view: bob is not in the topic.
  EXPECT_EQ(Http(port_, http::verb::get, "/presence?user_ids=sim-0001", "tok-bob-0123456789").status, 403);
}

// ---- Limits: each one met, each one's answer --------------------------------

// A raw TCP connection from `source`, for the caps and the slow clients.
struct RawConn {
  net::io_context ioc;
  tcp::socket socket{ioc};

  RawConn(uint16_t port, const std::string& source = "127.0.0.1") {
    socket.open(tcp::v4());
    socket.bind(tcp::endpoint(net::ip::make_address(source), 0));
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  }

  // Whether the server closed the connection within `timeout` (reading and
  // dropping whatever it sent first).
  bool ClosedWithin(std::chrono::milliseconds timeout) {
    bool closed = false;
    std::function<void()> read;
    char buf[4096];
    read = [&] {
      socket.async_read_some(net::buffer(buf), [&](beast::error_code ec, size_t) {
        if (ec == net::error::operation_aborted) return;  // our own cancel, below
        if (ec) {
          closed = true;
          return;
        }
        read();
      });
    };
    read();
    ioc.restart();
    ioc.run_for(timeout);
    if (!closed) {
      socket.cancel();
      ioc.restart();
      ioc.run();  // the cancelled read completes
    }
    return closed;
  }

  void Write(const std::string& bytes) {
    beast::error_code ec;
    net::write(socket, net::buffer(bytes), ec);
  }
};

TEST_F(ServerTest, TheConnectionCapCountsHttpTooAndClosesTheRestAtAccept) {
  StopServer();
  Start([](ServerOptions& o) {
    o.max_connections = 3;
    o.request_timeout_ms = 60000;  // only the cap may close a connection here
  });
  std::vector<std::unique_ptr<RawConn>> idle;
  for (int i = 0; i < 3; ++i) idle.push_back(std::make_unique<RawConn>(port_));
  // Each of the three is an idle HTTP connection, counted.
  RawConn fourth(port_);
  EXPECT_TRUE(fourth.ClosedWithin(5s));
  // One of the three goes: a new client is served again.
  idle.pop_back();
  HttpResult m;
  EXPECT_TRUE(WaitUntil([&] {
    m = Http(port_, http::verb::get, "/metrics", "tok-root-0123456789");
    return m.status == 200;
  }));
  EXPECT_NE(m.body.find("presence_server_connections_refused_total{reason=\"total\"} "), std::string::npos);
  EXPECT_EQ(m.body.find("presence_server_connections_refused_total{reason=\"total\"} 0"), std::string::npos)
      << m.body;
  EXPECT_NE(m.body.find("presence_server_max_connections 3"), std::string::npos);
}

TEST_F(ServerTest, ConnectionsPerAddressAndPerUserAreCapped) {
  StopServer();
  Start([](ServerOptions& o) {
    o.max_connections_per_ip = 2;
    o.max_connections_per_user = 2;
    o.request_timeout_ms = 60000;
  });
  {
    RawConn a(port_), b(port_);
    RawConn c(port_);
    EXPECT_TRUE(c.ClosedWithin(5s));  // a third from 127.0.0.1
    RawConn elsewhere(port_, "127.0.0.2");
    EXPECT_FALSE(elsewhere.ClosedWithin(300ms));  // another address is not
  }
  // Two WebSockets of alice (from two addresses, under the per-address cap)
  // are fine; a third is refused with a reason, and closed.
  WsClient one, two, three;
  ASSERT_TRUE(WaitUntil([&] { return one.Connect(port_, "/presence/stream?device_id=a", "tok-alice-0123456789"); }));
  one.StartReading();
  ASSERT_TRUE(one.NextOfType("welcome").has_value());
  ASSERT_TRUE(two.Connect(port_, "/presence/stream?device_id=b", "tok-alice-0123456789", nullptr, 0, "127.0.0.3"));
  two.StartReading();
  ASSERT_TRUE(two.NextOfType("welcome").has_value());
  ASSERT_TRUE(
      three.Connect(port_, "/presence/stream?device_id=c", "tok-alice-0123456789", nullptr, 0, "127.0.0.4"));
  three.StartReading();
  std::optional<Json> e = three.NextOfType("error");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(Str(*e, "code"), "too_many_connections");
  EXPECT_TRUE(WaitUntil([&] {
    three.Poll(20ms);
    return three.closed();
  }));
  EXPECT_EQ(three.reason().code, websocket::close_code::try_again_later);
}

TEST_F(ServerTest, ASilentClientIsClosedAfterTheIdleTimeoutPingsOrNot) {
  StopServer();
  Start([](ServerOptions& o) { o.idle_timeout_ms = 300; });
  // It reads (so it answers the server's pings) but sends nothing.
  std::unique_ptr<WsClient> silent = Connect("tok-bob-0123456789");
  std::optional<Json> e = silent->NextOfType("error", 5s);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(Str(*e, "code"), "idle_timeout");
  EXPECT_TRUE(WaitUntil([&] {
    silent->Poll(20ms);
    return silent->closed();
  }));
  EXPECT_EQ(silent->reason().code, websocket::close_code::policy_error);
  // One that sends a heartbeat every 100 ms is not closed.
  std::unique_ptr<WsClient> alive = Connect("tok-alice-0123456789");
  for (int i = 0; i < 25; ++i) {
    alive->Send(R"({"type":"heartbeat"})");
    alive->Poll(100ms);
  }
  EXPECT_FALSE(alive->closed());
  HttpResult m = Http(port_, http::verb::get, "/metrics", "tok-root-0123456789");
  EXPECT_NE(m.body.find("presence_server_idle_disconnects_total 1"), std::string::npos) << m.body;
}

TEST_F(ServerTest, ATricklingOrIdleHttpClientIsClosedAtTheRequestDeadline) {
  StopServer();
  Start([](ServerOptions& o) { o.request_timeout_ms = 300; });
  // Slowloris: a header a byte at a time never gets more than the deadline.
  RawConn slow(port_);
  const std::string header = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
  bool closed = false;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 100 && !closed; ++i) {
    slow.Write(i < static_cast<int>(header.size()) ? header.substr(i, 1) : "a");
    closed = slow.ClosedWithin(50ms);
  }
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  // Keep-alive: after an answer, an idle connection is closed too.
  RawConn keep(port_);
  keep.Write("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_TRUE(keep.ClosedWithin(5s));
}

TEST_F(ServerTest, AFrameOverTheLimitClosesWith1009) {
  StopServer();
  Start([](ServerOptions& o) { o.max_frame_bytes = 64 * 1024; });
  std::unique_ptr<WsClient> c = Connect("tok-alice-0123456789");
  c->Send(std::string(100 * 1024, 'x'));
  EXPECT_TRUE(WaitUntil([&] {
    c->Poll(20ms);
    return c->closed();
  }));
  EXPECT_EQ(c->reason().code, websocket::close_code::too_big);
}

TEST_F(ServerTest, AWriteThatStallsPastTheLimitDisconnects) {
  StopServer();
  Start([](ServerOptions& o) {
    o.write_stall_ms = 500;
    o.max_queue_bytes = 8 << 20;  // the queue bound is not what trips here
  });
  WsClient stuck;
  ASSERT_TRUE(stuck.Connect(port_, "/presence/stream", "tok-carol-0123456789", nullptr, 4096));
  for (int i = 0; i < 4000; ++i) stuck.Send("{");  // each answered with an error it never reads
  EXPECT_TRUE(WaitUntil(
      [&] {
        HttpResult m = Http(port_, http::verb::get, "/metrics", "tok-root-0123456789");
        return m.body.find("presence_server_slow_consumer_disconnects_total 1") != std::string::npos;
      },
      10s));
  EXPECT_EQ(Http(port_, http::verb::get, "/healthz").status, 200);
}

TEST_F(ServerTest, ANewConnectionOfTheSameDeviceClosesTheOldOneAtOnce) {
  std::unique_ptr<WsClient> old_tab = Connect("tok-alice-0123456789", "tab");
  std::unique_ptr<WsClient> new_tab = Connect("tok-alice-0123456789", "tab");
  // The old one sends nothing and is still told, and closed.
  std::optional<Json> e = old_tab->NextOfType("error");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(Str(*e, "code"), "session_replaced");
  EXPECT_TRUE(WaitUntil([&] {
    old_tab->Poll(20ms);
    return old_tab->closed();
  }));
  new_tab->Send(R"({"type":"subscribe","users":["alice"]})");
  EXPECT_TRUE(new_tab->WaitForState("alice", "online", 3s));
}

TEST_F(ServerTest, EveryMessageCountsAgainstTheRateBinaryAndOversizedToo) {
  StopServer();
  Start([](ServerOptions& o) {
    o.message_rate = 1;
    o.message_burst = 3;
  });
  for (bool binary : {true, false}) {
    std::unique_ptr<WsClient> c = Connect(binary ? "tok-alice-0123456789" : "tok-bob-0123456789");
    for (int i = 0; i < 6; ++i) c->Send(binary ? std::string("{}") : std::string(2000, 'x'), binary);
    bool limited = false;
    while (std::optional<Json> e = c->NextOfType("error", 2s)) {
      if (Str(*e, "code") == "rate_limited") {
        limited = true;
        break;
      }
    }
    EXPECT_TRUE(limited) << (binary ? "binary" : "oversized");
  }
}

TEST_F(ServerTest, MetricsOnTheirOwnAddressNeedNoTokenAndServeNothingElse) {
  StopServer();
  Start([](ServerOptions& o) { o.metrics_bind = "127.0.0.1:0"; });
  const uint16_t mport = server_->metrics_port();
  ASSERT_NE(mport, 0);
  HttpResult m = Http(mport, http::verb::get, "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("presence_server_connections"), std::string::npos);
  EXPECT_EQ(Http(mport, http::verb::get, "/presence?user_ids=alice", "tok-alice-0123456789").status, 404);
  EXPECT_EQ(Http(mport, http::verb::get, "/").status, 404);
  EXPECT_EQ(Upgrade(mport, "/presence/stream", "tok-alice-0123456789").status, 404);
  // The main port still wants an operator.
  EXPECT_EQ(Http(port_, http::verb::get, "/metrics").status, 401);
}

// ---- TLS ----------------------------------------------------------------------

// A self-signed certificate for 127.0.0.1 (its IP in subjectAltName) and
// its key, as PEM files.
void MakeCertificate(const std::string& cert_path, const std::string& key_path) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  ASSERT_NE(key, nullptr);
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("127.0.0.1"), -1,
                             -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, "IP:127.0.0.1");
  ASSERT_NE(san, nullptr);
  X509_add_ext(x, san, -1);
  X509_EXTENSION_free(san);
  ASSERT_GT(X509_sign(x, key, EVP_sha256()), 0);
  FILE* c = std::fopen(cert_path.c_str(), "w");
  PEM_write_X509(c, x);
  std::fclose(c);
  FILE* k = std::fopen(key_path.c_str(), "w");
  PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(k);
  X509_free(x);
  EVP_PKEY_free(key);
}

TEST_F(ServerTest, HttpsAndWssWithTheGivenCertificate) {
  const std::string cert = dir_ + "-cert.pem", key = dir_ + "-key.pem";
  MakeCertificate(cert, key);
  StopServer();
  Start([&](ServerOptions& o) {
    o.tls_cert_file = cert;
    o.tls_key_file = key;
  });
  EXPECT_TRUE(absl::StartsWith(server_->url(), "https://127.0.0.1:")) << server_->url();
  net::io_context ioc;
  net::ssl::context ctx(net::ssl::context::tls_client);
  ctx.load_verify_file(cert);
  ctx.set_verify_mode(net::ssl::verify_peer);
  auto tls_connect = [&](beast::ssl_stream<beast::tcp_stream>& s) {
    // The certificate must be for the address connected to.
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s.native_handle()), "127.0.0.1");
    beast::get_lowest_layer(s).connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port_));
    s.handshake(net::ssl::stream_base::client);  // throws if the certificate does not verify
  };

  auto https_get = [&](const std::string& target, const std::string& token) {
    beast::ssl_stream<beast::tcp_stream> s(ioc, ctx);
    tls_connect(s);
    http::request<http::string_body> req(http::verb::get, target, 11);
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::authorization, "Bearer " + token);
    http::write(s, req);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(s, buf, res);
    return res;
  };

  // https: GET /presence with a token.
  http::response<http::string_body> got = https_get("/presence?user_ids=alice", "tok-alice-0123456789");
  EXPECT_EQ(got.result_int(), 200) << got.body();
  // wss: the welcome, then a snapshot of what it watches.
  {
    websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws(ioc, ctx);
    tls_connect(ws.next_layer());
    ws.handshake("127.0.0.1", "/presence/stream?device_id=secure");
    ws.write(net::buffer(std::string(R"({"type":"auth","token":"tok-alice-0123456789"})")));
    beast::flat_buffer buf;
    ws.read(buf);
    absl::StatusOr<Json> w = ParseJson(beast::buffers_to_string(buf.data()));
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(Str(*w, "type"), "welcome");
    buf.consume(buf.size());
    ws.write(net::buffer(std::string(R"({"type":"subscribe","users":["alice"]})")));
    bool saw_snapshot = false;
    for (int i = 0; i < 5 && !saw_snapshot; ++i) {
      ws.read(buf);
      saw_snapshot = beast::buffers_to_string(buf.data()).find("\"snapshot\"") != std::string::npos;
      buf.consume(buf.size());
    }
    EXPECT_TRUE(saw_snapshot);
    ws.close(websocket::close_code::normal);
  }
  // Plain HTTP on the TLS port gets no answer, and is counted.
  RawConn plain(port_);
  plain.Write("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_TRUE(plain.ClosedWithin(5s));
  got = https_get("/metrics", "tok-root-0123456789");
  EXPECT_NE(got.body().find("presence_server_tls_handshake_failures_total 1"), std::string::npos) << got.body();
  std::remove(cert.c_str());
  std::remove(key.c_str());
}

TEST(ServerTls, AMissingOrHalfGivenCertificateIsAClearError) {
  ServerOptions o;
  o.port = 0;
  o.data_dir = TempDir();
  o.web_dir = PRESENCE_SERVER_WEB_DIR;
  o.tls_cert_file = "/nonexistent/cert.pem";
  o.tls_key_file = "/nonexistent/key.pem";
  absl::StatusOr<std::unique_ptr<Server>> s = Server::Create(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.status().message()).find("--tls-cert"), std::string::npos) << s.status();
  o.tls_key_file.clear();
  s = Server::Create(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.status().message()).find("both"), std::string::npos) << s.status();
  std::error_code ec;
  std::filesystem::remove_all(o.data_dir, ec);
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
    setenv("PRESENCE_TOKENS", "t1-0123456789abcdef=alice", 1);
    execl(PRESENCE_SERVER_BINARY, PRESENCE_SERVER_BINARY, "--port", "0", "--data-dir", dir.c_str(),
          "--simulate", "5", "--exit-after", "3", static_cast<char*>(nullptr));
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
  HttpResult r =
      Http(static_cast<uint16_t>(port), http::verb::get, "/presence?user_ids=alice", "t1-0123456789abcdef");
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
  // Tokens never on the command line; and never short.
  cmd = std::string(PRESENCE_SERVER_BINARY) + " --tokens t1-0123456789abcdef=alice >/dev/null 2>&1";
  rc = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  cmd = std::string("PRESENCE_TOKENS=short=alice ") + PRESENCE_SERVER_BINARY + " --port 0 >/dev/null 2>&1";
  rc = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 2);
}

// A cluster node's options are checked before anything is reached, each
// bad one refused by the flag that set it.
TEST(ClusterOptions, EachBadValueIsRefusedByItsFlag) {
  ClusterOptions good;
  good.role = ClusterRole::kGateway;
  good.brokers = "127.0.0.1:1";  // never reached
  good.store = "redis://127.0.0.1:1";
  presence::Options engine;
  auto refused = [&](const ClusterOptions& o) { return Cluster::Create(o, &engine).status(); };
  struct Case {
    std::function<void(ClusterOptions&)> set;
    std::string flag;
  };
  const std::vector<Case> cases = {
      {[](ClusterOptions& o) { o.flush_ms = 0; }, "--bus-flush-ms"},
      {[](ClusterOptions& o) { o.flush_ms = 1001; }, "--bus-flush-ms"},
      {[](ClusterOptions& o) { o.heartbeat_flush_ms = 19; }, "--bus-heartbeat-flush-ms"},  // below flush_ms
      {[](ClusterOptions& o) { o.heartbeat_flush_ms = -1; }, "--bus-heartbeat-flush-ms"},
      {[](ClusterOptions& o) { o.heartbeat_flush_ms = 1001; }, "--bus-heartbeat-flush-ms"},
      {[](ClusterOptions& o) { o.partitions = 0; }, "--partitions"},
      {[](ClusterOptions& o) { o.brokers.clear(); }, "--kafka-brokers"},
      {[](ClusterOptions& o) { o.store.clear(); }, "--store"},
  };
  for (const Case& c : cases) {
    ClusterOptions o = good;
    c.set(o);
    const absl::Status st = refused(o);
    if (absl::IsFailedPrecondition(st)) GTEST_SKIP() << st;  // built without Kafka
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << c.flag << ": " << st;
    EXPECT_TRUE(absl::StrContains(st.message(), c.flag)) << st;
  }
  // A heartbeat flush left unset follows a longer --bus-flush-ms.
  ClusterOptions slow = good;
  slow.flush_ms = 300;
  slow.partitions = 0;  // refused after the flush flags are checked: nothing is reached
  EXPECT_TRUE(absl::StrContains(refused(slow).message(), "--partitions")) << refused(slow);
  EXPECT_EQ(HeartbeatFlushMs(slow), 300);
  EXPECT_EQ(HeartbeatFlushMs(good), 200);
  slow.heartbeat_flush_ms = 500;
  EXPECT_EQ(HeartbeatFlushMs(slow), 500);
}

}  // namespace
}  // namespace presence_server
