// Conformance suites for the seams of presence/store.h, presence/history.h
// and presence/bus.h. Every implementation, embedded or adapter, plugs in
// with a factory and one INSTANTIATE_TYPED_TEST_SUITE_P line:
//
//   struct MyStoreFactory {
//     static constexpr bool kDurable = true;  // Open() again sees the same data
//     std::unique_ptr<presence::Store> Open();  // after the previous one is gone
//   };
//   INSTANTIATE_TYPED_TEST_SUITE_P(Mine, StoreConformance, ::testing::Types<MyStoreFactory>);
//
// (HistoryConformance takes the same factory shape returning HistoryStore;
// BusConformance one returning Bus with 4 partitions.)
#ifndef PRESENCE_TESTS_CONFORMANCE_STORE_CONFORMANCE_H_
#define PRESENCE_TESTS_CONFORMANCE_STORE_CONFORMANCE_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "presence/bus.h"
#include "presence/history.h"
#include "presence/store.h"
#include "tests/conformance/loaded.h"

namespace presence::conformance {

inline UserRecord User(const std::string& id, uint64_t version, State state = State::kOnline) {
  UserRecord u;
  u.user_id = id;
  u.version = version;
  u.state_version = version;
  u.state = state;
  u.self_state = state;
  u.last_seen_ms = static_cast<int64_t>(version) * 10;
  u.published_at_ms = static_cast<int64_t>(version) * 10;
  return u;
}

inline DeviceRecord Device(const std::string& user, const std::string& device, uint64_t version,
                           uint64_t session = 1) {
  DeviceRecord d;
  d.user_id = user;
  d.device_id = device;
  d.version = version;
  d.session_id = session;
  d.platform = Platform::kMobile;
  d.last_signal_ms = {0, static_cast<int64_t>(version) * 10, 0};
  d.activity = {Activity::kActive, Activity::kIdle, Activity::kActive};
  d.gateway = "gw-1";
  return d;
}

template <typename Factory>
class StoreConformance : public ::testing::Test {
 protected:
  void SetUp() override { store_ = factory_.Open(); }
  // Reopens a durable store; a memory one keeps its instance.
  void Reopen() {
    if (!Factory::kDurable) return;
    store_.reset();
    store_ = factory_.Open();
    ASSERT_NE(store_, nullptr);
  }
  Loaded Load() {
    Loaded l;
    EXPECT_TRUE(store_->Load(&l).ok());
    return l;
  }
  void Write(const StoreBatch& b) { ASSERT_TRUE(store_->Write(b).ok()); }

