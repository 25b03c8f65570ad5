#!/usr/bin/env bash
# The second example: the workspace simulation (examples/workspace_sim.cc), a
# scripted workspace on a simulated clock. Sets everything up like
# scripts/run-example.sh (packages, configure, build into build/), then runs
# it; extra arguments go to it (--users, --seconds, --seed, --quiet, --help).
# Idempotent; works from any directory.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$root/build"
cmake --build "$root/build" -j2 --target workspace_sim
exec "$root/build/examples/workspace_sim" "$@"
