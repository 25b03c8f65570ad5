#!/usr/bin/env bash
# Detection quality under jitter and loss (issue 7): builds detection_sim,
# runs every scenario with fixed thresholds and with the phi-accrual detector,
# and the sweep of T_D against false offlines, then draws the plot; then the
# same without and with probes (issue 17, docs/design.md rule 9) and its plot.
#
# Writes benchmarks/results/detection/{table.md,sweep-*.dat,probes.md,probes-*.dat},
# benchmarks/detection.png and benchmarks/probes.png. Installs gnuplot-nox through
# scripts/install-deps.sh. Deterministic: the same USERS, HOURS and SEED give
# the same figures on any machine.
#
#   benchmarks/detection.sh                  # 2000 users, 2 simulated hours per run
#   USERS=200 HOURS=0.25 benchmarks/detection.sh   # a quick look
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build}
out=$root/benchmarks/results/detection

"$root/scripts/install-deps.sh" plots
cmake -S "$root" -B "$build" >/dev/null
cmake --build "$build" -j2 --target detection_sim
mkdir -p "$out"
"$build/benchmarks/detection_sim" --users "${USERS:-2000}" --hours "${HOURS:-2}" \
  --seed "${SEED:-7}" --table "$out/table.md" --sweep "$out"
gnuplot -e "datadir='$out'; outfile='$root/benchmarks/detection.png'" "$root/benchmarks/detection.gp"
"$build/benchmarks/detection_sim" --probes --users "${USERS:-2000}" --hours "${HOURS:-2}" \
  --seed "${SEED:-7}" --table "$out/probes.md" --sweep "$out"
gnuplot -e "datadir='$out'; outfile='$root/benchmarks/probes.png'" "$root/benchmarks/probes.gp"

# At equal mean T_D: each detector point against the fixed-threshold curve,
# interpolated log-linearly between the two fixed points around its T_D.
{
  echo "| population | detector | mean T_D (s) | p99 T_D (s) | false offl. / device-h | fixed thresholds at that mean T_D | ratio fixed / detector |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for f in "$out"/sweep-*.dat; do
    awk -v pop="$(basename "$f" .dat | sed 's/^sweep-//')" '
      /^#/ || NF == 0 { next }
      $1 == "fixed" { n++; td[n] = $3; fo[n] = $6; next }
      {
        fixed = "-"; ratio = "-"
        for (i = 1; i < n; i++) {
          if ($3 >= td[i] && $3 <= td[i + 1] && fo[i] > 0 && fo[i + 1] > 0) {
            w = ($3 - td[i]) / (td[i + 1] - td[i])
            v = exp(log(fo[i]) + w * (log(fo[i + 1]) - log(fo[i])))
            fixed = sprintf("%.3g", v); ratio = ($6 > 0) ? sprintf("%.2f", v / $6) : "inf"
          }
        }
        printf "| %s | %s %s | %.2f | %.2f | %.3g | %s | %s |\n", pop, $1, $2, $3 / 1000, $5 / 1000, $6, fixed, ratio
      }' "$f"
  done
} >"$out/equal-td.md"
cat "$out/equal-td.md"
echo "detection.sh: wrote $out/{table.md,equal-td.md,probes.md}, $out/sweep-*.dat, $out/probes-*.dat,"
echo "  benchmarks/detection.png and benchmarks/probes.png"
