#!/usr/bin/env bash
# Installs the Debian packages that building and testing presence need.
# Idempotent: prints nothing and touches nothing when every package is present.
#
# Optional groups, named as arguments, add packages that only some benchmarks
# need (CI installs none of them):
#   plots   gnuplot-nox, for the PNG plots in benchmarks/ (detection.sh, compare.sh)
#   redis   redis-server and libhiredis-dev, for the Redis leg of the comparison
#           harness (benchmarks/compare.sh)
#   browser chromium (/usr/bin/chromium), and nodejs and npm when npm is missing,
#           for the example server's browser test (examples/presence_server/e2e/run.sh,
#           which CI runs)
# e.g. scripts/install-deps.sh plots redis
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libabsl-dev libprotobuf-dev protobuf-compiler libxxhash-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang lld libclang-rt-14-dev
  # the Kafka bus (issue 6): librdkafka, whose built-in mock cluster its tests use
  librdkafka-dev
  # the adapters (issue 6): client libraries, and the servers their tests start
  libhiredis-dev redis-server libpq-dev postgresql
  # the example server (issue 8): Boost.Beast and Boost.Asio, header-only
  libboost-dev
  # the Go binding (bindings/go, issue 4): cgo with the standard library only
  golang-go
  # the example server's rigs (issue 19): the nginx front that terminates TLS,
  # openssl for its test certificate, and an independent WebSocket client
  # (Python's websockets, run by Debian's /usr/bin/python3) for the nginx,
  # load and abuse tests
  nginx openssl python3 python3-websockets
  # the alert rules (issue 18): promtool checks and unit-tests them, and the
  # integration test scrapes the example server with a real Prometheus;
  # docs/runbooks.md's commands (which runbooks_test runs) use curl
  prometheus curl
)

for group in "$@"; do
  case "$group" in
    plots) packages+=(gnuplot-nox) ;;
    redis) packages+=(redis-server libhiredis-dev) ;;
    browser)
      packages+=(chromium)
      command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
      ;;
    *) echo "install-deps: unknown group '$group' (known: plots, redis, browser)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
