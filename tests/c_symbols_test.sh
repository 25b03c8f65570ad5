#!/usr/bin/env bash
# The symbol test of the C library: libpresence.so must export exactly the
# functions that include/presence/c.h declares, and nothing else (no C++
# symbol of the engine inside it, nothing of Abseil or protobuf).
#
#   c_symbols_test.sh <libpresence.so> <c.h>
set -euo pipefail

lib=$1
header=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Defined dynamic symbols, names only.
nm -D --defined-only "$lib" | awk '{print $NF}' | sort -u >"$work/exported"
# Functions the header declares: every declaration starts with PRESENCE_EXPORT.
tr '\n' ' ' <"$header" | grep -oE 'PRESENCE_EXPORT [^;(]*\(' |
  grep -oE 'presence_[a-z0-9_]+ *\($' | tr -d ' (' | sort -u >"$work/declared"

echo "$(wc -l <"$work/exported") symbols exported, $(wc -l <"$work/declared") functions declared"
status=0
if grep -v '^presence_' "$work/exported" >"$work/foreign"; then
  echo "FAIL: exported symbols without the presence_ prefix:"
  head -50 "$work/foreign"
  status=1
fi
if ! diff -u "$work/declared" <(grep '^presence_' "$work/exported") >"$work/diff"; then
  echo "FAIL: declared in c.h (-) and exported (+) differ:"
  cat "$work/diff"
  status=1
fi
if [ "$(wc -l <"$work/declared")" -lt 40 ]; then
  echo "FAIL: found only $(wc -l <"$work/declared") declarations in $header"
  status=1
fi
[ "$status" -eq 0 ] && echo "PASS: libpresence.so exports the C ABI and nothing else"
exit "$status"
