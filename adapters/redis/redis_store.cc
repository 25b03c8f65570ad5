// presence::RedisStore (presence/redis_store.h): the key layout, the scripts
// that keep the version rule and erasure floors on the server, pipelined
// writes, and the scan that Load does.
#include "presence/redis_store.h"

#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/time.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "adapters/common/connection_pool.h"
#include "presence/v1/presence.pb.h"
#include "src/core/metrics.h"

namespace presence {
namespace {

namespace wire = ::presence::v1;

// ---- Scripts ------------------------------------------------------------------
// Versions travel as 20 zero-padded decimal digits; `lt` compares two of them
// (or two values that start with one) as two exact 10-digit halves, since Lua
// numbers are doubles.

constexpr absl::string_view kLtFunction = R"lua(
local function lt(a, b)
  local x, y = tonumber(string.sub(a, 1, 10)), tonumber(string.sub(b, 1, 10))
  if x ~= y then return x < y end
  return tonumber(string.sub(a, 11, 20)) < tonumber(string.sub(b, 11, 20))
end
)lua";

// KEYS[1] the user's hash, KEYS[2] the sorted set; ARGV[1] the user id, then
// groups of four: field, op ('e' erase, 'w' write, 'g' gone), value (a
// record value; for 'e' and 'g' the version alone), score (last_seen ms).
// Returns how many operations changed something.
constexpr absl::string_view kWriteScript = R"lua(
local h, z, uid = KEYS[1], KEYS[2], ARGV[1]
local floor = redis.call('HGET', h, 'f')
local changed = 0
for i = 2, #ARGV, 4 do
  local field, op, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == 'e' then
    if not floor or lt(floor, v) then floor = v end
    redis.call('DEL', h)
    redis.call('HSET', h, 'f', floor)
    redis.call('ZREM', z, uid)
    changed = changed + 1
  elseif not (floor and lt(v, floor)) then
    local old = redis.call('HGET', h, field)
    if not old or lt(old, v) then
      if op == 'g' then
        if old then
          redis.call('HDEL', h, field)
          changed = changed + 1
        end
      else
        redis.call('HSET', h, field, v)
        local score = tonumber(ARGV[i + 3])
        local s = redis.call('ZSCORE', z, uid)
        if not s or tonumber(s) < score then redis.call('ZADD', z, score, uid) end
        changed = changed + 1
      end
    end
  end
end
return changed
)lua";

// KEYS[1] the offsets hash; ARGV pairs of partition and offset (20 digits).
constexpr absl::string_view kOffsetsScript = R"lua(
local changed = 0
for i = 1, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if not old or lt(old, ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    changed = changed + 1
  end
end
return changed
)lua";

// KEYS[1] the user's hash, KEYS[2] the sorted set; ARGV[1] the user id,
// ARGV[2] the cutoff. Removes the user's records (not its floor) when its
// score is below the cutoff and no device is open. Returns 1 when removed.
constexpr absl::string_view kSweepScript = R"lua(
local h, z, uid = KEYS[1], KEYS[2], ARGV[1]
local s = redis.call('ZSCORE', z, uid)
if not s or tonumber(s) >= tonumber(ARGV[2]) then return 0 end
local all = redis.call('HGETALL', h)
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 1) == 'd' and string.sub(all[i + 1], 21, 21) == 'o' then return 0 end
end
local floor = redis.call('HGET', h, 'f')
redis.call('DEL', h)
if floor then redis.call('HSET', h, 'f', floor) end
redis.call('ZREM', z, uid)
return 1
)lua";

enum ScriptId { kWrite = 0, kOffsets = 1, kSweep = 2, kScriptCount = 3 };

std::string ScriptText(ScriptId id) {
  switch (id) {
    case kWrite:
      return absl::StrCat(kLtFunction, kWriteScript);
    case kOffsets:
      return absl::StrCat(kLtFunction, kOffsetsScript);
    default:
      return std::string(kSweepScript);
  }
}

