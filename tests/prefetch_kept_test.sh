#!/usr/bin/env bash
# The keyed batch's prefetches survive compilation (src/core/prefetch.h): GCC
# 12 deleted a prefetch under an `if` or in a loop whose only effect it was,
# which left Shard::PrefetchIndex and Shard::PrefetchUser with the signal's
# prefetches only. Each must hold at least 3 prefetch instructions: the
# index slot and the signal's two lines; the user record and the two ids.
#
#   prefetch_kept_test.sh <libpresence.a>
set -euo pipefail

lib=$1
asm=$(mktemp)
trap 'rm -f "$asm"' EXIT
objdump -d --no-show-raw-insn -C "$lib" >"$asm"
status=0
for fn in PrefetchIndex PrefetchUser; do
  n=$(awk -v f="<presence::internal::Shard::$fn(" 'index($0, f) && /:$/ {on = 1; next} on && /^$/ {on = 0} on' "$asm" |
    grep -cE '\s(prefetch[a-z0-9]*|prfm)\s' || true)
  echo "Shard::$fn: $n prefetch instructions"
  if [ "$n" -lt 3 ]; then
    echo "FAIL: Shard::$fn keeps $n of its 3 prefetches (inlined away, or deleted by the compiler)"
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "PASS: the keyed batch's prefetches are in the library"
exit "$status"
