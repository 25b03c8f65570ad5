// File: examples/presence_server/operator_routes.cc
//
// The operator API of presence_server (issue 18; docs/operations.md,
// "The operator API"): the engine's operator actions over HTTP, for
// presencectl and the runbooks (docs/runbooks.md). Every route is a POST
// under /operator/ and takes only an operator's token (authenticated, as
// every route's, from `Authorization: Bearer TOKEN` by HandleHttp):
//   POST /operator/drain?gateway=G                       {"gateway","drained"}
//   POST /operator/rebuild                               {"rebuilt":true,"users","devices"}
//   POST /operator/erase?user_id=U                       {"erased":U}
//     (on a cluster gateway: 202 {"erased":U,"accepted":true}, published for
//     the user's owner, which erases it when it reads it)
//   POST /operator/overrides/revoke?set_from_ms=A&set_to_ms=B   {"revoked":n}
// On a cluster gateway, drain and revoke are published for every partition
// and applied by each owner to the partition's users when it reads them
// (202 {...,"accepted":true,"partitions":N}); rebuild is each engine node's
// own (a gateway: 404 not_an_engine).
// Reading (GET /presence, /presence/history) and revoking one user's
// overrides (DELETE /presence/override?all=true&user_id=U) are the public
// routes, which an operator may use for anyone.
#include <algorithm>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "json.h"
#include "server_internal.h"

