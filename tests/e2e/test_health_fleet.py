"""Health findings from a real fleet: a router, simulators, and situations an operator meets."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.proxy_fleet import Fleet, start_fleet
from tests.helpers import wait_until

NODES = {
    "steady": ["--models", "llama3.2:3b"],
    "flaky": ["--models", "llama3.2:3b"],
    # two small models, room for one: alternating requests reload every time
    "small": ["--models", "qwen3:0.6b,smollm:135m", "--max-loaded-models", "1"],
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("health-fleet")
    with start_fleet(tmp, redis_url, NODES, parallel=1) as running:
        # Rates are judged from few requests here, so lower the bar at run time.
        answer = httpx.post(f"{running.url}/dashboard/api/settings", json={
            "health_min_requests": 4, "max_queue_depth": 5, "max_retries": 2,
        })
        assert answer.status_code == 200, answer.text
        yield running


def health(fleet: Fleet) -> dict[str, Any]:
    response = httpx.get(f"{fleet.url}/dashboard/api/health", timeout=10)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def findings(data: dict[str, Any], check_id: str) -> list[dict[str, Any]]:
    return [f for f in data["recommendations"] if f["check_id"] == check_id]


def generate(fleet: Fleet, model: str, tokens: int = 8, timeout: float = 60,
             **headers: str) -> httpx.Response:
    return httpx.post(f"{fleet.url}/api/generate", json={
        "model": model, "prompt": "hi", "stream": False, "options": {"num_predict": tokens},
    }, headers=headers, timeout=timeout)


def give_up(fleet: Fleet, model: str, tokens: int, after: float) -> int:
    """A client that hangs up after `after` seconds (the router then frees its place)."""
    try:
        return generate(fleet, model, tokens, timeout=after).status_code
    except httpx.TimeoutException:
        return 0


def test_a_healthy_fleet_scores_100(fleet: Fleet) -> None:
    for _ in range(4):
        assert generate(fleet, "llama3.2:3b").status_code == 200
    data = health(fleet)
    assert data["vitals"]["nodes_online"] == 3
    assert data["vitals"]["total_requests_24h"] >= 4
    assert [f for f in data["recommendations"] if f["severity"] != "info"] == []


def test_model_loaded_and_evicted_repeatedly_is_thrashing(fleet: Fleet) -> None:
    for i in range(6):
        model = "qwen3:0.6b" if i % 2 == 0 else "smollm:135m"
        response = generate(fleet, model, **{"X-Herd-Tags": "thrash-test"})
        assert response.status_code == 200, response.text
        assert response.headers["x-fleet-node"] == "small"
    data = health(fleet)
    thrash = {f["data"]["model"]: f for f in findings(data, "model_thrashing")}
    assert set(thrash) == {"qwen3:0.6b", "smollm:135m"}
    assert all(f["node_id"] == "small" and f["severity"] == "warning" for f in thrash.values())
    assert data["vitals"]["cold_loads_24h"] >= 6
    apps = httpx.get(f"{fleet.url}/dashboard/api/apps").json()["apps"]
    assert apps["thrash-test"]["requests"] == 6


def test_node_returning_500s(fleet: Fleet) -> None:
    fleet.fault("flaky", "error500")
    try:
        # concurrent, so that a busy "steady" leaves "flaky" the free slot
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: generate(fleet, "llama3.2:3b", 40), range(9)))
        assert [a.status_code for a in answers] == [200] * 9  # retried on steady
        data = health(fleet)
    finally:
        fleet.fault("flaky", "none")
    # the router stops sending it that model after a few failures; the node itself stays
    # online (its other models are not to blame), and the finding says which model
    degraded = findings(data, "degraded_nodes")
    assert [(f["node_id"], f["data"].get("model")) for f in degraded] == [
        ("flaky", "llama3.2:3b")], data
    assert data["vitals"]["nodes_degraded"] == 0
    errors = findings(data, "error_rate")
    assert [f["node_id"] for f in errors] == ["flaky"]
    assert errors[0]["data"]["attempt_failures"] >= 1
    assert data["vitals"]["total_retries_24h"] >= 1
    fleet.heartbeat("flaky")  # clears the node's failures; the model's clear with a success


def test_memory_pressure_reported_in_a_heartbeat(fleet: Fleet) -> None:
    payload = fleet.heartbeat("steady")
    payload["memory"].update(total_gb=32.0, used_gb=31.5, available_gb=0.5,
                             pressure="critical")
    assert httpx.post(f"{fleet.url}/heartbeat", json=payload).status_code == 200
    data = health(fleet)
    memory = findings(data, "memory_pressure")
    assert [(f["node_id"], f["severity"]) for f in memory] == [("steady", "critical")]
    assert data["vitals"]["health_score"] <= 80
    fleet.heartbeat("steady")
    assert findings(health(fleet), "memory_pressure") == []


def test_queue_filled_near_its_bound(fleet: Fleet) -> None:
    # One slot per node; long generations on the only node with qwen3 make the rest wait.
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        for _ in range(5):
            pool.submit(give_up, fleet, "qwen3:0.6b", 1500, 4.0)

        def saturated() -> list[dict[str, Any]]:
            return findings(health(fleet), "queue_saturation")

        found = wait_until(saturated, timeout=10, interval=0.1, message="queue saturation")
        assert found[0]["data"]["model"] == "qwen3:0.6b"
        assert found[0]["data"]["waiting"] >= 4
        events = _first_sse_event(fleet)
        assert events["waiting"].get("qwen3:0.6b", 0) >= 1
    wait_until(lambda: not findings(health(fleet), "queue_saturation"), timeout=10,
               message="the queue to drain after the clients gave up")


def _first_sse_event(fleet: Fleet) -> dict[str, Any]:
    with httpx.stream("GET", f"{fleet.url}/dashboard/events", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                data: dict[str, Any] = json.loads(line[5:])
                return data
    raise AssertionError("no event")


def test_benchmark_run_started_from_the_dashboard(fleet: Fleet) -> None:
    started = httpx.post(f"{fleet.url}/dashboard/api/benchmarks", json={
        "model": "llama3.2:3b", "requests": 6, "concurrency": 2, "max_tokens": 8})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]

    def finished() -> dict[str, Any] | None:
        runs = httpx.get(f"{fleet.url}/dashboard/api/benchmarks").json()["runs"]
        return next((r for r in runs if r["run_id"] == run_id), None)

    run = wait_until(finished, timeout=30, interval=0.2, message="the benchmark run")
    assert run["status"] == "completed"
    assert (run["done"], run["failed"]) == (6, 0)
    assert sum(run["by_node"].values()) == 6
    assert run["latency_ms"]["p50"] > 0
    assert run["tokens_per_s_avg"] > 0
    # The runner `herd bench` uses: the same figures, per node too.
    assert run["source"] == "dashboard"
    assert 0 < run["ttft_ms"]["p50"] <= run["latency_ms"]["p99"]
    assert sum(f["requests"] for f in run["per_node"].values()) == 6
    assert run["per_model"]["llama3.2:3b"]["requests"] == 6
    apps = httpx.get(f"{fleet.url}/dashboard/api/apps").json()["apps"]
    assert apps["benchmark"]["requests"] >= 6


def test_live_events_follow_node_status_at_once(fleet: Fleet) -> None:
    with httpx.stream("GET", f"{fleet.url}/dashboard/events", timeout=10) as response:
        lines = response.iter_lines()

        def next_event() -> dict[str, Any]:
            """The next fleet snapshot (event entries of the feed come between them)."""
            kind = ""
            for line in lines:
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind == "fleet":
                    data: dict[str, Any] = json.loads(line[5:])
                    return data
            raise AssertionError("stream ended")

        first = next_event()
        assert first["reason"] == "initial"
        assert {n["node_id"] for n in first["nodes"]} >= {"steady", "small"}
        assert "queues" in first and "waiting" in first
        sent = time.monotonic()
        goodbye = httpx.post(f"{fleet.url}/heartbeat", json={"node_id": "small",
                                                              "draining": True})
        assert goodbye.status_code == 200
        event = next_event()
        assert event["reason"] == "node_status"
        assert time.monotonic() - sent < 1.5  # well before the 2 s period
        small = next(n for n in event["nodes"] if n["node_id"] == "small")
        assert small["draining"] is True
    fleet.heartbeat("small")


def test_a_killed_node_goes_offline(fleet: Fleet) -> None:
    httpx.post(f"{fleet.url}/dashboard/api/settings",
               json={"heartbeat_timeout": 0.5, "heartbeat_offline": 1.0})
    proc, _, _ = fleet.sims["flaky"]
    proc.kill()

    def offline() -> list[dict[str, Any]]:
        for node_id in ("steady", "small"):  # the survivors keep beating
            fleet.heartbeat(node_id)
        return findings(health(fleet), "offline_nodes")

    found = wait_until(offline, timeout=10, interval=0.2, message="offline finding")
    assert [(f["node_id"], f["severity"]) for f in found] == [("flaky", "critical")]
    data = health(fleet)
    assert data["vitals"]["nodes_offline"] == 1
    score = 100 - sum({"critical": 20, "warning": 10, "info": 3}[f["severity"]]
                      for f in data["recommendations"])
    assert data["vitals"]["health_score"] == max(0, score)
