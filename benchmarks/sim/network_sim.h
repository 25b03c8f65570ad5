// A deterministic, seeded network-fault simulator that drives a
// presence::Engine on a ManualClock and measures detection quality after
// Chen, Toueg and Aguilera, "On the quality of service of failure detectors"
// (IEEE ToC 2002). Issue 7.
//
// The simulated world: users with one to three devices. Each device, while
// connected, heartbeats every `heartbeat_ms` through its DeviceHandle
// (Engine::Beat); each heartbeat is delayed by jitter (Gaussian, lognormal or
// Pareto) and may be lost (independently, or in bursts by a Gilbert-Elliott
// channel). Devices live through sessions that end in one of three ways:
//
//   clean   the host sees a logout: Engine::Disconnect(kClean)
//   abrupt  the host sees the socket drop: Engine::Disconnect(kAbrupt)
//   silent  the network vanished: heartbeats stop, the host sees nothing,
//           only the engine's timeout can tell
//
// and come back after an off period with a new session (Engine::Connect).
// Within a session, page reloads (abrupt disconnect, then a new session within
// the grace) and mobile hand-overs (a gap of heartbeats, same session) happen
// as Poisson processes. None of these two end the user's presence: ground
// truth keeps the device connected through them.
//
// The engine is ticked every `tick_ms` (its flush interval), and every
// published ChangeEvent is compared with ground truth, per user (a user is
// truly online while any of its devices is connected):
//
//   detection time T_D    true disconnect of the user's last device -> the
//                         published OFFLINE, per way of ending
//   online latency        true connect -> the published ONLINE
//   false offline         a published OFFLINE while the user is truly online
//                         (a "mistake"); its duration lasts until the
//                         published ONLINE that ends it
//   flap                  a published transition that no true transition
//                         explains (a mistake and its recovery are two)
//
// With SimConfig::probes the engine probes silent devices (docs/design.md
// rule 9): the simulator is its Prober. A probe travels to the device and
// its answer back over the device's link, each leg lost and delayed like a
// heartbeat (the link's loss in its current Gilbert-Elliott state, which
// probes do not step; a delay of the link's jitter, clamped at 0). A device
// answers when the probe reaches it connected and in the probed session; one
// that reaches it mid hand-over waits for the transport's retransmission
// (Workload::handover_holds_probes). The answer reaches the engine through
// Engine::AnswerProbe.
//
// Only what happens after `warmup_s` is measured. Same config and seed: same
// events, same metrics, bit for bit.
//
// Tests use scripted mode (random_workload = false): no random sessions; the
// caller places connects, ends, reloads and hand-overs itself.
#ifndef PRESENCE_BENCHMARKS_SIM_NETWORK_SIM_H_
#define PRESENCE_BENCHMARKS_SIM_NETWORK_SIM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "presence/clock.h"
#include "presence/engine.h"
#include "presence/listener.h"
#include "presence/options.h"
#include "presence/phi_detector.h"
#include "presence/prober.h"

namespace presence::sim {

// Offset of a heartbeat's arrival from its nominal time, in ms. Never earlier
// than half an interval before it.
struct Jitter {
  enum class Kind { kNone, kGaussian, kLogNormal, kPareto };
  Kind kind = Kind::kNone;
  // kGaussian: the standard deviation. kLogNormal: the median delay m (the
  //   offset is m * exp(shape * N(0,1)) - m). kPareto: the scale x_m (the offset
  //   is x_m * (U^(-1/shape) - 1), a Lomax distribution: heavy right tail).
  double scale_ms = 0;
  // kLogNormal: sigma of the logarithm. kPareto: the tail index alpha (> 1).
  double shape = 0;

  static Jitter None() { return {}; }
  static Jitter Gaussian(double sd_ms) { return {Kind::kGaussian, sd_ms, 0}; }
  static Jitter LogNormal(double median_ms, double sigma) { return {Kind::kLogNormal, median_ms, sigma}; }
  static Jitter Pareto(double scale_ms, double alpha) { return {Kind::kPareto, scale_ms, alpha}; }
  std::string Describe() const;
};

// Heartbeat loss: independent (p_good_to_bad = 0, loss_good = p), or a
// two-state Gilbert-Elliott channel stepped once per heartbeat.
struct Loss {
  double loss_good = 0;      // loss probability in the good state
  double loss_bad = 0;       // loss probability in the bad state
  double p_good_to_bad = 0;  // per heartbeat
  double p_bad_to_good = 1;  // per heartbeat; mean burst = 1 / p_bad_to_good heartbeats

