#!/usr/bin/env bash
# Checks the alert rules: promtool's syntax and lint check, the unit tests,
# and that every alert of alerts.yml has a test in which it fires.
# Usage: deploy/prometheus/check.sh   (ctest runs it as prometheus_rules)
set -euo pipefail
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v promtool >/dev/null || { echo "check.sh: promtool not found (scripts/install-deps.sh installs Debian's prometheus)" >&2; exit 1; }

promtool check rules "$dir/alerts.yml"
promtool test rules "$dir/alerts_test.yml"

# Each alert needs a test case that expects it to fire: an
# "alertname: X" line followed by "exp_alerts:".
alerts=$(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "$dir/alerts.yml")
[ -n "$alerts" ] || { echo "check.sh: no alerts found in alerts.yml" >&2; exit 1; }
fired=$(awk '/alertname:/ {name=$2; next} /exp_alerts:/ && name != "" {print name} {name=""}' "$dir/alerts_test.yml" | sort -u)
missing=0
for a in $alerts; do
  if ! grep -qx "$a" <<<"$fired"; then
    echo "check.sh: alert $a has no test in which it fires (alerts_test.yml)" >&2
    missing=1
  fi
done
[ "$missing" -eq 0 ] || exit 1
echo "check.sh: $(wc -w <<<"$alerts") alerts, each fired by a unit test"