  Factory factory_;
  std::unique_ptr<Store> store_;
};

TYPED_TEST_SUITE_P(StoreConformance);

TYPED_TEST_P(StoreConformance, WrittenRecordsLoadBackFieldForField) {
  StoreBatch b;
  UserRecord u = User("alice", 5);
  u.self_state = State::kAway;
  u.overrides = {OverrideInfo{7, OverrideState::kInvisible, 40, 0},
                 OverrideInfo{9, OverrideState::kDnd, 45, 900}};
  b.users.push_back(u);
  b.devices.push_back(Device("alice", "phone", 6));
  b.offsets.push_back({2, 17});
  this->Write(b);
  this->Reopen();
  Loaded l = this->Load();
  ASSERT_EQ(l.users.size(), 1u);
  const UserRecord& got = l.users.at("alice");
  EXPECT_EQ(got.version, 5u);
  EXPECT_EQ(got.state_version, 5u);
  EXPECT_EQ(got.state, State::kOnline);
  EXPECT_EQ(got.self_state, State::kAway);
  EXPECT_EQ(got.last_seen_ms, 50);
  ASSERT_EQ(got.overrides.size(), 2u);
  EXPECT_EQ(got.overrides[0].id, 7u);
  EXPECT_EQ(got.overrides[0].state, OverrideState::kInvisible);
  EXPECT_EQ(got.overrides[1].until_ms, 900);
  ASSERT_EQ(l.devices.size(), 1u);
  const DeviceRecord& d = l.devices.begin()->second;
  EXPECT_EQ(d.device_id, "phone");
  EXPECT_EQ(d.session_id, 1u);
  EXPECT_EQ(d.platform, Platform::kMobile);
  EXPECT_EQ(d.last_signal_ms[1], 60);
  EXPECT_EQ(d.activity[1], Activity::kIdle);
  EXPECT_EQ(d.gateway, "gw-1");
  EXPECT_FALSE(d.closed);
  EXPECT_EQ(l.offsets.at(2), 17u);
}

TYPED_TEST_P(StoreConformance, OnlyAGreaterVersionReplacesARecord) {
  StoreBatch b;
  b.users.push_back(User("alice", 10, State::kOnline));
  b.devices.push_back(Device("alice", "web", 10, 3));
  this->Write(b);
  StoreBatch older;
  older.users.push_back(User("alice", 9, State::kDnd));
  older.users.push_back(User("alice", 10, State::kAway));  // equal: ignored too
  older.devices.push_back(Device("alice", "web", 8, 2));
  this->Write(older);
  Loaded l = this->Load();
  EXPECT_EQ(l.users.at("alice").state, State::kOnline);
  EXPECT_EQ(l.devices.begin()->second.session_id, 3u);
  StoreBatch newer;
  newer.users.push_back(User("alice", 11, State::kDnd));
  this->Write(newer);
  this->Reopen();
  EXPECT_EQ(this->Load().users.at("alice").state, State::kDnd);
}

TYPED_TEST_P(StoreConformance, ReplayingABatchChangesNothing) {
  StoreBatch b;
  for (int i = 0; i < 20; ++i) {
    b.users.push_back(User("u" + std::to_string(i), 100 + i));
    b.devices.push_back(Device("u" + std::to_string(i), "d", 200 + i));
  }
  this->Write(b);
  this->Write(b);
  this->Reopen();
  Loaded l = this->Load();
  EXPECT_EQ(l.users.size(), 20u);
  EXPECT_EQ(l.devices.size(), 20u);
}

TYPED_TEST_P(StoreConformance, GoneDeletesADevice) {
  StoreBatch b;
  b.devices.push_back(Device("alice", "web", 5));
  b.devices.push_back(Device("alice", "phone", 5));
  this->Write(b);
  DeviceRecord gone = Device("alice", "web", 6);
  gone.gone = true;
  StoreBatch g;
  g.devices.push_back(gone);
  this->Write(g);
  this->Reopen();
  Loaded l = this->Load();
  ASSERT_EQ(l.devices.size(), 1u);
  EXPECT_EQ(l.devices.begin()->first.second, "phone");
}

TYPED_TEST_P(StoreConformance, ErasureRemovesEverythingAndOlderWritesNeverReturn) {
  StoreBatch b;
  b.users.push_back(User("alice", 10));
  b.users.push_back(User("bob", 10));
  b.devices.push_back(Device("alice", "web", 10));
  b.devices.push_back(Device("alice", "phone", 11));
  b.devices.push_back(Device("bob", "web", 10));
  this->Write(b);
  StoreBatch e;
  e.erasures.push_back({"alice", 20});
  this->Write(e);
  this->Write(b);  // a late replay of the old writes
  this->Reopen();
  Loaded l = this->Load();
  EXPECT_EQ(l.users.count("alice"), 0u);
  EXPECT_EQ(l.users.count("bob"), 1u);
  EXPECT_EQ(l.devices.size(), 1u);
  // The user may come back, with newer records.
  StoreBatch again;
  again.users.push_back(User("alice", 21));
  this->Write(again);
  this->Reopen();
  EXPECT_EQ(this->Load().users.count("alice"), 1u);
}

TYPED_TEST_P(StoreConformance, OffsetsOnlyMoveForward) {
  StoreBatch b;
  b.offsets = {{0, 10}, {1, 5}};
  this->Write(b);
  StoreBatch back;
  back.offsets = {{0, 3}, {1, 6}};
  this->Write(back);
  this->Reopen();
  Loaded l = this->Load();
  EXPECT_EQ(l.offsets.at(0), 10u);
  EXPECT_EQ(l.offsets.at(1), 6u);
}

TYPED_TEST_P(StoreConformance, IdsAreOpaqueBytes) {
  const std::string user("a\0\xff/b", 5), device(128, '\x01');
  StoreBatch b;
  b.users.push_back(User(user, 1));
  b.devices.push_back(Device(user, device, 1));
  this->Write(b);
  this->Reopen();
  Loaded l = this->Load();
  EXPECT_EQ(l.users.count(user), 1u);
  EXPECT_EQ(l.devices.count({user, device}), 1u);
}

TYPED_TEST_P(StoreConformance, ConcurrentWritersLoseNothing) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < 50; ++i) {
        StoreBatch b;
        b.users.push_back(User("t" + std::to_string(t) + "-" + std::to_string(i), 1 + i));
        EXPECT_TRUE(this->store_->Write(b).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  this->Reopen();
  EXPECT_EQ(this->Load().users.size(), 200u);
}

TYPED_TEST_P(StoreConformance, LoadRejectsANullVisitor) {
  EXPECT_FALSE(this->store_->Load(nullptr).ok());
}

REGISTER_TYPED_TEST_SUITE_P(StoreConformance, WrittenRecordsLoadBackFieldForField,
                            OnlyAGreaterVersionReplacesARecord, ReplayingABatchChangesNothing,
                            GoneDeletesADevice, ErasureRemovesEverythingAndOlderWritesNeverReturn,
                            OffsetsOnlyMoveForward, IdsAreOpaqueBytes, ConcurrentWritersLoseNothing,
                            LoadRejectsANullVisitor);

// ---- HistoryStore -------------------------------------------------------------

inline Transition At(const std::string& user, uint64_t version, int64_t at, State state) {
  Transition t;
  t.user_id = user;
  t.version = version;
  t.at_ms = at;
  t.state = state;
  t.self_state = state;
  t.cause = Cause::kSignal;
  t.trace_id = version * 7;
  t.last_seen_ms = at - 1;
  return t;
}

template <typename Factory>
class HistoryConformance : public ::testing::Test {
 protected:
  void SetUp() override { history_ = factory_.Open(); }
  void Reopen() {
    if (!Factory::kDurable) return;
    history_.reset();
    history_ = factory_.Open();
  }
  std::vector<uint64_t> Versions(const std::string& user, int64_t from, int64_t to) {
    std::vector<uint64_t> out;
    auto q = history_->Query(user, from, to);
    EXPECT_TRUE(q.ok()) << q.status();
    if (q.ok()) {
      for (const auto& t : *q) out.push_back(t.version);
    }
    return out;
  }
  Factory factory_;
  std::unique_ptr<HistoryStore> history_;
};

TYPED_TEST_SUITE_P(HistoryConformance);

TYPED_TEST_P(HistoryConformance, QueryReturnsTheWindowOldestFirst) {
  // Appended out of order, and another user's in between.
  ASSERT_TRUE(this->history_
                  ->Append({At("alice", 3, 300, State::kOffline), At("alice", 1, 100, State::kOnline),
                            At("bob", 1, 150, State::kOnline), At("alice", 2, 200, State::kAway)})
                  .ok());
  this->Reopen();
  EXPECT_EQ(this->Versions("alice", 0, 1000), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(this->Versions("alice", 150, 300), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(this->Versions("alice", 301, 1000), (std::vector<uint64_t>{}));
  EXPECT_EQ(this->Versions("nobody", 0, 1000), (std::vector<uint64_t>{}));
  auto q = this->history_->Query("alice", 200, 200);
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->size(), 1u);
  EXPECT_EQ((*q)[0].state, State::kAway);
  EXPECT_EQ((*q)[0].trace_id, 14u);
  EXPECT_EQ((*q)[0].cause, Cause::kSignal);
  EXPECT_EQ((*q)[0].last_seen_ms, 199);
}

TYPED_TEST_P(HistoryConformance, AppendingATransitionTwiceKeepsOne) {
  const Transition t = At("alice", 1, 100, State::kOnline);
  ASSERT_TRUE(this->history_->Append({t}).ok());
  ASSERT_TRUE(this->history_->Append({t, At("alice", 2, 200, State::kOffline)}).ok());
  this->Reopen();
  ASSERT_TRUE(this->history_->Append({t}).ok());
  EXPECT_EQ(this->Versions("alice", 0, 1000), (std::vector<uint64_t>{1, 2}));
}

TYPED_TEST_P(HistoryConformance, LastBeforeGivesTheStateWhenAWindowOpens) {
  ASSERT_TRUE(this->history_
                  ->Append({At("alice", 1, 100, State::kOnline), At("alice", 2, 200, State::kAway)})
                  .ok());
  auto a = this->history_->LastBefore("alice", 150);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->version, 1u);
  auto b = this->history_->LastBefore("alice", 100);
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->has_value());
  auto c = this->history_->LastBefore("nobody", 1000);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->has_value());
}

