#include "sim/network_sim.h"

#include <time.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <queue>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace presence::sim {

namespace {

// xoshiro256**, seeded through splitmix64: fast, and the same on every
// platform (std:: distributions are not), so a seed means the same run.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (uint64_t& x : s_) {
      seed += 0x9e3779b97f4a7c15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      x = z ^ (z >> 31);
    }
  }
  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  // In (0, 1).
  double Uniform() { return (double(Next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double Normal() {  // Box-Muller, one value per call
    const double u1 = Uniform(), u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  double Exp(double mean) { return -mean * std::log(Uniform()); }
  int64_t Between(int64_t lo, int64_t hi) {
    if (hi <= lo) return lo;
    return lo + static_cast<int64_t>(Next() % static_cast<uint64_t>(hi - lo + 1));
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

enum class Ev : uint8_t {
  kHbDecide,    // a heartbeat's nominal send time comes: lost, or in flight
  kHbArrive,    // a heartbeat reaches the host: Engine::Beat
  kSessionEnd,  // arg: EndKind
  kConnect,     // a new session after an off period (or a scripted connect)
  kReload,      // abrupt disconnect; arg: the gap before the new session
  kReloadBack,  // the reloaded page connects with a new session
  kHandover,    // arg: the gap in heartbeats
  kProbeReach,  // a probe reaches the device; arg: the probe id
  kProbeAnswer,  // its answer reaches the host: Engine::AnswerProbe; arg: the probe id
};

// Scripted events skip the tag check.
constexpr uint32_t kAnyTag = 0xffffffffu;

struct Event {
  int64_t t;
  uint64_t seq;
  int64_t arg;
  uint32_t device;
  uint32_t tag;
  Ev type;
};

struct Later {
  bool operator()(const Event& a, const Event& b) const {
    return a.t != b.t ? a.t > b.t : a.seq > b.seq;
  }
};

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

}  // namespace

// ---- Models ------------------------------------------------------------------

std::string Jitter::Describe() const {
  switch (kind) {
    case Kind::kNone:
      return "none";
    case Kind::kGaussian:
      return absl::StrFormat("gauss sd %.0f ms", scale_ms);
    case Kind::kLogNormal:
      return absl::StrFormat("lognormal m %.0f ms s %.2g", scale_ms, shape);
    case Kind::kPareto:
      return absl::StrFormat("pareto xm %.0f ms a %.2g", scale_ms, shape);
  }
  return "?";
}

Loss Loss::GilbertElliott(double mean_loss, double mean_burst, double loss_bad) {
  Loss l;
  l.loss_good = 0;
  l.loss_bad = loss_bad;
  l.p_bad_to_good = 1.0 / std::max(mean_burst, 1.0);
  const double bad_share = std::min(mean_loss / loss_bad, 0.99);
  l.p_good_to_bad = bad_share * l.p_bad_to_good / (1.0 - bad_share);
  return l;
}

double Loss::MeanLoss() const {
  const double bad = p_good_to_bad <= 0 ? 0 : p_good_to_bad / (p_good_to_bad + p_bad_to_good);
  return bad * loss_bad + (1 - bad) * loss_good;
}

std::string Loss::Describe() const {
  if (p_good_to_bad <= 0) {
    return loss_good <= 0 ? "none" : absl::StrFormat("%.3g%% indep.", 100 * loss_good);
  }
  return absl::StrFormat("%.3g%% GE burst %.3g", 100 * MeanLoss(), 1.0 / p_bad_to_good);
}

const char* EndKindName(EndKind k) {
  switch (k) {
    case EndKind::kClean:
      return "clean";
    case EndKind::kAbrupt:
      return "abrupt";
    case EndKind::kSilent:
      return "silent";
  }
  return "?";
}

Summary Summary::Of(std::vector<int64_t> v) {
  Summary s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (int64_t x : v) sum += double(x);
  s.mean = sum / double(v.size());
  auto rank = [&](double q) {
    size_t r = static_cast<size_t>(std::ceil(q * double(v.size())));
    return v[std::min(std::max<size_t>(r, 1), v.size()) - 1];
  };
  s.p50 = rank(0.50);
  s.p99 = rank(0.99);
  s.max = v.back();
  return s;
}

Summary Metrics::DetectionAll() const {
  std::vector<int64_t> all;
  for (const auto& v : detection_ms) all.insert(all.end(), v.begin(), v.end());
  return Summary::Of(std::move(all));
}

// ---- The simulator -------------------------------------------------------------

struct Simulator::Impl {
  struct Device {
    uint32_t user = 0;
    uint32_t life = 0;   // logical session: session ends, reloads, hand-overs
    uint32_t epoch = 0;  // transport session: heartbeats
    uint64_t session = 0;
    DeviceHandle handle;
    int64_t mute_until = 0;  // hand-over: heartbeats due before this are not sent
    std::string id;
    Platform platform = Platform::kWeb;
    uint8_t link = 0;
    bool connected = false;
    bool reloading = false;
    bool bad = false;  // Gilbert-Elliott state
  };
  struct User {
    std::string id;
    uint32_t first_device = 0;
    int connected = 0;
    bool published_on = false;
    bool await_online = false, await_offline = false;
    EndKind end_kind = EndKind::kClean;
    int64_t since = 0;
    int64_t mistake_start = -1;
  };

  explicit Impl(uint64_t seed) : rng(seed) {}

  std::vector<Device> devices;
  std::vector<User> users;
  std::priority_queue<Event, std::vector<Event>, Later> queue;
  uint64_t seq = 0;
  Rng rng;
  int64_t warmup_end = 0, end = 0;
  int64_t integrated_to = 0;
  int64_t connected_devices = 0;
  double device_ms = 0;

  void Push(int64_t t, Ev type, uint32_t device, uint32_t tag, int64_t arg = 0) {
    queue.push(Event{t, seq++, arg, device, tag, type});
  }
  // Whether a message on the device's link is lost, in the channel's
  // current state (heartbeats step the Gilbert-Elliott state first).
  bool Lost(const Device& d, const Link& link) {
    const double p = d.bad ? link.loss.loss_bad : link.loss.loss_good;
    return p > 0 && rng.Uniform() < p;
  }
  // The link's jitter: a heartbeat's offset from its nominal time.
  double SampleJitter(const Link& link) {
    double j = 0;
    switch (link.jitter.kind) {
      case Jitter::Kind::kNone:
        break;
      case Jitter::Kind::kGaussian:
        j = link.jitter.scale_ms * rng.Normal();
        break;
      case Jitter::Kind::kLogNormal:
        j = link.jitter.scale_ms * (std::exp(link.jitter.shape * rng.Normal()) - 1.0);
        break;
      case Jitter::Kind::kPareto:
        j = link.jitter.scale_ms * (std::pow(rng.Uniform(), -1.0 / link.jitter.shape) - 1.0);
        break;
    }
    return std::min(j, 3.6e6);
  }
  // One leg of a probe or its answer: the jitter as a delay, never negative.
  int64_t LegDelay(const Link& link) {
    return std::max<int64_t>(0, static_cast<int64_t>(std::llround(SampleJitter(link))));
  }
  bool Measuring(int64_t t) const { return t >= warmup_end; }
  void IntegrateTo(int64_t t) {
    const int64_t from = std::max(integrated_to, warmup_end);
    if (t > from) device_ms += double(connected_devices) * double(t - from);
    integrated_to = std::max(integrated_to, t);
  }
};

Simulator::Simulator(const SimConfig& config)
    : config_(config), impl_(std::make_unique<Impl>(config.seed)) {
  Options o = config_.engine;
  o.clock = &clock_;
  o.listener = this;
  if (config_.probes) o.prober = this;
  if (config_.adaptive) {
    detector_ = std::make_unique<PhiAccrualDetector>(config_.phi);
    o.detector = detector_.get();
    o.detector_platforms = config_.adaptive_platforms;
    if (o.detector_platforms == 0) {
      for (int p = 1; p <= kPlatformCount; ++p) o.detector_platforms |= 1u << p;
    }
  }
  engine_ = Engine::Create(o).value();

  Impl& m = *impl_;
  const Workload& w = config_.workload;
  m.warmup_end = kStartMs + static_cast<int64_t>(config_.warmup_s * 1000);
  m.end = kStartMs + static_cast<int64_t>(config_.duration_s * 1000);
  m.integrated_to = kStartMs;
  double link_total = 0;
  for (const LinkClass& c : config_.links) link_total += c.weight;
  m.users.resize(static_cast<size_t>(w.users));
  static constexpr Platform kPlatforms[] = {Platform::kWeb, Platform::kDesktop, Platform::kMobile};
  for (int u = 0; u < w.users; ++u) {
    m.users[u].id = absl::StrCat("u", u);
    m.users[u].first_device = static_cast<uint32_t>(m.devices.size());
    int n = config_.scripted_devices_per_user;
    if (config_.random_workload) {
      const double x = m.rng.Uniform();
      n = x < w.devices_share[0] ? 1 : x < w.devices_share[0] + w.devices_share[1] ? 2 : 3;
    }
    for (int k = 0; k < n; ++k) {
      Impl::Device d;
      d.user = static_cast<uint32_t>(u);
      d.id = absl::StrCat("d", k);
      d.platform = Platform::kWeb;
      if (config_.random_workload) {
        const double y = m.rng.Uniform();
        d.platform = y < w.platform_share[0]                          ? kPlatforms[0]
                     : y < w.platform_share[0] + w.platform_share[1] ? kPlatforms[1]
                                                                     : kPlatforms[2];
      }
      double x = m.rng.Uniform() * link_total;
      for (size_t c = 0; c < config_.links.size(); ++c) {
        d.link = static_cast<uint8_t>(c);
        x -= config_.links[c].weight;
        if (x < 0) break;
      }
      m.devices.push_back(std::move(d));
    }
  }
  if (!config_.random_workload) return;
  // Start in the steady state: connected with the long-run share of time.
  const double on = w.session_mean_s / (w.session_mean_s + w.off_min_s + w.off_mean_s);
  for (uint32_t di = 0; di < m.devices.size(); ++di) {
    if (m.rng.Uniform() < on) {
      m.Push(kStartMs + m.rng.Between(0, w.heartbeat_ms - 1), Ev::kConnect, di, 0);
    } else {
      const double off_s = m.rng.Exp(w.off_min_s + w.off_mean_s);
      m.Push(kStartMs + static_cast<int64_t>(off_s * 1000), Ev::kConnect, di, 0);
    }
  }
}

Simulator::~Simulator() = default;

size_t Simulator::devices() const { return impl_->devices.size(); }

void Simulator::ScriptConnect(uint32_t device, int64_t at_ms) {
  impl_->Push(kStartMs + at_ms, Ev::kConnect, device, kAnyTag);
}
void Simulator::ScriptEnd(uint32_t device, int64_t at_ms, EndKind kind) {
  impl_->Push(kStartMs + at_ms, Ev::kSessionEnd, device, kAnyTag, static_cast<int64_t>(kind));
}
void Simulator::ScriptReload(uint32_t device, int64_t at_ms, int64_t gap_ms) {
  impl_->Push(kStartMs + at_ms, Ev::kReload, device, kAnyTag, gap_ms);
}
void Simulator::ScriptHandover(uint32_t device, int64_t at_ms, int64_t gap_ms) {
  impl_->Push(kStartMs + at_ms, Ev::kHandover, device, kAnyTag, gap_ms);
}

void Simulator::Run() {
  Impl& m = *impl_;
  Metrics& mx = metrics_;
  const Workload& w = config_.workload;
  const int64_t h = w.heartbeat_ms;
  const bool random = config_.random_workload;
  const double cpu0 = CpuSeconds();

  auto user_online = [&](Impl::User& u, int64_t t) {
    if (m.Measuring(t)) ++mx.true_transitions;
    if (!u.published_on) {
      u.await_online = true;
      u.since = t;
    } else if (u.await_offline) {
      if (m.Measuring(u.since)) ++mx.undetected_outages;
    }
    u.await_offline = false;
  };
  auto user_offline = [&](Impl::User& u, int64_t t, EndKind kind) {
    if (m.Measuring(t)) ++mx.true_transitions;
    if (u.published_on) {
      u.await_offline = true;
      u.since = t;
      u.end_kind = kind;
    } else {
      if (u.mistake_start >= 0) {  // shown offline already: the mistake is over
        if (m.Measuring(u.mistake_start)) mx.mistake_ms.push_back(t - u.mistake_start);
        u.mistake_start = -1;
      }
      if (u.await_online && m.Measuring(u.since)) ++mx.unshown_sessions;
    }
    u.await_online = false;
  };
  auto schedule_heartbeat = [&](uint32_t di, int64_t nominal) {
    m.Push(nominal - h / 2, Ev::kHbDecide, di, m.devices[di].epoch, nominal);
  };
  auto connect = [&](uint32_t di, int64_t t, bool new_life) {
    Impl::Device& d = m.devices[di];
    ++d.epoch;
    if (new_life) ++d.life;
    ++d.session;
    d.reloading = false;
    Signal s;
    s.user_id = m.users[d.user].id;
    s.device_id = d.id;
    s.session_id = d.session;
    s.platform = d.platform;
    absl::StatusOr<DeviceHandle> handle = engine_->Connect(s);
    if (handle.ok()) {
      d.handle = *handle;
    } else {
      ++mx.engine_errors;
    }
    schedule_heartbeat(di, t + h);
    if (!d.connected) {
      d.connected = true;
      m.IntegrateTo(t);
      ++m.connected_devices;
      if (m.users[d.user].connected++ == 0) user_online(m.users[d.user], t);
    }
    if (new_life && random) {
      const double len_s = std::max(1.0, m.rng.Exp(w.session_mean_s));
      double x = m.rng.Uniform() * (w.end_share[0] + w.end_share[1] + w.end_share[2]);
      int kind = 0;
      while (kind < kEndKinds - 1 && x >= w.end_share[kind]) x -= w.end_share[kind++];
      m.Push(t + static_cast<int64_t>(len_s * 1000), Ev::kSessionEnd, di, d.life, kind);
      if (w.reloads_per_hour > 0) {
        m.Push(t + static_cast<int64_t>(m.rng.Exp(3600.0 / w.reloads_per_hour) * 1000), Ev::kReload,
               di, d.life, m.rng.Between(w.reload_gap_min_ms, w.reload_gap_max_ms));
      }
      if (w.handovers_per_hour > 0 && d.platform == Platform::kMobile) {
        m.Push(t + static_cast<int64_t>(m.rng.Exp(3600.0 / w.handovers_per_hour) * 1000),
               Ev::kHandover, di, d.life,
               m.rng.Between(w.handover_gap_min_ms, w.handover_gap_max_ms));
      }
    }
  };

  auto process = [&](const Event& ev) {
    Impl::Device& d = m.devices[ev.device];
    const int64_t t = ev.t;
    switch (ev.type) {
      case Ev::kHbDecide: {
        if (ev.tag != d.epoch || !d.connected || d.reloading) return;
        const int64_t nominal = ev.arg;
        schedule_heartbeat(ev.device, nominal + h);
        if (nominal < d.mute_until) return;  // mid hand-over: nothing is sent
        const Link& link = config_.links[d.link].link;
        if (m.Measuring(t)) ++mx.heartbeats_sent;
        if (link.loss.p_good_to_bad > 0) {
          if (d.bad) {
            if (m.rng.Uniform() < link.loss.p_bad_to_good) d.bad = false;
          } else if (m.rng.Uniform() < link.loss.p_good_to_bad) {
            d.bad = true;
          }
        }
        if (m.Lost(d, link)) {
          if (m.Measuring(t)) ++mx.heartbeats_lost;
          return;
        }
        const double j = m.SampleJitter(link);
        const int64_t arrival = std::max(t, nominal + static_cast<int64_t>(std::llround(j)));
        m.Push(arrival, Ev::kHbArrive, ev.device, d.epoch);
        return;
      }
      case Ev::kHbArrive:
        if (ev.tag != d.epoch || !d.connected || d.reloading) return;
        if (!engine_->Beat(d.handle).ok()) ++mx.engine_errors;
        return;
      case Ev::kSessionEnd: {
        if ((ev.tag != kAnyTag && ev.tag != d.life) || !d.connected) return;
        EndKind kind = static_cast<EndKind>(ev.arg);
        ++d.life;
        ++d.epoch;
        if (d.reloading) {
          kind = EndKind::kAbrupt;  // already disconnected abruptly; the grace runs out
        } else if (kind != EndKind::kSilent) {
          const DisconnectKind dk =
              kind == EndKind::kClean ? DisconnectKind::kClean : DisconnectKind::kAbrupt;
          if (!engine_->Disconnect(d.handle, dk).ok()) ++mx.engine_errors;
        }
        d.reloading = false;
        d.connected = false;
        if (m.Measuring(t)) ++mx.sessions_ended[static_cast<int>(kind)];
        m.IntegrateTo(t);
        --m.connected_devices;
        if (--m.users[d.user].connected == 0) user_offline(m.users[d.user], t, kind);
        if (random) {
          const double off_s = w.off_min_s + m.rng.Exp(w.off_mean_s);
          m.Push(t + static_cast<int64_t>(off_s * 1000), Ev::kConnect, ev.device, d.life);
        }
        return;
      }
      case Ev::kConnect:
        if (ev.tag != kAnyTag && ev.tag != d.life) return;
        if (d.connected) return;
        connect(ev.device, t, /*new_life=*/true);
        return;
      case Ev::kReload:
        if ((ev.tag != kAnyTag && ev.tag != d.life) || !d.connected) return;
        if (!d.reloading) {
          if (m.Measuring(t)) ++mx.reloads;
          if (!engine_->Disconnect(d.handle, DisconnectKind::kAbrupt).ok()) ++mx.engine_errors;
          ++d.epoch;
          d.reloading = true;
          m.Push(t + ev.arg, Ev::kReloadBack, ev.device, d.life);
        }
        if (random && ev.tag != kAnyTag) {
          m.Push(t + static_cast<int64_t>(m.rng.Exp(3600.0 / w.reloads_per_hour) * 1000), Ev::kReload,
                 ev.device, d.life, m.rng.Between(w.reload_gap_min_ms, w.reload_gap_max_ms));
        }
        return;
      case Ev::kReloadBack:
        if (ev.tag != d.life || !d.connected || !d.reloading) return;
        connect(ev.device, t, /*new_life=*/false);
        return;
      case Ev::kProbeReach: {
        // Answered only by the session probed, connected, and not mid
        // hand-over (its network is gone then).
        if (ev.tag != d.epoch || !d.connected || d.reloading) return;
        const Link& link = config_.links[d.link].link;
        if (t < d.mute_until) {
          if (!w.handover_holds_probes) return;
          // The transport retransmits 200 ms after this try, then waiting
          // twice as long each time; the first try after the hand-over
          // crosses the link again.
          int64_t wait = 200, at = t + wait;
          while (at < d.mute_until) at += (wait *= 2);
          if (!m.Lost(d, link)) m.Push(at + m.LegDelay(link), Ev::kProbeReach, ev.device, d.epoch, ev.arg);
          return;
        }
        if (m.Measuring(t)) ++mx.probe_answers_sent;
        if (m.Lost(d, link)) return;
        m.Push(t + m.LegDelay(link), Ev::kProbeAnswer, ev.device, kAnyTag, ev.arg);
        return;
      }
      case Ev::kProbeAnswer: {
        const absl::Status st = engine_->AnswerProbe(static_cast<uint64_t>(ev.arg));
        if (st.ok()) {
          if (m.Measuring(t)) ++mx.probe_answers_applied;
        } else if (!absl::IsFailedPrecondition(st)) {  // late answers are expected
          ++mx.engine_errors;
        }
        return;
      }
      case Ev::kHandover:
        if ((ev.tag != kAnyTag && ev.tag != d.life) || !d.connected) return;
        if (m.Measuring(t)) ++mx.handovers;
        d.mute_until = std::max(d.mute_until, t + ev.arg);
        if (random && ev.tag != kAnyTag) {
          m.Push(t + static_cast<int64_t>(m.rng.Exp(3600.0 / w.handovers_per_hour) * 1000),
                 Ev::kHandover, ev.device, d.life,
                 m.rng.Between(w.handover_gap_min_ms, w.handover_gap_max_ms));
        }
        return;
    }
  };

  for (int64_t tick = kStartMs + config_.tick_ms; tick <= m.end; tick += config_.tick_ms) {
    while (!m.queue.empty() && m.queue.top().t <= tick) {
      const Event ev = m.queue.top();
      m.queue.pop();
      clock_.Set(ev.t);
      process(ev);
    }
    clock_.Set(tick);
    engine_->Tick();
  }
  m.IntegrateTo(m.end);
  mx.cpu_seconds = CpuSeconds() - cpu0;
  mx.measured_hours = double(m.end - m.warmup_end) / 3.6e6;
  mx.device_hours = m.device_ms / 3.6e6;
  mx.user_hours = mx.measured_hours * double(m.users.size());
  // The engine's own false-offline counter, from its metrics.
  for (absl::string_view line : absl::StrSplit(engine_->RenderMetrics(), '\n')) {
    if (absl::ConsumePrefix(&line, "presence_false_offlines_total ")) {
      absl::SimpleAtoi(line, &mx.engine_false_offlines);
    }
  }
}

void Simulator::Probe(const ProbeRequest& r) {
  Impl& m = *impl_;
  const int64_t t = clock_.NowMs();
  uint32_t ui = 0, k = 0;
  std::from_chars(r.user_id.data() + 1, r.user_id.data() + r.user_id.size(), ui);
  std::from_chars(r.device_id.data() + 1, r.device_id.data() + r.device_id.size(), k);
  const uint32_t di = m.users[ui].first_device + k;
  Impl::Device& d = m.devices[di];
  if (m.Measuring(t)) ++metrics_.probes_sent;
  // A probe of an older session finds no one; one that is lost never arrives.
  if (r.session_id != d.session) return;
  const Link& link = config_.links[d.link].link;
  if (m.Lost(d, link)) return;
  m.Push(t + m.LegDelay(link), Ev::kProbeReach, di, d.epoch, static_cast<int64_t>(r.probe_id));
}

void Simulator::OnChanges(absl::Span<const ChangeEvent> events) {
  Impl& m = *impl_;
  Metrics& mx = metrics_;
  for (const ChangeEvent& e : events) {
    uint32_t ui = 0;
    std::from_chars(e.user_id.data() + 1, e.user_id.data() + e.user_id.size(), ui);
    Impl::User& u = m.users[ui];
    const int64_t t = e.published_at_ms;
    if (config_.keep_log) log_.push_back(LoggedChange{t - kStartMs, ui, e.state, e.cause});
    const bool on = e.state != State::kOffline;
    if (on == u.published_on) continue;
    u.published_on = on;
    const bool measuring = m.Measuring(t);
    if (measuring) ++mx.published_transitions;
    if (!on) {
      if (u.await_offline) {
        if (m.Measuring(u.since)) {
          mx.detection_ms[static_cast<int>(u.end_kind)].push_back(t - u.since);
        }
        u.await_offline = false;
      } else {
        if (measuring) ++mx.flaps;
        if (u.connected > 0) {
          if (measuring) ++mx.false_offlines;
          u.mistake_start = t;
        }
      }
    } else {
      if (u.await_online) {
        if (m.Measuring(u.since)) mx.online_latency_ms.push_back(t - u.since);
        u.await_online = false;
      } else {
        if (measuring) ++mx.flaps;
        if (u.mistake_start >= 0) {
          if (m.Measuring(u.mistake_start)) mx.mistake_ms.push_back(t - u.mistake_start);
          u.mistake_start = -1;
        } else if (measuring) {
          ++mx.false_onlines;
        }
      }
    }
  }
}

Metrics RunScenario(const SimConfig& config) {
  Simulator sim(config);
  sim.Run();
  return sim.metrics();
}

}  // namespace presence::sim
