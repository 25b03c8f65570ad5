// Publishing queued change events through Bus::PublishBatch, shared by the
// engine's Tick and the region mirror's outbound queue.
#ifndef PRESENCE_SRC_CORE_BUS_BATCHES_H_
#define PRESENCE_SRC_CORE_BUS_BATCHES_H_

#include <cstddef>
#include <vector>

#include "absl/status/status.h"
#include "presence/bus.h"

namespace presence::internal {

// Publishes [first, last), pairs of (user id, encoded change event), in
// order, at most 1,024 per Bus::PublishBatch, and stops at the first batch
// that fails, answering its error. *published is how many, from `first`, are
// written. A failed batch counts as not written, though part of it may be:
// the caller sends it again, which the readers' version checks make harmless.
template <typename It>
absl::Status PublishChanges(Bus* bus, It first, It last, size_t* published) {
  constexpr size_t kBatch = 1024;
  std::vector<BusMessage> batch;
  *published = 0;
  while (first != last) {
    batch.clear();
    for (; first != last && batch.size() < kBatch; ++first) {
      batch.push_back(BusMessage{BusRecordType::kChange, first->first, first->second});
    }
    if (absl::Status st = bus->PublishBatch(batch).status(); !st.ok()) return st;
    *published += batch.size();
  }
  return absl::OkStatus();
}

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_BUS_BATCHES_H_
