// RemoteFeed: the change events of other engines' users, for this engine's
// fan-out. See include/presence/remote_feed.h for the promises.
//
// Two locks, always taken in this order when both are needed:
//   poll_mu_   serialises Poll, Seek and SetOwnedPartitions (offsets, totals);
//   cache_mu_  guards ownership, the watched set and the cached events; the
//              fan-out takes it (through SnapshotSource) under its own lock,
//              so the feed never calls the fan-out while holding it.
#include "presence/remote_feed.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "presence/wire.h"
#include "src/core/metrics.h"
#include "src/core/mutex.h"

namespace presence {

using internal::Metric;

class RemoteFeed::Impl final : public SnapshotSource {
 public:
  Impl(Bus* bus, Fanout* fanout, const RemoteFeedOptions& options, std::vector<bool> owned,
       std::vector<uint64_t> offsets)
      : bus_(bus),
        fanout_(fanout),
        opts_(options),
        generation_((options.max_unwatched_users + 1) / 2),
        offsets_(std::move(offsets)),
        owned_(std::move(owned)) {}

  // ---- SnapshotSource (called under the fan-out's lock) ----

  std::optional<ChangeEvent> StartWatching(absl::string_view id) override {
    internal::MutexLock lock(&cache_mu_);
    auto it = watched_.try_emplace(std::string(id)).first;
    if (!it->second && !Owned(id)) it->second = TakeUnwatched(id);
    return it->second;
  }

  void StopWatching(absl::string_view id) override {
    internal::MutexLock lock(&cache_mu_);
    auto it = watched_.find(id);
    if (it == watched_.end()) return;
    if (it->second) RememberUnwatched(std::move(*it->second));
    watched_.erase(it);
  }

  void Detach() { fanout_->SetSnapshotSource(nullptr); }

  std::optional<ChangeEvent> Latest(absl::string_view id) const {
    internal::MutexLock lock(&cache_mu_);
    if (Owned(id)) return std::nullopt;
    if (auto it = watched_.find(id); it != watched_.end()) return it->second;
    for (auto* gen : {&recent_, &older_}) {
      if (auto it = gen->find(id); it != gen->end()) return it->second;
    }
    return std::nullopt;
  }

  // ---- Reading ----

  absl::StatusOr<RemoteFeedPollResult> Poll(size_t max) {
    internal::MutexLock lock(&poll_mu_);
    std::vector<bool> owned;
    {
      internal::MutexLock cache_lock(&cache_mu_);
      owned = owned_;
    }
    RemoteFeedPollResult out;
    absl::Status read_error;
    const uint32_t n = static_cast<uint32_t>(owned.size());
    // Start one partition further each call, so that a busy partition does
    // not always use up `max` before the ones after it.
    for (uint32_t i = 0; i < n && out.read < max; ++i) {
      const uint32_t p = (first_ + i) % n;
      if (owned[p]) continue;
      if (absl::Status st = ReadPartition(p, max, &out); !st.ok()) {
        ++totals_.read_errors;
        if (read_error.ok()) read_error = st;
      }
    }
    first_ = n == 0 ? 0 : (first_ + 1) % n;
    totals_.read += out.read;
    totals_.delivered += out.delivered;
    totals_.malformed += out.malformed;
    totals_.unknown_partition += out.unknown_partition;
    if (!read_error.ok()) return read_error;
    return out;
  }

