#include "presence/ownership.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "presence/bus.h"
#include "presence/types.h"

namespace presence {

absl::StatusOr<OwnershipTable> OwnershipTable::Create(uint32_t partitions,
                                                      std::vector<PartitionRange> ranges) {
  if (partitions == 0) return absl::InvalidArgumentError("an ownership table needs partitions");
  for (const PartitionRange& r : ranges) {
    if (r.owner.empty() || r.owner.size() > kMaxGatewayIdBytes) {
      return absl::InvalidArgumentError(absl::StrCat("partitions ", r.first, " to ", r.last,
                                                     ": an owner id is 1 to ", kMaxGatewayIdBytes,
                                                     " bytes"));
    }
    if (r.first > r.last || r.last >= partitions) {
      return absl::InvalidArgumentError(
          absl::StrCat("the range ", r.first, " to ", r.last, " of ", r.owner,
                       " is not within partitions 0 to ", partitions - 1));
    }
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const PartitionRange& a, const PartitionRange& b) { return a.first < b.first; });
  uint32_t next = 0;  // the first partition not yet covered
  for (size_t i = 0; i < ranges.size(); ++i) {
    const PartitionRange& r = ranges[i];
    if (r.first > next) {
      return absl::InvalidArgumentError(
          absl::StrCat("gap: partitions ", next, " to ", r.first - 1, " have no owner"));
    }
    if (r.first < next) {
      return absl::InvalidArgumentError(absl::StrCat("overlap: partition ", r.first,
                                                     " is owned by both ", ranges[i - 1].owner,
                                                     " and ", r.owner));
    }
    next = r.last + 1;
  }
  if (next < partitions) {
    return absl::InvalidArgumentError(
        absl::StrCat("gap: partitions ", next, " to ", partitions - 1, " have no owner"));
  }
  OwnershipTable t;
  t.ranges_ = std::move(ranges);
  t.owner_of_.resize(partitions);
  for (uint32_t i = 0; i < t.ranges_.size(); ++i) {
    std::fill(t.owner_of_.begin() + t.ranges_[i].first, t.owner_of_.begin() + t.ranges_[i].last + 1, i);
  }
  return t;
}

absl::StatusOr<OwnershipTable> OwnershipTable::Even(uint32_t partitions,
                                                    const std::vector<std::string>& owners) {
  if (owners.empty() || owners.size() > partitions) {
    return absl::InvalidArgumentError(
        absl::StrCat(owners.size(), " owners for ", partitions, " partitions"));
  }
  absl::flat_hash_set<absl::string_view> seen;
  std::vector<PartitionRange> ranges;
  const uint32_t n = static_cast<uint32_t>(owners.size());
  for (uint32_t i = 0; i < n; ++i) {
    if (!seen.insert(owners[i]).second) {
      return absl::InvalidArgumentError(absl::StrCat("the owner ", owners[i], " is listed twice"));
    }
    // Owner i gets [i*P/n, (i+1)*P/n).
    const uint64_t first = uint64_t{i} * partitions / n, end = uint64_t{i + 1} * partitions / n;
    ranges.push_back(PartitionRange{static_cast<uint32_t>(first), static_cast<uint32_t>(end - 1),
                                    owners[i]});
  }
  return Create(partitions, std::move(ranges));
}

const std::string& OwnershipTable::OwnerOfPartition(uint32_t partition) const {
  return ranges_[owner_of_.at(partition)].owner;
}

const std::string& OwnershipTable::OwnerOf(absl::string_view user_id) const {
  return OwnerOfPartition(PartitionFor(user_id, partitions()));
}

std::vector<uint32_t> OwnershipTable::PartitionsOf(absl::string_view owner) const {
  std::vector<uint32_t> out;
  for (const PartitionRange& r : ranges_) {
    if (r.owner != owner) continue;
    for (uint32_t p = r.first; p <= r.last; ++p) out.push_back(p);
  }
  return out;
}

absl::Status ApplyOwnership(Engine* engine, const OwnershipTable& table, absl::string_view self) {
  if (engine == nullptr) return absl::InvalidArgumentError("engine is null");
  if (table.partitions() != engine->BusPartitions()) {
    return absl::InvalidArgumentError(absl::StrCat("the table has ", table.partitions(),
                                                   " partitions, the engine's bus ",
                                                   engine->BusPartitions()));
  }
  std::vector<uint32_t> release;
  for (uint32_t p : engine->OwnedPartitions()) {
    if (table.OwnerOfPartition(p) != self) release.push_back(p);
  }
  if (!release.empty()) {
    if (auto st = engine->RevokePartitions(release); !st.ok()) return st;
  }
  return engine->AssignPartitions(table.PartitionsOf(self));
}

}  // namespace presence
