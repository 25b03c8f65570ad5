// File: capi/c_internal.h
//
// The insides of the C ABI's clock and engine handles, for the units of
// capi/ (c_clock.cc, c_engine.cc, c_history.cc, c_fanout.cc, c_common.cc)
// and for in-tree code that must reach the C++ object behind a handle (the
// benchmark that compares a heartbeat through c.h with the C++ call on the
// same engine). Private: not installed, and nothing here is exported from
// libpresence.so.
#ifndef PRESENCE_CAPI_C_INTERNAL_H_
#define PRESENCE_CAPI_C_INTERNAL_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "presence/c.h"
#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/file_store.h"
#include "presence/prober.h"

// Engines and clocks are reference counted, so that the host may destroy
// them in any order: an engine holds its clock, a fan-out its engine. An
// engine owns its file store, if any.
struct presence_clock_t {
  explicit presence_clock_t(int64_t start_ms) : clock(start_ms) {}
  std::atomic<int> refs{1};
  presence::ManualClock clock;
};

// The presence::Prober of an engine whose options name a presence_probe_cb.
class CProber final : public presence::Prober {
 public:
  CProber(presence_probe_cb fn, void* payload) : fn_(fn), payload_(payload) {}
  void Probe(const presence::ProbeRequest& r) override;

 private:
  presence_probe_cb const fn_;
  void* const payload_;
};

struct presence_engine_t {
  std::atomic<int> refs{1};
  presence_clock_t* clock = nullptr;  // a reference, or null (the system clock)
  std::unique_ptr<CProber> prober;    // rep calls it, so it goes before rep
  // Owned when the options chose PRESENCE_STORE_FILE; rep writes to it, so
  // it goes after rep.
  std::unique_ptr<presence::FileStore> file_store;
  std::unique_ptr<presence::Engine> rep;
};

#endif  // PRESENCE_CAPI_C_INTERNAL_H_
