// PartitionFor, the stable user-to-partition mapping of presence/bus.h, and
// the names of the bus's record types.
#include "src/scaleout/partition.h"

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
  }
  return {};
}

std::optional<BusRecordType> BusRecordTypeNamed(absl::string_view name) {
  for (auto t : {BusRecordType::kSignal, BusRecordType::kChange, BusRecordType::kOverride,
                 BusRecordType::kErase}) {
    if (name == BusRecordTypeName(t)) return t;
  }
  return std::nullopt;
}

uint32_t PartitionFor(absl::string_view user_id, uint32_t partitions) {
  return internal::PartitionOfHash(XXH3_64bits(user_id.data(), user_id.size()), partitions);
}

}  // namespace presence
