// Crash test of the file store: a child process writes store batches and
// history transitions from two threads, and tells the parent through a pipe
// before it starts each write ("intent") and when the write was acknowledged
// ("ack"). The parent kills it with SIGKILL at a random moment, reopens the
// folder, and checks that what it holds is exactly a replay of the
// acknowledged writes in a reference RecordSet and TransitionLog
// (src/store/record_rules.h), plus at most the one write per thread that was in
// flight when the child died. So every acknowledged write is there, nothing
// is duplicated, reordered or half-applied. The folder carries over from one
// kill to the next, with small segments and frequent snapshots, so kills
// also land in segment rolls, snapshots, compaction and recovery itself.
//
// Under kInterval the same holds: acknowledged writes were handed to the OS
// before the ack, and a killed process does not take the OS's page cache with
// it. What kInterval may lose (the writes of the last sync_interval_ms) is
// lost only when the OS itself goes down; tests/file_store_test.cc shows that
// with a simulated power loss (FileStoreSyncPolicy.*).
//
// PRESENCE_CRASH_SEED=n replays the same kill delays.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "presence/file_store.h"
#include "src/store/record_rules.h"
#include "tests/file_store_test.h"

namespace presence {
namespace {

constexpr int kUsers = 64;
constexpr int kHistoryUsers = 32;

// ---- Deterministic operations: (iteration, index) -> the same write ----------

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

class Rng {
 public:
  Rng(int iteration, uint32_t index, int stream)
      : s_(Mix((uint64_t(iteration) << 40) ^ (uint64_t(stream) << 32) ^ index)) {}
  uint64_t Next() { return s_ = Mix(s_); }
  uint64_t Below(uint64_t n) { return Next() % n; }

