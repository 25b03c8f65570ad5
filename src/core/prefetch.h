// Prefetch hints that the compiler keeps.
//
// GCC 12 (Debian 12's) deletes a __builtin_prefetch whose block has no other
// effect: one under an `if`, or one in a loop that does nothing else, as in
// a lookup whose only use is to prefetch what it finds. Its dead-code
// elimination counts the prefetch as no effect at all. Disassembly showed
// the keyed batch's prefetches of the user index and of the user record
// gone, and the lookup waiting on the user record for a quarter of its
// time. Clang keeps them. An empty volatile asm that takes the address
// keeps the block, and with it the prefetch; it emits no instruction.
#ifndef PRESENCE_SRC_CORE_PREFETCH_H_
#define PRESENCE_SRC_CORE_PREFETCH_H_

namespace presence::internal {

// Starts loading the cache line that holds `p`, to read. Any address: a
// prefetch never faults.
inline void Prefetch(const void* p) {
  __builtin_prefetch(p);
  asm volatile("" : : "r"(p));
}

// The same, to write.
inline void PrefetchForWrite(const void* p) {
  __builtin_prefetch(p, 1);
  asm volatile("" : : "r"(p));
}

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_PREFETCH_H_
