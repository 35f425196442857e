#!/usr/bin/env python3
"""Checks deploy/grafana/dashboard.json against the metrics a running parent exports.

  check_dashboard.py DASHBOARD METRICS_TEXT

METRICS_TEXT is what GET /metrics of a real parent answered (tests/nitro/run.sh fetches it from
the parent under scripts/dev.sh). Checks: the dashboard is JSON with panels and unique ids;
every metric name in a query is one the parent exports (a histogram's _bucket, _sum and
_count included); every exported metric family appears in some panel; every label used in a
selector or a `by (...)` is one the parent's samples carry (or `le`, or Prometheus' `instance`
and `job`); every route="..." value is a route the parent reports. Prints what is wrong and
exits 1, else prints a summary."""
import json
import re
import sys

dash_path, metrics_path = sys.argv[1:3]
errors = []
with open(dash_path) as f:
    dash = json.load(f)
with open(metrics_path) as f:
    text = f.read()

families = {}  # name -> type
labels = {"le", "instance", "job"}
values = {}  # label -> set of values
for line in text.splitlines():
    m = re.match(r"# TYPE (\S+) (\S+)", line)
    if m:
        families[m.group(1)] = m.group(2)
        continue
    if line.startswith("#") or not line.strip():
        continue
    m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? ", line)
    if not m:
        errors.append("unparsable metrics line: %r" % line)
        continue
    for k, v in re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""):
        labels.add(k)
        values.setdefault(k, set()).add(v)
if not families:
    errors.append("no # TYPE line in %s: not a Prometheus exposition" % metrics_path)

series = {}
for name, kind in families.items():
    series[name] = name
    if kind == "histogram":
        for suffix in ("_bucket", "_sum", "_count"):
            series[name + suffix] = name

panels = dash.get("panels") or []
if not panels:
    errors.append("the dashboard has no panels")
ids = [p.get("id") for p in panels]
if len(ids) != len(set(ids)):
    errors.append("panel ids are not unique: %s" % ids)
used = set()
n_exprs = 0
for p in panels:
    for t in p.get("targets", []):
        expr = t.get("expr", "")
        n_exprs += 1
        for name in re.findall(r"\b(parent_[a-z0-9_]+)\b", expr):
            if name in series:
                used.add(series[name])
            else:
                errors.append("panel %r queries %s, which the parent does not export" % (p.get("title"), name))
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for lab in (x.strip() for x in group.split(",")):
                if lab and lab not in labels:
                    errors.append("panel %r groups by %r, a label the parent's metrics lack" % (p.get("title"), lab))
        for lab, val in re.findall(r'(\w+)=~?"([^"]*)"', expr):
            if lab not in labels:
                errors.append("panel %r selects on label %r, which the parent's metrics lack" % (p.get("title"), lab))
            elif lab == "route":
                for v in val.split("|"):
                    if v not in values.get("route", set()):
                        errors.append("panel %r selects route %r, not a route the parent reports" % (p.get("title"), v))
for name in sorted(set(families) - used):
    errors.append("exported metric %s appears in no panel" % name)

if errors:
    print("\n".join(errors))
    sys.exit(1)
print("dashboard ok: %d panels, %d queries, all %d metric families the parent exports (%s)"
      % (len(panels), n_exprs, len(families), ", ".join(sorted(families))))
