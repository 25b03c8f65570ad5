"""The metric names a PromQL expression reads, and the names a Prometheus
text exposition exports: the deploy tests' two sides, kept apart from the
server's code."""
import re

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan"}


def metric_names(expr):
    """Metric names in `expr` (Grafana variables such as $job dropped)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)     # strings
    e = re.sub(r"\{[^}]*\}", " ", e)                  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                 # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)                # dashboard variables
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        if word.lower() in _KEYWORDS:
            continue
        if re.match(r"\s*\(", e[m.end():]):           # a function call
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue                                  # 1e3, 5m in offsets
        names.add(word)
    return names


def exported_names(exposition):
    """Names of the samples a Prometheus text exposition can hold, from its
    TYPE lines (a histogram exports _bucket, _sum and _count)."""
    names = set()
    for line in exposition.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if not m:
            continue
        name, kind = m.groups()
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        elif kind == "summary":
            names |= {name, name + "_sum", name + "_count"}
        else:
            names.add(name)
    return names


def dashboard_exprs(dashboard):
    """Every PromQL expression of a Grafana dashboard's panels (rows included)."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if "expr" in t:
                    out.append((p.get("title", ""), t["expr"]))
            walk(p.get("panels", []))
    walk(dashboard.get("panels", []))
    return out
