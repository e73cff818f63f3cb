"""deploy/'s dashboard and alert rules: valid PromQL, fleet gauges never summed, every alert
actionable and tested by promtool. (That they name only exported metrics is checked against a
running router in tests/e2e/test_observability.py.)"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARD,
    alert_expressions,
    dashboard_expressions,
    for_prometheus,
    metric_names,
    require_promtool,
)

PROMETHEUS_DIR = ALERTS.parent
# Gauges read from Redis at scrape time: the same value on every replica.
FLEET_WIDE = re.compile(
    r"herd_(node_\w+|nodes|queue_waiting|queue_max_depth|slots_\w+|leader_present)\b")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_promtool(), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (model, le) (rate(herd_a_bucket{job=~"$job", x="rate(nope)"}[5m] offset 1h))',
     {"herd_a_bucket"}),
    ("a / on () group_left () max(b) > 0.8", {"a", "b"}),
    ("histogram_quantile(0.95, sum by (le) (rate(c[$__rate_interval])))", {"c"}),
    ("d unless on (node) max by (node) (e) == 1", {"d", "e"}),
    ("f > bool 1e3 and g:recorded", {"f", "g:recorded"}),
    ("count without (instance) (h) * 100 - time()", {"h"}),
    ('label_values(i{job=~"$job"}, node)', {"i"}),
    ("label_values(job)", set()),
    ('sum(increase(j[$__range])) / ignoring(kind) group_right(app) k', {"j", "k"}),
])
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_alert_rules_pass_promtool() -> None:
    checked = promtool("check", "rules", ALERTS.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", ALERTS_TEST.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_prometheus_config_passes_promtool() -> None:
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 rule files found" in checked.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    rules = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"]
             for rule in group["rules"]}
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    fired: set[str] = set()
    quiet: set[str] = set()
    for group in tests["tests"]:
        for case in group["alert_rule_test"]:
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert fired == rules, f"never shown firing: {rules - fired}"
    assert quiet == rules, f"never shown quiet: {rules - quiet}"


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), name
            assert rule["labels"]["severity"] in {"warning", "critical"}, name
            assert rule["annotations"]["summary"].strip(), name
            assert len(rule["annotations"]["description"].split()) >= 12, name


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_expressions(dashboard())
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"herd:dashboard_query_{i}", "expr": for_prometheus(expr)}
        for i, expr in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(exprs)} rules found" in checked.stdout


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_fleet_gauges_are_never_summed_over_replicas(source: str) -> None:
    """Each replica reports the same fleet-wide gauge: the first aggregation over it must be
    max or min (or Grafana's label_values), or N replicas count each node N times."""
    exprs = dashboard_expressions(dashboard()) if source == "dashboard" else alert_expressions()
    checked = 0
    for expr in exprs:
        for match in FLEET_WIDE.finditer(expr):
            before = expr[:match.start()].rstrip()
            assert re.search(r"(\b(max|min)\s*(by\s*\([^()]*\)\s*)?|label_values)\($", before), (
                f"{match.group(0)} is not aggregated by max/min first in: {expr}")
            checked += 1
    assert checked >= 3


def test_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable() -> None:
    data = dashboard()
    assert data["uid"] and data["title"] and data["schemaVersion"] >= 36
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = []
    for panel in data["panels"]:
        ids.append(panel["id"])
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    assert len(ids) == len(set(ids))


def test_dashboard_covers_what_an_operator_looks_at() -> None:
    named = set().union(*map(metric_names, dashboard_expressions(dashboard())))
    for metric in ("herd_requests_total", "herd_errors_total",
                   "herd_time_to_first_token_seconds_bucket",
                   "herd_request_latency_seconds_bucket", "herd_queue_waiting",
                   "herd_queue_wait_seconds_bucket", "herd_slots_in_flight",
                   "herd_node_status", "herd_app_tokens_total", "herd_redis_up",
                   "herd_leader_present"):
        assert metric in named, metric
    for expr in dashboard_expressions(dashboard()):
        assert any(name.startswith("herd_") for name in metric_names(expr)), expr
