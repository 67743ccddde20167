"""The metric names a Grafana dashboard's PromQL queries read, and the names a ``/metrics`` text has.

Enough PromQL for Flux's own dashboard (docs/grafana/flux-dashboard.json): label matchers, ranges,
strings and ``by (...)`` clauses are dropped, functions and aggregations (an identifier before
``(``) and keywords are not names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "flux-dashboard.json"

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings (label values, label_values' arguments)
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r",\s*[a-zA-Z_]\w*\s*\)", ")", expr)  # label_values(metric, label): the label
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        following = expr[match.end() :].lstrip()[:1]
        if following != "(" and match.group() not in KEYWORDS:
            names.add(match.group())
    return names


def dashboard_queries(path: Path = DASHBOARD) -> list[str]:
    """Every PromQL expression of the dashboard: its panels' targets and its query variables."""
    dashboard = json.loads(path.read_text())
    queries = [t["expr"] for panel in _panels(dashboard["panels"]) for t in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for panel in panels for p in (panel, *_panels(panel.get("panels", [])))]


def exported_names(text: str) -> set[str]:
    """The names a Prometheus text exposition has: its families (``# TYPE``) and samples; a histogram's
    family name stands for its ``_bucket``, ``_sum`` and ``_count``."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names