TYPED_TEST_P(HistoryConformance, EraseForgetsTheUserForGood) {
  ASSERT_TRUE(this->history_
                  ->Append({At("alice", 1, 100, State::kOnline), At("bob", 1, 100, State::kOnline)})
                  .ok());
  ASSERT_TRUE(this->history_->Erase("alice").ok());
  this->Reopen();
  EXPECT_TRUE(this->Versions("alice", 0, 1000).empty());
  EXPECT_EQ(this->Versions("bob", 0, 1000).size(), 1u);
}

TYPED_TEST_P(HistoryConformance, DropBeforeAppliesRetention) {
  ASSERT_TRUE(this->history_
                  ->Append({At("alice", 1, 100, State::kOnline), At("alice", 2, 200, State::kAway),
                            At("bob", 1, 50, State::kOnline)})
                  .ok());
  ASSERT_TRUE(this->history_->DropBefore(150).ok());
  this->Reopen();
  EXPECT_EQ(this->Versions("alice", 0, 1000), (std::vector<uint64_t>{2}));
  EXPECT_TRUE(this->Versions("bob", 0, 1000).empty());
}

// ---- Device transitions (the per-device audit) ----

inline DeviceTransition DeviceAt(const std::string& user, const std::string& device, int64_t at,
                                 DeviceEvent event, uint64_t session = 1) {
  DeviceTransition t;
  t.user_id = user;
  t.device_id = device;
  t.at_ms = at;
  t.session_id = session;
  t.event = event;
  t.platform = Platform::kMobile;
  return t;
}

