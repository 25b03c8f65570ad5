#include "presence/region.h"

#include <algorithm>
#include <iterator>
#include <tuple>
#include <utility>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "presence/v1/presence.pb.h"
#include "src/core/bus_batches.h"
#include "src/core/mutex.h"
#include "src/core/validate.h"
#include "src/core/wire_internal.h"

namespace presence {

namespace {

namespace pb = ::presence::v1;

// Stamps stay below 2^63: a remote stamp at or above it is malformed, so that
// `last + 1` can never wrap, in any region alike.
constexpr uint64_t kMaxHlc = uint64_t{1} << 63;
constexpr int64_t kMaxPhysicalMs = int64_t{1} << (63 - kHlcLogicalBits);

absl::Status ValidateRegionId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxRegionIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("region id must be 1 to ", kMaxRegionIdBytes,
                                                   " bytes, got ", id.size()));
  }
  for (char c : id) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(
          "region id must be printable ASCII without spaces");
    }
  }
  return absl::OkStatus();
}

// The merge order: (hlc, region), region ids compared byte by byte.
bool Newer(uint64_t hlc, absl::string_view region, const RegionRecord& than) {
  return std::tie(hlc, region) > std::make_tuple(than.hlc, absl::string_view(than.region));
}

// The event a tombstone carries on the wire and to the listener: OFFLINE,
// version 0 (which marks it), cause kMerge, no devices.
ChangeEvent TombstoneEvent(absl::string_view user_id) {
  ChangeEvent e;
  e.user_id = std::string(user_id);
  e.cause = Cause::kMerge;
  return e;
}

}  // namespace

struct RegionMirror::State {
  // A user's winning record; a tombstone is held (not shown) so that older
  // records never bring the user back.
  struct Entry {
    RegionRecord record;
    bool erased = false;
  };

  RegionMirrorOptions options;

  internal::Mutex poll_mu;  // serialises Poll, so the listener sees merge order
  mutable internal::Mutex mu;
  uint64_t last_hlc ABSL_GUARDED_BY(mu) = 0;
  absl::btree_map<std::string, Entry> view ABSL_GUARDED_BY(mu);
  size_t tombstones ABSL_GUARDED_BY(mu) = 0;  // entries with erased set
  // user id -> encoded MirroredChange, the latest not yet published.
  absl::btree_map<std::string, std::string> pending ABSL_GUARDED_BY(mu);
  // Per inbound bus, per partition: the next offset to read.
  std::vector<std::vector<uint64_t>> offsets ABSL_GUARDED_BY(mu);
  RegionMirrorStats stats ABSL_GUARDED_BY(mu);

