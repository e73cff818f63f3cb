"""The deploy/ observability files as tests read them: the dashboard's and the alert rules'
PromQL, the metric names in it, and the names a running router's /metrics exports."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "ALERTS",
    "ALERTS_TEST",
    "DASHBOARD",
    "alert_expressions",
    "dashboard_expressions",
    "exported_names",
    "for_prometheus",
    "metric_names",
    "require_promtool",
]

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "herd.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"

# Words PromQL gives a meaning of its own: never metric names.
_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2", "start", "end",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords, labels, strings and
    Grafana's variables left out); of Grafana's `label_values(m{...}, label)`, m."""
    text = _STRING.sub('""', expr)
    if text.startswith("label_values("):
        arguments = text[len("label_values("):].rstrip().removesuffix(")")
        text = arguments.rsplit(",", 1)[0] if "," in arguments else ""
    text = _GRAFANA_VAR.sub("1", text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS or re.fullmatch(r"[0-9].*|[eE]\d+", word):
            continue
        names.add(word)
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every query in the dashboard: the panels' targets and the query variables."""
    out = [target["expr"] for panel in _panels(dashboard["panels"])
           for target in panel.get("targets", []) if "expr" in target]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            out.append(query["query"] if isinstance(query, dict) else query)
    return out


def alert_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def for_prometheus(expr: str) -> str:
    """A dashboard query as Prometheus would get it from Grafana (variables filled in)."""
    if expr.startswith("label_values("):
        inner = expr[len("label_values("):].rsplit(",", 1)[0]
        expr = f"count by () ({inner})"
    for name, value in (("$__rate_interval", "1m"), ("$__range", "1h"),
                        ("$__interval", "15s")):
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def exported_names(metrics_text: str) -> set[str]:
    """The sample names a /metrics answer exports: every sample's name, and for a declared
    family with no samples yet the names its type gives it."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "summary": ("_count", "_sum", ""), "gauge": ("",)}
    for family in text_string_to_metric_families(metrics_text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def require_promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found