  absl::Status SetOwnedPartitions(absl::Span<const uint32_t> partitions) {
    absl::StatusOr<std::vector<bool>> next = OwnedSet(bus_, partitions);
    if (!next.ok()) return next.status();
    internal::MutexLock lock(&poll_mu_);
    std::vector<bool> before;
    {
      internal::MutexLock cache_lock(&cache_mu_);
      before = owned_;
    }
    // A partition gained is first read to its end: the changes its previous
    // owner published before it let go (or died) reach the fan-out, since
    // the new owner's engine loads those users from the store without
    // publishing them again. A read error is counted; the partition is taken
    // all the same.
    RemoteFeedPollResult drained;
    for (uint32_t p = 0; p < static_cast<uint32_t>(next->size()); ++p) {
      if (!(*next)[p] || before[p]) continue;
      if (!ReadPartition(p, std::numeric_limits<size_t>::max(), &drained).ok()) {
        ++totals_.read_errors;
      }
    }
    totals_.read += drained.read;
    totals_.delivered += drained.delivered;
    totals_.malformed += drained.malformed;
    totals_.unknown_partition += drained.unknown_partition;
    internal::MutexLock cache_lock(&cache_mu_);
    bool gained = false;
    for (size_t p = 0; p < next->size(); ++p) gained |= (*next)[p] && !owned_[p];
    owned_ = *std::move(next);
    if (!gained) return absl::OkStatus();
    // The engine answers for the users of the partitions gained: forget
    // what the bus said about them.
    for (auto& [id, ev] : watched_) {
      if (ev && Owned(id)) ev.reset();
    }
    auto owned_user = [this](const auto& kv) { return Owned(kv.first); };
    absl::erase_if(recent_, owned_user);
    absl::erase_if(older_, owned_user);
    return absl::OkStatus();
  }

  absl::Status Seek(uint32_t partition, uint64_t offset) {
    if (partition >= bus_->partitions()) return NoSuchPartition(partition);
    internal::MutexLock lock(&poll_mu_);
    offsets_[partition] = offset;
    return absl::OkStatus();
  }

  std::vector<uint64_t> Offsets() const {
    internal::MutexLock lock(&poll_mu_);
    return offsets_;
  }

  RemoteFeedStats Stats() const {
    internal::MutexLock lock(&poll_mu_);
    internal::MutexLock cache_lock(&cache_mu_);
    RemoteFeedStats s = totals_;
    s.cached_users = recent_.size() + older_.size();
    for (const auto& [id, ev] : watched_) s.cached_users += ev.has_value();
    return s;
  }

  // The partitions named, as a set indexed by partition.
  static absl::StatusOr<std::vector<bool>> OwnedSet(Bus* bus,
                                                    absl::Span<const uint32_t> partitions) {
    std::vector<bool> owned(bus->partitions(), false);
    for (uint32_t p : partitions) {
      if (p >= owned.size()) return NoSuchPartition(p);
      owned[p] = true;
    }
    return owned;
  }

  static absl::Status NoSuchPartition(uint32_t p) {
    return absl::InvalidArgumentError(absl::StrCat("the bus has no partition ", p));
  }