  uint64_t SendStamp() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const int64_t now = std::clamp<int64_t>(options.clock->NowMs(), 0, kMaxPhysicalMs - 1);
    last_hlc = std::max(last_hlc + 1, static_cast<uint64_t>(now) << kHlcLogicalBits);
    return last_hlc;
  }

  // Replaces a user's entry, keeping the tombstone count.
  void Set(Entry& entry, RegionRecord record, bool erased) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (erased && !entry.erased) ++tombstones;
    if (!erased && entry.erased) --tombstones;
    entry.record = std::move(record);
    entry.erased = erased;
  }

  // Whether `users` fit in the queue, after one flush if not. The users must
  // be distinct or repeats are counted once.
  absl::Status Admit(absl::Span<const absl::string_view> users)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto fits = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      absl::flat_hash_set<absl::string_view> fresh;  // users not queued yet
      for (absl::string_view u : users) {
        if (!pending.contains(u)) fresh.insert(u);
      }
      return pending.size() + fresh.size() <= options.max_pending;
    };
    if (fits()) return absl::OkStatus();
    (void)FlushLocked();  // make room if the bus is back
    if (fits()) return absl::OkStatus();
    return absl::ResourceExhaustedError(absl::StrCat(
        "region ", options.region_id, ": outbound queue full (", pending.size(),
        " users waiting, max_pending ", options.max_pending, "); the bus is failing"));
  }

  // Publishes the queue in user order; stops at the first failure, keeping
  // the failed batch queued whole (merging is idempotent, so a record it did
  // write is harmless when sent again).
  absl::Status FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    size_t sent = 0;
    absl::Status st = internal::PublishChanges(options.outbound, pending.begin(), pending.end(), &sent);
    pending.erase(pending.begin(), std::next(pending.begin(), static_cast<std::ptrdiff_t>(sent)));
    if (!st.ok()) ++stats.publish_failures;
    return st;
  }

  // Merges one inbound record: true when it changed the view.
  // FailedPrecondition for a region id collision; a malformed record is
  // counted and answers false.
  absl::StatusOr<bool> MergeRemote(const BusRecord& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    pb::MirroredChange m;
    if (r.type != BusRecordType::kChange ||
        !m.ParseFromArray(r.payload.data(), static_cast<int>(r.payload.size())) ||
        m.hlc() == 0 || m.hlc() >= kMaxHlc || !ValidateRegionId(m.region()).ok() ||
        m.event().user_id() != r.key) {
      ++stats.malformed;
      return false;
    }
    if (m.region() == options.region_id) {
      return absl::FailedPreconditionError(absl::StrCat(
          "region id collision: a record on an inbound bus carries this region's id \"",
          options.region_id, "\" (two regions share it, or a bus is wired back to itself)"));
    }
    // A tombstone is taken by its user id alone; a change must decode, and
    // its version must not be 0, which marks a tombstone to the listener.
    absl::StatusOr<ChangeEvent> event = absl::InvalidArgumentError("bad user id");
    if (!m.erased()) {
      event = internal::ChangeEventFromProto(m.event());
    } else if (internal::ValidateUserId(r.key).ok()) {
      event = TombstoneEvent(r.key);
    }
    if (!event.ok() || (!m.erased() && event->version == 0)) {
      ++stats.malformed;
      return false;
    }
    last_hlc = std::max(last_hlc, m.hlc());  // the HLC receive rule
    auto [it, inserted] = view.try_emplace(r.key);
    if (!inserted && !Newer(m.hlc(), m.region(), it->second.record)) {
      ++stats.duplicate_or_stale;
      return false;
    }
    Set(it->second, RegionRecord{*std::move(event), m.hlc(), m.region()}, m.erased());
    ++stats.merged;
    return true;
  }

  // Poll without the listener: takes mu; the events that won go to `won`
  // when there is a listener.
  absl::StatusOr<size_t> PollBuses(std::vector<ChangeEvent>* won) ABSL_LOCKS_EXCLUDED(mu) {
    internal::MutexLock lock(&mu);
    (void)FlushLocked();
    size_t changed = 0;
    for (size_t b = 0; b < options.inbound.size(); ++b) {
      Bus* bus = options.inbound[b];
      std::vector<uint64_t>& next = offsets[b];
      if (next.size() < bus->partitions()) next.resize(bus->partitions(), 0);
      for (uint32_t p = 0; p < next.size(); ++p) {
        for (;;) {  // a bus may answer with fewer records than it holds
          auto records = bus->Read(p, next[p], options.read_batch);
          if (!records.ok()) {
            return absl::Status(records.status().code(),
                                absl::StrCat("inbound bus ", b, " partition ", p, " offset ",
                                             next[p], ": ", records.status().message()));
          }
          if (records->empty()) break;
          for (const BusRecord& r : *records) {
            auto merged = MergeRemote(r);
            if (!merged.ok()) return merged.status();  // the offset stays: sticky
            if (*merged) {
              ++changed;
              if (options.listener != nullptr) won->push_back(view.at(r.key).record.event);
            }
            next[p] = r.offset + 1;
          }
        }
      }
    }
    return changed;
  }
};

RegionMirror::RegionMirror(std::unique_ptr<State> state) : s_(std::move(state)) {}
RegionMirror::~RegionMirror() = default;

absl::StatusOr<std::unique_ptr<RegionMirror>> RegionMirror::Create(
    const RegionMirrorOptions& options) {
  if (auto st = ValidateRegionId(options.region_id); !st.ok()) return st;
  if (options.outbound == nullptr) return absl::InvalidArgumentError("outbound bus is null");
  if (options.max_pending == 0) return absl::InvalidArgumentError("max_pending must be > 0");
  if (options.read_batch == 0) return absl::InvalidArgumentError("read_batch must be > 0");
  absl::flat_hash_set<Bus*> seen = {options.outbound};
  for (Bus* b : options.inbound) {
    if (b == nullptr) return absl::InvalidArgumentError("an inbound bus is null");
    if (!seen.insert(b).second) {
      return absl::InvalidArgumentError(
          "an inbound bus is repeated, or is the outbound bus (a region would read itself)");
    }
  }
  auto s = std::make_unique<State>();
  s->options = options;
  if (s->options.clock == nullptr) s->options.clock = SystemClock();
  {
    internal::MutexLock lock(&s->mu);
    s->offsets.resize(options.inbound.size());
  }
  return std::unique_ptr<RegionMirror>(new RegionMirror(std::move(s)));
}

