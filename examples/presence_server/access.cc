// File: examples/presence_server/access.cc
#include "access.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "presence/types.h"

namespace presence_server {
namespace {

absl::Status CheckId(absl::string_view what, absl::string_view id, int line) {
  if (id.empty() || id.size() > presence::kMaxUserIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("line ", line, ": a ", what, " must be 1 to 128 bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Access::AddConfig(absl::string_view text) {
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    size_t hash = line.find('#');
    if (hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> words = absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (words.empty()) continue;
    if (words[0] == "user") {
      if (words.size() < 3) {
        return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": user <user_id> <token> [<user_id> ...]"));
      }
      for (size_t i = 1; i < words.size(); ++i) {
        if (absl::Status st = CheckId(i == 2 ? "token" : "user id", words[i], line_no); !st.ok()) return st;
      }
      if (absl::Status st = AddToken(words[2], words[1]); !st.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": ", st.message()));
      }
      for (size_t i = 3; i < words.size(); ++i) {
        AddUser(words[i]);
        AddWatch(words[1], words[i]);
      }
    } else if (words[0] == "topic") {
      if (words.size() < 3) {
        return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": topic <topic> <user_id> ..."));
      }
      std::vector<std::string> members;
      for (size_t i = 1; i < words.size(); ++i) {
        if (absl::Status st = CheckId(i == 1 ? "topic" : "user id", words[i], line_no); !st.ok()) return st;
        if (i > 1) members.emplace_back(words[i]);
      }
      AddTopicMembers(words[1], members);
    } else if (words[0] == "operator") {
      if (words.size() != 2) {
        return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": operator <user_id>"));
      }
      if (absl::Status st = CheckId("user id", words[1], line_no); !st.ok()) return st;
      AddUser(words[1]);
      AddOperator(words[1]);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no, ": unknown directive \"", words[0], "\" (user, topic, operator)"));
    }
  }
  return absl::OkStatus();
}

absl::Status Access::AddTokens(absl::string_view spec) {
  int n = 1;
  for (absl::string_view pair : absl::StrSplit(spec, absl::ByAnyChar(",\n"), absl::SkipWhitespace())) {
    pair = absl::StripAsciiWhitespace(pair);
    if (absl::StartsWith(pair, "#")) continue;
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    // The messages never repeat the text: it holds secrets.
    if (kv.first.empty() || kv.second.empty() || kv.second.size() > presence::kMaxUserIdBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokens: pair ", n, " is not token=user_id (a user id is 1 to 128 bytes)"));
    }
    if (absl::Status st = AddToken(kv.first, kv.second); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("tokens: pair ", n, ": ", st.message()));
    }
    ++n;
  }
  return absl::OkStatus();
}

void Access::AddUser(absl::string_view user_id) { users_.emplace(user_id); }

absl::Status Access::AddToken(absl::string_view token, absl::string_view user_id) {
  if (token.size() < kMinTokenBytes || token.size() > 128) {
    return absl::InvalidArgumentError(absl::StrCat("a token must be ", kMinTokenBytes,
                                                   " to 128 bytes (one of ", token.size(), " was given)"));
  }
  for (char c : token) {
    if (c <= ' ' || c == 0x7f) return absl::InvalidArgumentError("a token may not hold spaces or control bytes");
  }
  auto [it, inserted] = tokens_.emplace(token, user_id);
  if (!inserted && it->second != user_id) {
    return absl::InvalidArgumentError("a token is given to two different users");
  }
  AddUser(user_id);
  return absl::OkStatus();
}

void Access::AddWatch(absl::string_view user_id, absl::string_view watched) {
  watches_[user_id].emplace(watched);
}

void Access::AddTopicMembers(absl::string_view topic, const std::vector<std::string>& members) {
  std::vector<std::string>& list = topics_[topic];
  for (const std::string& m : members) {
    AddUser(m);
    if (topics_of_[m].emplace(topic).second) list.push_back(m);
  }
}

void Access::AddOperator(absl::string_view user_id) { operators_.emplace(user_id); }

std::optional<std::string> Access::Authenticate(absl::string_view token) const {
  if (token.empty()) return std::nullopt;
  auto it = tokens_.find(token);
  if (it == tokens_.end()) return std::nullopt;
  return it->second;
}

bool Access::MayRead(absl::string_view viewer, absl::string_view target) const {
  if (viewer == target || IsOperator(viewer)) return true;
  auto w = watches_.find(viewer);
  if (w != watches_.end() && w->second.contains(target)) return true;
  auto mine = topics_of_.find(viewer);
  auto theirs = topics_of_.find(target);
  if (mine == topics_of_.end() || theirs == topics_of_.end()) return false;
  const auto& small = mine->second.size() < theirs->second.size() ? mine->second : theirs->second;
  const auto& large = mine->second.size() < theirs->second.size() ? theirs->second : mine->second;
  for (const std::string& t : small) {
    if (large.contains(t)) return true;
  }
  return false;
}

bool Access::MayJoin(absl::string_view viewer, absl::string_view topic) const {
  if (!topics_.contains(topic)) return false;
  if (IsOperator(viewer)) return true;
  auto mine = topics_of_.find(viewer);
  return mine != topics_of_.end() && mine->second.contains(topic);
}

std::vector<std::string> Access::FriendsOf(absl::string_view viewer) const {
  std::vector<std::string> out;
  auto w = watches_.find(viewer);
  if (w != watches_.end()) {
    for (const std::string& u : w->second) {
      if (u != viewer) out.push_back(u);
    }
  }
  std::sort(out.begin(), out.end());
  out.insert(out.begin(), std::string(viewer));
  return out;
}

std::vector<std::string> Access::TokenUsers() const {
  absl::flat_hash_set<std::string> set;
  for (const auto& [token, user] : tokens_) set.insert(user);
  std::vector<std::string> out(set.begin(), set.end());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> Access::TopicsOf(absl::string_view viewer) const {
  std::vector<std::string> out;
  auto mine = topics_of_.find(viewer);
  if (mine != topics_of_.end()) out.assign(mine->second.begin(), mine->second.end());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace presence_server
