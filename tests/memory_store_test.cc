// The embedded in-memory Store, HistoryStore and Bus against the conformance
// suites, plus the stable partition mapping.
#include "gtest/gtest.h"
#include "tests/conformance/store_conformance.h"

namespace presence::conformance {
namespace {

struct MemoryStoreFactory {
  static constexpr bool kDurable = false;
  std::unique_ptr<Store> Open() { return NewMemoryStore(); }
};
struct MemoryHistoryFactory {
  static constexpr bool kDurable = false;
  std::unique_ptr<HistoryStore> Open() { return NewMemoryHistoryStore(); }
};
struct InProcessBusFactory {
  std::unique_ptr<Bus> Open() { return NewInProcessBus(4); }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Memory, StoreConformance, ::testing::Types<MemoryStoreFactory>);
INSTANTIATE_TYPED_TEST_SUITE_P(Memory, HistoryConformance, ::testing::Types<MemoryHistoryFactory>);
INSTANTIATE_TYPED_TEST_SUITE_P(InProcess, BusConformance, ::testing::Types<InProcessBusFactory>);

TEST(PartitionFor, IsStableAcrossVersions) {
  // These values are part of the wire contract: a change here breaks every
  // deployment that mixes versions.
  EXPECT_EQ(PartitionFor("alice", 1), 0u);
  EXPECT_EQ(PartitionFor("alice", 16), PartitionFor("alice", 16));
  const uint32_t golden[] = {PartitionFor("alice", 16), PartitionFor("bob", 16),
                             PartitionFor("carol", 64)};
  EXPECT_EQ(golden[0], 9u);
  EXPECT_EQ(golden[1], 5u);
  EXPECT_EQ(golden[2], 40u);
}

TEST(PartitionFor, GrowingThePartitionCountMovesFewUsers) {
  int moved = 0, n = 10000;
  for (int i = 0; i < n; ++i) {
    const std::string u = "user-" + std::to_string(i);
    moved += PartitionFor(u, 10) != PartitionFor(u, 11);
  }
  EXPECT_NEAR(moved, n / 11, n / 50);  // jump hashing moves about 1/(n+1)
}

}  // namespace
}  // namespace presence::conformance
