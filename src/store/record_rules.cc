#include "src/store/record_rules.h"

#include <algorithm>

namespace presence::internal {

uint64_t RecordSet::FloorOf(const std::string& user_id) const {
  if (floors_.empty()) return 0;  // the usual case: nobody was erased
  auto it = floors_.find(user_id);
  return it == floors_.end() ? 0 : it->second;
}

bool RecordSet::ApplyErasure(const StoreBatch::Erasure& e) {
  bool changed = false;
  if (auto it = held_.find(e.user_id); it != held_.end()) {
    users_count_ -= it->second.user.has_value();
    devices_count_ -= it->second.devices.size();
    held_.erase(it);
    changed = true;
  }
  uint64_t& floor = floors_[e.user_id];
  if (e.floor > floor) {
    floor = e.floor;
    changed = true;
  }
  return changed;
}

bool RecordSet::ApplyUser(UserRecord u) {
  if (u.version < FloorOf(u.user_id)) return false;
  Held& h = held_[u.user_id];
  if (!h.user.has_value()) {
    h.user = std::move(u);
    ++users_count_;
    return true;
  }
  if (u.version <= h.user->version) return false;
  *h.user = std::move(u);
  return true;
}

bool RecordSet::ApplyDevice(DeviceRecord d) {
  if (d.version < FloorOf(d.user_id)) return false;
  auto it = held_.find(d.user_id);
  if (it == held_.end()) {
    if (d.gone) return false;
    it = held_.try_emplace(d.user_id).first;
  }
  Held& h = it->second;
  auto dev = std::find_if(h.devices.begin(), h.devices.end(),
                          [&](const DeviceRecord& x) { return x.device_id == d.device_id; });
  if (dev != h.devices.end() && d.version <= dev->version) return false;
  if (d.gone) {
    if (dev == h.devices.end()) return false;
    h.devices.erase(dev);
    --devices_count_;
    if (h.devices.empty() && !h.user.has_value()) held_.erase(it);
    return true;
  }
  if (dev == h.devices.end()) {
    h.devices.push_back(std::move(d));
    ++devices_count_;
  } else {
    *dev = std::move(d);
  }
  return true;
}

bool RecordSet::ApplyOffset(const CommittedOffset& o) {
  uint64_t& held = offsets_[o.partition];
  if (o.offset <= held) return false;
  held = o.offset;
  return true;
}

void RecordSet::Apply(const StoreBatch& batch) {
  for (const auto& e : batch.erasures) ApplyErasure(e);
  for (const auto& u : batch.users) ApplyUser(u);
  for (const auto& d : batch.devices) ApplyDevice(d);
  for (const auto& o : batch.offsets) ApplyOffset(o);
}

void RecordSet::Visit(StoreVisitor* visitor) const {
  for (const auto& [id, h] : held_) {
    if (h.user.has_value()) visitor->OnUser(*h.user);
  }
  for (const auto& [id, h] : held_) {
    for (const DeviceRecord& d : h.devices) visitor->OnDevice(d);
  }
  for (const auto& [p, off] : offsets_) visitor->OnOffset(CommittedOffset{p, off});
}

namespace {
bool Before(const Transition& a, const Transition& b) {
  return a.at_ms != b.at_ms ? a.at_ms < b.at_ms : a.version < b.version;
}
}  // namespace

bool TransitionLog::Append(const Transition& t) {
  auto& list = by_user_[t.user_id];
  if (list.empty() || (Before(list.back(), t) && list.back().version < t.version)) {
    list.push_back(t);  // the usual case: newer than everything held
    return true;
  }
  for (const Transition& held : list) {
    if (held.version == t.version) return false;
  }
  list.insert(std::upper_bound(list.begin(), list.end(), t, Before), t);
  return true;
}

std::vector<Transition> TransitionLog::Query(absl::string_view user_id, int64_t from_ms,
                                             int64_t to_ms) const {
  std::vector<Transition> out;
  auto it = by_user_.find(user_id);
  if (it == by_user_.end()) return out;
  for (const Transition& t : it->second) {
    if (t.at_ms >= from_ms && t.at_ms <= to_ms) out.push_back(t);
  }
  return out;
}

std::optional<Transition> TransitionLog::LastBefore(absl::string_view user_id,
                                                    int64_t before_ms) const {
  auto it = by_user_.find(user_id);
  if (it == by_user_.end()) return std::nullopt;
  std::optional<Transition> out;
  for (const Transition& t : it->second) {
    if (t.at_ms >= before_ms) break;
    out = t;
  }
  return out;
}

bool TransitionLog::AppendDevice(const DeviceTransition& t) {
  auto& list = devices_by_user_[t.user_id];
  const auto at = [](const DeviceTransition& a, const DeviceTransition& b) {
    return a.at_ms < b.at_ms;
  };
  auto [first, last] = std::equal_range(list.begin(), list.end(), t, at);
  for (auto it = first; it != last; ++it) {
    if (it->device_id == t.device_id && it->session_id == t.session_id && it->event == t.event) {
      return false;
    }
  }
  list.insert(last, t);
  if (list.size() > kMaxDeviceEntriesPerUser) {
    const size_t drop = list.size() - kMaxDeviceEntriesPerUser / 8 * 7;
    list.erase(list.begin(), list.begin() + static_cast<ptrdiff_t>(drop));
    device_entries_dropped_ += drop;
  }
  return true;
}

std::vector<DeviceTransition> TransitionLog::QueryDevice(absl::string_view user_id,
                                                         absl::string_view device_id,
                                                         int64_t from_ms, int64_t to_ms) const {
  std::vector<DeviceTransition> out;
  auto it = devices_by_user_.find(user_id);
  if (it == devices_by_user_.end()) return out;
  for (const DeviceTransition& t : it->second) {
    if (t.device_id == device_id && t.at_ms >= from_ms && t.at_ms <= to_ms) out.push_back(t);
  }
  return out;
}

namespace {

// Drops every entry with at_ms < before_ms from each list (each ordered by
// at_ms), and the lists left empty.
template <typename Map>
void DropListsBefore(Map* by_user, int64_t before_ms) {
  for (auto it = by_user->begin(); it != by_user->end();) {
    auto& list = it->second;
    list.erase(list.begin(), std::find_if(list.begin(), list.end(), [&](const auto& t) {
                 return t.at_ms >= before_ms;
               }));
    if (list.empty()) {
      by_user->erase(it++);
    } else {
      ++it;
    }
  }
}

}  // namespace

void TransitionLog::Erase(absl::string_view user_id) {
  auto it = by_user_.find(user_id);
  if (it != by_user_.end()) by_user_.erase(it);
  auto dit = devices_by_user_.find(user_id);
  if (dit != devices_by_user_.end()) devices_by_user_.erase(dit);
}

void TransitionLog::DropBefore(int64_t before_ms) {
  DropListsBefore(&by_user_, before_ms);
  DropListsBefore(&devices_by_user_, before_ms);
}

size_t TransitionLog::size() const {
  size_t n = 0;
  for (const auto& [u, list] : by_user_) n += list.size();
  return n;
}

size_t TransitionLog::device_size() const {
  size_t n = 0;
  for (const auto& [u, list] : devices_by_user_) n += list.size();
  return n;
}

}  // namespace presence::internal
