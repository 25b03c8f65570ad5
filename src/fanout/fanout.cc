// The fan-out tier: docs/design.md section 3. See include/presence/fanout.h for
// the promises; this file keeps them.
//
// Shape of the state (all under one lock; fan-out runs on Tick and on host
// calls, never on the heartbeat path):
//   * UserEntry: the last published change of every watched user (public and
//     own view), fed by the engine's change events, and who watches it.
//   * Topic: members with the state the topic's stream last said about each,
//     changes waiting for the next section, and the last few sections (each
//     encoded once and shared by every subscriber of the topic).
//   * Sub: the subscriber's list with what it was last told about each user,
//     its cursor into each topic's stream, its outbox, its recent batches
//     (for Resume) and its token bucket.
#include "presence/fanout.h"

#include <algorithm>
#include <array>
#include <deque>
#include <limits>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "src/core/mutex.h"
#include "src/core/prefetch.h"
#include "src/core/test_hooks.h"
#include "presence/engine.h"
#include "presence/v1/presence.pb.h"
#include "src/core/metrics.h"
#include "src/core/validate.h"

namespace presence {

namespace pb = ::presence::v1;
using internal::Metric;

Sink::~Sink() = default;
SnapshotSource::~SnapshotSource() = default;

size_t Batch::ByteSize() const {
  size_t n = header.size();
  for (const auto& p : parts) n += p->size();
  return n;
}

std::string Batch::Encode() const {
  std::string out;
  out.reserve(ByteSize());
  out += header;
  for (const auto& p : parts) out += *p;
  return out;
}

namespace {

struct Sub;
struct Topic;

// What a stream last said about a user. state 0: nothing yet.
constexpr State kNothingSent = static_cast<State>(0);
// A list slot whose user the stream told of, in a state the slot does not
// know (it left the list and came back before the next batch): the next
// batch sends it as it is now, or its removal.
constexpr State kToldUnknown = static_cast<State>(0xff);
struct Sent {
  State state = kNothingSent;
  uint64_t version = 0;
};

// One view of a user as last published: the public one, or the user's own
// (docs/design.md rule 8). Version 0: nothing published, so nothing is shown of
// it (a user that never existed, or was erased).
struct View {
  State state = State::kOffline;
  uint64_t version = 0;
  int64_t last_seen_ms = 0;
  DeviceSummary devices;
  // The view as an entry of a DiffBatch (its `users` field), encoded the
  // first time a list carries it and then copied into every list batch that
  // does (empty: not encoded yet). A new version is a new View.
  std::string wire;
  bool shown() const { return version != 0; }
};

// A subscriber that has a user on its list, and where: its slot in the
// subscriber's ListSlot table.
struct Watcher {
  Sub* sub;
  uint32_t slot;
  bool owner;  // the subscriber is the user's own (rule 8: it reads the own view)
};

struct UserEntry {
  std::string id;
  View pub;   // what everyone but the user is told
  View self;  // what the user's own subscribers are told
  // After an erasure: each view's version then. An older change (a replay)
  // is ignored, and the views start from nothing.
  uint64_t pub_floor = 0;
  uint64_t self_floor = 0;
  std::vector<Watcher> list_watchers;
  std::vector<Topic*> topics;
};

// A user on a subscriber's list. Its index stays the same while the user is
// on the list, so that a change reaches the subscriber's pending list
// without a hash lookup.
struct ListSlot {
  UserEntry* user = nullptr;  // nullptr: free
  State sent = kNothingSent;  // what the stream last said of the user
  bool pending = false;       // in Sub::pending
  bool owner = false;    // the user is the subscriber's owner: it reads the own view
  View& view() const { return owner ? user->self : user->pub; }
};

// An encoded piece of a batch and how many user entries it holds.
struct Part {
  std::shared_ptr<const std::string> bytes;
  size_t users = 0;
};

enum class TopicMode { kPerUser, kInterval, kCounts };

struct PastSection {
  uint64_t seq;
  Part part;
  std::vector<std::string> changed;  // ids it carried (changed or removed)
};

struct Topic {
  std::string name;
  absl::flat_hash_map<UserEntry*, Sent> members;
  absl::flat_hash_set<UserEntry*> pending;
  std::vector<std::string> removed;
  absl::flat_hash_set<Sub*> subs;
  uint64_t seq = 0;
  std::deque<PastSection> history;
  std::array<uint32_t, 4> counts{};       // members by current public state
  std::array<uint32_t, 4> sent_counts{};  // as the stream last said
  TopicMode sent_mode = TopicMode::kPerUser;
  int64_t last_section_ms = std::numeric_limits<int64_t>::min() / 2;
  uint64_t full_cache_seq = ~0ull;
  Part full_cache;
};

constexpr uint64_t kNeedsFull = ~0ull;  // a topic cursor before any section

struct Sub {
  SubscriberId id = 0;
  std::string owner;
  Sink* sink = nullptr;
  absl::flat_hash_map<UserEntry*, uint32_t> list;  // the user's slot
  std::vector<ListSlot> slots;
  std::vector<uint32_t> free_slots;
  std::vector<uint32_t> pending;  // slots with news not yet sent, each once
  std::vector<std::string> removed;
  absl::flat_hash_map<Topic*, uint64_t> topics;  // cursor: last section seq delivered
  std::vector<std::string> left_topics;
  uint64_t seq = 0;
  bool needs_snapshot = true;
  bool lagging = false;
  std::deque<Batch> outbox;
  std::deque<Batch> history;
  size_t history_bytes = 0;
  double tokens = 0;
  int64_t refill_ms = 0;
};

int StateIndex(State s) { return static_cast<int>(s) - 1; }

void FillSummary(const DeviceSummary& s, pb::DeviceSummary* out) {
  out->set_web(s.count(Platform::kWeb));
  out->set_desktop(s.count(Platform::kDesktop));
  out->set_mobile(s.count(Platform::kMobile));
  out->set_console(s.count(Platform::kConsole));
  out->set_other(s.count(Platform::kOther));
}

// `state` and `version`: what the stream says (a topic's full section says
// what its earlier sections said); last_seen and devices are the view's now.
void FillUser(const UserEntry& e, const View& v, State state, uint64_t version,
              pb::UserState* u) {
  u->set_user_id(e.id);
  u->set_state(static_cast<pb::State>(state));
  u->set_version(version);
  u->set_last_seen_ms(v.last_seen_ms);
  FillSummary(v.devices, u->mutable_devices());
}

void FillRemoved(const std::string& id, pb::UserState* u) {
  u->set_user_id(id);
  u->set_removed(true);
}

Part Encode(const pb::DiffBatch& m, size_t users) {
  return Part{std::make_shared<const std::string>(m.SerializeAsString()), users};
}

}  // namespace

class Fanout::Impl {
 public:
  Impl(Engine* engine, const FanoutOptions& options) : engine_(engine), opts_(options) {}

