// File: presence/prober.h
//
// presence::Prober is the seam for push/pull checks (docs/design.md rule 9).
// Waiting alone confuses a few lost heartbeats with a dead device, so before
// a silent device is declared DEAD the engine asks the host to check it: a
// probe. The host sends a transport-level check (a WebSocket ping frame, a
// push to a phone) and reports the answer with Engine::AnswerProbe; the
// answer counts as a signal of that device and source.
//
// When the engine probes: a device is SUSPECT when every source that keeps
// it live has been silent for longer than its interval plus
// Options::probe_margin_ms. The engine then probes it, on the next Tick, and
// again every Options::probe_retry_ms while it stays silent, at most
// Options::max_probes times per silence. With the defaults (APP: interval
// 1 s, offline_after 4 s) a silent device is probed at 2, 2.5, 3 and 3.5 s of
// silence. A device is DEAD for silence only when its offline_after passed
// and its probes went unanswered: offline_after stays the upper bound, so a
// probe can only remove a false offline, never delay a true one.
//
// Probes are rate-limited per gateway (Options::max_probes_per_gateway_per_sec);
// a probe over the limit is not sent (presence_probes_throttled_total).
//
// THREAD SAFETY: Probe is called from the thread running Engine::Tick, after
// the tick's work, with no lock of the engine held, one probe at a time. It
// may call any method of the engine except Tick and the destructor
// (AnswerProbe included: a host that knows the answer at once may give it).
// It must not block for long: send the check and return.
//
// LIFESPAN AND OWNERSHIP: the host owns the prober; it must outlive every
// engine that uses it.
#ifndef PRESENCE_PROBER_H_
#define PRESENCE_PROBER_H_

#include <cstdint>

#include "absl/strings/string_view.h"
#include "presence/export.h"
#include "presence/types.h"

namespace presence {

// presence::ProbeRequest: ping device `device_id` of user `user_id`, in
// session `session_id`, and answer with `probe_id`. The views live for the
// duration of the Probe call only.
struct ProbeRequest {
  absl::string_view user_id;
  absl::string_view device_id;
  uint64_t session_id = 0;
  // Never 0; unique within the engine. Engine::AnswerProbe takes it back.
  uint64_t probe_id = 0;
  // The source the answer will count as: the highest-precedence source
  // that keeps the device live.
  Source source = Source::kApp;
  // The gateway that carried the device's last signal ("" when none).
  absl::string_view gateway;
  // 1 for the first probe of this silence, 2 for the first retry, ...
  int attempt = 1;
};

class PRESENCE_EXPORT Prober {
 public:
  virtual ~Prober();
  // Sends the check. Must not block for long.
  virtual void Probe(const ProbeRequest& request) = 0;
};

}  // namespace presence

#endif  // PRESENCE_PROBER_H_
