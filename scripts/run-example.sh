#!/usr/bin/env bash
# Sets everything up on a fresh Debian or Ubuntu machine and runs the main job:
# the workspace simulation (examples/workspace_sim.cc). Installs the packages
# it needs, configures and builds into build/, then runs the example; extra
# arguments go to it (try --help). Idempotent: run it again and only what
# changed is rebuilt. Works from any directory.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$root/build"
cmake --build "$root/build" -j2 --target workspace_sim
exec "$root/build/examples/workspace_sim" "$@"
