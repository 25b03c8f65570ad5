#!/usr/bin/env bash
# Sets everything up on a fresh Debian or Ubuntu machine and runs every test:
# installs the packages, configures and builds everything into build/, then
# runs ctest. Exits non-zero when a step or a test fails. Idempotent; works
# from any directory.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$root/build"
cmake --build "$root/build" -j2
ctest --test-dir "$root/build" --output-on-failure -j2
