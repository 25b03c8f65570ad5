// Fuzz target: docs/design.md rule 8. The input chooses a workload that two
// worlds run alike, except for what a hidden (INVISIBLE) user does in the
// second; tests/two_worlds.h aborts when anything another viewer can read
// differs between them.
#include <cstddef>
#include <cstdint>

#include "tests/two_worlds.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;  // longer workloads add time, not coverage
  presence::testing::BytesChooser choices(data, size);
  presence::testing::TwoWorlds(&choices).Run();
  return 0;
}
