// PartitionFor, the stable user-to-partition mapping of presence/bus.h, and
// the names of the bus's record types.
#include "src/scaleout/partition.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "presence/bus.h"
#include "xxhash.h"

namespace presence {
namespace internal {

uint32_t PartitionOfHash(uint64_t key, uint32_t partitions) {
  if (partitions <= 1) return 0;
  // Jump consistent hashing (Lamping and Veach, 2014): moving from n to n+1
  // partitions moves only 1/(n+1) of the users.
  int64_t b = -1, j = 0;
  while (j < static_cast<int64_t>(partitions)) {
    b = j;
    key = key * 2862933555777941757ULL + 1;
    j = static_cast<int64_t>(static_cast<double>(b + 1) *
                             (static_cast<double>(1LL << 31) / static_cast<double>((key >> 33) + 1)));
  }
  return static_cast<uint32_t>(b);
}

}  // namespace internal

absl::string_view BusRecordTypeName(BusRecordType type) {
  switch (type) {
    case BusRecordType::kSignal: return "signal";
    case BusRecordType::kChange: return "change";
    case BusRecordType::kOverride: return "override";
    case BusRecordType::kErase: return "erase";
    case BusRecordType::kCommand: return "command";
  }
  return {};
}

std::optional<BusRecordType> BusRecordTypeNamed(absl::string_view name) {
  for (auto t : {BusRecordType::kSignal, BusRecordType::kChange, BusRecordType::kOverride,
                 BusRecordType::kErase, BusRecordType::kCommand}) {
    if (name == BusRecordTypeName(t)) return t;
  }
  return std::nullopt;
}

uint32_t PartitionFor(absl::string_view user_id, uint32_t partitions) {
  return internal::PartitionOfHash(XXH3_64bits(user_id.data(), user_id.size()), partitions);
}

std::string PartitionKey(uint32_t partition, uint32_t partitions) {
  if (partition >= std::max(partitions, 1u)) return {};  // no such partition: no key lands there
  // Jump consistent hashing spreads the numbers evenly: about `partitions`
  // tries.
  for (uint64_t n = 0;; ++n) {
    std::string key = absl::StrCat("#", partition, ".", n);
    if (PartitionFor(key, partitions) == partition) return key;
  }
}

}  // namespace presence