  absl::StatusOr<SubscriberId> Subscribe(const SubscriberOptions& o) {
    if (!o.owner_user_id.empty()) {
      if (auto st = internal::ValidateUserId(o.owner_user_id); !st.ok()) return st;
    }
    internal::MutexLock lock(&mu_);
    if (subs_.size() >= opts_.max_subscribers) {
      return absl::ResourceExhaustedError(
          absl::StrCat("already ", subs_.size(), " subscribers, the most allowed"));
    }
    auto sub = std::make_unique<Sub>();
    sub->id = next_id_++;
    sub->owner = o.owner_user_id;
    sub->sink = o.sink;
    sub->tokens = opts_.burst;
    sub->refill_ms = engine_->NowMs();
    Sub* s = sub.get();
    subs_.emplace(s->id, std::move(sub));
    dirty_subs_.insert(s);
    return s->id;
  }

  absl::Status Close(SubscriberId id) {
    internal::MutexLock lock(&mu_);
    Sub* s = FindSub(id);
    if (s == nullptr) return UnknownSub(id);
    for (auto& [e, slot] : s->list) {
      EraseWatcher(e, s);
      Unwatch(e);
    }
    for (auto& [t, cursor] : s->topics) {
      t->subs.erase(s);
      MaybeDeleteTopic(t);
    }
    dirty_subs_.erase(s);
    subs_.erase(id);
    // No delivery starts now; wait for those running, except the ones this
    // thread is inside (a sink closing its own subscriber).
    int own = 0;
    for (const Delivering* d = tls_delivering; d != nullptr; d = d->outer) {
      own += d->impl == this && d->id == id;
    }
    for (auto it = in_flight_.find(id); it != in_flight_.end() && it->second > own;
         it = in_flight_.find(id)) {
      if (auto hook = internal::test_hooks::close_waiting.load()) hook(id);
      delivered_.Wait(&mu_);
    }
    return absl::OkStatus();
  }

