#!/usr/bin/env python3
"""Every expression of the Grafana dashboard (deploy/grafana/presence.json)
names metrics that a running presence_server exports, and every alert rule
(deploy/prometheus/alerts.yml) does too (redis_exporter's aside).

usage: dashboard_test.py PRESENCE_SERVER_BINARY"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server  # noqa: E402
from promql_names import dashboard_exprs, exported_names, metric_names  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = "ops-token-for-the-dashboard-test"


def self_test():
    """The name extraction itself, on expressions with a known answer."""
    cases = {
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{job="$job",x=~"b|c"}[$__rate_interval])))': {"a_bucket"},
        "rate(x_total[5m]) / rate(y_total[5m]) > 0.05": {"x_total", "y_total"},
        "increase(a[10m]) + increase(b[10m]) > 0 and on (instance) c offset 5m": {"a", "b", "c"},
        'sum without (op) (q{op="publish"}) * 1e3': {"q"},
    }
    for expr, want in cases.items():
        got = metric_names(expr)
        assert got == want, (expr, got, want)
    text = "# TYPE h histogram\nh_bucket{le=\"1\"} 0\n# TYPE c counter\nc 1\n"
    assert exported_names(text) == {"h_bucket", "h_sum", "h_count", "c"}


def main():
    self_test()
    server = Server(sys.argv[1], f"user ops {TOKEN}\noperator ops\n")
    try:
        exported = exported_names(server.get("/metrics", TOKEN))
    finally:
        server.stop()
    assert len(exported) > 40, sorted(exported)

    with open(os.path.join(ROOT, "deploy", "grafana", "presence.json")) as f:
        exprs = dashboard_exprs(json.load(f))
    assert exprs, "the dashboard has no expressions"
    with open(os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")) as f:
        rules = f.read()
    # An expr is one line, or a block (|) of the lines indented below it.
    for m in re.finditer(r"^( *)expr: *(?:\|\n((?:\1 +.*\n)+)|(.*))", rules, re.M):
        exprs.append(("alerts.yml", m.group(2) or m.group(3)))

    failures = []
    for where, expr in exprs:
        names = metric_names(expr)
        if not names:
            failures.append(f"{where}: {expr!r} names no metric")
        for n in sorted(names - exported):
            if n.startswith("redis_"):  # redis_exporter's, not the server's
                continue
            failures.append(f"{where}: {expr!r} reads {n}, which the server does not export")
    assert not failures, "\n".join(failures)
    print(f"dashboard_test: {len(exprs)} expressions, every metric they read is exported")


if __name__ == "__main__":
    main()
