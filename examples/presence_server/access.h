// File: examples/presence_server/access.h
//
// The example server's auth hook: who a token belongs to, and who may see
// what. Replace this file (or the AccessConfig it is built from) to plug in
// your own identity system; the server asks only the questions below.
//
// The config is a text file (--auth FILE), one directive per line, '#'
// starts a comment:
//
//   user     <user_id> <token> [<user_id> ...]   the user, its token, and the
//                                                users it may watch (friends)
//   topic    <topic> <user_id> ...               a topic and its members
//   operator <user_id>                           may read everyone and revoke
//                                                anyone's overrides
//
// and --tokens-file FILE (or the PRESENCE_TOKENS environment variable)
// adds users too: "token1=alice,token2=bob", commas or new lines between
// pairs. Never on the command line, where every local user can read it.
// A token is 16 to 128 bytes, with no spaces or control bytes.
//
// The rules:
//   * a request without a known token is refused (HTTP 401);
//   * a user may read (GET /presence, history, WebSocket subscribe) itself,
//     the users its line names, and the members of every topic it belongs
//     to; an operator may read everyone;
//   * a user may join (subscribe to) a topic it is a member of;
//   * a user may set and revoke only its own overrides; an operator may also
//     revoke other users' overrides (docs/design.md: revocable by the user or by an
//     operator);
//   * a user id the config does not know is "unknown_user" (HTTP 404), so a
//     caller learns nothing about users outside the directory.
#ifndef PRESENCE_EXAMPLES_SERVER_ACCESS_H_
#define PRESENCE_EXAMPLES_SERVER_ACCESS_H_

#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace presence_server {

inline constexpr size_t kMinTokenBytes = 16;

class Access {
 public:
  // Parses a config file's text (see above). InvalidArgument names the line.
  absl::Status AddConfig(absl::string_view text);
  // "token1=alice,token2=bob" (commas or new lines between pairs).
  absl::Status AddTokens(absl::string_view spec);
  // Adds a user that has no token (a simulated client).
  void AddUser(absl::string_view user_id);
  absl::Status AddToken(absl::string_view token, absl::string_view user_id);
  void AddWatch(absl::string_view user_id, absl::string_view watched);
  void AddTopicMembers(absl::string_view topic, const std::vector<std::string>& members);
  void AddOperator(absl::string_view user_id);

  // The user a token belongs to, or nullopt.
  std::optional<std::string> Authenticate(absl::string_view token) const;

  bool UserExists(absl::string_view user_id) const { return users_.contains(user_id); }
  bool TopicExists(absl::string_view topic) const { return topics_.contains(topic); }
  bool IsOperator(absl::string_view user_id) const { return operators_.contains(user_id); }
  bool MayRead(absl::string_view viewer, absl::string_view target) const;
  bool MayJoin(absl::string_view viewer, absl::string_view topic) const;
  bool MayRevokeFor(absl::string_view caller, absl::string_view target) const {
    return caller == target || IsOperator(caller);
  }

  // The users the viewer watches directly (its friends, sorted; itself
  // first), and the topics it belongs to (sorted).
  std::vector<std::string> FriendsOf(absl::string_view viewer) const;
  std::vector<std::string> TopicsOf(absl::string_view viewer) const;

  const absl::flat_hash_map<std::string, std::vector<std::string>>& topics() const { return topics_; }
  // Users that have a token, sorted.
  std::vector<std::string> TokenUsers() const;
  size_t user_count() const { return users_.size(); }
  size_t token_count() const { return tokens_.size(); }

 private:
  absl::flat_hash_map<std::string, std::string> tokens_;  // token -> user
  absl::flat_hash_set<std::string> users_;
  absl::flat_hash_map<std::string, absl::flat_hash_set<std::string>> watches_;
  absl::flat_hash_map<std::string, std::vector<std::string>> topics_;  // members, in order
  absl::flat_hash_map<std::string, absl::flat_hash_set<std::string>> topics_of_;  // user -> topics
  absl::flat_hash_set<std::string> operators_;
};

}  // namespace presence_server

#endif  // PRESENCE_EXAMPLES_SERVER_ACCESS_H_