// ---- Values -------------------------------------------------------------------

constexpr size_t kVersionDigits = 20;
constexpr size_t kHeaderBytes = kVersionDigits + 1;

std::string Digits20(uint64_t v) { return absl::StrFormat("%020u", v); }

bool ParseDigits20(absl::string_view s, uint64_t* v) {
  if (s.size() < kVersionDigits) return false;
  s = s.substr(0, kVersionDigits);
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleAtoi(s, v);
}

template <typename To, typename From>
To Enum(From v) {
  return static_cast<To>(static_cast<int>(v));
}
bool InRange(int v, int lo, int hi) { return v >= lo && v <= hi; }

int64_t LatestSignal(const DeviceRecord& d) {
  int64_t m = 0;
  for (int64_t t : d.last_signal_ms) m = std::max(m, t);
  return m;
}

std::string UserValue(const UserRecord& u) {
  wire::UserRecord p;
  p.set_state(Enum<wire::State>(u.state));
  p.set_self_state(Enum<wire::State>(u.self_state));
  p.set_last_seen_ms(u.last_seen_ms);
  p.set_published_at_ms(u.published_at_ms);
  p.set_state_version(u.state_version);
  p.set_public_version(u.public_version);
  p.set_hidden_last_seen_ms(u.hidden_last_seen_ms);
  for (const OverrideInfo& o : u.overrides) {
    wire::Override* po = p.add_overrides();
    po->set_id(o.id);
    po->set_state(Enum<wire::OverrideState>(o.state));
    po->set_set_at_ms(o.set_at_ms);
    po->set_until_ms(o.until_ms);
  }
  std::string out = Digits20(u.version);
  out.push_back('u');
  p.AppendToString(&out);
  return out;
}

std::string DeviceValue(const DeviceRecord& d) {
  wire::DeviceRecord p;
  p.set_session_id(d.session_id);
  p.set_platform(Enum<wire::Platform>(d.platform));
  p.set_last_inferred_ms(d.last_signal_ms[0]);
  p.set_last_app_ms(d.last_signal_ms[1]);
  p.set_last_manual_ms(d.last_signal_ms[2]);
  p.set_inferred_activity(Enum<wire::Activity>(d.activity[0]));
  p.set_app_activity(Enum<wire::Activity>(d.activity[1]));
  p.set_manual_activity(Enum<wire::Activity>(d.activity[2]));
  p.set_closed(d.closed);
  p.set_gateway(d.gateway);
  std::string out = Digits20(d.version);
  out.push_back(d.closed ? 'c' : 'o');
  p.AppendToString(&out);
  return out;
}

bool DecodeUser(absl::string_view user_id, absl::string_view value, UserRecord* u) {
  wire::UserRecord p;
  if (!ParseDigits20(value, &u->version) || value.size() < kHeaderBytes ||
      value[kVersionDigits] != 'u' ||
      !p.ParseFromArray(value.data() + kHeaderBytes, static_cast<int>(value.size() - kHeaderBytes)) ||
      !InRange(p.state(), 1, 4) || !InRange(p.self_state(), 1, 4)) {
    return false;
  }
  u->user_id = std::string(user_id);
  u->state_version = p.state_version();
  u->state = Enum<State>(p.state());
  u->self_state = Enum<State>(p.self_state());
  u->last_seen_ms = p.last_seen_ms();
  u->published_at_ms = p.published_at_ms();
  u->public_version = p.public_version();
  u->hidden_last_seen_ms = p.hidden_last_seen_ms();
  u->overrides.clear();
  for (const wire::Override& po : p.overrides()) {
    if (!InRange(po.state(), 1, 4)) return false;
    u->overrides.push_back(OverrideInfo{po.id(), Enum<OverrideState>(po.state()), po.set_at_ms(),
                                        po.until_ms()});
  }
  return true;
}