 private:
  // Reads partition `p` until its end or until `out` holds `max` records.
  absl::Status ReadPartition(uint32_t p, size_t max, RemoteFeedPollResult* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(poll_mu_) {
    while (out->read < max) {
      absl::StatusOr<std::vector<BusRecord>> records =
          bus_->Read(p, offsets_[p], std::min(opts_.read_batch, max - out->read));
      if (!records.ok()) return records.status();
      if (records->empty()) return absl::OkStatus();
      std::vector<ChangeEvent> events;
      for (const BusRecord& r : *records) {
        offsets_[p] = r.offset + 1;
        ++out->read;
        if (r.type == BusRecordType::kSignal && opts_.on_signal) {
          DecodedSignal d;
          if (DecodeSignal(r.payload, &d).ok() && !d.disconnect()) opts_.on_signal(d.signal());
        }
        if (r.type == BusRecordType::kCommand && opts_.on_command) {
          PartitionCommand c;
          if (DecodePartitionCommand(r.payload, &c).ok()) opts_.on_command(c);
        }
        if (r.type != BusRecordType::kChange) continue;
        if (std::optional<ChangeEvent> ev = Check(r, p, out)) events.push_back(*std::move(ev));
      }
      Deliver(std::move(events), out);
    }
    return absl::OkStatus();
  }

  // The change event in `r`, read from partition `p`, or nothing (counted in
  // `out`) when the record is not one.
  std::optional<ChangeEvent> Check(const BusRecord& r, uint32_t p, RemoteFeedPollResult* out) {
    const uint32_t home = PartitionFor(r.key, bus_->partitions());
    if (home != p) {
      ++out->unknown_partition;
      Note(out, absl::FailedPreconditionError(absl::StrCat(
                    "a record from an unknown partition: key '", absl::CHexEscape(r.key),
                    "' belongs to partition ", home, " but was read from partition ", p,
                    " at offset ", r.offset)));
      return std::nullopt;
    }
    absl::StatusOr<ChangeEvent> ev = DecodeChangeEvent(r.payload);
    if (ev.ok() && ev->user_id != r.key) {
      ev = absl::InvalidArgumentError(absl::StrCat("it is for user '",
                                                   absl::CHexEscape(ev->user_id), "' but keyed '",
                                                   absl::CHexEscape(r.key), "'"));
    }
    if (!ev.ok()) {
      ++out->malformed;
      Note(out, absl::InvalidArgumentError(absl::StrCat("malformed change event in partition ", p,
                                                        " at offset ", r.offset, ": ",
                                                        ev.status().message())));
      return std::nullopt;
    }
    return *std::move(ev);
  }

  static void Note(RemoteFeedPollResult* out, absl::Status st) {
    if (out->first_error.ok()) out->first_error = std::move(st);
  }

  // Caches every event, and hands the fan-out those of watched users that
  // are newer than what it was given.
  void Deliver(std::vector<ChangeEvent> events, RemoteFeedPollResult* out) {
    std::vector<ChangeEvent> fresh;
    {
      internal::MutexLock lock(&cache_mu_);
      for (ChangeEvent& ev : events) {
        auto it = watched_.find(ev.user_id);
        if (it == watched_.end()) {
          RememberUnwatched(std::move(ev));
        } else if (!it->second || it->second->version < ev.version) {
          it->second = ev;
          fresh.push_back(std::move(ev));
        }
      }
    }
    // Outside cache_mu_: the fan-out calls StartWatching under its lock.
    if (!fresh.empty()) fanout_->OnChanges(fresh);
    out->delivered += fresh.size();
  }

  bool Owned(absl::string_view id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(cache_mu_) {
    return owned_[PartitionFor(id, static_cast<uint32_t>(owned_.size()))];
  }

  // Keeps the latest event of an unwatched user in the newer generation;
  // when that is full it becomes the older one and the oldest is dropped.
  void RememberUnwatched(ChangeEvent ev) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cache_mu_) {
    if (generation_ == 0) return;
    std::optional<ChangeEvent> held = TakeUnwatched(ev.user_id);
    if (held && held->version > ev.version) ev = *std::move(held);
    std::string id = ev.user_id;
    recent_.insert_or_assign(std::move(id), std::move(ev));
    if (recent_.size() >= generation_) older_ = std::exchange(recent_, {});
  }

  std::optional<ChangeEvent> TakeUnwatched(absl::string_view id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cache_mu_) {
    for (auto* gen : {&recent_, &older_}) {
      auto it = gen->find(id);
      if (it == gen->end()) continue;
      ChangeEvent ev = std::move(it->second);
      gen->erase(it);
      return ev;
    }
    return std::nullopt;
  }

  Bus* const bus_;
  Fanout* const fanout_;
  const RemoteFeedOptions opts_;
  const size_t generation_;  // unwatched users per generation

  mutable internal::Mutex poll_mu_;
  std::vector<uint64_t> offsets_ ABSL_GUARDED_BY(poll_mu_);
  uint32_t first_ ABSL_GUARDED_BY(poll_mu_) = 0;
  RemoteFeedStats totals_ ABSL_GUARDED_BY(poll_mu_);

  mutable internal::Mutex cache_mu_;
  std::vector<bool> owned_ ABSL_GUARDED_BY(cache_mu_);
  // Every user the fan-out watches, with the latest event read for it
  // (remote users only).
  absl::flat_hash_map<std::string, std::optional<ChangeEvent>> watched_ ABSL_GUARDED_BY(cache_mu_);
  absl::flat_hash_map<std::string, ChangeEvent> recent_ ABSL_GUARDED_BY(cache_mu_);
  absl::flat_hash_map<std::string, ChangeEvent> older_ ABSL_GUARDED_BY(cache_mu_);
};

absl::StatusOr<std::unique_ptr<RemoteFeed>> RemoteFeed::Create(Bus* bus, Fanout* fanout,
                                                               absl::Span<const uint32_t> owned,
                                                               const RemoteFeedOptions& options) {
  if (bus == nullptr || fanout == nullptr) {
    return absl::InvalidArgumentError("bus and fanout must not be null");
  }
  if (options.read_batch == 0) return absl::InvalidArgumentError("read_batch must be > 0");
  absl::StatusOr<std::vector<bool>> set = Impl::OwnedSet(bus, owned);
  if (!set.ok()) return set.status();
  std::vector<uint64_t> offsets(bus->partitions(), 0);
  if (!options.from_beginning) {
    for (uint32_t p = 0; p < bus->partitions(); ++p) {
      absl::StatusOr<uint64_t> end = bus->EndOffset(p);
      if (!end.ok()) return end.status();
      offsets[p] = *end;
    }
  }
  std::unique_ptr<RemoteFeed> feed(new RemoteFeed(
      std::make_unique<Impl>(bus, fanout, options, *std::move(set), std::move(offsets))));
  fanout->SetSnapshotSource(feed->impl_.get());
  return feed;
}

RemoteFeed::RemoteFeed(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RemoteFeed::~RemoteFeed() {
  // Detach before the Impl goes: the fan-out would call it.
  if (impl_ != nullptr) impl_->Detach();
}

absl::StatusOr<RemoteFeedPollResult> RemoteFeed::Poll(size_t max_records) {
  return impl_->Poll(max_records);
}
absl::Status RemoteFeed::SetOwnedPartitions(absl::Span<const uint32_t> owned) {
  return impl_->SetOwnedPartitions(owned);
}
absl::Status RemoteFeed::Seek(uint32_t partition, uint64_t offset) {
  return impl_->Seek(partition, offset);
}
std::vector<uint64_t> RemoteFeed::Offsets() const { return impl_->Offsets(); }
std::optional<ChangeEvent> RemoteFeed::Latest(absl::string_view user_id) const {
  return impl_->Latest(user_id);
}
RemoteFeedStats RemoteFeed::Stats() const { return impl_->Stats(); }

std::string RemoteFeed::RenderMetrics() const {
  const RemoteFeedStats s = Stats();
  std::string out;
  auto metric = [&](absl::string_view name, absl::string_view type, absl::string_view help,
                    double v) {
    Metric(&out, name, type, help, v);
  };
  metric("presence_remote_feed_records_total", "counter",
         "Bus records read from partitions other engines own.", s.read);
  metric("presence_remote_feed_delivered_total", "counter",
         "Change events of watched remote users handed to the fan-out.", s.delivered);
  metric("presence_remote_feed_malformed_total", "counter",
         "Change records skipped: the payload or its user is not a valid change event.",
         s.malformed);
  metric("presence_remote_feed_unknown_partition_total", "counter",
         "Records skipped: the key belongs to another partition than the one read.",
         s.unknown_partition);
  metric("presence_remote_feed_read_errors_total", "counter", "Failed bus reads.",
         s.read_errors);
  metric("presence_remote_feed_cached_users", "gauge",
         "Remote users whose latest change is held for snapshots.", s.cached_users);
  return out;
}

}  // namespace presence
