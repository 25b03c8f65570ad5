#!/usr/bin/env bash
# A bounded load test of presence_server on loopback: N WebSocket clients
# (default 10000), each subscribed to 5 friends and heartbeating every second,
# held for S seconds (default 30), then closed. Prints the load generator's
# report: ramp rate, message rates, and the server's resident memory and CPU
# per connection (from /proc). Everything stops by itself: the server runs
# with --exit-after. Works from any directory; builds into build/ (or
# $PRESENCE_BUILD_DIR).
#
#   examples/presence_server/load.sh [CLIENTS] [SECONDS]
set -euo pipefail

clients=${1:-10000}
seconds=${2:-30}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${PRESENCE_BUILD_DIR:-$root/build}

[ -f "$build/CMakeCache.txt" ] || cmake -S "$root" -B "$build"
cmake --build "$build" -j2 --target presence_server presence_server_load

# Each side holds one socket per client, plus files.
want=$((clients + 1000))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
  echo "load.sh: the fd limit is $hard; $clients clients need $want" >&2
  exit 1
fi
ulimit -n "$want"

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# load-00001 .. load-N, each with a token and its 5 next users as friends.
awk -v n="$clients" 'BEGIN {
  for (i = 1; i <= n; i++) {
    line = sprintf("user load-%05d load-token-%010d", i, i)
    for (k = 1; k <= 5 && k < n; k++) line = line sprintf(" load-%05d", (i + k - 1) % n + 1)
    print line
  }
}' > "$work/auth.txt"

"$build/examples/presence_server/presence_server" --port 0 --data-dir "$work/data" --auth "$work/auth.txt" \
  --max-connections $((clients + 100)) --max-connections-per-ip $((clients + 100)) --exit-after $((seconds + 900)) > "$work/server.out" &
server_pid=$!
for _ in $(seq 100); do
  grep -q "listening on" "$work/server.out" 2>/dev/null && break
  sleep 0.1
done
port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$work/server.out")
[ -n "$port" ] || { echo "load.sh: the server did not start" >&2; cat "$work/server.out" >&2; exit 1; }

echo "load.sh: $clients clients for ${seconds}s against presence_server (pid $server_pid, port $port)"
"$build/examples/presence_server/presence_server_load" --port "$port" --clients "$clients" \
  --seconds "$seconds" --friends 5 --parallel 100 --server-pid "$server_pid"
