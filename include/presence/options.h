// File: presence/options.h
//
// presence::Options configures an Engine. It is a plain struct: every field
// has a working default, written next to it with when to change it. The
// defaults implement docs/design.md section 2 (online at the next flush, offline in
// under 5 s, no flapping on a reload).
#ifndef PRESENCE_OPTIONS_H_
#define PRESENCE_OPTIONS_H_

#include <cstddef>
#include <cstdint>

#include "presence/export.h"

namespace presence {

class Bus;
class Clock;
class ChangeListener;
class HistoryStore;
class OfflineDetector;
class Prober;
class Store;

// presence::SourcePolicy: how often a source is expected to signal, and how
// long a device kept alive only by it survives silence.
struct SourcePolicy {
  // Expected interval between signals. A device silent for longer than this
  // is SUSPECT (internal: others still see it live).
  int64_t interval_ms = 1000;
  // A device whose last signal from this source is older than this no longer
  // counts as live through this source. Default: 3 missed intervals of 1 s,
  // so DEAD at 4 s.
  int64_t offline_after_ms = 4000;
};

// The most probes Options::max_probes may ask for per silence.
inline constexpr int kMaxProbes = 8;

struct Options {
  // Source of time. Null: presence::SystemClock(). Tests and simulations pass
  // a ManualClock. Not owned; must outlive the engine.
  Clock* clock = nullptr;

  // Receives published changes from Tick(). Null: changes are still computed,
  // versioned and counted, but delivered to no one. Not owned.
  ChangeListener* listener = nullptr;

  // Number of shards (rounded up to a power of two, at most 256). Each shard
  // has its own lock; signals for users in different shards never contend.
  // 0: 16. Raise it when many host threads feed one engine.
  int shards = 0;

  // Liveness per source (docs/design.md rule 1). APP and MANUAL signals come from
  // the client about once a second; INFERRED ones (mobile background tasks)
  // far less often, so they decay on a slower clock.
  SourcePolicy inferred{60000, 240000};
  SourcePolicy app{1000, 4000};
  SourcePolicy manual{1000, 4000};

  // An abrupt disconnect keeps the device live this long, so that a page
  // reload or a network hand-over shows nothing (docs/design.md rule 1).
  int64_t reconnect_grace_ms = 1500;

  // At most one published change per user per min_dwell_ms (docs/design.md rule
  // 7). A change that comes sooner is held back, and the latest state is
  // published when the dwell ends. 0 disables dwell; at most 2^30 (12 days).
  int64_t min_dwell_ms = 1000;

  // A device kept alive only by INFERRED signals counts as AWAY; set true to
  // let an INFERRED signal that says ACTIVE make it ONLINE (docs/design.md rule 2).
  bool inferred_can_be_online = false;

  // An override only shows while the user has a live device: a user with DND
  // and no device is OFFLINE (docs/design.md rule 3). Set false to show overrides
  // regardless.
  bool override_requires_live_device = true;

  // Signals stamped more than this ahead of the engine's clock are rejected
  // (InvalidArgument): a client clock far in the future would otherwise keep
  // a device alive for ever. At most 2^30.
  int64_t max_future_skew_ms = 5000;
  // Signals stamped more than this before the engine's clock are rejected
  // (InvalidArgument). Must be at least the largest offline_after_ms.
  int64_t max_signal_age_ms = 300000;

  // A DEAD device's record is kept this long, so that late signals from its
  // old session are recognised as stale, a quick return counts as a false
  // offline, and its handle can revive it. After that it is freed and its
  // handle answers NotFound.
  int64_t dead_retention_ms = 300000;

  // A user with no device and no override is forgotten after this long; Get
  // then answers known=false. (Long-term last-seen lives in the history.)
  int64_t user_retention_ms = 24 * 3600 * 1000;

  // A device that died by timeout or abrupt disconnect and comes back within
  // this window is counted as a false offline (metrics, docs/design.md section 7).
  int64_t false_offline_window_ms = 30000;

  // Most devices one user may have at once (live or recently dead). Connect
  // past it answers ResourceExhausted.
  int max_devices_per_user = 64;

  // Most overrides stacked on one user; past it SetOverride answers
  // ResourceExhausted.
  int max_overrides_per_user = 16;

  // Flood limit: most signals one device may have accepted per second (of
  // the engine's clock), heartbeats on handles included. Past it, signals
  // answer ResourceExhausted and are counted as dropped ("rate_limited");
  // the device's state is kept. 0: no limit.
  int max_signals_per_device_per_sec = 20;