// "at:event:session" per transition, oldest first.
inline std::vector<std::string> DeviceLines(HistoryStore* h, const std::string& user,
                                            const std::string& device, int64_t from, int64_t to) {
  std::vector<std::string> out;
  auto q = h->QueryDevice(user, device, from, to);
  EXPECT_TRUE(q.ok()) << q.status();
  if (!q.ok()) return out;
  for (const DeviceTransition& t : *q) {
    EXPECT_EQ(t.user_id, user);
    EXPECT_EQ(t.device_id, device);
    EXPECT_EQ(t.platform, Platform::kMobile);
    out.push_back(absl::StrCat(t.at_ms, ":", static_cast<int>(t.event), ":", t.session_id));
  }
  return out;
}

TYPED_TEST_P(HistoryConformance, DeviceTransitionsAnswerPerDeviceOldestFirst) {
  using E = DeviceEvent;
  // Out of time order, another device and another user in between; within
  // one millisecond the order they came in is kept.
  ASSERT_TRUE(this->history_
                  ->AppendDevices({DeviceAt("alice", "phone", 300, E::kConnect, 2),
                                   DeviceAt("alice", "phone", 100, E::kConnect),
                                   DeviceAt("alice", "laptop", 150, E::kConnect),
                                   DeviceAt("bob", "phone", 150, E::kConnect),
                                   DeviceAt("alice", "phone", 200, E::kProbeGivenUp),
                                   DeviceAt("alice", "phone", 200, E::kDeadTimeout)})
                  .ok());
  ASSERT_TRUE(this->history_
                  ->AppendDevices({DeviceAt("alice", "phone", 300, E::kDeadReplaced, 1)})
                  .ok());
  this->Reopen();
  HistoryStore* h = this->history_.get();
  EXPECT_EQ(DeviceLines(h, "alice", "phone", 0, 1000),
            (std::vector<std::string>{"100:1:1", "200:10:1", "200:3:1", "300:1:2", "300:8:1"}));
  EXPECT_EQ(DeviceLines(h, "alice", "phone", 150, 200),
            (std::vector<std::string>{"200:10:1", "200:3:1"}));
  EXPECT_EQ(DeviceLines(h, "alice", "laptop", 0, 1000), (std::vector<std::string>{"150:1:1"}));
  EXPECT_TRUE(DeviceLines(h, "alice", "tablet", 0, 1000).empty());
  EXPECT_TRUE(DeviceLines(h, "nobody", "phone", 0, 1000).empty());
  // The user's own transitions are another list.
  EXPECT_TRUE(this->Versions("alice", 0, 1000).empty());
}

TYPED_TEST_P(HistoryConformance, AppendingADeviceTransitionTwiceKeepsOne) {
  const DeviceTransition t = DeviceAt("alice", "phone", 100, DeviceEvent::kConnect);
  ASSERT_TRUE(this->history_->AppendDevices({t, t}).ok());
  this->Reopen();
  ASSERT_TRUE(
      this->history_->AppendDevices({t, DeviceAt("alice", "phone", 100, DeviceEvent::kGrace)})
          .ok());
  EXPECT_EQ(DeviceLines(this->history_.get(), "alice", "phone", 0, 1000),
            (std::vector<std::string>{"100:1:1", "100:2:1"}));
}

