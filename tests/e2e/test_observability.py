"""The dashboard and the alert rules against real routers: every metric they name is one
/metrics exports after real traffic, every exported metric is documented, fleet gauges agree
across replicas, and a real Prometheus scraping two replicas evaluates every dashboard query
and every rule (a healthy fleet raises nothing but the error-rate alert its failures earn)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.redis_drill import MODEL, DrillFleet
from tests.helpers import Proc, free_port, wait_until
from tests.observability import (
    ALERTS,
    DASHBOARD,
    alert_expressions,
    dashboard_expressions,
    exported_names,
    for_prometheus,
    metric_names,
)
from tests.simproc import sim_fault

pytestmark = pytest.mark.timeout(150)

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
# Series Prometheus makes itself for every target; alerts may use them.
PROMETHEUS_OWN = {"up"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[DrillFleet]:
    """Two replicas on one Redis, a simulator and its real agent, and some traffic."""
    running = DrillFleet(tmp_path_factory.mktemp("observability"))
    try:
        running.start_sim()
        first = running.router(redis_url)
        second = running.router(redis_url)
        running.agent(first, second)
        running.wait_serving(first)
        running.wait_serving(second)
        traffic(running)
        yield running
    finally:
        running.stop()


def traffic(fleet: DrillFleet, failures: int = 1) -> None:
    """Chats through the real clients, one app tagged, a failure on the node, a typo."""
    first, second = fleet.routers
    tagged = ollama.Client(host=first, headers={"X-Herd-Tags": "billing"})
    for _ in range(3):
        assert tagged.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}]).message
    with openai.OpenAI(base_url=f"{second}/v1", api_key="unused", max_retries=0) as client:
        for _ in range(2):
            answer = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content
    assert fleet.sim is not None
    sim_fault(fleet.sim.url, "error500", count=failures, paths=["/api/chat"])
    for _ in range(failures):
        failed = httpx.post(f"{first}/api/chat", json={
            "model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": False},
            timeout=30)
        assert failed.status_code >= 500, failed.text
    typo = httpx.post(f"{second}/api/chat", json={"model": "no-such-model:1b", "messages": []},
                      timeout=30)
    assert typo.status_code == 404


def scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def test_the_dashboard_names_only_metrics_that_metrics_exports(fleet: DrillFleet) -> None:
    exported = exported_names(scrape(fleet.routers[0]))
    dashboard = json.loads(DASHBOARD.read_text())
    for expr in dashboard_expressions(dashboard):
        named = metric_names(expr)
        assert named, expr
        assert named <= exported, f"{sorted(named - exported)} not exported, in: {expr}"


def test_the_alert_rules_name_only_metrics_that_metrics_exports(fleet: DrillFleet) -> None:
    exported = exported_names(scrape(fleet.routers[0])) | PROMETHEUS_OWN
    for expr in alert_expressions():
        named = metric_names(expr)
        assert named and named <= exported, f"{sorted(named - exported)} in: {expr}"


def test_traffic_shows_in_the_new_figures(fleet: DrillFleet) -> None:
    families = {f.name: f for f in text_string_to_metric_families(scrape(fleet.routers[0]))}
    billing = [s for s in families["herd_app_tokens"].samples
               if s.labels["app"] == "billing" and s.labels["kind"] == "completion"]
    assert billing and billing[0].value > 0
    waited = [s for s in families["herd_queue_wait_seconds"].samples
              if s.name.endswith("_count") and s.labels["model"] == MODEL]
    assert waited and waited[0].value >= 3


def test_every_exported_metric_is_documented(fleet: DrillFleet) -> None:
    documented = API_DOC.read_text()
    for family in text_string_to_metric_families(scrape(fleet.routers[0])):
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in documented, f"{name} is not in docs/api.md's metrics table"


FLEET_WIDE = ("herd_nodes", "herd_node_status", "herd_node_ollama_up", "herd_node_draining",
              "herd_queue_max_depth", "herd_leader_present", "herd_slots_capacity")


def _samples(text: str, names: tuple[str, ...]) -> dict[tuple[str, str], float]:
    return {(s.name, json.dumps(s.labels, sort_keys=True)): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name in names}


def test_fleet_gauges_are_the_same_on_every_replica(fleet: DrillFleet) -> None:
    """Why queries take the max of fleet gauges and the sum of request counters."""
    first, second = (scrape(url) for url in fleet.routers)
    assert _samples(first, FLEET_WIDE) == _samples(second, FLEET_WIDE)
    assert _samples(first, FLEET_WIDE)  # not two empty sets
    leaders = _samples(first, ("herd_replica_is_leader",))
    leaders.update({(k[0], "second"): v
                    for k, v in _samples(second, ("herd_replica_is_leader",)).items()})
    assert sorted(leaders.values()) == [0, 1]
    # Each replica counted what it served: the ollama client's chats went to the first only.
    served = [sum(v for (_, labels), v in _samples(text, ("herd_requests_total",)).items()
                  if json.loads(labels)["status"] == "completed") for text in (first, second)]
    assert served[0] >= 3 and served[1] >= 2


@pytest.fixture(scope="module")
def prometheus(fleet: DrillFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping both replicas every second, with deploy/'s alert rules."""
    binary = shutil.which("prometheus")
    if not binary:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    tmp = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "herd", "static_configs": [
            {"targets": [url.removeprefix("http://") for url in fleet.routers]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = Proc([binary, f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                tmp / "prometheus.log")
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(f"{url}/-/ready", timeout=30)
        yield url
    finally:
        proc.stop()


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{answer} for {expr}"
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_prometheus_evaluates_every_dashboard_query_and_rule(
    fleet: DrillFleet, prometheus: str,
) -> None:
    def scraped(times: int) -> bool:
        got = query(prometheus, 'count_over_time(up{job="herd"}[1m])')
        return len(got) == 2 and all(float(r["value"][1]) >= times for r in got)

    wait_until(lambda: scraped(3), timeout=30, interval=0.5, message="Prometheus scrapes")
    started = len(query(prometheus, "up"))
    traffic(fleet, failures=2)  # counters move while Prometheus watches: rates are not 0
    wait_until(lambda: scraped(8), timeout=30, interval=0.5, message="scrapes after traffic")
    assert started == 2

    dashboard = json.loads(DASHBOARD.read_text())
    empty = [expr for expr in dashboard_expressions(dashboard)
             if not query(prometheus, for_prometheus(expr))]
    assert not empty, f"queries with no data from a fleet with traffic: {empty}"

    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    expected = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"]
                for rule in group["rules"]}
    assert set(rules) == expected
    assert all(rule["health"] == "ok" for rule in rules.values()), rules

    # Failures on the only node put its error ratio far over 5%: the rule sees it (pending
    # until its `for:`), and nothing else in this healthy fleet is even pending.
    def active() -> set[str]:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()
        return {alert["labels"]["alertname"] for alert in alerts["data"]["alerts"]}

    wait_until(lambda: "HerdHighErrorRate" in active(), timeout=15, interval=0.5,
               message="HerdHighErrorRate pending")
    assert active() == {"HerdHighErrorRate"}
