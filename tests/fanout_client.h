// A test client for the fan-out tier: decodes batches the way a real client
// would and keeps its view of the subscriber's interest set.
#ifndef PRESENCE_TESTS_FANOUT_CLIENT_H_
#define PRESENCE_TESTS_FANOUT_CLIENT_H_

#include <map>
#include <optional>
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "presence/fanout.h"
#include "presence/types.h"
#include "presence/v1/presence.pb.h"

namespace presence::testing {

struct ClientView {
  uint64_t last_seq = 0;
  size_t batches = 0;
  size_t snapshots = 0;
  std::map<std::string, v1::UserState> list;
  std::map<std::string, std::map<std::string, v1::UserState>> topics;
  std::map<std::string, v1::TopicCounts> counts;
  std::set<std::string> ever_seen;  // every user id that came with a state

  // Applies one batch; checks that sequence numbers have no gap.
  v1::DiffBatch Apply(const Batch& b) {
    v1::DiffBatch m;
    EXPECT_TRUE(m.ParseFromString(b.Encode()));
    EXPECT_EQ(m.sequence(), b.sequence);
    EXPECT_EQ(m.snapshot(), b.snapshot);
    EXPECT_EQ(m.sequence(), last_seq + 1) << "a gap or a repeat in the sequence";
    last_seq = m.sequence();
    ++batches;
    if (m.snapshot()) {
      ++snapshots;
      list.clear();
      topics.clear();
      counts.clear();
    }
    for (const auto& u : m.users()) Upsert(&list, u);
    for (const auto& sec : m.topics()) {
      if (sec.left()) {
        topics.erase(sec.topic());
        counts.erase(sec.topic());
        continue;
      }
      auto& view = topics[sec.topic()];
      if (sec.full()) {
        view.clear();
        counts.erase(sec.topic());
      }
      if (sec.has_counts()) counts[sec.topic()] = sec.counts();
      for (const auto& u : sec.users()) Upsert(&view, u);
    }
    return m;
  }

  // What the client shows for a user: its list entry first, else any topic's.
  std::optional<State> StateOf(const std::string& user) const {
    if (auto it = list.find(user); it != list.end()) return static_cast<State>(it->second.state());
    for (const auto& [name, view] : topics) {
      if (auto it = view.find(user); it != view.end()) return static_cast<State>(it->second.state());
    }
    return std::nullopt;
  }

 private:
  void Upsert(std::map<std::string, v1::UserState>* view, const v1::UserState& u) {
    if (u.removed()) {
      view->erase(u.user_id());
      return;
    }
    ever_seen.insert(u.user_id());
    (*view)[u.user_id()] = u;
  }
};

// Polls every waiting batch of `sub` into `view`.
inline size_t Drain(Fanout* f, SubscriberId sub, ClientView* view) {
  size_t n = 0;
  Batch b;
  while (f->Poll(sub, &b).value()) {
    view->Apply(b);
    ++n;
  }
  return n;
}

}  // namespace presence::testing

#endif  // PRESENCE_TESTS_FANOUT_CLIENT_H_
