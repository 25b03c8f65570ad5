#!/usr/bin/env bash
# The install test: installs the build tree into a temporary prefix, then
# builds and runs consumer programs outside the tree (tests/install_consumer),
# each two ways: through find_package(presence) with CMAKE_PREFIX_PATH, and
# through pkg-config with PKG_CONFIG_PATH.
#   * C++: presence::presence, and pkg-config presence-cxx (the static
#     C++ library, libpresence_cxx.a);
#   * C:   presence::presence_c, and pkg-config presence (the C ABI,
#     libpresence.so).
# Any of them failing means a user could not build against an installed
# presence.
#
#   install_test.sh <build-dir> <consumer-source-dir>
set -euo pipefail

build_dir=$1
consumer_src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

echo "== cmake --install $build_dir --prefix $prefix"
cmake --install "$build_dir" --prefix "$prefix" >"$work/install.log" || {
  cat "$work/install.log"
  exit 1
}

echo "== find_package(presence) with CMAKE_PREFIX_PATH=$prefix"
cmake -S "$consumer_src" -B "$work/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$work/consumer-build"
"$work/consumer-build/consumer"
"$work/consumer-build/consumer_c"

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
