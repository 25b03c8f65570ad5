// A shard's index of its users by id, in 4 bytes a slot.
//
// Open addressing with linear probing. A slot holds a user's index (below
// 2^24 - 1: Device::kMaxUsers) and 8 bits of its id's hash, so a probe
// reads a user record only when those bits match. The table may be of any
// capacity (a hash's home slot is its bits scaled to it) and grows by a
// fifth when it would pass 90% full, so while users come it is 75% to 90%
// full, where one that doubles is 45% to 90%. It never shrinks. An erase moves
// the slots after it back (no tombstones). It keeps no hashes: the caller
// gives a user's (`hash_of`) when the table grows or shifts.
#ifndef PRESENCE_SRC_CORE_USER_INDEX_H_
#define PRESENCE_SRC_CORE_USER_INDEX_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "src/core/prefetch.h"

namespace presence::internal {

class UserIndex {
 public:
  static constexpr uint32_t kNotFound = 0xffffffffu;

  uint32_t size() const { return size_; }

  // The user among those with `hash` that `eq(u)` accepts, or kNotFound.
  template <typename Eq>
  uint32_t Find(uint64_t hash, Eq eq) const {
    if (capacity_ == 0) return kNotFound;
    const uint32_t tag = Tag(hash);
    for (uint32_t i = Home(hash);; i = Next(i)) {
      const uint32_t s = slots_[i];
      if (s == kEmpty) return kNotFound;
      if ((s >> kUserBits) == tag && eq(s & kUserMask)) return s & kUserMask;
    }
  }
  // Starts loading the slots where a lookup of `hash` begins.
  void Prefetch(uint64_t hash) const {
    if (capacity_ != 0) internal::Prefetch(&slots_[Home(hash)]);
  }

  // Adds user u (not in the table) under `hash`. `hash_of(u)`: the hash of
  // any user in the table.
  template <typename HashOf>
  void Insert(uint32_t u, uint64_t hash, HashOf hash_of) {
    if (uint64_t{size_ + 1} * 10 > uint64_t{capacity_} * 9) Grow(hash_of);
    Place(u, hash);
    ++size_;
  }

  // Removes user u, in the table under `hash` (none: changes nothing).
  template <typename HashOf>
  void Erase(uint32_t u, uint64_t hash, HashOf hash_of) {
    if (capacity_ == 0) return;
    uint32_t hole = Home(hash);
    for (; (slots_[hole] & kUserMask) != u; hole = Next(hole)) {
      if (slots_[hole] == kEmpty) return;
    }
    // Moves back each later slot of the run whose home is not between the
    // hole and it (cyclically), so every lookup still passes no empty slot.
    for (uint32_t j = Next(hole); slots_[j] != kEmpty; j = Next(j)) {
      const uint32_t home = Home(hash_of(slots_[j] & kUserMask));
      const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
      if (stays) continue;
      slots_[hole] = slots_[j];
      hole = j;
    }
    slots_[hole] = kEmpty;
    --size_;
  }

 private:
  static constexpr uint32_t kUserBits = 24;
  static constexpr uint32_t kUserMask = (1u << kUserBits) - 1;
  // No user's slot: its user bits are all ones, an index no user has.
  static constexpr uint32_t kEmpty = 0xffffffffu;
  static constexpr uint32_t kFirstCapacity = 16;

  // The shard was chosen by the hash's top bits: these use others.
  static uint32_t Tag(uint64_t hash) { return static_cast<uint32_t>(hash & 0xff); }
  uint32_t Home(uint64_t hash) const {
    return static_cast<uint32_t>(((hash >> 16) & 0xffffffffu) * capacity_ >> 32);
  }
  uint32_t Next(uint32_t i) const { return i + 1 == capacity_ ? 0 : i + 1; }

  void Place(uint32_t u, uint64_t hash) {
    uint32_t i = Home(hash);
    while (slots_[i] != kEmpty) i = Next(i);
    slots_[i] = (Tag(hash) << kUserBits) | u;
  }

  // A table a fifth larger. Hashes the users in index order, where their
  // records lie in memory order.
  template <typename HashOf>
  void Grow(HashOf hash_of) {
    std::vector<uint64_t> present;
    for (uint32_t i = 0; i < capacity_; ++i) {
      if (slots_[i] == kEmpty) continue;
      const uint32_t u = slots_[i] & kUserMask;
      if (u / 64 >= present.size()) present.resize(u / 64 + 1);
      present[u / 64] |= uint64_t{1} << (u % 64);
    }
    capacity_ = capacity_ < kFirstCapacity ? kFirstCapacity : capacity_ + capacity_ / 5;
    slots_.reset(new uint32_t[capacity_]);
    for (uint32_t i = 0; i < capacity_; ++i) slots_[i] = kEmpty;
    for (uint32_t w = 0; w < present.size(); ++w) {
      for (uint64_t bits = present[w]; bits != 0; bits &= bits - 1) {
        const uint32_t u = w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits));
        Place(u, hash_of(u));
      }
    }
  }

  std::unique_ptr<uint32_t[]> slots_;
  uint32_t capacity_ = 0;
  uint32_t size_ = 0;
};

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_USER_INDEX_H_
