// Gateway ids interned to an index per device, so that an operator can drain
// every device a gateway carried (docs/design.md section 7) without a string
// per device.
//
// The keyed path (a signal naming a gateway the engine knows) looks the id up
// without a lock, in an immutable snapshot of the name -> index map. Only the
// slow paths take the table's mutex: a signal naming a new gateway (a new
// snapshot is published; the old one is retired) and Tick's Reclaim.
//
// Indexes are reclaimed: a gateway that no device names any more (its pod was
// replaced, its devices expired or moved to another gateway) leaves the map at
// the next Reclaim, and its index is reused once every signal that might have
// looked it up before has been applied. So there is no fixed limit: the
// table holds as many gateways as devices name, plus those retired recently.
//
// Grace: callers look indexes up while pinned (the engine's BeatPin), from the
// lookup until the index is stored on its device under the shard lock, where
// the device counts as a reference (Shard::AddGatewayRefs). An index removed
// from the map in epoch F waits until SlotEpochs::safe passes F; then no
// signal that looked it up is still in flight, and the references are final:
// with none, the index is free; with some (a signal applied it meanwhile), it
// comes back (under its name, or as an alias when the name was interned again
// under another index). Retired snapshots are freed on the same rule.
#ifndef PRESENCE_SRC_CORE_GATEWAY_TABLE_H_
#define PRESENCE_SRC_CORE_GATEWAY_TABLE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "src/core/device_table.h"
#include "src/core/mutex.h"

namespace presence::internal {

class GatewayTable {
 public:
  explicit GatewayTable(const SlotEpochs* epochs)
      : epochs_(epochs), current_(new Snapshot()) {}
  ~GatewayTable() {
    delete current_.load(std::memory_order_relaxed);
    for (auto& r : retired_) delete r.first;
  }
  GatewayTable(const GatewayTable&) = delete;
  GatewayTable& operator=(const GatewayTable&) = delete;

  // Pinned. 0 for an empty id; otherwise the id's index (1 and up), interned
  // on first use. Lock-free when the id is known.
  uint32_t Intern(absl::string_view gateway) {
    if (gateway.empty()) return 0;
    if (uint32_t g = Find(gateway); g != 0) return g;
    internal::MutexLock lock(&mu_);
    const Snapshot* cur = current_.load(std::memory_order_relaxed);
    if (auto it = cur->index.find(gateway); it != cur->index.end()) return it->second;
    uint32_t g;
    if (!free_.empty()) {
      g = free_.back();
      free_.pop_back();
    } else {
      slots_.emplace_back();
      g = static_cast<uint32_t>(slots_.size());
    }
    slots_[g - 1] = Slot{std::string(gateway), SlotState::kMapped, 0};
    Publish([&](Snapshot* s) { s->index.emplace(std::string(gateway), g); });
    return g;
  }

  // Pinned. 0 when unknown. Lock-free.
  uint32_t Find(absl::string_view gateway) const {
    const Snapshot* s = current_.load(std::memory_order_acquire);
    auto it = s->index.find(gateway);
    return it == s->index.end() ? 0 : it->second;
  }

  // The id of index `g` (empty for 0 or a free index).
  std::string Name(uint32_t g) const {
    internal::MutexLock lock(&mu_);
    return g == 0 || g > slots_.size() ? std::string() : slots_[g - 1].name;
  }

  // Every index that devices may carry for `gateway`: its own and its aliases.
  std::vector<uint32_t> IndexesOf(absl::string_view gateway) const {
    internal::MutexLock lock(&mu_);
    std::vector<uint32_t> out;
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].state != SlotState::kFree && slots_[i].name == gateway) {
        out.push_back(static_cast<uint32_t>(i + 1));
      }
    }
    return out;
  }

  // Tick only, after the epoch advanced. `count[g]` is how many devices
  // carried index g when counted (after the epoch advanced; missing: none).
  // Frees what the grace period allows, retires what no device names. The
  // caller counts without holding this table's mutex (the shards take it
  // under their locks, for Name).
  void Reclaim(const std::vector<uint64_t>& count) {
    internal::MutexLock lock(&mu_);
    const uint64_t safe = epochs_->safe.load(std::memory_order_acquire);
    const uint64_t now = epochs_->now.load(std::memory_order_seq_cst);
    for (auto it = retired_.begin(); it != retired_.end();) {
      if (it->second < safe) {
        delete it->first;
        it = retired_.erase(it);
      } else {
        ++it;
      }
    }
    std::vector<uint32_t> unmap;
    std::vector<std::pair<std::string, uint32_t>> remap;
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      const uint32_t g = static_cast<uint32_t>(i + 1);
      const uint64_t n = g < count.size() ? count[g] : 0;
      switch (s.state) {
        case SlotState::kFree:
          break;
        case SlotState::kMapped:
        case SlotState::kAlias:
          if (n == 0) {
            if (s.state == SlotState::kMapped) unmap.push_back(g);
            s.state = SlotState::kLimbo;
            s.retired_epoch = now;
          }
          break;
        case SlotState::kLimbo:
          if (s.retired_epoch >= safe) break;  // a signal may still carry it
          if (n == 0) {
            s = Slot{};
            free_.push_back(g);
          } else {
            remap.emplace_back(s.name, g);  // applied during its grace: back
            s.state = SlotState::kAlias;
          }
          break;
      }
    }
    if (unmap.empty() && remap.empty()) return;
    Publish([&](Snapshot* snap) {
      for (uint32_t g : unmap) snap->index.erase(slots_[g - 1].name);
      for (auto& [name, g] : remap) {
        if (snap->index.emplace(name, g).second) slots_[g - 1].state = SlotState::kMapped;
      }
    });
  }

  // Indexes in use or in their grace period.
  size_t size() const {
    internal::MutexLock lock(&mu_);
    return slots_.size() - free_.size();
  }

 private:
  struct Snapshot {
    absl::flat_hash_map<std::string, uint32_t> index;
  };
  enum class SlotState : uint8_t { kFree, kMapped, kAlias, kLimbo };
  struct Slot {
    std::string name;
    SlotState state = SlotState::kFree;
    uint64_t retired_epoch = 0;
  };

  // Publishes a copy of the current snapshot changed by `edit`; the old one
  // is freed once no pinned lookup can still read it.
  template <typename Edit>
  void Publish(Edit edit) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const Snapshot* old = current_.load(std::memory_order_relaxed);
    auto next = std::make_unique<Snapshot>(*old);
    edit(next.get());
    current_.store(next.release(), std::memory_order_release);
    retired_.emplace_back(old, epochs_->now.load(std::memory_order_seq_cst));
  }

  const SlotEpochs* const epochs_;
  std::atomic<const Snapshot*> current_;
  mutable internal::Mutex mu_;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);  // index g is slots_[g - 1]
  std::vector<uint32_t> free_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<const Snapshot*, uint64_t>> retired_ ABSL_GUARDED_BY(mu_);
};

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_GATEWAY_TABLE_H_
