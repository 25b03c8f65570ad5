// File: examples/presence_server/client_message.cc
#include "client_message.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "json.h"

namespace presence_server {
namespace {

constexpr char kCodeUrl[] = "presence_server/error_code";

absl::Status WithCode(absl::Status status, absl::string_view code) {
  status.SetPayload(kCodeUrl, absl::Cord(code));
  return status;
}

absl::Status Bad(absl::string_view what) {
  return WithCode(absl::InvalidArgumentError(what), "bad_message");
}

absl::StatusOr<Json> ParseObject(absl::string_view text) {
  if (text.size() > kMaxClientMessageBytes) {
    return WithCode(absl::InvalidArgumentError(absl::StrCat("message of ", text.size(),
                                                            " bytes is too big")),
                    "message_too_big");
  }
  JsonLimits limits;
  limits.max_bytes = kMaxClientMessageBytes;
  limits.max_depth = 4;
  limits.max_elements = 4 * kMaxIdsPerMessage;
  absl::StatusOr<Json> json = ParseJson(text, limits);
  if (!json.ok()) {
    return WithCode(absl::InvalidArgumentError(absl::StrCat("malformed JSON ", json.status().message())),
                    "malformed_json");
  }
  if (!json->is_object()) return Bad(absl::StrCat("expected a JSON object, got ", Json::TypeName(json->type())));
  return json;
}

absl::Status ReadIds(const Json& v, absl::string_view field, size_t max_bytes, size_t* budget,
                     std::vector<std::string>* out) {
  if (!v.is_array()) return Bad(absl::StrCat("\"", field, "\" must be an array of strings"));
  for (const Json& item : v.items()) {
    if (!item.is_string()) return Bad(absl::StrCat("\"", field, "\" must hold only strings"));
    const std::string& s = item.as_string();
    if (s.empty() || s.size() > max_bytes) {
      return Bad(absl::StrCat("an id in \"", field, "\" must be 1 to ", max_bytes, " bytes"));
    }
    if (*budget == 0) return Bad(absl::StrCat("more than ", kMaxIdsPerMessage, " ids in one message"));
    --*budget;
    out->push_back(s);
  }
  return absl::OkStatus();
}

}  // namespace

std::string ErrorCodeOf(const absl::Status& status) {
  auto code = status.GetPayload(kCodeUrl);
  if (code.has_value()) return std::string(*code);
  return status.code() == absl::StatusCode::kInvalidArgument ? "bad_message" : "internal";
}

std::optional<presence::Activity> ActivityFromName(absl::string_view name) {
  if (name == "active") return presence::Activity::kActive;
  if (name == "idle") return presence::Activity::kIdle;
  return std::nullopt;
}

std::optional<presence::Source> SourceFromName(absl::string_view name) {
  if (name == "app") return presence::Source::kApp;
  if (name == "manual") return presence::Source::kManual;
  if (name == "inferred") return presence::Source::kInferred;
  return std::nullopt;
}

std::optional<presence::OverrideState> OverrideStateFromName(absl::string_view name) {
  if (name == "online") return presence::OverrideState::kOnline;
  if (name == "away") return presence::OverrideState::kAway;
  if (name == "dnd") return presence::OverrideState::kDnd;
  if (name == "invisible") return presence::OverrideState::kInvisible;
  return std::nullopt;
}

std::optional<presence::Platform> PlatformFromName(absl::string_view name) {
  if (name == "web") return presence::Platform::kWeb;
  if (name == "desktop") return presence::Platform::kDesktop;
  if (name == "mobile") return presence::Platform::kMobile;
  if (name == "console") return presence::Platform::kConsole;
  if (name == "other") return presence::Platform::kOther;
  return std::nullopt;
}

absl::StatusOr<ClientMessage> ParseClientMessage(absl::string_view text) {
  absl::StatusOr<Json> parsed = ParseObject(text);
  if (!parsed.ok()) return parsed.status();
  const Json& json = *parsed;
  ClientMessage msg;

  const Json* type = json.Find("type");
  if (type == nullptr) return Bad("missing \"type\"");
  if (!type->is_string()) return Bad("\"type\" must be a string");
  const std::string& t = type->as_string();
  if (t == "heartbeat") msg.type = ClientMessageType::kHeartbeat;
  else if (t == "activity") msg.type = ClientMessageType::kActivity;
  else if (t == "subscribe") msg.type = ClientMessageType::kSubscribe;
  else if (t == "unsubscribe") msg.type = ClientMessageType::kUnsubscribe;
  else if (t == "bye") msg.type = ClientMessageType::kBye;
  else if (t == "auth") msg.type = ClientMessageType::kAuth;
  else return Bad(absl::StrCat("unknown message type \"", t.substr(0, 64), "\""));

  const bool is_beat = msg.type == ClientMessageType::kHeartbeat ||
                       msg.type == ClientMessageType::kActivity;
  const bool is_sub = msg.type == ClientMessageType::kSubscribe ||
                      msg.type == ClientMessageType::kUnsubscribe;
  size_t budget = kMaxIdsPerMessage;
  for (const auto& [key, value] : json.members()) {
    if (key == "type") continue;
    if (key == "id") {
      if (value.is_int()) {
        msg.id_json = absl::StrCat(value.as_int());
      } else if (value.is_string() && value.as_string().size() <= 128) {
        msg.id_json = JsonString(value.as_string());
      } else {
        return Bad("\"id\" must be an integer or a string of at most 128 bytes");
      }
    } else if (key == "activity" && is_beat) {
      if (!value.is_string()) return Bad("\"activity\" must be \"active\" or \"idle\"");
      msg.activity = ActivityFromName(value.as_string());
      if (!msg.activity) return Bad("\"activity\" must be \"active\" or \"idle\"");
    } else if (key == "source" && is_beat) {
      std::optional<presence::Source> s =
          value.is_string() ? SourceFromName(value.as_string()) : std::nullopt;
      if (!s) return Bad("\"source\" must be \"app\", \"manual\" or \"inferred\"");
      msg.source = *s;
    } else if (key == "users" && is_sub) {
      absl::Status st = ReadIds(value, "users", presence::kMaxUserIdBytes, &budget, &msg.users);
      if (!st.ok()) return st;
    } else if (key == "topics" && is_sub) {
      absl::Status st = ReadIds(value, "topics", 128, &budget, &msg.topics);
      if (!st.ok()) return st;
    } else if (key == "token" && msg.type == ClientMessageType::kAuth) {
      if (!value.is_string() || value.as_string().empty() || value.as_string().size() > 128) {
        return Bad("\"token\" must be a string of 1 to 128 bytes");
      }
      msg.token = value.as_string();
    } else {
      return Bad(absl::StrCat("unknown field \"", key.substr(0, 64), "\" in a \"", t, "\" message"));
    }
  }
  if (msg.type == ClientMessageType::kActivity && !msg.activity) {
    return Bad("an \"activity\" message needs \"activity\": \"active\" or \"idle\"");
  }
  if (msg.type == ClientMessageType::kAuth && msg.token.empty()) return Bad("an \"auth\" message needs \"token\"");
  if (is_sub && msg.users.empty() && msg.topics.empty()) {
    return Bad(absl::StrCat("a \"", t, "\" message needs \"users\" or \"topics\""));
  }
  return msg;
}

absl::StatusOr<OverrideRequest> ParseOverrideRequest(absl::string_view text) {
  absl::StatusOr<Json> parsed = ParseObject(text);
  if (!parsed.ok()) return parsed.status();
  OverrideRequest req;
  bool has_state = false;
  for (const auto& [key, value] : parsed->members()) {
    if (key == "state") {
      std::optional<presence::OverrideState> s =
          value.is_string() ? OverrideStateFromName(value.as_string()) : std::nullopt;
      if (!s) return Bad("\"state\" must be \"online\", \"away\", \"dnd\" or \"invisible\"");
      req.state = *s;
      has_state = true;
    } else if (key == "user_id") {
      if (!value.is_string() || value.as_string().empty() ||
          value.as_string().size() > presence::kMaxUserIdBytes) {
        return Bad("\"user_id\" must be a string of 1 to 128 bytes");
      }
      req.user_id = value.as_string();
    } else if (key == "until_ms") {
      if (!value.is_int() || value.as_int() < 0) return Bad("\"until_ms\" must be a non-negative integer");
      req.until_ms = value.as_int();
    } else if (key == "duration_ms") {
      if (!value.is_int() || value.as_int() <= 0 || value.as_int() > int64_t{366} * 24 * 3600 * 1000) {
        return Bad("\"duration_ms\" must be a positive integer of at most a year");
      }
      req.duration_ms = value.as_int();
    } else {
      return Bad(absl::StrCat("unknown field \"", key.substr(0, 64), "\""));
    }
  }
  if (!has_state) return Bad("missing \"state\"");
  if (req.until_ms != 0 && req.duration_ms != 0) return Bad("give \"until_ms\" or \"duration_ms\", not both");
  return req;
}

}  // namespace presence_server
