#!/usr/bin/env python3
"""A real Prometheus scrapes a running presence_server (docs/operations.md):
the publish-latency quantile answers a number, and every alert rule of
deploy/prometheus/alerts.yml evaluates without error against real series, and
every expression of the Grafana dashboard is PromQL that Prometheus accepts.

usage: prometheus_test.py PRESENCE_SERVER_BINARY"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Prometheus, Server, wait_for  # noqa: E402
from promql_names import dashboard_exprs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPERATOR_TOKEN = "ops-token-for-prometheus"


def main():
    binary = sys.argv[1]
    with open(os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")) as f:
        alerts = f.read()
    server = Server(binary, f"user ops {OPERATOR_TOKEN}\noperator ops\n", ["--simulate", "40"])
    prom = None
    try:
        # A 1 s scrape, with an operator's token as the metrics need it.
        prom = Prometheus(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: presence
    metrics_path: /metrics
    authorization:
      credentials: {OPERATOR_TOKEN}
    static_configs:
      - targets: ["127.0.0.1:{server.port}"]
""", files={"alerts.yml": alerts})

        def up():
            r = prom.api("query", query='up{job="presence"}')["result"]
            return r and r[0]["value"][1] == "1"
        wait_for("the presence target to be up", up)

        # The simulated clients come online and change state; their changes
        # fill the histogram. A quantile over a window needs two scrapes
        # with observations between them.
        query = ('histogram_quantile(0.95, sum by (le) '
                 '(rate(presence_publish_latency_ms_bucket{job="presence"}[30s])))')

        def quantile():
            r = prom.api("query", query=query)["result"]
            if not r:
                return None
            v = float(r[0]["value"][1])
            return v if not math.isnan(v) else None
        p95 = wait_for(f"a number from {query}", quantile)
        # The histogram's buckets end at 10000 ms; a quantile in +Inf would
        # answer the highest finite bound.
        assert 0 <= p95 <= 10000, p95
        print(f"prometheus_test: p95 publish latency {p95:.1f} ms")

        # Every rule loaded and evaluated cleanly against the real series.
        def rules_evaluated():
            groups = prom.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if not rules or any(r.get("lastEvaluation", "").startswith("0001") for r in rules):
                return None
            return rules
        rules = wait_for("every rule to be evaluated", rules_evaluated)
        names = sorted(r["name"] for r in rules)
        expected = sorted(line.split("alert:")[1].strip() for line in alerts.splitlines()
                          if line.strip().startswith("- alert:"))
        assert names == expected, (names, expected)
        bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        assert not bad, bad
        print(f"prometheus_test: {len(rules)} alert rules evaluated, all healthy")

        # Every dashboard expression is PromQL that this Prometheus accepts,
        # with Grafana's variables as Grafana would fill them in.
        with open(os.path.join(ROOT, "deploy", "grafana", "presence.json")) as f:
            exprs = dashboard_exprs(json.load(f))
        for title, expr in exprs:
            q = expr.replace("$__rate_interval", "30s").replace("$job", "presence")
            try:
                prom.api("query", query=q)
            except Exception as e:
                raise AssertionError(f"dashboard panel {title!r}: {q!r}: {e}") from e
        print(f"prometheus_test: {len(exprs)} dashboard expressions accepted")
    except BaseException:
        if prom:
            print("--- prometheus log ---\n" + prom.read_log(), file=sys.stderr)
        print("--- server log ---\n" + server.read_log(), file=sys.stderr)
        raise
    finally:
        if prom:
            prom.stop()
        server.stop()


if __name__ == "__main__":
    main()
