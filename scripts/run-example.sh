#!/usr/bin/env bash
# Sets everything up on a fresh Debian or Ubuntu machine and starts the main
# job: the example presence server (examples/presence_server/) with 50
# simulated clients, on http://127.0.0.1:8080/ with its data in
# build/presence-data. It prints the page's URL, one per demo user; stop it
# with Ctrl-C. Installs the packages it needs, configures and builds into
# build/; extra arguments go to the server and win over these defaults (try
# --help; e.g. --port 0 picks a free port, --exit-after 5 stops it by
# itself). Idempotent: run it again and only what changed is rebuilt. Works
# from any directory. The workspace simulation: scripts/run-workspace-sim.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$root/build"
cmake --build "$root/build" -j2 --target presence_server
exec "$root/build/examples/presence_server/presence_server" --simulate 50 \
  --data-dir "$root/build/presence-data" "$@"
