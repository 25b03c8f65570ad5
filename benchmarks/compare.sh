#!/usr/bin/env bash
# The comparison harness (issue 7), end to end: installs what it needs through
# scripts/install-deps.sh (gnuplot-nox, redis-server, libhiredis-dev), builds
# compare_bench, runs the same heartbeat workload against presence (handle and
# keyed paths), the seed design in process, and the seed design's Redis layout
# (compare_bench starts its own redis-server on a free loopback port, in a
# throwaway directory, and stops it), at each size, one process per system and
# size; then writes the table and draws the plot.
#
# Writes benchmarks/results/compare/{compare.csv,table.md} and
# benchmarks/compare.png.
#
#   benchmarks/compare.sh                    # 1e5, 1e6 and 1e7 devices
#   SIZES="1e5 1e6" benchmarks/compare.sh    # skip 1e7 (Redis needs several GB there)
#   REPORT_ONLY=1 benchmarks/compare.sh      # redraw the table and plot from compare.csv
#   CHURN_SECONDS=60 benchmarks/compare.sh   # also memory after 60 s of beats plus 1%/s reconnects
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build}
out=$root/benchmarks/results/compare
sizes=${SIZES:-"1e5 1e6 1e7"}
churn=${CHURN_SECONDS:-0}  # simulated seconds of heartbeats plus churn, then memory again
systems=${SYSTEMS:-"presence-handle presence-many presence-keyed presence-keyed-many naive redis"}

"$root/scripts/install-deps.sh" plots redis
cmake -S "$root" -B "$build" >/dev/null
cmake --build "$build" -j2 --target compare_bench
mkdir -p "$out"
csv=$out/compare.csv
if [ -z "${REPORT_ONLY:-}" ]; then
  echo "system,devices,beats_per_s,cpu_beats_per_s,bytes_per_device,cpu_s_per_sim_s,server_cpu_s_per_sim_s,bytes_per_device_after_churn" >"$csv"
  for n in $sizes; do
    seconds=3
    [ "$n" = "1e7" ] && seconds=2
    for s in $systems; do
      "$build/benchmarks/compare_bench" --system "$s" --devices "$n" --seconds "$seconds" \
        --churn-seconds "$churn" --csv "$csv"
    done
  done
fi

# The table: throughput by this process's CPU (for Redis: client plus
# server CPU), by wall time, memory, and each system against presence's
# handle path at the same size.
awk -F, '
  NR == 1 { next }
  {
    key = $1 "," $2
    cpu = ($7 > 0) ? $2 / ($6 + $7) : $4      # Redis: beats per client+server CPU-second
    tput[key] = cpu; wall[key] = $3; mem[key] = $5; churn[key] = $8; sizes[$2] = 1; order[++n] = key
  }
  END {
    print "| devices | system | heartbeats / CPU-s | heartbeats / s (wall) | bytes / device | bytes / device after churn | CPU per heartbeat, x presence-handle | memory, x presence-handle |"
    print "| --- | --- | --- | --- | --- | --- | --- | --- |"
    for (i = 1; i <= n; i++) {
      split(order[i], k, ","); base = "presence-handle," k[2]
      printf "| 10^%d | %s | %.3g M | %.3g M | %.0f | %s | %s | %s |\n", int(log(k[2]) / log(10) + 0.5), k[1],
        tput[order[i]] / 1e6, wall[order[i]] / 1e6, mem[order[i]],
        (churn[order[i]] > 0) ? sprintf("%.0f", churn[order[i]]) : "-",
        (base in tput) ? sprintf("%.3g", tput[base] / tput[order[i]]) : "-",
        (base in mem) ? sprintf("%.2f", mem[order[i]] / mem[base]) : "-"
    }
  }' "$csv" >"$out/table.md"
cat "$out/table.md"

gnuplot -e "csv='$csv'; outfile='$root/benchmarks/compare.png'" "$root/benchmarks/compare.gp"
echo "compare.sh: wrote $csv, $out/table.md and benchmarks/compare.png"
