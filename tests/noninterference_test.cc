// DESIGN.md rule 8 over many random workloads: see tests/two_worlds.h. The
// same driver runs as a libFuzzer target (fuzz/noninterference_fuzz.cc), where
// the input chooses the workload.
#include <cstdint>

#include "gtest/gtest.h"
#include "tests/two_worlds.h"

namespace presence::testing {
namespace {

TEST(Noninterference, NothingAHiddenUserDoesReachesAnyoneElse) {
  // Each seed: a workload of 1000 choices (about 120 steps), in two worlds
  // that differ only in what the hidden user does; any difference that
  // others could read aborts with both answers and the workload.
  constexpr uint64_t kSeeds = 10000;
  int64_t steps = 0, hidden_actions = 0;
  for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
    SeededChooser choices(seed, 1000);
    TwoWorlds worlds(&choices, absl::StrCat("seed ", seed));
    steps += worlds.Run();
    hidden_actions += worlds.hidden_actions();
  }
  // The worlds really differed: the hidden user acted, many times per run.
  EXPECT_GT(steps, int64_t{kSeeds} * 100);
  EXPECT_GT(hidden_actions, int64_t{kSeeds} * 20);
}

}  // namespace
}  // namespace presence::testing