bool DecodeDevice(absl::string_view user_id, absl::string_view device_id, absl::string_view value,
                  DeviceRecord* d) {
  wire::DeviceRecord p;
  if (!ParseDigits20(value, &d->version) || value.size() < kHeaderBytes ||
      (value[kVersionDigits] != 'o' && value[kVersionDigits] != 'c') ||
      !p.ParseFromArray(value.data() + kHeaderBytes, static_cast<int>(value.size() - kHeaderBytes)) ||
      !InRange(p.platform(), 1, 5) || !InRange(p.inferred_activity(), 1, 2) ||
      !InRange(p.app_activity(), 1, 2) || !InRange(p.manual_activity(), 1, 2)) {
    return false;
  }
  d->user_id = std::string(user_id);
  d->device_id = std::string(device_id);
  d->session_id = p.session_id();
  d->platform = Enum<Platform>(p.platform());
  d->last_signal_ms = {p.last_inferred_ms(), p.last_app_ms(), p.last_manual_ms()};
  d->activity = {Enum<Activity>(p.inferred_activity()), Enum<Activity>(p.app_activity()),
                 Enum<Activity>(p.manual_activity())};
  d->closed = p.closed();
  d->gone = false;
  d->gateway = p.gateway();
  return true;
}

// ---- Connections --------------------------------------------------------------

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

struct RedisConnection {
  redisContext* ctx = nullptr;
  void Drop() {
    if (ctx != nullptr) redisFree(ctx);
    ctx = nullptr;
  }
  ~RedisConnection() { Drop(); }
};

// A write to a socket the server closed raises SIGPIPE, which kills the
// process unless it is handled. hiredis writes with write(2), so, as libpq
// does, SIGPIPE is blocked in the calling thread for the length of an
// exchange, and one that it raised is consumed before it is unblocked. The
// host's disposition of SIGPIPE is left alone.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, &old_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        const timespec zero{0, 0};
        while (sigtimedwait(&pipe, nullptr, &zero) < 0 && errno == EINTR) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t old_;
  bool was_pending_ = false;
};

