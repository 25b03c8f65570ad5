// Unit tests of the example server's parts that need no socket: the JSON
// reader, ParseClientMessage / ParseOverrideRequest, and the access rules.
#include <string>

#include <gtest/gtest.h>

#include "access.h"
#include "client_message.h"
#include "server_internal.h"
#include "json.h"

namespace presence_server {
namespace {

TEST(Json, ParsesDocuments) {
  absl::StatusOr<Json> j = ParseJson(R"( {"a": [1, -2.5e3, true, null, "x\u00e9\ud83d\ude00"], "b": {}} )");
  ASSERT_TRUE(j.ok()) << j.status();
  const Json* a = j->Find("a");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->items().size(), 5u);
  EXPECT_TRUE(a->items()[0].is_int());
  EXPECT_EQ(a->items()[0].as_int(), 1);
  EXPECT_FALSE(a->items()[1].is_int());
  EXPECT_DOUBLE_EQ(a->items()[1].as_double(), -2500);
  EXPECT_TRUE(a->items()[2].as_bool());
  EXPECT_TRUE(a->items()[3].is_null());
  EXPECT_EQ(a->items()[4].as_string(), "x\xC3\xA9\xF0\x9F\x98\x80");
  EXPECT_TRUE(j->Find("b")->is_object());
}

TEST(Json, RejectsBadInput) {
  for (const char* bad : {"", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "01", "1.", "-", "nul", "\"\\x\"",
                          "\"\\ud800\"", "\"\\udc00x\"", "\"a\nb\"", "{\"a\":1,\"a\":2}", "1 2", "[1e999]",
                          "\"\xC0\xAF\"", "\"\xED\xA0\x80\"", "\"\xFF\"", "{1:2}", "[", "\"abc"}) {
    absl::StatusOr<Json> j = ParseJson(bad);
    EXPECT_FALSE(j.ok()) << "accepted: " << bad;
  }
}

TEST(Json, BoundsDepthAndSize) {
  std::string deep(100, '[');
  deep += std::string(100, ']');
  absl::StatusOr<Json> j = ParseJson(deep);
  ASSERT_FALSE(j.ok());
  EXPECT_NE(std::string(j.status().message()).find("nested too deeply"), std::string::npos);
  JsonLimits small;
  small.max_bytes = 4;
  EXPECT_FALSE(ParseJson("[1,2,3]", small).ok());
  small = JsonLimits();
  small.max_elements = 3;
  EXPECT_FALSE(ParseJson("[1,2,3]", small).ok());
}

TEST(Json, WritesValidStrings) {
  EXPECT_EQ(JsonString("a\"b\\c\n<\x01"), "\"a\\\"b\\\\c\\n\\u003c\\u0001\"");
  EXPECT_EQ(JsonString("\xFF"), "\"\xEF\xBF\xBD\"");  // invalid UTF-8 becomes U+FFFD
  absl::StatusOr<Json> back = ParseJson(JsonString("h\xC3\xA9llo\t\x7F"));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->as_string(), "h\xC3\xA9llo\t\x7F");
}

TEST(ClientMessage, Heartbeat) {
  absl::StatusOr<ClientMessage> m = ParseClientMessage(R"({"type":"heartbeat"})");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->type, ClientMessageType::kHeartbeat);
  EXPECT_FALSE(m->activity.has_value());
  m = ParseClientMessage(R"({"type":"heartbeat","activity":"idle","source":"manual","id":7})");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m->activity, presence::Activity::kIdle);
  EXPECT_EQ(m->source, presence::Source::kManual);
  EXPECT_EQ(m->id_json, "7");
}

TEST(ClientMessage, Subscribe) {
  absl::StatusOr<ClientMessage> m =
      ParseClientMessage(R"({"type":"subscribe","id":"s1","users":["bob","carol"],"topics":["team"]})");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->type, ClientMessageType::kSubscribe);
  EXPECT_EQ(m->users, (std::vector<std::string>{"bob", "carol"}));
  EXPECT_EQ(m->topics, (std::vector<std::string>{"team"}));
  EXPECT_EQ(m->id_json, "\"s1\"");
}