  static Loss None() { return {}; }
  static Loss Independent(double p) { return {p, 0, 0, 1}; }
  // Bursty loss averaging `mean_loss`, in bad periods of `mean_burst`
  // heartbeats on average during which each heartbeat is lost with `loss_bad`.
  static Loss GilbertElliott(double mean_loss, double mean_burst, double loss_bad = 0.8);
  double MeanLoss() const;
  std::string Describe() const;
};

struct Link {
  Jitter jitter;
  Loss loss;
};

// A share of the devices, all on the same kind of link.
struct LinkClass {
  double weight = 1;
  Link link;
  std::string name;
};

enum class EndKind : uint8_t { kClean = 0, kAbrupt = 1, kSilent = 2 };
inline constexpr int kEndKinds = 3;
const char* EndKindName(EndKind k);

struct Workload {
  int users = 1000;
  // Devices per user: share of users with 1, 2 and 3 devices.
  double devices_share[3] = {0.6, 0.3, 0.1};
  // Platform of each device: share of web, desktop and mobile.
  double platform_share[3] = {0.4, 0.2, 0.4};
  int64_t heartbeat_ms = 1000;
  // Session (connected) lengths: exponential with this mean.
  double session_mean_s = 600;
  // Off periods: off_min_s plus an exponential with mean off_mean_s.
  double off_min_s = 10;
  double off_mean_s = 120;
  // How sessions end (normalised).
  double end_share[kEndKinds] = {0.4, 0.3, 0.3};
  // Within a session, per device and hour connected. Page reloads happen on
  // every platform, network hand-overs on mobile devices only.
  double reloads_per_hour = 2;
  double handovers_per_hour = 4;
  int64_t reload_gap_min_ms = 200, reload_gap_max_ms = 1000;
  int64_t handover_gap_min_ms = 300, handover_gap_max_ms = 3000;
  // A hand-over keeps the session's connection: a probe that reaches the
  // device mid hand-over is held by the transport and delivered by its first
  // retransmission after the hand-over (TCP's: 200 ms after the first try,
  // the wait doubling each time), a retransmission lost like any message.
  // false: such a probe is lost.
  bool handover_holds_probes = true;
};

struct SimConfig {
  std::string name;
  Workload workload;
  std::vector<LinkClass> links = {LinkClass{}};
  // The engine's options; clock, listener and detector are set by the
  // simulator.
  Options engine;
  // Adaptive detection: a PhiAccrualDetector with these options decides for
  // the devices whose platform bit (1 << platform) is in adaptive_platforms
  // (0: all platforms).
  bool adaptive = false;
  PhiDetectorOptions phi;
  uint32_t adaptive_platforms = 0;
  // Push/pull checks: the simulator is the engine's Prober (engine's
  // probe_* options apply).
  bool probes = false;
  int64_t tick_ms = 100;
  double duration_s = 3600;
  double warmup_s = 120;
  uint64_t seed = 1;
  // false: scripted mode (see Simulator::Script*). Users then all have
  // `scripted_devices_per_user` devices, all web, all initially disconnected.
  bool random_workload = true;
  int scripted_devices_per_user = 1;
  // Keep every published change in Simulator::log().
  bool keep_log = false;
};

// p50, p99 and max of a sample (nearest rank), and its mean.
struct Summary {
  size_t n = 0;
  double mean = 0;
  int64_t p50 = 0, p99 = 0, max = 0;
  static Summary Of(std::vector<int64_t> v);
};

struct Metrics {
  double measured_hours = 0;  // simulated time measured (after warmup)
  double device_hours = 0;    // device time truly connected
  double user_hours = 0;      // users x measured hours
  uint64_t heartbeats_sent = 0, heartbeats_lost = 0;
  uint64_t true_transitions = 0;       // user online<->offline, ground truth
  uint64_t published_transitions = 0;  // published ONLINE<->OFFLINE changes
  std::vector<int64_t> detection_ms[kEndKinds];  // T_D per way of ending
  std::vector<int64_t> online_latency_ms;
  uint64_t false_offlines = 0;
  std::vector<int64_t> mistake_ms;  // durations of ended mistakes
  uint64_t flaps = 0;               // published transitions no true one explains
  uint64_t undetected_outages = 0;  // a true outage over before OFFLINE was published
  uint64_t unshown_sessions = 0;    // a true session over before ONLINE was published
  uint64_t reloads = 0, handovers = 0, sessions_ended[kEndKinds] = {};
  uint64_t engine_false_offlines = 0;  // the engine's own counter (device level)
  // A published ONLINE while truly offline that no true connect explains: a
  // lag, such as the recovery from a false offline held back by min_dwell_ms
  // that lands just after the device's real end.
  uint64_t false_onlines = 0;
  uint64_t engine_errors = 0;  // an engine call that failed (should stay 0)
  // Probes (SimConfig::probes): asked by the engine, and answers sent by
  // devices (each a message on the link); answers the engine applied.
  uint64_t probes_sent = 0, probe_answers_sent = 0, probe_answers_applied = 0;
  double cpu_seconds = 0;              // process CPU spent in Run()

