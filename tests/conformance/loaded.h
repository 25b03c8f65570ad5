// What a Store::Load returned, keyed for comparison in tests.
#ifndef PRESENCE_TESTS_CONFORMANCE_LOADED_H_
#define PRESENCE_TESTS_CONFORMANCE_LOADED_H_

#include <map>
#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "presence/store.h"

namespace presence::conformance {

// Everything a Load returned, keyed for comparison.
struct Loaded : StoreVisitor {
  std::map<std::string, UserRecord> users;
  std::map<std::pair<std::string, std::string>, DeviceRecord> devices;
  std::map<uint32_t, uint64_t> offsets;
  void OnUser(const UserRecord& u) override {
    EXPECT_TRUE(users.emplace(u.user_id, u).second) << "user loaded twice: " << u.user_id;
  }
  void OnDevice(const DeviceRecord& d) override {
    EXPECT_TRUE(devices.emplace(std::make_pair(d.user_id, d.device_id), d).second)
        << "device loaded twice: " << d.user_id << "/" << d.device_id;
  }
  void OnOffset(const CommittedOffset& o) override { offsets[o.partition] = o.offset; }
};

}  // namespace presence::conformance

#endif  // PRESENCE_TESTS_CONFORMANCE_LOADED_H_
