// presence_chaos_engine: one engine process of the chaos test
// (adapters/chaos/chaos_test.cc, docs/scale-out.md "Chaos test").
//
//   presence_chaos_engine --id=e1 --brokers=127.0.0.1:p1,... --topic=T
//       --group=G --partitions=12 --redis-port=P --redis-prefix=chaos: --watch=300
//
// G is the bus's consumer group (offset commits); the engines' membership
// group is named after it (KafkaOwnershipOptions::ForBus).
//
// The engine: a KafkaBus (signals in, change events out), the shared Redis
// store wrapped in a KafkaCommittingStore, owns_all_partitions=false, the
// system clock and default Options otherwise. A Fanout with one pull
// subscriber watching users user-0 .. user-(watch-1), fed by the engine for
// the users it owns and by a RemoteFeed for the others: the subscriber
// checks that no diff repeats or goes back in version.
//
// OWNERSHIP SOURCE (--ownership=):
//   kafka  presence::KafkaOwnership (the default): the consumer group of the
//          engines assigns the partitions; a dead engine's go to the others
//          after the group's session timeout (KafkaOwnershipOptions default;
//          --session-timeout-ms= sets another).
//   table  the harness, one line on stdin per table:
//            own 0-3:e1,4-7:e2,8-11:e3
//          parsed into a presence::OwnershipTable (a gap or an overlap is
//          refused and reported) and applied with ApplyOwnership; the
//          harness notices a death with waitpid.
// Either way the loop then tells the RemoteFeed what the engine owns.
//
// OTHER COMMANDS: "stats" prints the watcher's figures; "quit" exits.
//
// STDOUT (one line each, flushed): "ready", "owned <id> <partitions>
// took_ms=<ms>" (whenever the owned set changes; took_ms: the table's
// ApplyOwnership, or the KafkaOwnership::Poll that changed it), "error
// <what>", "warn <what>" (a KafkaOwnership::Poll error, retried), "stats <id> diffs=.. dups=.. backwards=..
// snapshots=.. batches=..", then "view <id> <user>:<state> ..."
// (what the subscriber shows, presence.v1.State numbers).
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "presence/engine.h"
#include "presence/fanout.h"
#include "presence/kafka_bus.h"
#include "presence/kafka_ownership.h"
#include "presence/ownership.h"
#include "presence/redis_store.h"
#include "presence/remote_feed.h"
#include "presence/v1/presence.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

void Say(const std::string& line) {
  std::cout << line << std::endl;  // flushed: the harness waits for it
}

[[noreturn]] void Die(const std::string& what) {
  Say("error " + what);
  std::exit(2);
}

std::map<std::string, std::string> ParseFlags(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    if (!absl::ConsumePrefix(&a, "--")) Die(absl::StrCat("bad argument ", argv[i]));
    std::pair<std::string, std::string> kv = absl::StrSplit(a, absl::MaxSplits('=', 1));
    flags[kv.first] = kv.second;
  }
  return flags;
}

// "0-3:e1,4-7:e2" -> a table; InvalidArgument for a gap, an overlap, or bad text.
absl::StatusOr<presence::OwnershipTable> ParseTable(absl::string_view text, uint32_t partitions) {
  std::vector<presence::PartitionRange> ranges;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> range_owner =
        absl::StrSplit(part, absl::MaxSplits(':', 1));
    std::pair<absl::string_view, absl::string_view> first_last =
        absl::StrSplit(range_owner.first, absl::MaxSplits('-', 1));
    presence::PartitionRange r;
    if (!absl::SimpleAtoi(first_last.first, &r.first) ||
        !absl::SimpleAtoi(first_last.second, &r.last)) {
      return absl::InvalidArgumentError(absl::StrCat("bad range ", part));
    }
    r.owner = std::string(range_owner.second);
    ranges.push_back(std::move(r));
  }
  return presence::OwnershipTable::Create(partitions, std::move(ranges));
}

// The watcher: a pull subscriber whose diffs must grow in version per user.
struct Watcher {
  uint64_t batches = 0, snapshots = 0, diffs = 0, dups = 0, backwards = 0;
  std::map<std::string, uint64_t> last_version;
  std::map<std::string, int> state;  // what the subscriber shows, as presence.v1.State

