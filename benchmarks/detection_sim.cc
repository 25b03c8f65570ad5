// detection_sim: detection quality under jitter and loss, fixed thresholds
// against the phi-accrual detector (issue 7). Runs the scenarios of
// benchmarks/RESULTS.md ("Detection quality") on the simulator in
// benchmarks/sim/, prints a Markdown table, and with --sweep writes the data
// of the T_D / false-offline plot (benchmarks/detection.sh draws it).
//
// With --probes it runs only the comparison of push/pull checks (docs/design.md
// rule 9): each probe population with and without probes, side by side, and
// with --sweep the offline_after sweep of both for the plot.
//
//   detection_sim [--users N] [--hours H] [--seed S] [--sweep DIR] [--table FILE]
//                 [--quick] [--only NAME] [--probes] [--probe-margin MS]
//                 [--probe-retry MS] [--max-probes N] [--handovers PER_HOUR]
//                 [--handover-drops-probes] [--offline-after MS]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "sim/network_sim.h"

namespace presence::sim {
namespace {

struct Flags {
  int users = 2000;
  double hours = 2;
  uint64_t seed = 7;
  std::string sweep_dir;
  std::string table_file;
  std::string only;
  bool quick = false;
  bool probes = false;
  // The probe schedule (Options::probe_margin_ms, probe_retry_ms, max_probes).
  int64_t probe_margin_ms = Options().probe_margin_ms;
  int64_t probe_retry_ms = Options().probe_retry_ms;
  int max_probes = Options().max_probes;
  // Hand-overs per mobile device-hour (Workload::handovers_per_hour).
  double handovers_per_hour = Workload().handovers_per_hour;
  // Workload::handover_holds_probes.
  bool handover_holds_probes = Workload().handover_holds_probes;
  // The engine's offline_after for app signals (0: the engine's default).
  int64_t offline_after_ms = 0;
};

struct Population {
  std::string name;
  std::string description;
  std::vector<LinkClass> links;
};

std::vector<Population> Populations() {
  return {
      {"ideal", "no loss, no jitter", {LinkClass{1, Link{Jitter::None(), Loss::None()}, ""}}},
      {"gauss200-2%", "Gaussian jitter sd 200 ms, 2% independent loss",
       {LinkClass{1, Link{Jitter::Gaussian(200), Loss::Independent(0.02)}, ""}}},
      {"pareto-2%", "Pareto jitter (x_m 100 ms, alpha 2.5), 2% independent loss",
       {LinkClass{1, Link{Jitter::Pareto(100, 2.5), Loss::Independent(0.02)}, ""}}},
      {"lognormal-2%", "lognormal jitter (median 100 ms, sigma 1), 2% independent loss",
       {LinkClass{1, Link{Jitter::LogNormal(100, 1.0), Loss::Independent(0.02)}, ""}}},
      {"bursty-2%", "Gaussian sd 100 ms, Gilbert-Elliott loss 2% in bursts of 2 (80% lost in a burst)",
       {LinkClass{1, Link{Jitter::Gaussian(100), Loss::GilbertElliott(0.02, 2, 0.8)}, ""}}},
      {"regimes-2%",
       "Gaussian sd 100 ms; Gilbert-Elliott with long regimes: bad periods of 60 heartbeats on "
       "average losing 30%, good ones losing nothing; 2% on average",
       {LinkClass{1, Link{Jitter::Gaussian(100), Loss::GilbertElliott(0.02, 60, 0.3)}, ""}}},
      {"mixed",
       "70% good links (Gaussian sd 50 ms, 0.2% loss), 30% bad (Pareto 100 ms/2.5, GE 5% in bursts of 2)",
       {LinkClass{0.7, Link{Jitter::Gaussian(50), Loss::Independent(0.002)}, "good"},
        LinkClass{0.3, Link{Jitter::Pareto(100, 2.5), Loss::GilbertElliott(0.05, 2, 0.8)}, "bad"}}},
  };
}

// Adaptive detection for web and desktop devices; mobile ones (which hand
// over between networks) keep the fixed bound.
constexpr uint32_t kNotMobile =
    (1u << static_cast<int>(Platform::kWeb)) | (1u << static_cast<int>(Platform::kDesktop));

SimConfig Base(const Flags& f, const Population& p) {
  SimConfig c;
  c.name = p.name;
  c.links = p.links;
  c.workload.users = f.users;
  c.duration_s = f.hours * 3600 + 120;
  c.warmup_s = 120;
  c.seed = f.seed;
  c.engine.probe_margin_ms = f.probe_margin_ms;
  c.engine.probe_retry_ms = f.probe_retry_ms;
  c.engine.max_probes = f.max_probes;
  c.workload.handovers_per_hour = f.handovers_per_hour;
  c.workload.handover_holds_probes = f.handover_holds_probes;
  if (f.offline_after_ms > 0) {
    c.engine.app.offline_after_ms = f.offline_after_ms;
    c.engine.manual.offline_after_ms = f.offline_after_ms;
  }
  return c;
}

std::string Ms(int64_t v) { return absl::StrFormat("%.2f", v / 1000.0); }

// Writes the table to --table's file, if any; false when it cannot.
bool WriteTable(const Flags& f, const std::string& table) {
  if (f.table_file.empty()) return true;
  FILE* out = std::fopen(f.table_file.c_str(), "w");
  if (out == nullptr) return false;
  std::fputs(table.c_str(), out);
  std::fclose(out);
  return true;
}

std::string Row(const std::string& scenario, const std::string& detector, const Metrics& m) {
  const Summary silent = m.Detection(EndKind::kSilent);
  const Summary all = m.DetectionAll();
  const Summary on = m.OnlineLatency();
  const Summary mis = m.Mistakes();
  return absl::StrFormat(
      "| %s | %s | %s / %s / %s | %s / %s | %d / %d / %d | %.4f | %.2f | %llu | %s | %.4f | %.1f%% |",
      scenario, detector, Ms(silent.p50), Ms(silent.p99), Ms(silent.max), Ms(all.p99),
      Ms(all.max), on.p50, on.p99, on.max, m.FalseOfflinesPerDeviceHour(),
      1e4 * m.FalseOfflinesPerTransition(), (unsigned long long)m.false_offlines,
      mis.n ? Ms(mis.p50) : std::string("-"), m.FlapsPerUserHour(),
      m.heartbeats_sent ? 100.0 * double(m.heartbeats_lost) / double(m.heartbeats_sent) : 0.0);
}

const char* kHeader =
    "| scenario | detector | T_D silent p50 / p99 / max (s) | T_D all p99 / max (s) | online p50 / "
    "p99 / max (ms) | false offl. / device-h | per 10^4 transitions | false offl. | mistake p50 (s) | "
    "flaps / user-h | hb lost |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";

// Push/pull checks (docs/design.md rule 9): the same links and seed without
// and with probes (by default at 2, 2.5, 3 and 3.5 s of silence), side by side.
const char* kProbeHeader =
    "| scenario | probes | T_D silent p50 / p99 / max (s) | T_D all p99 (s) | false offl. / "
    "device-h | per 10^4 transitions | false offl. | probes / device-h | answers / device-h | "
    "extra messages / device-h | heartbeats / device-h |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";

// "at 2, 2.5, 3, 3.5 s": when a device silent since 0 is probed (h = 1 s).
std::string ProbeSchedule(const Flags& f) {
  std::string out = "at";
  for (int k = 0; k < f.max_probes; ++k) {
    out += absl::StrFormat("%s %g", k == 0 ? "" : ",",
                           (1000 + f.probe_margin_ms + k * f.probe_retry_ms) / 1000.0);
  }
  return out + " s";
}

std::string ProbeRow(const Flags& f, const std::string& scenario, bool probes, const Metrics& m) {
  const Summary silent = m.Detection(EndKind::kSilent);
  const double dh = m.device_hours > 0 ? m.device_hours : 1;
  return absl::StrFormat(
      "| %s | %s | %s / %s / %s | %s | %.4f | %.2f | %llu | %.1f | %.1f | %.1f | %.0f |", scenario,
      probes ? ProbeSchedule(f) : std::string("none"), Ms(silent.p50), Ms(silent.p99), Ms(silent.max),
      Ms(m.DetectionAll().p99), m.FalseOfflinesPerDeviceHour(),
      1e4 * m.FalseOfflinesPerTransition(), (unsigned long long)m.false_offlines,
      m.probes_sent / dh, m.probe_answers_sent / dh, m.ExtraMessagesPerDeviceHour(),
      m.heartbeats_sent / dh);
}

int ProbeMain(const Flags& f) {
  std::string table = std::string(kProbeHeader) + "\n";
  std::printf("%s\n", kProbeHeader);
  std::fflush(stdout);
  for (const Population& p : Populations()) {
    if (p.name != "gauss200-2%" && p.name != "bursty-2%") continue;
    if (!f.only.empty() && f.only != p.name) continue;
    for (bool probes : {false, true}) {
      SimConfig c = Base(f, p);
      c.probes = probes;
      const Metrics m = RunScenario(c);
      if (m.engine_errors != 0) {
        std::fprintf(stderr, "%s: %llu engine calls failed\n", p.name.c_str(),
                     (unsigned long long)m.engine_errors);
        return 1;
      }
      const std::string row = ProbeRow(f, p.name, probes, m);
      std::printf("%s\n", row.c_str());
      std::fflush(stdout);
      table += row + "\n";
    }
  }
  if (!WriteTable(f, table)) return 1;
  if (f.sweep_dir.empty()) return 0;
  // T_D against false offlines, offline_after from 2 to 5 s, without and
  // with probes: the curve of today beside the one with probes.
  for (const Population& p : Populations()) {
    if (p.name != "gauss200-2%" && p.name != "bursty-2%") continue;
    if (!f.only.empty() && f.only != p.name) continue;
    const std::string path = f.sweep_dir + "/probes-" + p.name + ".dat";
    FILE* out = std::fopen(path.c_str(), "w");
    if (out == nullptr) return 1;
    std::fprintf(out,
                 "# %s: %s\n# probes offline_after_ms td_mean_ms td_p50_ms td_p99_ms "
                 "false_per_dev_h false_per_1e4_trans false_offlines device_hours "
                 "extra_msgs_per_dev_h\n",
                 p.name.c_str(), p.description.c_str());
    for (bool probes : {false, true}) {
      for (int64_t after : {2500, 3000, 3500, 4000, 4500, 5000}) {
        SimConfig c = Base(f, p);
        c.probes = probes;
        c.engine.app.offline_after_ms = after;
        c.engine.manual.offline_after_ms = after;
        const Metrics m = RunScenario(c);
        const Summary s = m.Detection(EndKind::kSilent);
        std::fprintf(out, "%s %lld %.1f %lld %lld %.6f %.4f %llu %.1f %.1f\n",
                     probes ? "probes" : "none", (long long)after, s.mean, (long long)s.p50,
                     (long long)s.p99, m.FalseOfflinesPerDeviceHour(),
                     1e4 * m.FalseOfflinesPerTransition(), (unsigned long long)m.false_offlines,
                     m.device_hours, m.ExtraMessagesPerDeviceHour());
        std::fflush(out);
      }
      std::fprintf(out, "\n\n");
    }
    std::fclose(out);
  }
  return 0;
}

int Main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char* name) -> const char* {
      if (std::strcmp(argv[i], name) == 0 && i + 1 < argc) return argv[++i];
      return nullptr;
    };
    if (const char* v = arg("--users")) {
      f.users = std::atoi(v);
    } else if (const char* v = arg("--hours")) {
      f.hours = std::atof(v);
    } else if (const char* v = arg("--seed")) {
      f.seed = std::strtoull(v, nullptr, 10);
    } else if (const char* v = arg("--sweep")) {
      f.sweep_dir = v;
    } else if (const char* v = arg("--table")) {
      f.table_file = v;
    } else if (const char* v = arg("--only")) {
      f.only = v;
    } else if (const char* v = arg("--probe-margin")) {
      f.probe_margin_ms = std::atoll(v);
    } else if (const char* v = arg("--probe-retry")) {
      f.probe_retry_ms = std::atoll(v);
    } else if (const char* v = arg("--max-probes")) {
      f.max_probes = std::atoi(v);
    } else if (const char* v = arg("--handovers")) {
      f.handovers_per_hour = std::atof(v);
    } else if (const char* v = arg("--offline-after")) {
      f.offline_after_ms = std::atoll(v);
    } else if (std::strcmp(argv[i], "--handover-drops-probes") == 0) {
      f.handover_holds_probes = false;
    } else if (std::strcmp(argv[i], "--probes") == 0) {
      f.probes = true;
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      f.quick = true;
      f.users = 200;
      f.hours = 0.25;
    } else {
      std::fprintf(stderr,
                   "usage: detection_sim [--users N] [--hours H] [--seed S] [--sweep DIR] "
                   "[--table FILE] [--only SCENARIO] [--quick] [--probes] [--probe-margin MS] "
                   "[--probe-retry MS] [--max-probes N] [--handovers PER_HOUR] "
                   "[--handover-drops-probes] [--offline-after MS]\n");
      return 2;
    }
  }
  // Options the engine refuses are a clear error here, not an abort mid-run.
  if (const absl::Status st = Engine::Create(Base(f, Populations().front()).engine).status();
      !st.ok()) {
    std::fprintf(stderr, "detection_sim: %s\n", st.ToString().c_str());
    return 2;
  }
  if (f.probes) return ProbeMain(f);
  const PhiDetectorOptions phi_default;
  std::string table = std::string(kHeader) + "\n";
  std::printf("%s\n", kHeader);
  std::fflush(stdout);
  double cpu = 0, device_hours = 0;
  for (const Population& p : Populations()) {
    if (!f.only.empty() && f.only != p.name) continue;
    SimConfig fixed = Base(f, p);
    SimConfig adaptive = fixed;
    adaptive.adaptive = true;
    SimConfig fixed_mobile = adaptive;
    fixed_mobile.adaptive_platforms = kNotMobile;
    const Metrics mf = RunScenario(fixed);
    const Metrics ma = RunScenario(adaptive);
    const Metrics mm = RunScenario(fixed_mobile);
    cpu += mf.cpu_seconds + ma.cpu_seconds + mm.cpu_seconds;
    device_hours += mf.device_hours + ma.device_hours + mm.device_hours;
    std::vector<std::string> rows = {
          Row(p.name, "fixed 4 s", mf),
          Row(p.name, absl::StrFormat("phi %.3g, all", phi_default.threshold), ma),
          Row(p.name, absl::StrFormat("phi %.3g, web+desktop", phi_default.threshold), mm)};
    if (p.name == "gauss200-2%") {
      // The same link with heartbeats twice as often: what the 1-in-10^4 target takes.
      SimConfig half = Base(f, p);
      half.workload.heartbeat_ms = 500;
      half.engine.app.interval_ms = 500;
      half.engine.manual.interval_ms = 500;
      const Metrics mh = RunScenario(half);
      cpu += mh.cpu_seconds;
      device_hours += mh.device_hours;
      rows.push_back(Row(p.name, "fixed 4 s, h = 0.5 s", mh));
    }
    for (const std::string& row : rows) {
      std::printf("%s\n", row.c_str());
      table += row + "\n";
    }
    std::fflush(stdout);
  }
  std::fprintf(stderr, "scenarios: %.0f device-hours simulated in %.1f CPU s\n", device_hours, cpu);
  if (!WriteTable(f, table)) return 1;
  if (f.sweep_dir.empty()) return 0;

  // The sweep: for the bursty and the mixed populations, fixed thresholds
  // against the detector at several phi (bounded by the default 4 s).
  for (const Population& p : Populations()) {
    if (p.name != "bursty-2%" && p.name != "regimes-2%" && p.name != "mixed") continue;
    if (!f.only.empty() && f.only != p.name) continue;
    const std::string path = f.sweep_dir + "/sweep-" + p.name + ".dat";
    FILE* out = std::fopen(path.c_str(), "w");
    if (out == nullptr) return 1;
    std::fprintf(out,
                 "# %s: %s\n# detector param td_mean_ms td_p50_ms td_p99_ms false_per_dev_h "
                 "false_per_1e4_trans false_offlines device_hours\n",
                 p.name.c_str(), p.description.c_str());
    auto emit = [&](const char* kind, double param, const Metrics& m) {
      const Summary s = m.Detection(EndKind::kSilent);
      std::fprintf(out, "%s %g %.1f %lld %lld %.6f %.4f %llu %.1f\n", kind, param, s.mean,
                   (long long)s.p50, (long long)s.p99, m.FalseOfflinesPerDeviceHour(),
                   1e4 * m.FalseOfflinesPerTransition(), (unsigned long long)m.false_offlines,
                   m.device_hours);
      std::fflush(out);
      std::fprintf(stderr, "  %s %s %g: T_D mean %.0f p99 %lld ms, %.4f false/device-h (%llu)\n",
                   p.name.c_str(), kind, param, s.mean, (long long)s.p99,
                   m.FalseOfflinesPerDeviceHour(), (unsigned long long)m.false_offlines);
    };
    for (int64_t after : {2000, 2500, 3000, 3500, 4000, 4500, 5000}) {
      SimConfig c = Base(f, p);
      c.engine.app.offline_after_ms = after;
      c.engine.manual.offline_after_ms = after;
      emit("fixed", double(after), RunScenario(c));
    }
    std::fprintf(out, "\n\n");
    for (uint32_t platforms : {0u, kNotMobile}) {
      for (double phi : {2.0, 3.0, 4.0, 5.0, 6.0, 8.0}) {
        SimConfig c = Base(f, p);
        c.adaptive = true;
        c.adaptive_platforms = platforms;
        c.phi.threshold = phi;
        emit(platforms == 0 ? "phi-all" : "phi-web+desktop", phi, RunScenario(c));
      }
      std::fprintf(out, "\n\n");
    }
    std::fclose(out);
  }
  return 0;
}

}  // namespace
}  // namespace presence::sim

int main(int argc, char** argv) { return presence::sim::Main(argc, argv); }
