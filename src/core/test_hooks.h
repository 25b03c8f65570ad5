// Seams for tests that must force one interleaving of two threads (issue 21).
//
// Each hook is null except while a test sets it; the code calls it, when
// set, at the point its comment names, on the thread that reached it; the
// comment also says what the hook may call.
#ifndef PRESENCE_SRC_CORE_TEST_HOOKS_H_
#define PRESENCE_SRC_CORE_TEST_HOOKS_H_

#include <atomic>
#include <cstdint>

#include "presence/types.h"

namespace presence::internal::test_hooks {

// Fanout::Close, each time it is about to wait for a Sink::Deliver to the
// subscriber that is running on another thread. The fan-out's lock is held:
// the hook must not call the fan-out.
inline std::atomic<void (*)(uint64_t subscriber)> close_waiting{nullptr};

// Engine::Signal, Connect and SetOverride, once the call was validated and
// before it takes the user's shard lock (where it checks that the engine
// owns the user's partition). No lock is held: the hook may call the engine.
inline std::atomic<void (*)(uint64_t user_hash)> keyed_accepted{nullptr};

// Engine::Beat and BeatMany, on the lock-free path: the handle's generation
// matched and the device's last time for the source was read; the beat
// writes its time next. No lock is held: the hook may call the engine
// (the beat stays pinned meanwhile, see src/core/device_table.h).
inline std::atomic<void (*)(DeviceHandle handle)> beat_checked{nullptr};

// EngineCore::LoadFromStore, on the thread it starts to apply half of a
// large load, before it applies anything. The caller holds the engine's
// tick lock: the hook must not call the engine.
inline std::atomic<void (*)()> load_helper_started{nullptr};

}  // namespace presence::internal::test_hooks

#endif  // PRESENCE_SRC_CORE_TEST_HOOKS_H_