TYPED_TEST_P(HistoryConformance, EraseAndRetentionCoverDeviceTransitions) {
  using E = DeviceEvent;
  ASSERT_TRUE(this->history_
                  ->AppendDevices({DeviceAt("alice", "phone", 100, E::kConnect),
                                   DeviceAt("alice", "phone", 200, E::kDeadClean),
                                   DeviceAt("bob", "phone", 50, E::kConnect),
                                   DeviceAt("bob", "phone", 250, E::kDeadClean),
                                   DeviceAt("carol", "phone", 300, E::kConnect)})
                  .ok());
  ASSERT_TRUE(this->history_->Erase("alice").ok());
  ASSERT_TRUE(this->history_->DropBefore(150).ok());
  this->Reopen();
  HistoryStore* h = this->history_.get();
  EXPECT_TRUE(DeviceLines(h, "alice", "phone", 0, 1000).empty());
  EXPECT_EQ(DeviceLines(h, "bob", "phone", 0, 1000), (std::vector<std::string>{"250:6:1"}));
  EXPECT_EQ(DeviceLines(h, "carol", "phone", 0, 1000), (std::vector<std::string>{"300:1:1"}));
}

REGISTER_TYPED_TEST_SUITE_P(HistoryConformance, QueryReturnsTheWindowOldestFirst,
                            AppendingATransitionTwiceKeepsOne,
                            LastBeforeGivesTheStateWhenAWindowOpens, EraseForgetsTheUserForGood,
                            DropBeforeAppliesRetention,
                            DeviceTransitionsAnswerPerDeviceOldestFirst,
                            AppendingADeviceTransitionTwiceKeepsOne,
                            EraseAndRetentionCoverDeviceTransitions);

// ---- Bus ------------------------------------------------------------------------

template <typename Factory>
class BusConformance : public ::testing::Test {
 protected:
  void SetUp() override { bus_ = factory_.Open(); }

  // Every partition holds exactly `sent[p]`'s payloads, in order, from 0.
  void ExpectPartitions(std::map<uint32_t, std::vector<std::string>>& sent) {
    const uint32_t n = bus_->partitions();
    for (uint32_t p = 0; p < n; ++p) {
      auto end = bus_->EndOffset(p);
      ASSERT_TRUE(end.ok());
      EXPECT_EQ(*end, sent[p].size());
      auto recs = bus_->Read(p, 0, 1000);
      ASSERT_TRUE(recs.ok());
      ASSERT_EQ(recs->size(), sent[p].size());
      for (size_t i = 0; i < recs->size(); ++i) {
        EXPECT_EQ((*recs)[i].payload, sent[p][i]);
        EXPECT_EQ((*recs)[i].offset, i);
        EXPECT_EQ((*recs)[i].partition, p);
        EXPECT_EQ(PartitionFor((*recs)[i].key, n), p);
      }
    }
  }

  Factory factory_;
  std::unique_ptr<Bus> bus_;
};

TYPED_TEST_SUITE_P(BusConformance);

TYPED_TEST_P(BusConformance, RecordsGoToTheUsersPartitionInOrder) {
  const uint32_t n = this->bus_->partitions();
  ASSERT_GE(n, 2u);
  std::map<uint32_t, std::vector<std::string>> sent;
  for (int i = 0; i < 40; ++i) {
    const std::string user = "u" + std::to_string(i % 7);
    const std::string payload = "p" + std::to_string(i);
    auto off = this->bus_->Publish(i % 2 ? BusRecordType::kChange : BusRecordType::kSignal, user,
                                   payload);
    ASSERT_TRUE(off.ok()) << off.status();
    const uint32_t p = PartitionFor(user, n);
    EXPECT_EQ(*off, sent[p].size());
    sent[p].push_back(payload);
  }
  this->ExpectPartitions(sent);
}