 private:
  uint64_t s_;
};

UserRecord MakeUser(const std::string& id, uint64_t version, State state) {
  UserRecord u;
  u.user_id = id;
  u.version = version;
  u.state_version = version;
  u.state = state;
  u.self_state = state;
  u.last_seen_ms = static_cast<int64_t>(version % 1'000'000);
  u.published_at_ms = u.last_seen_ms + 1;
  return u;
}

DeviceRecord MakeDevice(const std::string& user, const std::string& device, uint64_t version,
                        uint64_t session) {
  DeviceRecord d;
  d.user_id = user;
  d.device_id = device;
  d.version = version;
  d.session_id = session;
  d.platform = Platform::kWeb;
  d.last_signal_ms = {0, static_cast<int64_t>(version % 1'000'000), 0};
  d.activity = {Activity::kActive, Activity::kIdle, Activity::kActive};
  d.gateway = "gw";
  return d;
}

Transition MakeTransition(const std::string& user, uint64_t version, int64_t at, State state) {
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

uint64_t BaseVersion(int iteration, uint32_t index) {
  return (uint64_t(iteration) + 1) * 100'000'000ull + uint64_t(index) * 16;
}

StoreBatch StoreOp(int iteration, uint32_t index) {
  Rng r(iteration, index, 1);
  const uint64_t base = BaseVersion(iteration, index);
  StoreBatch b;
  if (r.Below(25) == 0) {
    b.erasures.push_back({"u" + std::to_string(r.Below(kUsers)), base});
    return b;
  }
  const int n = 1 + static_cast<int>(r.Below(6));
  for (int j = 0; j < n; ++j) {
    const std::string user = "u" + std::to_string(r.Below(kUsers));
    // Now and then a stale write, which the version rule ignores.
    const uint64_t v = r.Below(10) == 0 ? base - r.Below(base / 2) : base + j;
    switch (r.Below(3)) {
      case 0: {
        UserRecord u = MakeUser(user, v, static_cast<State>(1 + r.Below(4)));
        if (r.Below(4) == 0) u.overrides.push_back({r.Next(), OverrideState::kDnd, 5, 0});
        b.users.push_back(std::move(u));
        break;
      }
      case 1: {
        DeviceRecord d = MakeDevice(user, "d" + std::to_string(r.Below(3)), v, index);
        d.gone = r.Below(5) == 0;
        b.devices.push_back(std::move(d));
        break;
      }
      default:
        b.offsets.push_back({static_cast<uint32_t>(r.Below(4)), base + j});
    }
  }
  return b;
}

struct HistoryOp {
  enum Kind { kAppend, kErase, kDropBefore } kind = kAppend;
  std::vector<Transition> transitions;
  std::string user;
  int64_t before_ms = 0;
};

int64_t AtMs(int iteration, uint32_t index) { return int64_t(iteration) * 1'000'000 + index * 10; }

HistoryOp MakeHistoryOp(int iteration, uint32_t index) {
  Rng r(iteration, index, 2);
  HistoryOp op;
  const uint64_t k = r.Below(60);
  if (k == 0) {
    op.kind = HistoryOp::kErase;
    op.user = "h" + std::to_string(r.Below(kHistoryUsers));
  } else if (k == 1) {
    op.kind = HistoryOp::kDropBefore;
    op.before_ms = AtMs(iteration, index) - 3000;
  } else {
    const int n = 1 + static_cast<int>(r.Below(4));
    for (int j = 0; j < n; ++j) {
      const std::string user = "h" + std::to_string(r.Below(kHistoryUsers));
      Transition t = MakeTransition(user, BaseVersion(iteration, index) + j,
                                     AtMs(iteration, index) + j, static_cast<State>(1 + r.Below(4)));
      op.transitions.push_back(t);
    }
    // Now and then a retry of the previous append (same ids): kept once.
    if (index > 0 && r.Below(8) == 0) {
      HistoryOp prev = MakeHistoryOp(iteration, index - 1);
      for (const Transition& t : prev.transitions) op.transitions.push_back(t);
    }
  }
  return op;
}

absl::Status Apply(HistoryStore* h, const HistoryOp& op) {
  switch (op.kind) {
    case HistoryOp::kAppend:
      return h->Append(op.transitions);
    case HistoryOp::kErase:
      return h->Erase(op.user);
    case HistoryOp::kDropBefore:
      return h->DropBefore(op.before_ms);
  }
  return absl::OkStatus();
}

void Apply(internal::TransitionLog* log, const HistoryOp& op) {
  switch (op.kind) {
    case HistoryOp::kAppend:
      for (const Transition& t : op.transitions) log->Append(t);
      break;
    case HistoryOp::kErase:
      log->Erase(op.user);
      break;
    case HistoryOp::kDropBefore:
      log->DropBefore(op.before_ms);
      break;
  }
}

// ---- The pipe protocol ---------------------------------------------------------------

struct Message {
  uint8_t type;    // 'I' intent, 'A' acknowledged, 'F' failed, 'X' open failed
  uint8_t stream;  // 1 store, 2 history
  uint16_t pad;
  uint32_t index;
};
static_assert(sizeof(Message) == 8, "one atomic pipe write");

void Send(int fd, uint8_t type, uint8_t stream, uint32_t index) {
  Message m{type, stream, 0, index};
  while (write(fd, &m, sizeof m) < 0 && errno == EINTR) {
  }
}

[[noreturn]] void RunChild(const std::string& dir, const FileStoreOptions& o, int iteration,
                           int fd) {
  auto fs = FileStore::Open(dir, o);
  if (!fs.ok()) {
    std::fprintf(stderr, "child: open failed: %s\n", fs.status().ToString().c_str());
    Send(fd, 'X', 0, 0);
    _exit(2);
  }
  FileStore* store = fs->get();
  std::thread history([store, iteration, fd] {
    for (uint32_t i = 0;; ++i) {
      const HistoryOp op = MakeHistoryOp(iteration, i);
      Send(fd, 'I', 2, i);
      Send(fd, Apply(store->history(), op).ok() ? 'A' : 'F', 2, i);
    }
  });
  for (uint32_t i = 0;; ++i) {
    const StoreBatch b = StoreOp(iteration, i);
    Send(fd, 'I', 1, i);
    Send(fd, store->store()->Write(b).ok() ? 'A' : 'F', 1, i);
  }
}

// ---- Comparison ------------------------------------------------------------------------

std::string Canon(const UserRecord& u) {
  std::string s = absl::StrCat("user ", u.user_id, " v", u.version, " sv", u.state_version, " ",
                               int(u.state), "/", int(u.self_state), " seen ", u.last_seen_ms,
                               " pub ", u.published_at_ms);
  for (const auto& o : u.overrides) {
    absl::StrAppend(&s, " o", o.id, ":", int(o.state), ":", o.set_at_ms, ":", o.until_ms);
  }
  return s;
}

std::string Canon(const DeviceRecord& d) {
  return absl::StrCat("device ", d.user_id, "/", d.device_id, " v", d.version, " s", d.session_id,
                      " p", int(d.platform), " ", d.last_signal_ms[0], ",", d.last_signal_ms[1],
                      ",", d.last_signal_ms[2], " a", int(d.activity[0]), int(d.activity[1]),
                      int(d.activity[2]), " c", d.closed, " g", d.gone, " ", d.gateway);
}

std::string Canon(const Transition& t) {
  return absl::StrCat(t.user_id, " v", t.version, " @", t.at_ms, " ", int(t.previous), ">",
                      int(t.state), "/", int(t.self_state), " c", int(t.cause), " t", t.trace_id,
                      " s", t.last_seen_ms);
}

// The whole of a store's records, as sorted lines.
struct Lines : StoreVisitor {
  std::map<std::string, std::string> lines;
  void OnUser(const UserRecord& u) override { lines["u:" + u.user_id] = Canon(u); }
  void OnDevice(const DeviceRecord& d) override {
    lines["d:" + d.user_id + "/" + d.device_id] = Canon(d);
  }
  void OnOffset(const CommittedOffset& o) override {
    lines[absl::StrCat("o:", o.partition)] = absl::StrCat(o.offset);
  }
};

std::map<std::string, std::string> LinesOf(const internal::RecordSet& r) {
  Lines l;
  r.Visit(&l);
  return l.lines;
}

std::map<std::string, std::string> LinesOf(Store* s) {
  Lines l;
  EXPECT_TRUE(s->Load(&l).ok());
  return l.lines;
}

std::map<std::string, std::string> LinesOf(const internal::TransitionLog& log) {
  std::map<std::string, std::string> out;
  for (int u = 0; u < kHistoryUsers; ++u) {
    const std::string user = "h" + std::to_string(u);
    std::string all;
    for (const Transition& t : log.Query(user, std::numeric_limits<int64_t>::min(),
                                         std::numeric_limits<int64_t>::max())) {
      absl::StrAppend(&all, Canon(t), "\n");
    }
    if (!all.empty()) out[user] = all;
  }
  return out;
}

std::map<std::string, std::string> LinesOf(HistoryStore* h) {
  std::map<std::string, std::string> out;
  for (int u = 0; u < kHistoryUsers; ++u) {
    const std::string user = "h" + std::to_string(u);
    auto q = h->Query(user, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
    EXPECT_TRUE(q.ok());
    std::string all;
    if (q.ok()) {
      for (const Transition& t : *q) absl::StrAppend(&all, Canon(t), "\n");
    }
    if (!all.empty()) out[user] = all;
  }
  return out;
}

std::string FirstDifference(const std::map<std::string, std::string>& want,
                            const std::map<std::string, std::string>& got) {
  for (const auto& [k, v] : want) {
    auto it = got.find(k);
    if (it == got.end()) return absl::StrCat("missing ", k, ": ", v);
    if (it->second != v) return absl::StrCat("differs ", k, ":\n want ", v, "\n got  ", it->second);
  }
  for (const auto& [k, v] : got) {
    if (want.count(k) == 0) return absl::StrCat("unexpected ", k, ": ", v);
  }
  return "";
}

// ---- The parent ---------------------------------------------------------------------------

struct Stream {
  std::vector<uint32_t> acked;
  std::optional<uint32_t> in_flight;  // intent seen, no answer
  int failed = 0;
};

struct Totals {
  int iterations = 0;
  uint64_t acked_store = 0, acked_history = 0;
  int in_flight_applied = 0, in_flight_absent = 0;
  uint64_t torn = 0, corrupt = 0, bytes_dropped = 0;
  uint64_t snapshots_seen = 0;
  int killed_before_first_write = 0;
};

void RunCrashTest(const FileStoreOptions& options, int iterations, const char* label) {
  uint64_t seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  if (const char* s = getenv("PRESENCE_CRASH_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::printf("[%s] PRESENCE_CRASH_SEED=%llu\n", label, static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);

  testing_fs::TempDir dir;
  internal::RecordSet ref_store;
  internal::TransitionLog ref_history;
  Totals totals;

  for (int it = 0; it < iterations; ++it) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      RunChild(dir.path(), options, it, fds[1]);
    }
    close(fds[1]);

    Stream streams[3];
    bool open_failed = false;
    auto handle = [&](const Message& m) {
      if (m.type == 'X') {
        open_failed = true;
        return;
      }
      ASSERT_TRUE(m.stream == 1 || m.stream == 2);
      Stream& s = streams[m.stream];
      if (m.type == 'I') {
        ASSERT_FALSE(s.in_flight.has_value());
        ASSERT_EQ(m.index, s.acked.size() + s.failed);
        s.in_flight = m.index;
      } else {
        ASSERT_EQ(s.in_flight, std::optional<uint32_t>(m.index));
        s.in_flight.reset();
        if (m.type == 'A') {
          s.acked.push_back(m.index);
        } else {
          ++s.failed;
        }
      }
    };
    // Read messages until a random moment, then kill, then drain the pipe.
    // One kill in five lands in the first 3 ms: in Open, during recovery.
    const uint64_t delay_us = rng() % 5 == 0 ? rng() % 3'000 : rng() % 200'000;
    const auto kill_at = std::chrono::steady_clock::now() + std::chrono::microseconds(delay_us);
    std::string pending;
    auto pump = [&](int timeout_ms) -> bool {  // false at EOF
      pollfd p{fds[0], POLLIN, 0};
      if (poll(&p, 1, timeout_ms) <= 0) return true;
      char buf[4096];
      const ssize_t n = read(fds[0], buf, sizeof buf);
      if (n <= 0) return false;
      pending.append(buf, static_cast<size_t>(n));
      size_t used = 0;
      for (; pending.size() - used >= sizeof(Message); used += sizeof(Message)) {
        Message m;
        std::memcpy(&m, pending.data() + used, sizeof m);
        handle(m);
      }
      pending.erase(0, used);
      return true;
    };
    while (std::chrono::steady_clock::now() < kill_at) {
      if (!pump(1)) break;
    }
    kill(pid, SIGKILL);
    while (pump(100)) {
    }
    close(fds[0]);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_FALSE(open_failed) << "iteration " << it << ": the child could not open the folder";
    ASSERT_EQ(streams[1].failed + streams[2].failed, 0) << "a write failed in the child";

    // The reference: every acknowledged write, in order.
    for (uint32_t i : streams[1].acked) ref_store.Apply(StoreOp(it, i));
    for (uint32_t i : streams[2].acked) Apply(&ref_history, MakeHistoryOp(it, i));
    totals.acked_store += streams[1].acked.size();
    totals.acked_history += streams[2].acked.size();
    if (streams[1].acked.empty() && streams[2].acked.empty()) ++totals.killed_before_first_write;

    auto opened = FileStore::Open(dir.path(), options);
    ASSERT_TRUE(opened.ok()) << "iteration " << it << ": " << opened.status();
    FileStore* fs = opened->get();
    const RecoveryStats r = fs->recovery();
    totals.torn += r.torn_records;
    totals.corrupt += r.corrupt_records;
    totals.bytes_dropped += r.bytes_dropped;
    totals.snapshots_seen += !r.snapshot.empty();
    EXPECT_EQ(r.corrupt_records, 0u) << "a kill tears at most the tail";
    EXPECT_EQ(r.snapshots_rejected, 0u) << "a snapshot is renamed into place only when whole";

    // Store: the acknowledged writes, or those and the one in flight.
    const auto got_store = LinesOf(fs->store());
    const auto want_store = LinesOf(ref_store);
    if (got_store != want_store) {
      ASSERT_TRUE(streams[1].in_flight.has_value())
          << "iteration " << it << ": " << FirstDifference(want_store, got_store);
      internal::RecordSet with = ref_store;
      with.Apply(StoreOp(it, *streams[1].in_flight));
      ASSERT_EQ(got_store, LinesOf(with))
          << "iteration " << it << ": " << FirstDifference(LinesOf(with), got_store);
      ref_store = std::move(with);  // it made it: later iterations build on it
      ++totals.in_flight_applied;
    } else if (streams[1].in_flight.has_value()) {
      ++totals.in_flight_absent;
    }

    // History: the same, transition for transition, in order.
    const auto got_history = LinesOf(fs->history());
    const auto want_history = LinesOf(ref_history);
    if (got_history != want_history) {
      ASSERT_TRUE(streams[2].in_flight.has_value())
          << "iteration " << it << ": " << FirstDifference(want_history, got_history);
      internal::TransitionLog with = ref_history;
      Apply(&with, MakeHistoryOp(it, *streams[2].in_flight));
      ASSERT_EQ(got_history, LinesOf(with))
          << "iteration " << it << ": " << FirstDifference(LinesOf(with), got_history);
      ref_history = std::move(with);
      ++totals.in_flight_applied;
    } else if (streams[2].in_flight.has_value()) {
      ++totals.in_flight_absent;
    }
    ++totals.iterations;
  }

  std::printf(
      "[%s] %d kills; acknowledged writes checked: %llu store batches, %llu history calls; "
      "in-flight writes found applied %d, absent %d; killed before the first write %d; "
      "torn tails cut %llu (%llu bytes); reopened from a snapshot %llu times; corrupt %llu\n",
      label, totals.iterations, static_cast<unsigned long long>(totals.acked_store),
      static_cast<unsigned long long>(totals.acked_history), totals.in_flight_applied,
      totals.in_flight_absent, totals.killed_before_first_write,
      static_cast<unsigned long long>(totals.torn),
      static_cast<unsigned long long>(totals.bytes_dropped),
      static_cast<unsigned long long>(totals.snapshots_seen),
      static_cast<unsigned long long>(totals.corrupt));
  ::testing::Test::RecordProperty("acknowledged_writes",
                                  std::to_string(totals.acked_store + totals.acked_history));
  EXPECT_GT(totals.acked_store + totals.acked_history, 0u);
}

FileStoreOptions CrashOptions(SyncPolicy sync) {
  FileStoreOptions o;
  o.sync = sync;
  o.sync_interval_ms = 50;
  o.segment_bytes = 16 << 10;        // many segment rolls
  o.compact_after_bytes = 48 << 10;  // and snapshots, killed at any point
  return o;
}

TEST(FileStoreCrash, EveryWriteKeepsEveryAcknowledgedWriteAcrossKills) {
  RunCrashTest(CrashOptions(SyncPolicy::kEveryWrite), 40, "kEveryWrite");
}

TEST(FileStoreCrash, IntervalKeepsEveryAcknowledgedWriteAcrossProcessKills) {
  RunCrashTest(CrashOptions(SyncPolicy::kInterval), 20, "kInterval");
}

}  // namespace
}  // namespace presence
