#!/usr/bin/env bash
# The example server's browser test: installs Debian's Chromium (through
# scripts/install-deps.sh browser) and playwright-core (npm ci, from the
# lock file; no browser download), builds presence_server into build/ (or
# $PRESENCE_BUILD_DIR), and runs e2e.mjs. Screenshots go to
# $PRESENCE_E2E_OUT (default build/e2e). Works from any directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${PRESENCE_BUILD_DIR:-$root/build}
out=${PRESENCE_E2E_OUT:-$build/e2e}

"$root/scripts/install-deps.sh" browser
[ -f "$build/CMakeCache.txt" ] || cmake -S "$root" -B "$build"
cmake --build "$build" -j2 --target presence_server

cd "$here"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm ci --no-audit --no-fund --loglevel=error
timeout 300 node e2e.mjs "$build/examples/presence_server/presence_server" "$out"