TYPED_TEST_P(BusConformance, ABatchLandsAsItsRecordsOneByOneWould) {
  const uint32_t n = this->bus_->partitions();
  std::map<uint32_t, std::vector<std::string>> sent;
  ASSERT_TRUE(this->bus_->Publish(BusRecordType::kSignal, "u0", "first").ok());
  sent[PartitionFor("u0", n)].push_back("first");
  std::vector<std::string> users, payloads;
  for (int i = 0; i < 40; ++i) {
    users.push_back("u" + std::to_string(i % 7));
    payloads.push_back("b" + std::to_string(i));
  }
  std::vector<BusMessage> batch;
  for (int i = 0; i < 40; ++i) {
    batch.push_back(BusMessage{i % 2 ? BusRecordType::kChange : BusRecordType::kSignal,
                               users[i], payloads[i]});
  }
  auto offsets = this->bus_->PublishBatch(batch);
  ASSERT_TRUE(offsets.ok()) << offsets.status();
  ASSERT_EQ(offsets->size(), batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    const uint32_t p = PartitionFor(users[i], n);
    EXPECT_EQ((*offsets)[i], sent[p].size()) << i;
    sent[p].push_back(payloads[i]);
  }
  this->ExpectPartitions(sent);
  auto none = this->bus_->PublishBatch({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TYPED_TEST_P(BusConformance, ReadFromAnOffsetWithALimit) {
  const std::string user = "alice";
  const uint32_t p = PartitionFor(user, this->bus_->partitions());
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(this->bus_->Publish(BusRecordType::kSignal, user, std::to_string(i)).ok());
  }
  auto recs = this->bus_->Read(p, 4, 3);
  ASSERT_TRUE(recs.ok());
  ASSERT_EQ(recs->size(), 3u);
  EXPECT_EQ((*recs)[0].payload, "4");
  EXPECT_EQ((*recs)[2].payload, "6");
  auto end = this->bus_->Read(p, 10, 5);
  ASSERT_TRUE(end.ok());
  EXPECT_TRUE(end->empty());
  EXPECT_TRUE(absl::IsOutOfRange(this->bus_->Read(p, 11, 5).status()));
  EXPECT_FALSE(this->bus_->Read(this->bus_->partitions(), 0, 5).ok());
  EXPECT_FALSE(this->bus_->EndOffset(this->bus_->partitions()).ok());
}

// A Prefetch hint changes no answer: a Read where it pointed, or anywhere
// else, reads as it would without; a hint for a partition or an offset that
// does not exist is ignored.
TYPED_TEST_P(BusConformance, APrefetchChangesNoRead) {
  const uint32_t n = this->bus_->partitions();
  std::map<uint32_t, std::vector<std::string>> sent;
  for (int i = 0; i < 60; ++i) {
    const std::string user = "u" + std::to_string(i % 9);
    ASSERT_TRUE(this->bus_->Publish(BusRecordType::kSignal, user, std::to_string(i)).ok());
    sent[PartitionFor(user, n)].push_back(std::to_string(i));
  }
  this->bus_->Prefetch(n, 0);
  for (uint32_t p = 0; p < n; ++p) this->bus_->Prefetch(p, p % 2);  // 0 or 1
  this->bus_->Prefetch(0, uint64_t{1} << 63);  // past any offset
  this->bus_->Prefetch(n - 1, 1000);           // past the end
  for (uint32_t p = 0; p < n; ++p) {
    // Each read from 0: where its partition was hinted, one before the
    // hint, or behind a hint past the end.
    auto recs = this->bus_->Read(p, 0, 1000);
    ASSERT_TRUE(recs.ok()) << recs.status();
    ASSERT_EQ(recs->size(), sent[p].size()) << "partition " << p;
    for (size_t i = 0; i < recs->size(); ++i) {
      EXPECT_EQ((*recs)[i].offset, i);
      EXPECT_EQ((*recs)[i].payload, sent[p][i]);
    }
  }
  this->ExpectPartitions(sent);
}

TYPED_TEST_P(BusConformance, ConcurrentPublishersLoseNothing) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < 100; ++i) {
        EXPECT_TRUE(this->bus_
                        ->Publish(BusRecordType::kSignal, "u" + std::to_string(i % 5),
                                  std::to_string(t * 1000 + i))
                        .ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<std::string> seen;
  size_t total = 0;
  for (uint32_t p = 0; p < this->bus_->partitions(); ++p) {
    auto recs = this->bus_->Read(p, 0, 10000);
    ASSERT_TRUE(recs.ok());
    for (const auto& r : *recs) seen.insert(r.payload);
    total += recs->size();
  }
  EXPECT_EQ(total, 400u);
  EXPECT_EQ(seen.size(), 400u);
}

REGISTER_TYPED_TEST_SUITE_P(BusConformance, RecordsGoToTheUsersPartitionInOrder,
                            ABatchLandsAsItsRecordsOneByOneWould, ReadFromAnOffsetWithALimit,
                            APrefetchChangesNoRead, ConcurrentPublishersLoseNothing);

}  // namespace presence::conformance

#endif  // PRESENCE_TESTS_CONFORMANCE_STORE_CONFORMANCE_H_
