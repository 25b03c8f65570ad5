#!/usr/bin/env bash
# The bounded hardening checks of issue 9, with clang (the unit tests under
# ASan + UBSan run in .ci/run's gcc build):
#   1. build-fuzz: the library under AddressSanitizer + UndefinedBehaviorSanitizer
#      with libFuzzer coverage, and the fuzz targets;
#   2. each fuzz target for PRESENCE_FUZZ_SECONDS (default 30), from its
#      committed corpus; a crash fails the run and leaves the reproducer in
#      build-fuzz/fuzz-artifacts/ (commit it under fuzz/regressions/<target>/);
#   3. build-tsan: under ThreadSanitizer, the many-thread stress tests for
#      PRESENCE_STRESS_SECONDS (default 5) each (stress_test: the engine and
#      fan-out at large, then the races of issue 21: callbacks calling back
#      in, Close during delivery, RevokePartitions during keyed calls, Erase
#      during heartbeats; lock-free heartbeats while the device table grows;
#      a take-over whose load runs on two threads while owned users signal),
#      and thread_safety_test (each of issue 21's races forced
#      deterministically).
# It prints, per fuzzer, the executions per second and the coverage reached.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fuzz_seconds=${PRESENCE_FUZZ_SECONDS:-30}
stress_seconds=${PRESENCE_STRESS_SECONDS:-5}

"$root/scripts/install-deps.sh"
export CC=clang CXX=clang++
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "== hardening: ASan + UBSan + libFuzzer build (build-fuzz)"
cmake -S "$root" -B "$root/build-fuzz" -DPRESENCE_SANITIZE=address,undefined -DPRESENCE_FUZZ=ON \
  -DPRESENCE_BUILD_BENCHMARKS=OFF -DPRESENCE_BUILD_EXAMPLES=OFF >/dev/null
targets=()
for src in "$root"/fuzz/*_fuzz.cc; do targets+=(--target "$(basename "$src" .cc)"); done
cmake --build "$root/build-fuzz" -j2 "${targets[@]}"

echo "== hardening: fuzzing, ${fuzz_seconds}s per target"
artifacts="$root/build-fuzz/fuzz-artifacts"
mkdir -p "$artifacts"
for bin in "$root"/build-fuzz/fuzz/*_fuzz; do
  name=$(basename "$bin" _fuzz)
  work=$(mktemp -d)  # new inputs go here; the committed corpus stays as it is
  log="$root/build-fuzz/fuzz-$name.log"
  if ! "$bin" -max_total_time="$fuzz_seconds" -print_final_stats=1 -artifact_prefix="$artifacts/$name-" \
      "$work" "$root/fuzz/corpus/$name" >"$log" 2>&1; then
    tail -40 "$log"
    echo "hardening: fuzz target $name crashed; reproducer in $artifacts" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  echo "fuzz $name: $execs executions in ${fuzz_seconds}s ($((execs / fuzz_seconds))/s), coverage $cov edges"
  rm -rf "$work"
done

echo "== hardening: the stress tests under ThreadSanitizer (build-tsan)"
cmake -S "$root" -B "$root/build-tsan" -DPRESENCE_SANITIZE=thread \
  -DPRESENCE_BUILD_BENCHMARKS=OFF -DPRESENCE_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$root/build-tsan" -j2 --target stress_test thread_safety_test
for test in stress_test thread_safety_test; do
  TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1} PRESENCE_STRESS_SECONDS="$stress_seconds" \
    "$root/build-tsan/tests/$test"
done
