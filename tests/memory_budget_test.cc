// Options::memory_budget_bytes charges what the heap really grows (issue 16):
// a mass connect of 10^6 devices, with one and with two devices per user,
// with long ids, and through a gateway, charges within 10% of what malloc
// reports the engine took.
//
// The heap is read with mallinfo2, which only glibc's allocator answers:
// under a sanitizer (its own allocator) the test is skipped.
#include <malloc.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "tests/test_util.h"

namespace presence {
namespace {

using ::presence::testing::Charged;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kOwnAllocator = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kOwnAllocator = true;
#else
constexpr bool kOwnAllocator = false;
#endif
#else
constexpr bool kOwnAllocator = false;
#endif

int64_t HeapInUse() {
  const struct mallinfo2 mi = mallinfo2();
  return static_cast<int64_t>(mi.uordblks + mi.hblkhd);
}

// Connects `devices` devices, `per_user` to a user, and returns (heap grown,
// bytes charged) once a tick published them. Ids are 2 to 9 bytes, as in
// benchmarks/compare_bench, or with `long_ids` too long to live in the
// records (22-byte user ids, 36-byte device ids, as UUIDs). With `gateway`,
// every signal names one, as a server's do (each device keeps its index).
std::pair<int64_t, int64_t> MassConnect(size_t devices, size_t per_user, bool long_ids,
                                        bool gateway) {
  ManualClock clock(1'000'000);
  Options o;
  o.clock = &clock;
  o.memory_budget_bytes = int64_t{1} << 40;
  const int64_t heap0 = HeapInUse();
  std::unique_ptr<Engine> engine = Engine::Create(o).value();
  constexpr size_t kBatch = 1000;
  for (size_t begin = 0; begin < devices; begin += kBatch) {
    std::vector<std::string> users;
    std::vector<std::string> ids;
    std::vector<Signal> batch;
    users.reserve(kBatch);
    ids.reserve(kBatch);
    batch.reserve(kBatch);
    for (size_t d = begin; d < begin + kBatch && d < devices; ++d) {
      if (long_ids) {
        users.push_back(absl::StrCat("user-", 10000000000000000 + d / per_user));
        ids.push_back(absl::StrCat("device-", 1000000000000000000 + d, "-aaaaaaaaa"));
      } else {
        users.push_back(absl::StrCat("u", d / per_user));
        ids.push_back(absl::StrCat("d", d % per_user));
      }
      Signal s;
      s.user_id = users.back();
      s.device_id = ids.back();
      s.session_id = 1;
      s.platform = Platform::kWeb;
      if (gateway) s.gateway = "gateway-1";
      batch.push_back(s);
    }
    const BatchResult r = engine->SignalBatch(batch);
    if (r.applied != batch.size()) {
      ADD_FAILURE() << r.first_error;
      return {0, 0};
    }
  }
  engine->Tick();
  const int64_t grown = HeapInUse() - heap0;
  return {grown, Charged(*engine)};
}

void ExpectWithinTenPercent(size_t devices, size_t per_user, bool long_ids = false,
                            bool gateway = false) {
  if (kOwnAllocator) GTEST_SKIP() << "a sanitizer's allocator does not answer mallinfo2";
  const auto [grown, charged] = MassConnect(devices, per_user, long_ids, gateway);
  ASSERT_GT(grown, 0);
  EXPECT_GE(charged, grown * 9 / 10) << "grown " << grown << " B, charged " << charged << " B";
  EXPECT_LE(charged, grown * 11 / 10) << "grown " << grown << " B, charged " << charged << " B";
  std::printf("%zu devices, %zu per user%s: heap grew %.1f B/device, charged %.1f B/device\n",
              devices, per_user, gateway ? ", through a gateway" : "",
              double(grown) / double(devices), double(charged) / double(devices));
}

TEST(MemoryBudget, ChargesWhatTheHeapGrowsTwoDevicesPerUser) { ExpectWithinTenPercent(1000000, 2); }

TEST(MemoryBudget, ChargesWhatTheHeapGrowsOneDevicePerUser) { ExpectWithinTenPercent(1000000, 1); }

TEST(MemoryBudget, ChargesTheHeapBlocksOfLongIds) { ExpectWithinTenPercent(1000000, 2, true); }

TEST(MemoryBudget, ChargesTheGatewayOfEachDevice) {
  ExpectWithinTenPercent(1000000, 2, /*long_ids=*/false, /*gateway=*/true);
}

}  // namespace
}  // namespace presence