  void Drain(presence::Fanout* fanout, presence::SubscriberId sub) {
    presence::Batch b;
    for (;;) {
      auto more = fanout->Poll(sub, &b);
      if (!more.ok() || !*more) return;
      presence::v1::DiffBatch m;
      if (!m.ParseFromString(b.Encode())) Die("a batch that does not decode");
      ++batches;
      if (m.snapshot()) ++snapshots;
      for (const auto& u : m.users()) {
        if (u.removed() || u.version() == 0) continue;
        uint64_t& last = last_version[u.user_id()];
        if (m.snapshot()) {  // a snapshot restates; it is not a diff
          if (u.version() > last) last = u.version();
          state[u.user_id()] = u.state();
          continue;
        }
        ++diffs;
        if (u.version() == last) {
          ++dups;
        } else if (u.version() < last) {
          ++backwards;
        } else {
          last = u.version();
          state[u.user_id()] = u.state();
        }
      }
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  auto flags = ParseFlags(argc, argv);
  const std::string id = flags["id"];
  const std::string ownership = flags.count("ownership") ? flags["ownership"] : "kafka";
  if (ownership != "kafka" && ownership != "table") Die("--ownership= is kafka or table");
  uint32_t partitions = 0;
  int redis_port = 0, watch = 0;
  if (id.empty() || flags["group"].empty() || !absl::SimpleAtoi(flags["partitions"], &partitions) ||
      !absl::SimpleAtoi(flags["redis-port"], &redis_port) ||
      !absl::SimpleAtoi(flags["watch"], &watch)) {
    Die("usage: --id= --brokers= --topic= --group= --partitions= --redis-port= --redis-prefix= --watch=");
  }

  presence::KafkaBusOptions bo;
  bo.brokers = flags["brokers"];
  bo.topic = flags["topic"];
  bo.partitions = partitions;
  bo.group_id = flags["group"];
  // As adapters/kafka/tests/mock_kafka.h explains: the mock broker answers a
  // fetch at a partition's end late, and mishandles pipelined produce
  // requests across a leader change. A real broker needs neither.
  bo.consumer_config.push_back({"fetch.wait.max.ms", "10"});
  bo.producer_config.push_back({"max.in.flight.requests.per.connection", "1"});
  auto bus = presence::KafkaBus::Create(bo);
  if (!bus.ok()) Die(absl::StrCat("kafka: ", bus.status().ToString()));

  presence::RedisStoreOptions ro;
  ro.port = redis_port;
  ro.key_prefix = flags["redis-prefix"];
  auto redis = presence::RedisStore::Open(ro);
  if (!redis.ok()) Die(absl::StrCat("redis: ", redis.status().ToString()));
  presence::KafkaCommittingStore store(redis->get(), bus->get());

  presence::Options o;
  o.bus = bus->get();
  o.store = &store;
  o.owns_all_partitions = false;
  auto engine = presence::Engine::Create(o);
  if (!engine.ok()) Die(absl::StrCat("engine: ", engine.status().ToString()));

  auto fanout = presence::Fanout::Create(engine->get());
  if (!fanout.ok()) Die(absl::StrCat("fanout: ", fanout.status().ToString()));
  std::vector<uint32_t> none;
  auto feed = presence::RemoteFeed::Create(bus->get(), fanout->get(), none);
  if (!feed.ok()) Die(absl::StrCat("feed: ", feed.status().ToString()));
  auto sub = (*fanout)->Subscribe();
  if (!sub.ok()) Die("subscribe");
  std::vector<std::string> users;
  for (int i = 0; i < watch; ++i) users.push_back(absl::StrCat("user-", i));
  std::vector<absl::string_view> views(users.begin(), users.end());
  if (auto st = (*fanout)->AddUsers(*sub, views); !st.ok()) Die(st.ToString());
  Watcher watcher;

  // The ownership source, and what the feed was last told.
  std::unique_ptr<presence::KafkaOwnership> group;
  if (ownership == "kafka") {
    presence::KafkaOwnershipOptions ko = presence::KafkaOwnershipOptions::ForBus(bo, id);
    int session_timeout_ms = 0;  // 0: the default
    if (absl::SimpleAtoi(flags["session-timeout-ms"], &session_timeout_ms) && session_timeout_ms > 0) {
      ko.session_timeout_ms = session_timeout_ms;
      ko.heartbeat_interval_ms = std::max(100, session_timeout_ms / 6);
    }
    auto k = presence::KafkaOwnership::Create(engine->get(), ko);
    if (!k.ok()) Die(absl::StrCat("ownership: ", k.status().ToString()));
    group = std::move(*k);
  }
  std::vector<uint32_t> told;
  auto tell_feed = [&](int64_t took_ms, bool always) {
    std::vector<uint32_t> owned = (*engine)->OwnedPartitions();
    if (owned == told && !always) return;
    if (auto fs = (*feed)->SetOwnedPartitions(owned); !fs.ok()) Die(fs.ToString());
    told = owned;
    Say(absl::StrCat("owned ", id, " ", absl::StrJoin(owned, ","), " took_ms=", took_ms));
  };
  Say("ready");

  std::string input;
  auto next_tick = Clock::now();
  for (;;) {
    // Commands from the harness (the ownership source among them).
    pollfd pfd{STDIN_FILENO, POLLIN, 0};
    const int wait_ms = static_cast<int>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - Clock::now()).count()));
    if (poll(&pfd, 1, std::min(wait_ms, 10)) > 0) {
      char buf[4096];
      const ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
      if (n <= 0) return 0;  // the harness went away
      input.append(buf, static_cast<size_t>(n));
    }
    for (size_t nl; (nl = input.find('\n')) != std::string::npos;) {
      const std::string line = input.substr(0, nl);
      input.erase(0, nl + 1);
      absl::string_view cmd = line;
      if (absl::ConsumePrefix(&cmd, "own ")) {
        if (group != nullptr) {
          Say("error \"own\" with --ownership=kafka");
          continue;
        }
        const auto start = Clock::now();
        auto table = ParseTable(cmd, partitions);
        if (!table.ok()) {
          Say(absl::StrCat("error ", table.status().ToString()));
          continue;
        }
        absl::Status st = presence::ApplyOwnership(engine->get(), *table, id);
        for (int retry = 0; !st.ok() && retry < 50; ++retry) {  // e.g. the store was unreachable
          Say(absl::StrCat("error ", st.ToString(), " (retrying)"));
          usleep(100 * 1000);
          st = presence::ApplyOwnership(engine->get(), *table, id);
        }
        if (!st.ok()) Die(st.ToString());
        tell_feed(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count(),
                  true);
      } else if (cmd == "stats") {
        Say(absl::StrCat("stats ", id, " diffs=", watcher.diffs, " dups=", watcher.dups,
                         " backwards=", watcher.backwards,
                         " snapshots=", watcher.snapshots, " batches=", watcher.batches));
        std::string view = absl::StrCat("view ", id);
        for (const auto& [user, st] : watcher.state) absl::StrAppend(&view, " ", user, ":", st);
        Say(view);
      } else if (cmd == "quit") {
        if (group != nullptr) (void)group->Close();
        return 0;
      } else if (!cmd.empty()) {
        Say("error unknown command " + line);
      }
    }
    if (group != nullptr) {
      const auto start = Clock::now();
      if (absl::Status st = group->Poll(); !st.ok()) Say(absl::StrCat("warn ", st.ToString()));
      tell_feed(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count(),
                false);
    }
    // Signals in, at most a few rounds so that ticks stay on time.
    for (int round = 0; round < 8; ++round) {
      auto n = (*engine)->ConsumeBus();
      if (!n.ok() || *n == 0) break;
    }
    if (Clock::now() >= next_tick) {
      (void)(*feed)->Poll();  // remote users' changes, to the fan-out
      (*engine)->Tick();      // write-through, publish, fan-out flush
      watcher.Drain(fanout->get(), *sub);
      next_tick += std::chrono::milliseconds(100);
      if (next_tick < Clock::now()) next_tick = Clock::now();
    }
  }
}
