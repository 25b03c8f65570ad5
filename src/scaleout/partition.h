// The user-to-partition mapping of presence/bus.h, on a hash already taken.
#ifndef PRESENCE_SRC_SCALEOUT_PARTITION_H_
#define PRESENCE_SRC_SCALEOUT_PARTITION_H_

#include <cstdint>

namespace presence::internal {

// Jump consistent hashing of `hash` (XXH3-64 of the user id, as
// HashUserId) onto `partitions`: PartitionFor(id, n) ==
// PartitionOfHash(HashUserId(id), n).
uint32_t PartitionOfHash(uint64_t hash, uint32_t partitions);

}  // namespace presence::internal

#endif  // PRESENCE_SRC_SCALEOUT_PARTITION_H_