  absl::Status AddUsers(SubscriberId id, absl::Span<const absl::string_view> ids) {
    if (auto st = ValidateIds(ids); !st.ok()) return st;
    internal::MutexLock lock(&mu_);
    Sub* s = FindSub(id);
    if (s == nullptr) return UnknownSub(id);
    size_t fresh = 0;
    absl::flat_hash_set<absl::string_view> seen;
    for (absl::string_view u : ids) {
      auto it = users_.find(u);
      if (seen.insert(u).second && (it == users_.end() || !s->list.contains(it->second.get()))) ++fresh;
    }
    if (s->list.size() + fresh > opts_.max_list_users) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "list would hold ", s->list.size() + fresh, " users; the most is ", opts_.max_list_users));
    }
    // A list given at once takes no more slots than it has users.
    const size_t slots = s->slots.size() + fresh - std::min(fresh, s->free_slots.size());
    if (slots > s->slots.capacity()) s->slots.reserve(std::max(slots, 2 * s->slots.capacity()));
    for (absl::string_view u : ids) {
      UserEntry* e = Watch(u);
      auto [it, fresh_user] = s->list.emplace(e, 0);
      if (!fresh_user) continue;
      if (s->free_slots.empty()) {
        it->second = static_cast<uint32_t>(s->slots.size());
        s->slots.emplace_back();
      } else {
        it->second = s->free_slots.back();
        s->free_slots.pop_back();
      }
      ListSlot& l = s->slots[it->second];
      l.user = e;
      l.owner = IsOwner(s, e);
      e->list_watchers.push_back(Watcher{s, it->second, l.owner});
      MarkPending(s, it->second);
      if (auto r = std::find(s->removed.begin(), s->removed.end(), e->id); r != s->removed.end()) {
        s->removed.erase(r);  // its removal is not sent: the next batch says what it is now
        l.sent = kToldUnknown;
      }
    }
    dirty_subs_.insert(s);
    return absl::OkStatus();
  }

  absl::Status RemoveUsers(SubscriberId id, absl::Span<const absl::string_view> ids) {
    if (auto st = ValidateIds(ids); !st.ok()) return st;
    internal::MutexLock lock(&mu_);
    Sub* s = FindSub(id);
    if (s == nullptr) return UnknownSub(id);
    for (absl::string_view u : ids) RemoveFromList(s, u);
    dirty_subs_.insert(s);
    return absl::OkStatus();
  }

  absl::Status ReplaceUsers(SubscriberId id, absl::Span<const absl::string_view> ids) {
    if (auto st = ValidateIds(ids); !st.ok()) return st;
    const absl::flat_hash_set<absl::string_view> keep(ids.begin(), ids.end());
    if (keep.size() > opts_.max_list_users) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "list would hold ", keep.size(), " users; the most is ", opts_.max_list_users));
    }
    {
      internal::MutexLock lock(&mu_);
      Sub* s = FindSub(id);
      if (s == nullptr) return UnknownSub(id);
      std::vector<std::string> drop;
      for (auto& [e, slot] : s->list) {
        if (!keep.contains(e->id)) drop.push_back(e->id);
      }
      for (const std::string& u : drop) RemoveFromList(s, u);
    }
    return AddUsers(id, ids);
  }

  absl::Status Join(SubscriberId id, absl::string_view topic) {
    if (auto st = ValidateTopic(topic); !st.ok()) return st;
    internal::MutexLock lock(&mu_);
    Sub* s = FindSub(id);
    if (s == nullptr) return UnknownSub(id);
    auto it = topics_.find(topic);
    if (it == topics_.end() || it->second->members.empty()) {
      return absl::NotFoundError(absl::StrCat("topic '", topic, "' has no members"));
    }
    Topic* t = it->second.get();
    if (s->topics.contains(t)) return absl::OkStatus();
    if (s->topics.size() >= opts_.max_topics_per_subscriber) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "subscriber is in ", s->topics.size(), " topics, the most allowed"));
    }
    s->topics.emplace(t, kNeedsFull);
    Erase(s->left_topics, t->name);
    t->subs.insert(s);
    dirty_subs_.insert(s);
    return absl::OkStatus();
  }

  absl::Status Leave(SubscriberId id, absl::string_view topic) {
    if (auto st = ValidateTopic(topic); !st.ok()) return st;
    internal::MutexLock lock(&mu_);
    Sub* s = FindSub(id);
    if (s == nullptr) return UnknownSub(id);
    auto it = topics_.find(topic);
    if (it == topics_.end() || !s->topics.contains(it->second.get())) {
      return absl::NotFoundError(absl::StrCat("subscriber is not in topic '", topic, "'"));
    }
    Topic* t = it->second.get();
    s->topics.erase(t);
    t->subs.erase(s);
    s->left_topics.push_back(t->name);
    MaybeDeleteTopic(t);
    dirty_subs_.insert(s);
    return absl::OkStatus();
  }

  absl::Status AddMembers(absl::string_view topic, absl::Span<const absl::string_view> ids) {
    if (auto st = ValidateTopic(topic); !st.ok()) return st;
    if (auto st = ValidateIds(ids); !st.ok()) return st;
    internal::MutexLock lock(&mu_);
    auto it = topics_.find(topic);
    Topic* t = it == topics_.end() ? nullptr : it->second.get();
    size_t fresh = 0;
    absl::flat_hash_set<absl::string_view> seen;
    for (absl::string_view u : ids) {
      auto ue = users_.find(u);
      if (seen.insert(u).second &&
          (t == nullptr || ue == users_.end() || !t->members.contains(ue->second.get()))) {
        ++fresh;
      }
    }
    const size_t have = t == nullptr ? 0 : t->members.size();
    if (have + fresh > opts_.max_topic_members) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "topic would have ", have + fresh, " members; the most is ", opts_.max_topic_members));
    }
    if (t == nullptr) {
      auto owned = std::make_unique<Topic>();
      owned->name = std::string(topic);
      t = owned.get();
      topics_.emplace(t->name, std::move(owned));
    }
    for (absl::string_view u : ids) {
      UserEntry* e = Watch(u);
      if (!t->members.emplace(e, Sent{}).second) continue;
      e->topics.push_back(t);
      ++t->counts[StateIndex(e->pub.state)];
      t->pending.insert(e);
      Erase(t->removed, e->id);
    }
    dirty_topics_.insert(t);
    MaybeDeleteTopic(t);  // an empty add leaves no empty topic behind
    return absl::OkStatus();
  }

  absl::Status RemoveMembers(absl::string_view topic, absl::Span<const absl::string_view> ids) {
    if (auto st = ValidateTopic(topic); !st.ok()) return st;
    if (auto st = ValidateIds(ids); !st.ok()) return st;
    internal::MutexLock lock(&mu_);
    auto it = topics_.find(topic);
    if (it == topics_.end()) return absl::NotFoundError(absl::StrCat("unknown topic '", topic, "'"));
    Topic* t = it->second.get();
    for (absl::string_view u : ids) RemoveMember(t, u);
    MaybeDeleteTopic(t);
    return absl::OkStatus();
  }

  absl::Status ReplaceMembers(absl::string_view topic, absl::Span<const absl::string_view> ids) {
    if (auto st = ValidateTopic(topic); !st.ok()) return st;
    if (auto st = ValidateIds(ids); !st.ok()) return st;
    const absl::flat_hash_set<absl::string_view> keep(ids.begin(), ids.end());
    if (keep.size() > opts_.max_topic_members) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "topic would have ", keep.size(), " members; the most is ", opts_.max_topic_members));
    }
    {
      internal::MutexLock lock(&mu_);
      auto it = topics_.find(topic);
      if (it != topics_.end()) {
        Topic* t = it->second.get();
        std::vector<std::string> drop;
        for (auto& [e, sent] : t->members) {
          if (!keep.contains(e->id)) drop.push_back(e->id);
        }
        for (const std::string& u : drop) RemoveMember(t, u);
        if (keep.empty()) MaybeDeleteTopic(t);
      }
    }
    if (keep.empty()) return absl::OkStatus();
    return AddMembers(topic, ids);
  }

  absl::StatusOr<bool> Poll(SubscriberId id, Batch* out) {
    if (out == nullptr) return absl::InvalidArgumentError("out is null");
    internal::MutexLock lock(&mu_);
    Sub* s = FindSub(id);
    if (s == nullptr) return UnknownSub(id);
    if (s->sink != nullptr && level_ < kPollingLevel) {
      return absl::FailedPreconditionError("subscriber has a push sink");
    }
    if (s->outbox.empty() && s->lagging) {
      // It fell too far behind: one snapshot instead of the backlog.
      s->lagging = false;
      s->needs_snapshot = true;
      std::optional<Batch> b = BuildBatch(s, engine_->NowMs());
      if (b) Record(s, *b);
      *out = std::move(*b);
      dirty_subs_.erase(s);
      return true;
    }
    if (s->outbox.empty()) return false;
    *out = std::move(s->outbox.front());
    s->outbox.pop_front();
    return true;
  }

  absl::Status Resume(SubscriberId id, uint64_t cursor) {
    std::vector<Delivery> deliveries;
    {
      internal::MutexLock lock(&mu_);
      Sub* s = FindSub(id);
      if (s == nullptr) return UnknownSub(id);
      if (cursor > s->seq) {
        return absl::InvalidArgumentError(
            absl::StrCat("cursor ", cursor, " is from the future; the last batch is ", s->seq));
      }
      if (cursor == s->seq) return absl::OkStatus();
      std::vector<Batch> replay;
      const bool held = !s->history.empty() && s->history.front().sequence <= cursor + 1;
      if (held) {
        for (const Batch& b : s->history) {
          if (b.sequence > cursor) replay.push_back(b);
        }
        ++resumed_;
      } else {
        s->needs_snapshot = true;
        std::optional<Batch> b = BuildBatch(s, engine_->NowMs());
        Record(s, *b);
        replay.push_back(std::move(*b));
        dirty_subs_.erase(s);
      }
      s->lagging = false;
      if (s->sink != nullptr) {
        for (Batch& b : replay) deliveries.push_back({s->sink, s->id, std::move(b)});
      } else {
        s->outbox.assign(std::make_move_iterator(replay.begin()),
                         std::make_move_iterator(replay.end()));
      }
    }
    Deliver(deliveries);
    return absl::OkStatus();
  }

  void OnChanges(absl::Span<const ChangeEvent> events) {
    internal::MutexLock lock(&mu_);
    for (const ChangeEvent& ev : events) {
      auto it = users_.find(ev.user_id);
      if (it == users_.end()) continue;  // nobody watches this user
      Apply(it->second.get(), ev);
    }
  }

  void SetSnapshotSource(SnapshotSource* source) {
    internal::MutexLock lock(&mu_);
    source_ = source;
    if (source_ == nullptr) return;
    for (auto& [id, e] : users_) {
      if (std::optional<ChangeEvent> ev = source_->StartWatching(id)) Apply(e.get(), *ev);
    }
  }

  void OnTick(int64_t now_ms) {
    std::vector<Delivery> deliveries;
    {
      internal::MutexLock lock(&mu_);
      const int level = engine_->OverloadLevel();
      if (level_ >= kPollingLevel && level < kPollingLevel) {
        release_held_ = true;
        force_flush_ = true;
      }
      level_ = level;
      if (!force_flush_ && now_ms - last_flush_ms_ < FlushIntervalMs()) return;
      force_flush_ = false;
      last_flush_ms_ = now_ms;
      if (release_held_) {
        release_held_ = false;
        ReleaseHeld(&deliveries);
      }
      Flush(now_ms, &deliveries);
    }
    Deliver(deliveries);
  }

  // Overload step 1: the flush interval in force.
  int64_t FlushIntervalMs() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return level_ >= 1 ? std::max(opts_.flush_interval_ms, opts_.overload_flush_interval_ms)
                       : opts_.flush_interval_ms;
  }



  std::string RenderMetrics() const {
    internal::MutexLock lock(&mu_);
    size_t backlog = 0, lagging = 0, push = 0, counts_topics = 0;
    for (const auto& [id, s] : subs_) {
      backlog += s->outbox.size();
      lagging += s->lagging;
      push += s->sink != nullptr;
    }
    for (const auto& [name, t] : topics_) counts_topics += ModeOf(*t) == TopicMode::kCounts;
    std::string out;
    auto counter = [&](absl::string_view name, absl::string_view help, double v) {
      Metric(&out, name, "counter", help, v);
    };
    auto gauge = [&](absl::string_view name, absl::string_view help, double v) {
      Metric(&out, name, "gauge", help, v);
    };
    counter("presence_fanout_batches_total", "Batches delivered to subscribers.", batches_);
    counter("presence_fanout_user_diffs_total", "User entries delivered, over all batches.",
            user_diffs_);
    counter("presence_fanout_bytes_total", "Encoded bytes delivered.", bytes_);
    counter("presence_fanout_snapshots_total", "Snapshot batches delivered.", snapshots_);
    counter("presence_fanout_topic_sections_total", "Topic sections encoded (each shared).",
            sections_);
    counter("presence_fanout_throttled_total",
            "Flushes at which a subscriber with news had no token left.", throttled_);
    counter("presence_fanout_lagging_total",
            "Times a subscriber's backlog passed the bound and was replaced by a snapshot.",
            lagging_events_);
    counter("presence_fanout_resumes_total", "Resumes served from held batches.", resumed_);
    gauge("presence_fanout_subscribers", "Open subscribers.", subs_.size());
    gauge("presence_fanout_topics", "Topics with members or subscribers.", topics_.size());
    gauge("presence_fanout_backlog_batches", "Batches waiting to be polled, over all subscribers.",
          backlog);
    gauge("presence_fanout_lagging_subscribers", "Subscribers waiting for a snapshot.", lagging);
    gauge("presence_fanout_flush_interval_ms",
          "The flush interval in force (longer under overload step 1).", FlushIntervalMs());
    gauge("presence_fanout_counts_only_topics",
          "Topics whose sections carry counts only (more under overload step 2).", counts_topics);
    gauge("presence_fanout_polled_push_subscribers",
          "Push subscribers served as polling ones (overload step 3).",
          level_ >= kPollingLevel ? push : 0);
    gauge("presence_fanout_watched_users", "Users that some subscriber or topic watches.",
          users_.size());
    return out;
  }

 private:
  struct Delivery {
    Sink* sink;
    SubscriberId id;
    Batch batch;
  };
  // A Sink::Deliver call running on this thread, innermost first.
  struct Delivering {
    const Impl* impl;
    SubscriberId id;
    const Delivering* outer;
  };
  static thread_local const Delivering* tls_delivering;

  // Calls the sinks, in order, with no lock held; skips a delivery whose
  // subscriber was closed since it was built. Close waits for the calls
  // that this counts in in_flight_.
  // After overload step 3: what waits for push subscribers is pushed, in
  // order, or one snapshot for one that fell too far behind.
  void ReleaseHeld(std::vector<Delivery>* deliveries) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto& [id, s] : subs_) {
      if (s->sink == nullptr) continue;
      if (s->lagging) {
        s->lagging = false;
        s->needs_snapshot = true;
        s->outbox.clear();
        dirty_subs_.insert(s.get());  // Flush sends it the snapshot
        continue;
      }
      for (Batch& b : s->outbox) deliveries->push_back({s->sink, s->id, std::move(b)});
      s->outbox.clear();
    }
  }
  void Deliver(const std::vector<Delivery>& deliveries) ABSL_LOCKS_EXCLUDED(mu_) {
    for (const Delivery& d : deliveries) {
      {
        internal::MutexLock lock(&mu_);
        if (FindSub(d.id) == nullptr) continue;
        ++in_flight_[d.id];
      }
      const Delivering scope{this, d.id, tls_delivering};
      tls_delivering = &scope;
      d.sink->Deliver(d.id, d.batch);
      tls_delivering = scope.outer;
      internal::MutexLock lock(&mu_);
      auto it = in_flight_.find(d.id);
      if (--it->second == 0) in_flight_.erase(it);
      delivered_.SignalAll();
    }
  }

  template <typename T>
  static void Erase(std::vector<T>& v, const T& x) {
    v.erase(std::remove(v.begin(), v.end(), x), v.end());
  }

  static void EraseWatcher(UserEntry* e, const Sub* s) {
    auto& w = e->list_watchers;
    w.erase(std::remove_if(w.begin(), w.end(), [s](const Watcher& x) { return x.sub == s; }), w.end());
  }

  // The user in `slot` of s's list has news for s: once in s's pending list
  // until its next batch.
  void MarkPending(Sub* s, uint32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ListSlot& l = s->slots[slot];
    if (l.pending) return;
    l.pending = true;
    s->pending.push_back(slot);
    dirty_subs_.insert(s);
    if (s->pending.size() >= opts_.max_batch) force_flush_ = true;
  }

  static absl::Status ValidateIds(absl::Span<const absl::string_view> ids) {
    for (absl::string_view u : ids) {
      if (auto st = internal::ValidateUserId(u); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  static absl::Status ValidateTopic(absl::string_view t) {
    if (t.empty()) return absl::InvalidArgumentError("topic is empty");
    if (t.size() > kMaxUserIdBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("topic is ", t.size(), " bytes; the most is ", kMaxUserIdBytes));
    }
    return absl::OkStatus();
  }
  static absl::Status UnknownSub(SubscriberId id) {
    return absl::NotFoundError(absl::StrCat("unknown or closed subscriber ", id));
  }

  // Whether `s` is the user's own subscriber, which sees its own view.
  static bool IsOwner(const Sub* s, const UserEntry* e) { return e->id == s->owner; }

  Sub* FindSub(SubscriberId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = subs_.find(id);
    return it == subs_.end() ? nullptr : it->second.get();
  }

  // The one place where a published change enters the fan-out, from the
  // local engine or from elsewhere (a SnapshotSource, a RemoteFeed): a
  // version not newer than the one held changes nothing, so watchers never
  // see a change twice.
  //
  // Each view moves on its own version: an event whose public_version is
  // not newer changed only the user's own view, and only the user's own
  // subscribers hear of it, so that nothing an invisible user does reaches
  // anyone else, not even as the moment of a flush (rule 8). An erasure
  // sets both views back to nothing.
  void Apply(UserEntry* e, const ChangeEvent& ev) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const bool pub_new = ev.public_version > std::max(e->pub.version, e->pub_floor);
    const bool self_new = ev.version > std::max(e->self.version, e->self_floor);
    if (!pub_new && !self_new) return;
    const State old_pub = e->pub.state;
    if (ev.erased) {
      e->pub = e->self = View();
      e->pub_floor = std::max(e->pub_floor, ev.public_version);
      e->self_floor = std::max(e->self_floor, ev.version);
    } else {
      if (pub_new) e->pub = View{ev.state, ev.public_version, ev.last_seen_ms, ev.devices, {}};
      if (self_new) e->self = View{ev.self_state, ev.version, ev.self_last_seen_ms, ev.self_devices, {}};
    }
    const std::vector<Watcher>& ws = e->list_watchers;
    for (size_t i = 0; i < ws.size(); ++i) {
      // A popular user's watchers' slots are scattered: fetch ahead.
      if (i + 4 < ws.size()) internal::Prefetch(&ws[i + 4].sub->slots);
      if (i + 2 < ws.size()) internal::Prefetch(&ws[i + 2].sub->slots[ws[i + 2].slot]);
      if (ws[i].owner ? self_new : pub_new) MarkPending(ws[i].sub, ws[i].slot);
    }
    if (!pub_new) return;
    for (Topic* t : e->topics) {
      if (old_pub != e->pub.state) {
        --t->counts[StateIndex(old_pub)];
        ++t->counts[StateIndex(e->pub.state)];
      }
      t->pending.insert(e);
      dirty_topics_.insert(t);
      if (t->pending.size() >= opts_.max_batch) force_flush_ = true;
    }
  }

  // The entry for a user, created from the engine's published state the
  // first time anyone watches it, or from the snapshot source's when that
  // is newer (a user that another engine owns).
  UserEntry* Watch(absl::string_view id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = users_.find(id);
    if (it != users_.end()) return it->second.get();
    auto e = std::make_unique<UserEntry>();
    e->id = std::string(id);
    const absl::string_view ids[] = {id};
    const UserPresence pub = engine_->GetPublished(ids)[0];
    const UserPresence self = engine_->GetPublished(ids, id)[0];
    e->pub = View{pub.state, pub.version, pub.last_seen_ms, pub.devices, {}};
    e->self = View{self.state, self.version, self.last_seen_ms, self.devices, {}};
    if (source_ != nullptr) {
      if (std::optional<ChangeEvent> ev = source_->StartWatching(id)) Apply(e.get(), *ev);
    }
    UserEntry* raw = e.get();
    users_.emplace(raw->id, std::move(e));
    return raw;
  }

  void Unwatch(UserEntry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!e->list_watchers.empty() || !e->topics.empty()) return;
    if (source_ != nullptr) source_->StopWatching(e->id);
    users_.erase(e->id);
  }

  void RemoveFromList(Sub* s, absl::string_view u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = users_.find(u);
    if (it == users_.end()) return;
    UserEntry* e = it->second.get();
    auto at = s->list.find(e);
    if (at == s->list.end()) return;
    const uint32_t slot = at->second;
    s->list.erase(at);
    // A pending slot stays in Sub::pending (the next batch skips it, or
    // carries the user that takes the slot next).
    ListSlot& l = s->slots[slot];
    const bool pending = l.pending;
    l = ListSlot{};
    l.pending = pending;
    s->free_slots.push_back(slot);
    s->removed.push_back(e->id);
    EraseWatcher(e, s);
    Unwatch(e);
  }

  void RemoveMember(Topic* t, absl::string_view u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = users_.find(u);
    if (it == users_.end()) return;
    UserEntry* e = it->second.get();
    if (t->members.erase(e) == 0) return;
    --t->counts[StateIndex(e->pub.state)];
    t->pending.erase(e);
    t->removed.push_back(e->id);
    Erase(e->topics, t);
    dirty_topics_.insert(t);
    Unwatch(e);
  }

  void MaybeDeleteTopic(Topic* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!t->members.empty() || !t->subs.empty()) return;
    dirty_topics_.erase(t);
    topics_.erase(t->name);
  }

  TopicMode ModeOf(const Topic& t) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (t.members.size() > opts_.counts_only_members) return TopicMode::kCounts;
    // Overload step 2: large topics to counts.
    if (level_ >= 2 && t.members.size() > opts_.interval_mode_members) return TopicMode::kCounts;
    if (t.members.size() > opts_.interval_mode_members) return TopicMode::kInterval;
    return TopicMode::kPerUser;
  }

  static void FillCounts(const std::array<uint32_t, 4>& c, pb::TopicCounts* out) {
    out->set_offline(c[StateIndex(State::kOffline)]);
    out->set_away(c[StateIndex(State::kAway)]);
    out->set_online(c[StateIndex(State::kOnline)]);
    out->set_dnd(c[StateIndex(State::kDnd)]);
  }

  // The whole topic as its stream has said it so far (so that the diffs that
  // follow apply on top of it), encoded once per topic sequence number.
  Part FullSection(Topic* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (t->full_cache_seq == t->seq && t->full_cache.bytes) return t->full_cache;
    pb::DiffBatch m;
    pb::TopicSection* sec = m.add_topics();
    sec->set_topic(t->name);
    sec->set_full(true);
    size_t users = 0;
    if (t->sent_mode == TopicMode::kCounts) {
      FillCounts(t->sent_counts, sec->mutable_counts());
    } else {
      for (const auto& [e, sent] : t->members) {
        if (sent.state == kNothingSent) continue;  // arrives with the next section
        FillUser(*e, e->pub, sent.state, sent.version, sec->add_users());
        ++users;
      }
    }
    t->full_cache = Encode(m, users);
    t->full_cache_seq = t->seq;
    return t->full_cache;
  }

  // Builds the topic's next section from its pending changes, once for all
  // of its subscribers. Returns whether one was made.
  bool BuildSection(Topic* t, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const TopicMode mode = ModeOf(*t);
    if (mode != TopicMode::kPerUser && now_ms - t->last_section_ms < opts_.large_topic_interval_ms) {
      return false;  // a large topic: at most one section per interval
    }
    pb::DiffBatch m;
    pb::TopicSection* sec = m.add_topics();
    sec->set_topic(t->name);
    std::vector<std::string> changed;
    size_t users = 0;
    const bool mode_changed = mode != t->sent_mode && (mode == TopicMode::kCounts ||
                                                       t->sent_mode == TopicMode::kCounts);
    if (mode == TopicMode::kCounts) {
      if (t->counts != t->sent_counts || mode_changed) {
        sec->set_full(true);
        FillCounts(t->counts, sec->mutable_counts());
        t->sent_counts = t->counts;
      }
    } else if (mode_changed) {
      // Leaving counts-only mode: say the whole topic again.
      sec->set_full(true);
      for (auto& [e, sent] : t->members) {
        sent = Sent{};
        if (!e->pub.shown()) continue;
        sent = Sent{e->pub.state, e->pub.version};
        FillUser(*e, e->pub, e->pub.state, e->pub.version, sec->add_users());
        ++users;
      }
    } else {
      for (UserEntry* e : t->pending) {
        auto it = t->members.find(e);
        if (it == t->members.end()) continue;
        if (!e->pub.shown()) {
          // Erased: a member the stream told of is removed from it.
          if (it->second.state == kNothingSent) continue;
          it->second = Sent{};
          FillRemoved(e->id, sec->add_users());
        } else {
          if (it->second.state == e->pub.state) continue;
          it->second = Sent{e->pub.state, e->pub.version};
          FillUser(*e, e->pub, e->pub.state, e->pub.version, sec->add_users());
        }
        changed.push_back(e->id);
        ++users;
      }
      for (const std::string& id : t->removed) {
        FillRemoved(id, sec->add_users());
        changed.push_back(id);
        ++users;
      }
    }
    t->pending.clear();
    t->removed.clear();
    t->sent_mode = mode;
    if (!sec->full() && sec->users_size() == 0) return false;
    ++t->seq;
    ++sections_;
    t->last_section_ms = now_ms;
    t->history.push_back(PastSection{t->seq, Encode(m, users), std::move(changed)});
    if (sec->full()) t->history.back().changed.clear();
    while (t->history.size() > std::max<size_t>(opts_.topic_history, 1)) t->history.pop_front();
    return true;
  }

  // What a subscriber at `cursor` needs to catch up with topic `t`: the
  // shared last section, a coalesced section built for it, or the whole
  // topic.
  Part CatchUp(Topic* t, uint64_t cursor) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (cursor != kNeedsFull && !t->history.empty() && t->history.back().seq == t->seq) {
      if (cursor + 1 == t->seq) return t->history.back().part;
      if (t->history.front().seq <= cursor + 1) {
        bool any_full = false;
        absl::flat_hash_set<std::string> ids;
        for (const PastSection& p : t->history) {
          if (p.seq <= cursor) continue;
          if (p.changed.empty()) any_full = true;  // a full section cannot be coalesced
          ids.insert(p.changed.begin(), p.changed.end());
        }
        if (!any_full) {
          pb::DiffBatch m;
          pb::TopicSection* sec = m.add_topics();
          sec->set_topic(t->name);
          for (const std::string& id : ids) {
            auto ue = users_.find(id);
            auto it = ue == users_.end() ? t->members.end() : t->members.find(ue->second.get());
            if (it == t->members.end() || it->second.state == kNothingSent) {
              FillRemoved(id, sec->add_users());
            } else {
              FillUser(*it->first, it->first->pub, it->second.state, it->second.version,
                       sec->add_users());
            }
          }
          return Encode(m, ids.size());
        }
      }
    }
    return FullSection(t);
  }

  // The subscriber's next batch, or nothing when it has no news.
  std::optional<Batch> BuildBatch(Sub* s, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    (void)now_ms;
    Batch b;
    b.snapshot = s->needs_snapshot;
    // The list's part: each user's entry as its view encoded it (serialized
    // DiffBatch pieces concatenate into one DiffBatch), then the removals and
    // the topics left.
    // Gathered first, then copied into a string of their exact size (the
    // resume window keeps it).
    std::vector<const std::string*>& entries = entries_scratch_;
    entries.clear();
    size_t list_bytes = 0;
    size_t list_users = 0;
    auto add = [&](UserEntry* e, View& v, State* sent) {
      *sent = v.state;
      if (v.wire.empty()) {
        pb::DiffBatch m;
        FillUser(*e, v, v.state, v.version, m.add_users());
        v.wire = m.SerializeAsString();
      }
      entries.push_back(&v.wire);
      list_bytes += v.wire.size();
      ++list_users;
    };
    pb::DiffBatch tail;  // removals and topics left
    if (b.snapshot) {
      for (auto& [e, slot] : s->list) {
        View& v = s->slots[slot].view();
        State& sent = s->slots[slot].sent;
        sent = kNothingSent;
        if (v.shown()) add(e, v, &sent);  // else nothing published: as if it never existed
      }
      for (auto& [t, cursor] : s->topics) cursor = kNeedsFull;
      s->left_topics.clear();
    } else {
      const std::vector<uint32_t>& pending = s->pending;
      for (size_t i = 0; i < pending.size(); ++i) {
        // Each entry is three dependent reads in memory the last batch did
        // not touch (the slot, the user, the encoded view): fetch ahead.
        if (i + 8 < pending.size()) internal::Prefetch(&s->slots[pending[i + 8]]);
        if (i + 4 < pending.size() && s->slots[pending[i + 4]].user != nullptr) {
          internal::Prefetch(&s->slots[pending[i + 4]].view());
        }
        if (i + 2 < pending.size() && s->slots[pending[i + 2]].user != nullptr) {
          internal::Prefetch(s->slots[pending[i + 2]].view().wire.data());
        }
        const uint32_t slot = pending[i];
        UserEntry* e = s->slots[slot].user;
        if (e == nullptr) continue;  // left the list since
        State& sent = s->slots[slot].sent;
        View& v = s->slots[slot].view();
        if (!v.shown()) {
          // Erased: a user the subscriber was told of is removed.
          if (sent == kNothingSent) continue;
          sent = kNothingSent;
          FillRemoved(e->id, tail.add_users());
          ++list_users;
          continue;
        }
        if (sent == v.state) continue;  // back where it was last told
        add(e, v, &sent);
      }
      for (const std::string& id : s->removed) {
        FillRemoved(id, tail.add_users());
        ++list_users;
      }
      for (const std::string& name : s->left_topics) {
        pb::TopicSection* sec = tail.add_topics();
        sec->set_topic(name);
        sec->set_left(true);
      }
    }
    for (uint32_t slot : s->pending) s->slots[slot].pending = false;
    s->pending.clear();
    s->removed.clear();
    const bool left = !s->left_topics.empty();
    s->left_topics.clear();
    if (list_users > 0 || left) {
      const std::string rest = tail.SerializeAsString();
      std::string list;
      list.reserve(list_bytes + rest.size());
      for (const std::string* w : entries) list += *w;
      list += rest;
      b.parts.push_back(std::make_shared<const std::string>(std::move(list)));
    }
    b.users = list_users;
    for (auto& [t, cursor] : s->topics) {
      if (cursor == t->seq) continue;
      Part p = CatchUp(t, cursor);
      cursor = t->seq;
      b.parts.push_back(p.bytes);
      b.users += p.users;
    }
    if (!b.snapshot && b.parts.empty()) return std::nullopt;
    s->needs_snapshot = false;
    b.sequence = ++s->seq;
    pb::DiffBatch header;
    header.set_subscriber_id(s->id);
    header.set_sequence(b.sequence);
    header.set_snapshot(b.snapshot);
    b.header = header.SerializeAsString();
    return b;
  }

  // Keeps a built batch for Resume and counts it.
  void Record(Sub* s, const Batch& b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    s->history.push_back(b);
    s->history_bytes += b.ByteSize();
    while (s->history.size() > 1 && (s->history.size() > opts_.resume_window ||
                                     s->history_bytes > opts_.resume_window_bytes)) {
      s->history_bytes -= s->history.front().ByteSize();
      s->history.pop_front();
    }
    ++batches_;
    user_diffs_ += b.users;
    bytes_ += b.ByteSize();
    snapshots_ += b.snapshot;
  }

  bool TakeToken(Sub* s, int64_t now_ms) {
    if (opts_.rate_per_sec <= 0) return true;
    s->tokens = std::min(opts_.burst, s->tokens + (now_ms - s->refill_ms) * opts_.rate_per_sec / 1000.0);
    s->refill_ms = now_ms;
    if (s->tokens < 1) return false;
    s->tokens -= 1;
    return true;
  }

  void Flush(int64_t now_ms, std::vector<Delivery>* deliveries) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<Topic*> topics(dirty_topics_.begin(), dirty_topics_.end());
    for (Topic* t : topics) {
      if (BuildSection(t, now_ms)) {
        for (Sub* s : t->subs) dirty_subs_.insert(s);
      }
      if (t->pending.empty() && t->removed.empty() &&
          (ModeOf(*t) != TopicMode::kCounts || t->counts == t->sent_counts)) {
        dirty_topics_.erase(t);
      }
    }
    std::vector<Sub*> subs(dirty_subs_.begin(), dirty_subs_.end());
    for (Sub* s : subs) {
      if (s->lagging) {
        dirty_subs_.erase(s);  // waits for its next poll, which gets a snapshot
        continue;
      }
      if (!TakeToken(s, now_ms)) {
        ++throttled_;  // stays dirty: its news is coalesced into a later batch
        continue;
      }
      dirty_subs_.erase(s);
      std::optional<Batch> b = BuildBatch(s, now_ms);
      if (!b) {
        s->tokens += opts_.rate_per_sec > 0 ? 1 : 0;  // nothing sent: give the token back
        continue;
      }
      Record(s, *b);
      if (s->sink != nullptr && level_ < kPollingLevel) {
        deliveries->push_back({s->sink, s->id, std::move(*b)});
      } else if (s->outbox.size() >= opts_.max_outbox_batches) {
        s->outbox.clear();
        s->lagging = true;
        ++lagging_events_;
      } else {
        s->outbox.push_back(std::move(*b));
      }
    }
  }

  Engine* const engine_;
  const FanoutOptions opts_;

  mutable internal::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<UserEntry>> users_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<SubscriberId, std::unique_ptr<Sub>> subs_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<Topic>> topics_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<Sub*> dirty_subs_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<Topic*> dirty_topics_ ABSL_GUARDED_BY(mu_);
  std::vector<const std::string*> entries_scratch_ ABSL_GUARDED_BY(mu_);  // BuildBatch's
  // Sink::Deliver calls running, per subscriber (none: no entry).
  absl::flat_hash_map<SubscriberId, int> in_flight_ ABSL_GUARDED_BY(mu_);
  internal::CondVar delivered_;  // signalled when a call ends
  SnapshotSource* source_ ABSL_GUARDED_BY(mu_) = nullptr;
  SubscriberId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t last_flush_ms_ ABSL_GUARDED_BY(mu_) = std::numeric_limits<int64_t>::min() / 2;
  // The engine's overload level as of the last flush (Engine::OverloadLevel).
  static constexpr int kPollingLevel = 3;
  int level_ ABSL_GUARDED_BY(mu_) = 0;
  bool release_held_ ABSL_GUARDED_BY(mu_) = false;  // level 3 ended: push what waits
  bool force_flush_ ABSL_GUARDED_BY(mu_) = false;

  uint64_t batches_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t user_diffs_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t snapshots_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t sections_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t throttled_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t lagging_events_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t resumed_ ABSL_GUARDED_BY(mu_) = 0;
};

