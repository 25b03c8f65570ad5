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
// Reading (GET /presence, /presence/history) and revoking one user's
// overrides (DELETE /presence/override?all=true&user_id=U) are the public
// routes, which an operator may use for anyone.
#include <string>

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
  // On a cluster node each of the others would act on this node's engine
  // alone (a gateway's holds no user), and none travels the bus: refused,
  // not a success that changed nothing.
  if (cluster_ != nullptr) {
    return Fail(http::status::not_implemented, "not_in_cluster",
                absl::StrCat(t.path, " acts on one engine and does not travel the bus: a cluster node "
                                     "does not take it",
                             t.path == "/operator/overrides/revoke"
                                 ? " (revoke each user's overrides with DELETE "
                                   "/presence/override?all=true&user_id=U)"
                                 : ""));
  }

  if (t.path == "/operator/drain") {
    const std::string* gateway = t.Get("gateway");
    if (gateway == nullptr || gateway->empty()) {
      return Fail(http::status::bad_request, "bad_request", "give gateway=NAME");
    }
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
  if (!TimeParam(t, "set_from_ms", &from) || !TimeParam(t, "set_to_ms", &to)) {
    return Fail(http::status::bad_request, "bad_request",
                "give set_from_ms and set_to_ms, times in ms >= 0");
  }
  if (from > to) return Fail(http::status::bad_request, "bad_request", "set_from_ms is after set_to_ms");
  return {http::status::ok, absl::StrCat("{\"revoked\":", engine_->RevokeOverridesSetBetween(from, to), "}")};
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