  // Global memory budget, in bytes, for users and devices (each device is
  // charged kDeviceChargeBytes and each user kUserChargeBytes, engine.h,
  // plus the heap block of an id too long to live in its record).
  // When a new device or user would pass it, the signal that would create it
  // answers ResourceExhausted ("memory budget reached") and nothing is
  // created; nothing held is ever evicted to make room, and live devices
  // keep working. 0: no budget.
  int64_t memory_budget_bytes = 0;

  // Adaptive detection (docs/design.md rule 6). Null: fixed thresholds. When set,
  // it decides for devices whose platform bit is set in detector_platforms
  // (bit (1 << platform)); answers are clamped to
  // [detector_floor_ms, offline_after_ms]. Not owned.
  OfflineDetector* detector = nullptr;
  uint32_t detector_platforms = 0;
  int64_t detector_floor_ms = 2000;

  // Push/pull checks (docs/design.md rule 9, presence/prober.h). Null: the
  // engine only waits. When set, a device whose every live source has been
  // silent past its interval plus probe_margin_ms is probed, then again every
  // probe_retry_ms while it stays silent, at most max_probes times per
  // silence (defaults: at 2, 2.5, 3 and 3.5 s of silence with APP's 1 s
  // interval; benchmarks/RESULTS.md compares schedules);
  // an answer (Engine::AnswerProbe) counts as a signal. offline_after stays
  // the upper bound. Not owned.
  Prober* prober = nullptr;
  int64_t probe_margin_ms = 1000;  // >= 0
  int64_t probe_retry_ms = 500;    // > 0
  int max_probes = 4;              // 1 to kMaxProbes
  // Most probes sent per second for the devices of one gateway (devices
  // whose signals named no gateway share one budget). A probe past it is
  // not sent and counted (presence_probes_throttled_total). 0: no limit.
  int max_probes_per_gateway_per_sec = 1000;

  // ---- Durable state (docs/design.md section 5). None is owned; each must
  // outlive the engine. ----

  // Write-through: on each Tick, every user and device that changed is
  // written here before any of its changes is published; a failed write
  // publishes nothing of that shard and is retried on the next Tick. Engine
  // Create loads what the store holds (a rebuild), as do Rebuild and
  // AssignPartitions (the partitions taken); a load of 65,536 records or
  // more, with more than one shard on a machine of more than one core,
  // applies them on two threads, the caller's and one it starts for the
  // load, each taking half of the shards. Heartbeats on handles
  // that change nothing but the time are not written one by one: after a
  // restart such a device is live again with its next signal. Null: memory
  // only.
  Store* store = nullptr;
  // The audit trail: every published transition is appended here after the
  // store write. Null: no history (Engine::History answers
  // FailedPrecondition).
  HistoryStore* history = nullptr;
  // Published change events go to this bus (keyed by user), and
  // Engine::ConsumeBus applies the signals found on it. A change event the
  // bus refuses waits, in order, and is published first on the next Tick
  // (presence_bus_backlog). Null: no bus.
  Bus* bus = nullptr;
  // Where change events go instead, when set: a bus of their own, with as
  // many partitions as `bus`, so that readers of the changes (the
  // RemoteFeeds of gateways) fetch no signals, and the engines that consume
  // the signals fetch no changes (docs/scale-out.md, "Two topics"). Null:
  // `bus` carries both.
  Bus* change_bus = nullptr;
  // With a bus: true, the engine owns every partition of it (one engine);
  // false, it starts owning none, loads nothing, and serves the partitions
  // that Engine::AssignPartitions gives it (docs/design.md section 6).
  bool owns_all_partitions = true;
  // Transitions older than this, the users' and their devices', are dropped
  // from the history (checked about once a minute on Tick). 0: kept for ever.
  int64_t history_retention_ms = int64_t{30} * 24 * 3600 * 1000;

  // ---- Overload (docs/design.md section 7; docs/operations.md "Overload") ----
  // A tick is overloaded when it took longer than overload_tick_budget_ms on
  // the engine's clock (listeners, so the fan-out's flush, included), when a
  // store write failed in it, or when the bus or history backlog holds more
  // than overload_backlog_bound entries after it. After overload_enter_ticks
  // overloaded ticks in a row the engine goes one step down its overload
  // ladder (Engine::OverloadLevel: 1 longer flush interval, 2 large topics to
  // counts, 3 subscribers to polling; the fan-out applies them), and after
  // overload_exit_ticks healthy ticks in a row one step back.
  // 0 budget: tick time is not a trigger.
  int64_t overload_tick_budget_ms = 100;
  size_t overload_backlog_bound = 10000;
  int overload_enter_ticks = 3;
  int overload_exit_ticks = 50;
};

}  // namespace presence

#endif  // PRESENCE_OPTIONS_H_