timeval Tv(int64_t ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

using Command = std::vector<std::string>;

bool IsError(const Reply& r, absl::string_view prefix = {}) {
  return r != nullptr && r->type == REDIS_REPLY_ERROR &&
         absl::string_view(r->str, r->len).substr(0, prefix.size()) == prefix;
}

absl::string_view Str(const redisReply* r) {
  return r->str != nullptr ? absl::string_view(r->str, r->len) : absl::string_view();
}

// The prefix as a SCAN MATCH pattern (glob characters escaped).
std::string GlobEscape(absl::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

using internal::Metric;

class RedisStoreImpl final : public RedisStore {
 public:
  explicit RedisStoreImpl(const RedisStoreOptions& o)
      : options_(o),
        pool_(o.connections),
        seen_key_(absl::StrCat(o.key_prefix, "seen")),
        offsets_key_(absl::StrCat(o.key_prefix, "offsets")) {}

  absl::Status Check() {
    auto conn = pool_.Acquire();
    return Ready(*conn);
  }

  absl::Status Write(const StoreBatch& batch) override {
    if (batch.empty()) return absl::OkStatus();
    std::vector<Command> commands = Commands(batch);
    auto conn = pool_.Acquire();
    const bool was_open = conn->ctx != nullptr;
    absl::Status st = Run(*conn, commands);
    // A connection that broke while it sat idle (a server restart) costs
    // no failed call: once more on a new one (the version rule makes the
    // second sending safe).
    if (!st.ok() && was_open && conn->ctx == nullptr) st = Run(*conn, commands);
    writes_.fetch_add(1, std::memory_order_relaxed);
    if (!st.ok()) write_errors_.fetch_add(1, std::memory_order_relaxed);
    return st;
  }

  absl::Status Load(StoreVisitor* visitor) override {
    if (visitor == nullptr) return absl::InvalidArgumentError("visitor is null");
    auto conn = pool_.Acquire();
    const bool was_open = conn->ctx != nullptr;
    bool visited = false;  // a second try would visit records twice
    absl::Status st = LoadWith(*conn, visitor, &visited);
    if (!st.ok() && was_open && conn->ctx == nullptr && !visited) {
      st = LoadWith(*conn, visitor, &visited);
    }
    return st;
  }

  absl::StatusOr<size_t> SweepSeenBefore(int64_t cutoff_ms) override {
    constexpr int kPage = 256;
    auto conn = pool_.Acquire();
    size_t removed = 0;
    int64_t skip = 0;  // candidates kept (an open device) before this page
    const std::string cutoff = absl::StrCat(cutoff_ms);
    while (true) {
      std::vector<Reply> r;
      absl::Status st = Exchange(*conn,
                                 {{"ZRANGEBYSCORE", seen_key_, "-inf", absl::StrCat("(", cutoff_ms),
                                   "LIMIT", absl::StrCat(skip), absl::StrCat(kPage)}},
                                 &r);
      if (!st.ok()) return st;
      if (r[0]->type != REDIS_REPLY_ARRAY) return Unexpected(*conn, "ZRANGEBYSCORE", r[0]);
      const size_t n = r[0]->elements;
      if (n == 0) break;
      std::vector<Command> sweeps;
      for (size_t i = 0; i < n; ++i) {
        const std::string uid(Str(r[0]->element[i]));
        sweeps.push_back({"EVALSHA", shas_[kSweep], "2", UserKey(uid), seen_key_, uid, cutoff});
      }
      std::vector<Reply> got;
      st = RunScripts(*conn, &sweeps, &got);
      if (!st.ok()) return st;
      size_t here = 0;
      for (const Reply& g : got) here += g->type == REDIS_REPLY_INTEGER && g->integer == 1;
      removed += here;
      skip += static_cast<int64_t>(n - here);
      if (n < static_cast<size_t>(kPage)) break;
    }
    swept_.fetch_add(removed, std::memory_order_relaxed);
    return removed;
  }

  std::string RenderMetrics() const override {
    std::string out;
    auto counter = [&](absl::string_view name, absl::string_view help, uint64_t v) {
      Metric(&out, name, "counter", help, static_cast<double>(v));
    };
    counter("presence_redis_writes_total", "Store::Write calls.", writes_.load());
    counter("presence_redis_write_errors_total", "Store::Write calls that failed.",
            write_errors_.load());
    counter("presence_redis_round_trips_total", "Pipelines sent and answered.", round_trips_.load());
    counter("presence_redis_connects_total", "Connections made (the first ones included).",
            connects_.load());
    counter("presence_redis_connection_errors_total",
            "Connections dropped after an error or a timeout.", connection_errors_.load());
    counter("presence_redis_script_reloads_total",
            "Batches sent again after the server had lost the scripts.", script_reloads_.load());
    counter("presence_redis_records_dropped_total", "Values that Load could not decode.",
            records_dropped_.load());
    counter("presence_redis_users_swept_total", "Users removed by SweepSeenBefore.", swept_.load());
    return out;
  }

 private:
  std::string UserKey(absl::string_view user_id) const {
    return absl::StrCat(options_.key_prefix, "u:", user_id);
  }

  // One EVALSHA per user (its operations in batch order), then the offsets.
  std::vector<Command> Commands(const StoreBatch& batch) const {
    std::vector<Command> out;
    absl::flat_hash_map<absl::string_view, size_t> index;
    auto command_for = [&](const std::string& user_id) -> Command& {
      auto [it, inserted] = index.try_emplace(user_id, out.size());
      if (inserted) {
        out.push_back({"EVALSHA", shas_[kWrite], "2", UserKey(user_id), seen_key_, user_id});
      }
      return out[it->second];
    };
    for (const StoreBatch::Erasure& e : batch.erasures) {
      Command& c = command_for(e.user_id);
      c.insert(c.end(), {"", "e", Digits20(e.floor), "0"});
    }
    for (const UserRecord& u : batch.users) {
      Command& c = command_for(u.user_id);
      c.insert(c.end(), {"u", "w", UserValue(u), absl::StrCat(u.last_seen_ms)});
    }
    for (const DeviceRecord& d : batch.devices) {
      Command& c = command_for(d.user_id);
      const std::string field = absl::StrCat("d", d.device_id);
      if (d.gone) {
        c.insert(c.end(), {field, "g", Digits20(d.version), "0"});
      } else {
        c.insert(c.end(), {field, "w", DeviceValue(d), absl::StrCat(LatestSignal(d))});
      }
    }
    if (!batch.offsets.empty()) {
      Command c = {"EVALSHA", shas_[kOffsets], "1", offsets_key_};
      for (const CommittedOffset& o : batch.offsets) {
        c.push_back(absl::StrCat(o.partition));
        c.push_back(Digits20(o.offset));
      }
      out.push_back(std::move(c));
    }
    return out;
  }

  absl::Status Run(RedisConnection& conn, std::vector<Command>& commands) {
    std::vector<Reply> replies;
    if (auto st = RunScripts(conn, &commands, &replies); !st.ok()) return st;
    for (const Reply& r : replies) {
      if (r->type != REDIS_REPLY_INTEGER) return Unexpected(conn, "EVALSHA", r);
    }
    return absl::OkStatus();
  }

  // Sends the EVALSHA commands; when the server had lost the scripts, loads
  // them and sends them all once more (the version rule makes that safe).
  absl::Status RunScripts(RedisConnection& conn, std::vector<Command>* commands,
                          std::vector<Reply>* replies) {
    if (auto st = Exchange(conn, *commands, replies); !st.ok()) return st;
    bool lost = false;
    for (const Reply& r : *replies) lost |= IsError(r, "NOSCRIPT");
    if (!lost) return absl::OkStatus();
    script_reloads_.fetch_add(1, std::memory_order_relaxed);
    if (auto st = LoadScripts(conn); !st.ok()) return st;
    return Exchange(conn, *commands, replies);
  }

  // Connects when needed: AUTH, SELECT, and the scripts.
  absl::Status Ready(RedisConnection& conn) {
    if (conn.ctx != nullptr) return absl::OkStatus();
    redisContext* ctx = redisConnectWithTimeout(options_.host.c_str(), options_.port,
                                                Tv(options_.connect_timeout_ms));
    if (ctx == nullptr) return absl::ResourceExhaustedError("redis: cannot allocate a context");
    if (ctx->err != 0) {
      std::string why = ctx->errstr;
      redisFree(ctx);
      return absl::UnavailableError(
          absl::StrCat("redis ", options_.host, ":", options_.port, ": ", why));
    }
    redisSetTimeout(ctx, Tv(options_.io_timeout_ms));
    redisEnableKeepAlive(ctx);
    conn.ctx = ctx;
    connects_.fetch_add(1, std::memory_order_relaxed);
    std::vector<Command> setup;
    if (!options_.password.empty()) setup.push_back({"AUTH", options_.password});
    if (options_.database != 0) setup.push_back({"SELECT", absl::StrCat(options_.database)});
    if (!setup.empty()) {
      std::vector<Reply> r;
      if (auto st = Exchange(conn, setup, &r); !st.ok()) return st;
      for (size_t i = 0; i < r.size(); ++i) {
        if (r[i]->type == REDIS_REPLY_ERROR) {
          absl::Status st = absl::UnavailableError(absl::StrCat("redis ", setup[i][0], ": ", Str(r[i].get())));
          conn.Drop();
          return st;
        }
      }
    }
    return LoadScripts(conn);
  }

  absl::Status LoadScripts(RedisConnection& conn) {
    std::vector<Command> load;
    for (int i = 0; i < kScriptCount; ++i) {
      load.push_back({"SCRIPT", "LOAD", ScriptText(static_cast<ScriptId>(i))});
    }
    std::vector<Reply> r;
    if (auto st = Exchange(conn, load, &r); !st.ok()) return st;
    for (int i = 0; i < kScriptCount; ++i) {
      if (r[i]->type != REDIS_REPLY_STRING) return Unexpected(conn, "SCRIPT LOAD", r[i]);
      // A SHA1 of the script's text: the same on every server and every
      // time. Set once, by Open, before any other thread can read it.
      if (shas_[i].empty()) shas_[i] = std::string(Str(r[i].get()));
    }
    return absl::OkStatus();
  }

  // Pipelines `commands` and reads one reply each: one round trip. An error
  // reply is returned as a reply; a connection error drops the connection.
  absl::Status Exchange(RedisConnection& conn, const std::vector<Command>& commands,
                        std::vector<Reply>* replies) {
    replies->clear();
    if (commands.empty()) return absl::OkStatus();
    if (conn.ctx == nullptr) {
      if (auto st = Ready(conn); !st.ok()) return st;
    }
    SigpipeGuard guard;
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const Command& c : commands) {
      argv.clear();
      lens.clear();
      for (const std::string& a : c) {
        argv.push_back(a.data());
        lens.push_back(a.size());
      }
      if (redisAppendCommandArgv(conn.ctx, static_cast<int>(argv.size()), argv.data(),
                                 lens.data()) != REDIS_OK) {
        return Broken(conn);
      }
    }
    round_trips_.fetch_add(1, std::memory_order_relaxed);
    for (size_t i = 0; i < commands.size(); ++i) {
      void* r = nullptr;
      if (redisGetReply(conn.ctx, &r) != REDIS_OK || r == nullptr) return Broken(conn);
      replies->emplace_back(static_cast<redisReply*>(r));
    }
    return absl::OkStatus();
  }

  absl::Status Broken(RedisConnection& conn) {
    std::string why = conn.ctx != nullptr && conn.ctx->err != 0 ? conn.ctx->errstr : "no reply";
    conn.Drop();
    connection_errors_.fetch_add(1, std::memory_order_relaxed);
    return absl::UnavailableError(
        absl::StrCat("redis ", options_.host, ":", options_.port, ": ", why));
  }

  absl::Status Unexpected(RedisConnection& conn, absl::string_view what, const Reply& r) {
    std::string detail = r->type == REDIS_REPLY_ERROR ? std::string(Str(r.get()))
                                                      : absl::StrCat("reply type ", r->type);
    // An error reply (OOM, READONLY replica, a busy script) is the server's
    // state, not the connection's: keep the connection.
    if (r->type == REDIS_REPLY_ERROR) {
      return absl::UnavailableError(absl::StrCat("redis ", what, ": ", detail));
    }
    conn.Drop();
    return absl::InternalError(absl::StrCat("redis ", what, ": unexpected ", detail));
  }

  absl::Status LoadWith(RedisConnection& conn, StoreVisitor* visitor, bool* visited) {
    const std::string pattern = absl::StrCat(GlobEscape(options_.key_prefix), "u:*");
    const size_t user_key_prefix = options_.key_prefix.size() + 2;
    absl::flat_hash_set<std::string> seen;  // SCAN may return a key twice
    std::string cursor = "0";
    do {
      std::vector<Reply> r;
      if (auto st = Exchange(conn, {{"SCAN", cursor, "MATCH", pattern, "COUNT", "512"}}, &r);
          !st.ok()) {
        return st;
      }
      const redisReply* scan = r[0].get();
      if (scan->type != REDIS_REPLY_ARRAY || scan->elements != 2 ||
          scan->element[0]->type != REDIS_REPLY_STRING ||
          scan->element[1]->type != REDIS_REPLY_ARRAY) {
        return Unexpected(conn, "SCAN", r[0]);
      }
      cursor = std::string(Str(scan->element[0]));
      std::vector<std::string> keys;
      for (size_t i = 0; i < scan->element[1]->elements; ++i) {
        std::string key(Str(scan->element[1]->element[i]));
        if (seen.insert(key).second) keys.push_back(std::move(key));
      }
      std::vector<Command> gets;
      for (const std::string& k : keys) gets.push_back({"HGETALL", k});
      std::vector<Reply> hashes;
      if (auto st = Exchange(conn, gets, &hashes); !st.ok()) return st;
      for (size_t i = 0; i < keys.size(); ++i) {
        if (hashes[i]->type != REDIS_REPLY_ARRAY) return Unexpected(conn, "HGETALL", hashes[i]);
        *visited = true;
        VisitUser(absl::string_view(keys[i]).substr(user_key_prefix), hashes[i].get(), visitor);
      }
    } while (cursor != "0");
    std::vector<Reply> r;
    if (auto st = Exchange(conn, {{"HGETALL", offsets_key_}}, &r); !st.ok()) return st;
    if (r[0]->type != REDIS_REPLY_ARRAY) return Unexpected(conn, "HGETALL", r[0]);
    for (size_t i = 0; i + 1 < r[0]->elements; i += 2) {
      uint32_t partition = 0;
      uint64_t offset = 0;
      if (absl::SimpleAtoi(Str(r[0]->element[i]), &partition) &&
          ParseDigits20(Str(r[0]->element[i + 1]), &offset)) {
        *visited = true;
        visitor->OnOffset(CommittedOffset{partition, offset});
      } else {
        records_dropped_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    return absl::OkStatus();
  }

  void VisitUser(absl::string_view user_id, const redisReply* hash, StoreVisitor* visitor) {
    for (size_t i = 0; i + 1 < hash->elements; i += 2) {
      const absl::string_view field = Str(hash->element[i]);
      const absl::string_view value = Str(hash->element[i + 1]);
      if (field == "f") continue;
      bool ok = false;
      if (field == "u") {
        UserRecord u;
        ok = DecodeUser(user_id, value, &u);
        if (ok) visitor->OnUser(u);
      } else if (field.size() > 1 && field[0] == 'd') {
        DeviceRecord d;
        ok = DecodeDevice(user_id, field.substr(1), value, &d);
        if (ok) visitor->OnDevice(d);
      }
      if (!ok) records_dropped_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  const RedisStoreOptions options_;
  adapters::ConnectionPool<RedisConnection> pool_;
  const std::string seen_key_;
  const std::string offsets_key_;
  // The scripts' SHA1s, set by Open's first connection.
  std::string shas_[kScriptCount];

  std::atomic<uint64_t> writes_{0}, write_errors_{0}, round_trips_{0}, connects_{0},
      connection_errors_{0}, script_reloads_{0}, records_dropped_{0}, swept_{0};
};

}  // namespace

absl::StatusOr<std::unique_ptr<RedisStore>> RedisStore::Open(const RedisStoreOptions& options) {
  if (options.key_prefix.empty()) return absl::InvalidArgumentError("key_prefix is empty");
  if (options.connections < 1) return absl::InvalidArgumentError("connections must be > 0");
  if (options.connect_timeout_ms <= 0 || options.io_timeout_ms <= 0) {
    return absl::InvalidArgumentError("timeouts must be > 0");
  }
  if (options.port <= 0 || options.port > 65535) return absl::InvalidArgumentError("bad port");
  auto store = std::make_unique<RedisStoreImpl>(options);
  if (auto st = store->Check(); !st.ok()) return st;
  return std::unique_ptr<RedisStore>(std::move(store));
}

}  // namespace presence
