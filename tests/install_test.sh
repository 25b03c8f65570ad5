#!/usr/bin/env bash
# The install test: installs the build tree into a temporary prefix, then
# builds and runs a consumer project outside the tree (tests/install_consumer)
# twice: once through find_package(presence) with CMAKE_PREFIX_PATH, once
# through pkg-config with PKG_CONFIG_PATH. Either failing means a user could
# not build against an installed presence.
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

echo "== pkg-config --cflags --libs presence"
pc_file=$(find "$prefix" -name presence.pc -print -quit)
[ -n "$pc_file" ] || { echo "no presence.pc under $prefix"; exit 1; }
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc_file")
flags=$(pkg-config --cflags --libs presence)
echo "$flags"
# The flags must point into the prefix the files were installed to.
case "$flags" in
  *"$prefix"*) ;;
  *) echo "pkg-config flags do not point into $prefix"; exit 1 ;;
esac
# shellcheck disable=SC2086  # the flags are words on purpose
c++ "$consumer_src/main.cc" $flags -o "$work/consumer-pc"
LD_LIBRARY_PATH="$(pkg-config --variable=libdir presence)" "$work/consumer-pc"
