// File: presence/ownership.h
//
// presence::OwnershipTable says which engine owns each bus partition, for
// deployments whose bus does not assign partitions itself (docs/design.md
// section 6; with Kafka, the consumer group's assignment does). Every
// engine gets the same table (from the host's configuration or its
// coordinator) and applies it with ApplyOwnership:
//
//   auto table = presence::OwnershipTable::Create(
//       16, {{0, 7, "engine-a"}, {8, 15, "engine-b"}}).value();
//   absl::Status st = presence::ApplyOwnership(engine.get(), table, "engine-a");
//
// A table covers every partition exactly once: a gap (a partition nobody
// serves) or an overlap (two engines writing one user) is refused with
// InvalidArgument naming the partition.
//
// THREAD SAFETY: a table is an immutable value; share it freely.
#ifndef PRESENCE_OWNERSHIP_H_
#define PRESENCE_OWNERSHIP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "presence/engine.h"
#include "presence/export.h"

namespace presence {

// Partitions first..last (inclusive) belong to `owner`, an engine's id of
// 1..kMaxGatewayIdBytes bytes.
struct PartitionRange {
  uint32_t first = 0;
  uint32_t last = 0;
  std::string owner;
};

class PRESENCE_EXPORT OwnershipTable {
 public:
  // InvalidArgument when `partitions` is 0, a range is empty, reversed or
  // past the last partition, an owner id is empty or too long, or the
  // ranges leave a gap or overlap.
  static absl::StatusOr<OwnershipTable> Create(uint32_t partitions,
                                               std::vector<PartitionRange> ranges);
  // Contiguous, near-equal ranges for `owners` in the order given (the
  // usual table; InvalidArgument for no owners, more owners than
  // partitions, or a repeated owner).
  static absl::StatusOr<OwnershipTable> Even(uint32_t partitions,
                                             const std::vector<std::string>& owners);

  uint32_t partitions() const { return static_cast<uint32_t>(owner_of_.size()); }
  const std::vector<PartitionRange>& ranges() const { return ranges_; }
  // The owner of a partition (< partitions()).
  const std::string& OwnerOfPartition(uint32_t partition) const;
  // The owner of a user: that of PartitionFor(user_id, partitions()).
  const std::string& OwnerOf(absl::string_view user_id) const;
  // The partitions of `owner`, in order (none for an unknown owner).
  std::vector<uint32_t> PartitionsOf(absl::string_view owner) const;

 private:
  OwnershipTable() = default;
  std::vector<PartitionRange> ranges_;  // sorted by first
  std::vector<uint32_t> owner_of_;      // per partition, an index into ranges_
};

// Makes `engine` own exactly table.PartitionsOf(self): first it lets go of
// the partitions the table gives to others (Engine::RevokePartitions), then
// takes those it newly owns (Engine::AssignPartitions). InvalidArgument when
// the table's partition count differs from the engine's bus; otherwise the
// first error of those calls (call again with the same table to finish).
PRESENCE_EXPORT absl::Status ApplyOwnership(Engine* engine, const OwnershipTable& table,
                                            absl::string_view self);

}  // namespace presence

#endif  // PRESENCE_OWNERSHIP_H_