thread_local const Fanout::Impl::Delivering* Fanout::Impl::tls_delivering = nullptr;

// ---- Fanout ------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Fanout>> Fanout::Create(Engine* engine,
                                                       const FanoutOptions& options) {
  if (engine == nullptr) return absl::InvalidArgumentError("engine is null");
  if (options.flush_interval_ms < 0 || options.large_topic_interval_ms < 0) {
    return absl::InvalidArgumentError("intervals must be >= 0");
  }
  if (options.max_batch == 0) return absl::InvalidArgumentError("max_batch must be > 0");
  if (options.rate_per_sec < 0 || (options.rate_per_sec > 0 && options.burst < 1)) {
    return absl::InvalidArgumentError("rate_per_sec must be >= 0, and burst >= 1 when rate is set");
  }
  if (options.max_outbox_batches == 0) {
    return absl::InvalidArgumentError("max_outbox_batches must be > 0");
  }
  if (options.counts_only_members < options.interval_mode_members) {
    return absl::InvalidArgumentError("counts_only_members must be >= interval_mode_members");
  }
  std::unique_ptr<Fanout> f(new Fanout(std::make_unique<Impl>(engine, options)));
  engine->AddListener(f.get());
  f->engine_ = engine;
  return f;
}

Fanout::Fanout(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Fanout::~Fanout() {
  if (engine_ != nullptr) engine_->RemoveListener(this);
}

absl::StatusOr<SubscriberId> Fanout::Subscribe(const SubscriberOptions& o) {
  return impl_->Subscribe(o);
}
absl::Status Fanout::Close(SubscriberId s) { return impl_->Close(s); }
absl::Status Fanout::AddUsers(SubscriberId s, absl::Span<const absl::string_view> ids) {
  return impl_->AddUsers(s, ids);
}
absl::Status Fanout::RemoveUsers(SubscriberId s, absl::Span<const absl::string_view> ids) {
  return impl_->RemoveUsers(s, ids);
}
absl::Status Fanout::ReplaceUsers(SubscriberId s, absl::Span<const absl::string_view> ids) {
  return impl_->ReplaceUsers(s, ids);
}
absl::Status Fanout::Join(SubscriberId s, absl::string_view topic) { return impl_->Join(s, topic); }
absl::Status Fanout::Leave(SubscriberId s, absl::string_view topic) { return impl_->Leave(s, topic); }
absl::Status Fanout::AddMembers(absl::string_view topic, absl::Span<const absl::string_view> ids) {
  return impl_->AddMembers(topic, ids);
}
absl::Status Fanout::RemoveMembers(absl::string_view topic,
                                   absl::Span<const absl::string_view> ids) {
  return impl_->RemoveMembers(topic, ids);
}
absl::Status Fanout::ReplaceMembers(absl::string_view topic,
                                    absl::Span<const absl::string_view> ids) {
  return impl_->ReplaceMembers(topic, ids);
}
absl::StatusOr<bool> Fanout::Poll(SubscriberId s, Batch* out) { return impl_->Poll(s, out); }
absl::Status Fanout::Resume(SubscriberId s, uint64_t cursor) { return impl_->Resume(s, cursor); }
void Fanout::SetSnapshotSource(SnapshotSource* source) { impl_->SetSnapshotSource(source); }
std::string Fanout::RenderMetrics() const { return impl_->RenderMetrics(); }
void Fanout::OnChanges(absl::Span<const ChangeEvent> events) { impl_->OnChanges(events); }
void Fanout::OnTick(int64_t now_ms) { impl_->OnTick(now_ms); }

}  // namespace presence