namespace presence_server {

namespace {

OperatorReply Fail(http::status status, absl::string_view code, absl::string_view message) {
  return {status, ErrorJson(code, message)};
}

// A required parameter that is a time in ms, >= 0.
bool TimeParam(const Target& t, absl::string_view key, int64_t* out) {
  const std::string* s = t.Get(key);
  return s != nullptr && absl::SimpleAtoi(*s, out) && *out >= 0;
}

// The gateway a drain names: gateway=NAME, not empty.
absl::StatusOr<std::string> GatewayParam(const Target& t) {
  const std::string* gateway = t.Get("gateway");
  if (gateway == nullptr || gateway->empty()) return absl::InvalidArgumentError("give gateway=NAME");
  return *gateway;
}

// The window of a bulk revoke: set_from_ms <= set_to_ms, both >= 0.
absl::Status RevokeWindow(const Target& t, int64_t* from, int64_t* to) {
  if (!TimeParam(t, "set_from_ms", from) || !TimeParam(t, "set_to_ms", to)) {
    return absl::InvalidArgumentError("give set_from_ms and set_to_ms, times in ms >= 0");
  }
  if (*from > *to) return absl::InvalidArgumentError("set_from_ms is after set_to_ms");
  return absl::OkStatus();
}

}  // namespace

OperatorReply Server::Impl::HandleOperator(const http::request<http::string_body>& req, const Target& t,
                                           const std::string& caller) {
  if (!opts_.access.IsOperator(caller)) {
    return Fail(http::status::forbidden, "forbidden", "only an operator may use the operator API");
  }
  const bool known = t.path == "/operator/drain" || t.path == "/operator/rebuild" ||
                     t.path == "/operator/erase" || t.path == "/operator/overrides/revoke";
  if (!known) return Fail(http::status::not_found, "not_found", absl::StrCat("no route ", t.path));
  if (req.method() != http::verb::post) {
    return Fail(http::status::method_not_allowed, "method_not_allowed", "use POST");
  }
  if (t.path == "/operator/erase") return Erase(t);
  if (cluster_ != nullptr && t.path != "/operator/rebuild") return PublishForEveryPartition(t);
  if (cluster_ != nullptr && cluster_->role() == ClusterRole::kGateway) {
    return Fail(http::status::not_found, "not_an_engine",
                "a gateway holds no user to reload: POST /operator/rebuild to each engine node");
  }

  if (t.path == "/operator/drain") {
    absl::StatusOr<std::string> gateway = GatewayParam(t);
    if (!gateway.ok()) return Fail(http::status::bad_request, "bad_request", gateway.status().message());
    // Every device of the gateway, in the engine's bounded batches.
    size_t drained = 0;
    for (;;) {
      absl::StatusOr<size_t> n = engine_->DrainGateway(*gateway);
      if (!n.ok()) {
        if (n.status().code() == absl::StatusCode::kNotFound) {
          return Fail(http::status::not_found, "unknown_gateway", n.status().message());
        }
        return Fail(http::status::internal_server_error, "internal", n.status().message());
      }
      if (*n == 0) break;
      drained += *n;
    }
    std::string out = "{\"gateway\":";
    AppendJsonString(&out, *gateway);
    absl::StrAppend(&out, ",\"drained\":", drained, "}");
    return {http::status::ok, std::move(out)};
  }

  if (t.path == "/operator/rebuild") {
    // What is pending is written first (a tick of the server's own, with
    // its fan-out delivery): a rebuild drops what is not.
    OnTick();
    if (absl::Status st = engine_->Rebuild(); !st.ok()) {
      return Fail(http::status::service_unavailable, "rebuild_failed", st.message());
    }
    const presence::Engine::Sizes sizes = engine_->GetSizes();
    return {http::status::ok, absl::StrCat("{\"rebuilt\":true,\"users\":", sizes.users,
                                           ",\"devices\":", sizes.devices, "}")};
  }

  // /operator/overrides/revoke: every override set within [from, to].
  int64_t from = 0, to = 0;
  if (absl::Status st = RevokeWindow(t, &from, &to); !st.ok()) {
    return Fail(http::status::bad_request, "bad_request", st.message());
  }
  return {http::status::ok, absl::StrCat("{\"revoked\":", engine_->RevokeOverridesSetBetween(from, to), "}")};
}

// A cluster gateway's drain and bulk revoke: a command for every partition,
// which each owner applies to the partition's users when it reads it (202:
// accepted).
OperatorReply Server::Impl::PublishForEveryPartition(const Target& t) {
  presence::PartitionCommand c;
  if (t.path == "/operator/drain") {
    absl::StatusOr<std::string> gateway = GatewayParam(t);
    if (!gateway.ok()) return Fail(http::status::bad_request, "bad_request", gateway.status().message());
    c.action = presence::PartitionCommand::Action::kDrain;
    c.drained_gateway = *std::move(gateway);
  } else {
    if (absl::Status st = RevokeWindow(t, &c.set_from_ms, &c.set_to_ms); !st.ok()) {
      return Fail(http::status::bad_request, "bad_request", st.message());
    }
    // Nothing is set after now: the window ends now at the latest, so that
    // the command, read again after a failover, revokes nothing set after it.
    const int64_t now = engine_->NowMs();
    if (c.set_from_ms > now) return {http::status::ok, "{\"revoked\":0}"};
    c.set_to_ms = std::min(c.set_to_ms, now);
    c.action = presence::PartitionCommand::Action::kRevokeOverrides;
  }
  const absl::Status st = cluster_->PublishToEveryPartition(c);
  switch (st.code()) {
    case absl::StatusCode::kOk: break;
    case absl::StatusCode::kInvalidArgument:
      return Fail(http::status::bad_request, "bad_request", st.message());
    default:
      return Fail(http::status::service_unavailable, "publish_failed",
                  absl::StrCat(st.message(), " (sending it again is safe)"));
  }
  std::string out = "{";
  if (c.action == presence::PartitionCommand::Action::kDrain) {
    out.append("\"gateway\":");
    AppendJsonString(&out, c.drained_gateway);
  } else {
    absl::StrAppend(&out, "\"set_from_ms\":", c.set_from_ms, ",\"set_to_ms\":", c.set_to_ms);
  }
  absl::StrAppend(&out, ",\"accepted\":true,\"partitions\":", cluster_->partitions(), "}");
  return {http::status::accepted, std::move(out)};
}


// POST /operator/erase: the engine erases the user at once; a cluster
// gateway publishes the erasure for the user's owner (202: accepted).
OperatorReply Server::Impl::Erase(const Target& t) {
  const std::string* user = t.Get("user_id");
  if (user == nullptr || user->empty()) {
    return Fail(http::status::bad_request, "bad_request", "give user_id=U");
  }
  const absl::Status st = cluster_ != nullptr ? cluster_->PublishErase(*user) : engine_->Erase(*user);
  switch (st.code()) {
    case absl::StatusCode::kOk: break;
    case absl::StatusCode::kInvalidArgument:
      return Fail(http::status::bad_request, "bad_request", st.message());
    default: return Fail(http::status::service_unavailable, "erase_failed", st.message());
  }
  std::string out = "{\"erased\":";
  AppendJsonString(&out, *user);
  if (cluster_ != nullptr) {
    out.append(",\"accepted\":true}");
    return {http::status::accepted, std::move(out)};
  }
  out.append("}");
  return {http::status::ok, std::move(out)};
}

}  // namespace presence_server