absl::Status RegionMirror::Mirror(absl::Span<const ChangeEvent> events) {
  // Encode and validate everything first, so that a refusal changes nothing.
  std::vector<pb::MirroredChange> out(events.size());
  std::vector<ChangeEvent> canonical;  // each event as the wire carries it
  canonical.reserve(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    internal::ChangeEventToProto(events[i], /*include_self=*/true, out[i].mutable_event());
    auto e = internal::ChangeEventFromProto(out[i].event());
    if (!e.ok()) return e.status();
    if (e->version == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "user ", e->user_id, ": a change event with version 0 (it marks an erasure)"));
    }
    canonical.push_back(*std::move(e));
    out[i].set_region(s_->options.region_id);
  }
  std::vector<absl::string_view> users;
  users.reserve(canonical.size());
  for (const ChangeEvent& e : canonical) users.push_back(e.user_id);
  internal::MutexLock lock(&s_->mu);
  if (auto st = s_->Admit(users); !st.ok()) return st;
  for (size_t i = 0; i < canonical.size(); ++i) {
    const uint64_t hlc = s_->SendStamp();
    out[i].set_hlc(hlc);
    // A fresh stamp is greater than every stamp seen, so a local change wins.
    std::string user = canonical[i].user_id;
    s_->pending[user] = out[i].SerializeAsString();
    s_->Set(s_->view[user], RegionRecord{std::move(canonical[i]), hlc, s_->options.region_id},
            /*erased=*/false);
    ++s_->stats.local;
  }
  (void)s_->FlushLocked();  // a failure stays queued
  return absl::OkStatus();
}

absl::Status RegionMirror::Erase(absl::string_view user_id) {
  if (auto st = internal::ValidateUserId(user_id); !st.ok()) return st;
  ChangeEvent event = TombstoneEvent(user_id);
  pb::MirroredChange m;
  internal::ChangeEventToProto(event, /*include_self=*/true, m.mutable_event());
  m.set_region(s_->options.region_id);
  m.set_erased(true);
  const absl::string_view users[] = {user_id};
  internal::MutexLock lock(&s_->mu);
  if (auto st = s_->Admit(users); !st.ok()) return st;
  const uint64_t hlc = s_->SendStamp();  // after every record seen: it wins here
  m.set_hlc(hlc);
  const std::string user(user_id);
  s_->pending[user] = m.SerializeAsString();
  s_->Set(s_->view[user], RegionRecord{std::move(event), hlc, s_->options.region_id},
          /*erased=*/true);
  ++s_->stats.local;
  (void)s_->FlushLocked();  // a failure stays queued
  return absl::OkStatus();
}

void RegionMirror::OnChanges(absl::Span<const ChangeEvent> events) {
  // An erasure travels as the mirror's own tombstone (Erase), never as the
  // engine's erasure event: that one answers an erasure already made here
  // or merged from elsewhere, and mirroring it would echo it back.
  std::vector<ChangeEvent> changes;
  for (const ChangeEvent& e : events) {
    if (!e.erased) changes.push_back(e);
  }
  if (changes.empty()) return;
  if (absl::IsResourceExhausted(Mirror(changes))) {
    internal::MutexLock lock(&s_->mu);
    s_->stats.rejected_full += changes.size();
  }
}

void RegionMirror::OnTick(int64_t /*now_ms*/) { (void)Flush(); }

absl::Status RegionMirror::Flush() {
  internal::MutexLock lock(&s_->mu);
  return s_->FlushLocked();
}

absl::StatusOr<size_t> RegionMirror::Poll() {
  internal::MutexLock polling(&s_->poll_mu);
  std::vector<ChangeEvent> won;  // for the listener, delivered without mu
  absl::StatusOr<size_t> changed = s_->PollBuses(&won);
  if (s_->options.listener != nullptr && !won.empty()) s_->options.listener->OnChanges(won);
  return changed;
}

std::optional<RegionRecord> RegionMirror::Get(absl::string_view user_id) const {
  internal::MutexLock lock(&s_->mu);
  auto it = s_->view.find(user_id);
  if (it == s_->view.end() || it->second.erased) return std::nullopt;
  return it->second.record;
}

std::vector<RegionRecord> RegionMirror::View() const {
  internal::MutexLock lock(&s_->mu);
  std::vector<RegionRecord> out;
  out.reserve(s_->view.size() - s_->tombstones);
  for (const auto& [user, entry] : s_->view) {
    if (!entry.erased) out.push_back(entry.record);
  }
  return out;
}

uint64_t RegionMirror::LastHlc() const {
  internal::MutexLock lock(&s_->mu);
  return s_->last_hlc;
}

RegionMirrorStats RegionMirror::stats() const {
  internal::MutexLock lock(&s_->mu);
  RegionMirrorStats st = s_->stats;
  st.pending = s_->pending.size();
  st.tombstones = s_->tombstones;
  return st;
}

const std::string& RegionMirror::region_id() const { return s_->options.region_id; }

}  // namespace presence