TEST(ClientMessage, ErrorCodes) {
  struct Case {
    const char* text;
    const char* code;
  } cases[] = {
      {"{not json", "malformed_json"},
      {"[1,2]", "bad_message"},
      {R"({"type":"dance"})", "bad_message"},
      {R"({"kind":"heartbeat"})", "bad_message"},
      {R"({"type":"heartbeat","activity":"sleepy"})", "bad_message"},
      {R"({"type":"activity"})", "bad_message"},
      {R"({"type":"subscribe"})", "bad_message"},
      {R"({"type":"subscribe","users":"bob"})", "bad_message"},
      {R"({"type":"subscribe","users":[""]})", "bad_message"},
      {R"({"type":"subscribe","users":[1]})", "bad_message"},
      {R"({"type":"heartbeat","users":["bob"]})", "bad_message"},
      {R"({"type":"heartbeat","id":1.5})", "bad_message"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ClientMessage> m = ParseClientMessage(c.text);
    ASSERT_FALSE(m.ok()) << c.text;
    EXPECT_EQ(ErrorCodeOf(m.status()), c.code) << c.text << ": " << m.status();
  }
  std::string many = R"({"type":"subscribe","users":[)";
  for (int i = 0; i < 1001; ++i) many += (i ? ",\"u" : "\"u") + std::to_string(i) + "\"";
  many += "]}";
  absl::StatusOr<ClientMessage> m = ParseClientMessage(many);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(ErrorCodeOf(m.status()), "bad_message");
}

TEST(OverrideRequest, Parses) {
  absl::StatusOr<OverrideRequest> r = ParseOverrideRequest(R"({"state":"invisible","duration_ms":60000})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->state, presence::OverrideState::kInvisible);
  EXPECT_EQ(r->duration_ms, 60000);
  EXPECT_FALSE(ParseOverrideRequest(R"({"state":"asleep"})").ok());
  EXPECT_FALSE(ParseOverrideRequest(R"({})").ok());
  EXPECT_FALSE(ParseOverrideRequest(R"({"state":"dnd","until_ms":5,"duration_ms":5})").ok());
  EXPECT_FALSE(ParseOverrideRequest(R"({"state":"dnd","duration_ms":-5})").ok());
  EXPECT_EQ(ErrorCodeOf(ParseOverrideRequest("dnd").status()), "malformed_json");
}

TEST(Access, ConfigAndRules) {
  Access a;
  ASSERT_TRUE(a.AddConfig("# demo\n"
                          "user alice tok-alice-0123456789 bob   # alice watches bob\n"
                          "user bob tok-bob-0123456789\n"
                          "user carol tok-carol-0123456789\n"
                          "topic team carol dave\n"
                          "operator root\n")
                  .ok());
  ASSERT_TRUE(a.AddTokens("tok-root-0123456789=root").ok());
  EXPECT_EQ(a.Authenticate("tok-alice-0123456789"), "alice");
  EXPECT_EQ(a.Authenticate("tok-root-0123456789"), "root");
  EXPECT_EQ(a.Authenticate("nope"), std::nullopt);
  EXPECT_EQ(a.Authenticate(""), std::nullopt);
  EXPECT_TRUE(a.MayRead("alice", "alice"));
  EXPECT_TRUE(a.MayRead("alice", "bob"));
  EXPECT_FALSE(a.MayRead("bob", "alice"));  // watching is one-way
  EXPECT_TRUE(a.MayRead("carol", "dave"));  // topic mates
  EXPECT_FALSE(a.MayRead("alice", "carol"));
  EXPECT_TRUE(a.MayRead("root", "carol"));  // operator
  EXPECT_TRUE(a.MayJoin("carol", "team"));
  EXPECT_FALSE(a.MayJoin("alice", "team"));
  EXPECT_FALSE(a.MayJoin("carol", "nope"));
  EXPECT_TRUE(a.MayRevokeFor("root", "alice"));
  EXPECT_FALSE(a.MayRevokeFor("bob", "alice"));
  EXPECT_TRUE(a.UserExists("dave"));
  EXPECT_FALSE(a.UserExists("erin"));
  EXPECT_EQ(a.FriendsOf("alice"), (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(a.TopicsOf("carol"), (std::vector<std::string>{"team"}));

  Access bad;
  absl::Status st = bad.AddConfig("user alice\n");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(std::string(st.message()).find("line 1"), std::string::npos);
  EXPECT_FALSE(bad.AddConfig("group x y\n").ok());
  EXPECT_FALSE(bad.AddTokens("novalue").ok());
  // Tokens are 16 to 128 bytes with no spaces or control bytes; the error
  // never repeats the token.
  absl::Status short_token = bad.AddTokens("tok-short=alice");
  EXPECT_FALSE(short_token.ok());
  EXPECT_EQ(std::string(short_token.message()).find("tok-short"), std::string::npos) << short_token;
  EXPECT_FALSE(bad.AddConfig("user alice tok-short\n").ok());
  EXPECT_FALSE(bad.AddToken(std::string(129, 'x'), "alice").ok());
  EXPECT_FALSE(bad.AddToken("sixteen-bytes-ok\x01", "alice").ok());
  EXPECT_TRUE(bad.AddToken("sixteen-bytes-ok", "alice").ok());
  // A tokens file: new lines or commas, comments.
  Access file;
  ASSERT_TRUE(file.AddTokens("# team\ntok-alice-0123456789=alice\n\ntok-bob-0123456789=bob,tok-c-0123456789=carol\n").ok());
  EXPECT_EQ(file.Authenticate("tok-bob-0123456789"), "bob");
  EXPECT_EQ(file.Authenticate("tok-c-0123456789"), "carol");
  Access twice;
  EXPECT_FALSE(twice.AddConfig("user a t-0123456789abcdef\nuser b t-0123456789abcdef\n").ok());
}

TEST(LogSafe, AClientsBytesCannotForgeALogLine) {
  EXPECT_EQ(LogSafe("phone-1"), "phone-1");
  EXPECT_EQ(LogSafe("a\nws: root/x connected"), "a\\x0aws: root/x connected");
  EXPECT_EQ(LogSafe(std::string("\r\x00\x1b[2J\\\xff", 8)), "\\x0d\\x00\\x1b[2J\\x5c\\xff");
}

}  // namespace
}  // namespace presence_server
