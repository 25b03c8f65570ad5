#!/usr/bin/env bash
# The install test: installs the build tree into a temporary prefix, then
# builds and runs consumer programs outside the tree (tests/install_consumer),
# each two ways: through find_package(presence) with CMAKE_PREFIX_PATH, and
# through pkg-config with PKG_CONFIG_PATH.
#   * C++: presence::presence, and pkg-config presence-cxx (the static
#     C++ library, libpresence_cxx.a);
#   * C:   presence::presence_c, and pkg-config presence (the C ABI,
#     libpresence.so);
#   * each adapter that was built (issue 18): presence::redis and
#     presence-redis against a real redis-server, presence::postgres and
#     presence-postgres against a real PostgreSQL, presence::kafka and
#     presence-kafka against librdkafka's mock cluster. The servers run on
#     loopback with throwaway folders, and stop with the test.
# Any of them failing means a user could not build against an installed
# presence.
#
#   install_test.sh <build-dir> <consumer-source-dir> [adapters, comma-separated]
set -euo pipefail

build_dir=$1
consumer_src=$2
adapters=()
IFS=, read -ra listed <<<"${3:-}"
for a in "${listed[@]}"; do [ -n "$a" ] && adapters+=("$a"); done
work=$(mktemp -d)
pids=()
cleanup() {
  # (a killed server's wait answers 143: not a failure of the test)
  for pid in "${pids[@]}"; do { kill "$pid" && wait "$pid"; } 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
prefix=$work/prefix

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_until SECONDS WHAT COMMAND...: runs COMMAND until it succeeds.
wait_until() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "timed out waiting for $what"; exit 1; fi
    sleep 0.1
  done
}
has_adapter() { local a; for a in "${adapters[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }

# The servers the adapter consumers use.
if has_adapter redis; then
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work" >"$work/redis.log" 2>&1 &
  pids+=($!)
  wait_until 30 "redis-server on port $redis_port" redis-cli -p "$redis_port" ping
fi
if has_adapter postgres; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  pg_port=$(free_port)
  mkdir -p "$work/pg"
  as_pg=()
  if [ "$(id -u)" -eq 0 ]; then  # PostgreSQL refuses to run as root
    chmod 711 "$work"
    chown postgres "$work/pg"
    as_pg=(runuser -u postgres --)
  fi
  "${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg/data" -U presence -A trust >"$work/initdb.log" 2>&1 || {
    cat "$work/initdb.log"; exit 1; }
  "${as_pg[@]}" "$pg_bin/postgres" -D "$work/pg/data" -p "$pg_port" -k "$work/pg" \
    -c listen_addresses=127.0.0.1 -c fsync=off >"$work/postgres.log" 2>&1 &
  pids+=($!)
  wait_until 60 "PostgreSQL on port $pg_port" "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port"
  pg_conninfo="host=127.0.0.1 port=$pg_port dbname=postgres user=presence"
fi
# run_adapter_consumer ADAPTER BINARY: runs it with what it connects to
# (keys and tables of its own: each consumer writes a fresh store).
runs=0
run_adapter_consumer() {
  runs=$((runs + 1))
  case "$1" in
    redis) "$2" "$redis_port" "run$runs:" ;;
    postgres) "$2" "$pg_conninfo" "run${runs}_" ;;
    kafka) "$2" ;;
    *) echo "install_test: unknown adapter $1"; exit 1 ;;
  esac
}

echo "== cmake --install $build_dir --prefix $prefix"
cmake --install "$build_dir" --prefix "$prefix" >"$work/install.log" || {
  cat "$work/install.log"
  exit 1
}

echo "== find_package(presence) with CMAKE_PREFIX_PATH=$prefix"
adapter_list=$(IFS=';'; echo "${adapters[*]}")
cmake -S "$consumer_src" -B "$work/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DPRESENCE_ADAPTERS=$adapter_list"
cmake --build "$work/consumer-build"
"$work/consumer-build/consumer"
"$work/consumer-build/consumer_c"
for a in "${adapters[@]}"; do
  echo "== presence::$a"
  run_adapter_consumer "$a" "$work/consumer-build/consumer_$a"
done

pc_file=$(find "$prefix" -name presence.pc -print -quit)
[ -n "$pc_file" ] || { echo "no presence.pc under $prefix"; exit 1; }
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc_file")
libdir=$(pkg-config --variable=libdir presence)

# The flags must point into the prefix the files were installed to.
check_flags() {
  echo "$2"
  case "$2" in
    *"$prefix"*) ;;
    *) echo "pkg-config flags of $1 do not point into $prefix"; exit 1 ;;
  esac
}

echo "== pkg-config --cflags --libs presence-cxx (C++)"
flags=$(pkg-config --cflags --libs presence-cxx)
check_flags presence-cxx "$flags"
# shellcheck disable=SC2086  # the flags are words on purpose
c++ "$consumer_src/main.cc" $flags -o "$work/consumer-pc"
"$work/consumer-pc"

echo "== pkg-config --cflags --libs presence (C)"
flags=$(pkg-config --cflags --libs presence)
check_flags presence "$flags"
# shellcheck disable=SC2086
cc -std=c99 -Wall -Wextra -pedantic -Werror "$consumer_src/main.c" $flags -o "$work/consumer-c-pc"
LD_LIBRARY_PATH="$libdir" "$work/consumer-c-pc"

for a in "${adapters[@]}"; do
  echo "== pkg-config --cflags --libs presence-$a"
  flags=$(pkg-config --cflags --libs "presence-$a")
  check_flags "presence-$a" "$flags"
  extra=()
  [ "$a" = kafka ] && extra=(-lrdkafka)  # the consumer's own mock cluster
  # shellcheck disable=SC2086
  c++ -I"$consumer_src" "$consumer_src/$a.cc" $flags "${extra[@]}" -o "$work/consumer-$a-pc"
  run_adapter_consumer "$a" "$work/consumer-$a-pc"
done