  Summary DetectionAll() const;
  Summary Detection(EndKind k) const { return Summary::Of(detection_ms[static_cast<int>(k)]); }
  Summary OnlineLatency() const { return Summary::Of(online_latency_ms); }
  Summary Mistakes() const { return Summary::Of(mistake_ms); }
  double FalseOfflinesPerDeviceHour() const { return device_hours > 0 ? false_offlines / device_hours : 0; }
  double FalseOfflinesPerTransition() const {
    return true_transitions > 0 ? double(false_offlines) / double(true_transitions) : 0;
  }
  double FlapsPerUserHour() const { return user_hours > 0 ? flaps / user_hours : 0; }
  // Messages beyond heartbeats: probes and their answers.
  double ExtraMessagesPerDeviceHour() const {
    return device_hours > 0 ? double(probes_sent + probe_answers_sent) / device_hours : 0;
  }
};

// One published change, as kept with SimConfig::keep_log.
struct LoggedChange {
  int64_t t_ms;  // since the start of the simulation
  uint32_t user;
  State state;
  Cause cause;
  friend bool operator==(const LoggedChange& a, const LoggedChange& b) {
    return a.t_ms == b.t_ms && a.user == b.user && a.state == b.state && a.cause == b.cause;
  }
};

class Simulator : private ChangeListener, private Prober {
 public:
  // Creates the engine and, in random mode, the initial events.
  explicit Simulator(const SimConfig& config);
  ~Simulator() override;
  Simulator(const Simulator&) = delete;
  Simulator& operator=(const Simulator&) = delete;

  // Scripted mode. Times are ms since the start; devices are numbered
  // user * scripted_devices_per_user + k. A connected device heartbeats every
  // heartbeat_ms from its connect on (its link's jitter and loss apply).
  void ScriptConnect(uint32_t device, int64_t at_ms);
  void ScriptEnd(uint32_t device, int64_t at_ms, EndKind kind);
  void ScriptReload(uint32_t device, int64_t at_ms, int64_t gap_ms);
  void ScriptHandover(uint32_t device, int64_t at_ms, int64_t gap_ms);

  // Runs to duration_s. Call once.
  void Run();

  const Metrics& metrics() const { return metrics_; }
  const std::vector<LoggedChange>& log() const { return log_; }
  Engine& engine() { return *engine_; }
  size_t devices() const;
  int64_t start_ms() const { return kStartMs; }

  static constexpr int64_t kStartMs = 1'000'000;

 private:
  struct Impl;
  void OnChanges(absl::Span<const ChangeEvent> events) override;
  void Probe(const ProbeRequest& request) override;

  SimConfig config_;
  ManualClock clock_{kStartMs};
  std::unique_ptr<PhiAccrualDetector> detector_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Impl> impl_;
  Metrics metrics_;
  std::vector<LoggedChange> log_;
};

// Runs one configuration and returns its metrics.
Metrics RunScenario(const SimConfig& config);

}  // namespace presence::sim

#endif  // PRESENCE_BENCHMARKS_SIM_NETWORK_SIM_H_
