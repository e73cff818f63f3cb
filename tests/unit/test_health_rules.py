"""Pure health logic: score, ordering, a failing check, stats increments, and check rules."""

from __future__ import annotations

from typing import Any

from plugins.health import models, nodes, queues, requests
from services.router.fleet.health import _node_advice
from services.router.fleet.stats import increments, parse_bucket
from shared.health import (
    Finding,
    FunctionCheck,
    HealthView,
    Severity,
    counted,
    health_score,
    run_checks,
    sort_findings,
)
from shared.models import FleetSnapshot, LoadedModel, NodeState, NodeStatus, Trace, TraceStatus
from shared.settings import Settings
from shared.usage import StatsWindow, Usage

SETTINGS = Settings.load(environ={})


def finding(severity: Severity, check_id: str = "x") -> Finding:
    return Finding(check_id=check_id, severity=severity, title="t", description="d", fix="f")


def view(nodes_: list[NodeState] | None = None, scopes: dict[str, Usage] | None = None,
         **extra: Any) -> HealthView:
    return HealthView(
        snapshot=FleetSnapshot(nodes={n.node_id: n for n in nodes_ or []}),
        settings=extra.pop("settings", SETTINGS),
        stats=StatsWindow([(1000, scopes or {})]),
        now=extra.pop("now", 10_000.0),
        **extra,
    )


def test_score_and_order() -> None:
    found = [finding(Severity.INFO), finding(Severity.CRITICAL), finding(Severity.WARNING)]
    assert health_score(found) == 100 - 3 - 20 - 10
    assert [f.severity for f in sort_findings(found)] == ["critical", "warning", "info"]
    assert health_score([finding(Severity.CRITICAL)] * 6) == 0
    assert health_score([]) == 100


def test_a_check_that_raises_becomes_an_info_finding() -> None:
    def broken(_: HealthView) -> list[Finding]:
        raise RuntimeError("boom")

    found = run_checks([FunctionCheck("broken", broken)], view())
    assert [(f.check_id, f.severity) for f in found] == [("broken", "info")]
    assert "boom" in found[0].description


def test_increments_by_status() -> None:
    def metrics(**fields: Any) -> dict[str, int]:
        base: dict[str, Any] = {"request_id": "r", "model": "m", "original_model": "m",
                                "node_id": "n", "latency_ms": 120.0}
        return dict(increments(Trace(**{**base, **fields})))

    ok = metrics(prompt_tokens=3, completion_tokens=4, time_to_first_token_ms=9.6)
    assert ok == {"req": 1, "ptok": 3, "ctok": 4, "lat": 120, "h1": 1, "ttft": 10, "ttftn": 1}
    assert metrics(status=TraceStatus.REJECTED)["rej"] == 1
    assert "lat" not in metrics(status=TraceStatus.REJECTED)
    failed = metrics(status=TraceStatus.FAILED, error_message="ConnectionRefused: connect")
    assert (failed["err"], failed["conn"]) == (1, 1)
    assert metrics(status=TraceStatus.INCOMPLETE, error_message="read timed out")["tmo"] == 1
    assert metrics(status=TraceStatus.CLIENT_DISCONNECTED)["disc"] == 1
    assert metrics(load_duration_ms=1500.4)["cold"] == 1
    assert metrics(retry_count=2)["retry"] == 2


def test_parse_bucket_skips_unknown_fields() -> None:
    scopes = parse_bucket({"req|n:a": "3", "h0|n:a": "2", "lat|nm:a|m:1": "12.0",
                           "future|n:a": "9", "junk": "1", "h99|n:a": "1"})
    assert scopes["n:a"].requests == 3
    assert scopes["n:a"].hist[0] == 2
    assert scopes["nm:a|m:1"].latency_ms_sum == 12
    window = StatsWindow([(1, scopes)])
    assert list(window.node_models()) == [("a", "m:1")]


def test_offline_and_degraded_and_draining() -> None:
    found = run_checks(
        [FunctionCheck("o", nodes.offline_nodes), FunctionCheck("d", nodes.degraded_nodes)],
        view([
            NodeState(node_id="off", ollama_url="", status=NodeStatus.OFFLINE, last_seen=9000),
            NodeState(node_id="slow", ollama_url="", status=NodeStatus.DEGRADED),
            NodeState(node_id="down", ollama_url="", ollama_up=False),
            NodeState(node_id="drain", ollama_url="", draining=True),
            NodeState(node_id="fine", ollama_url=""),
        ]),
    )
    assert [(f.check_id, f.node_id, f.severity) for f in found] == [
        ("offline_nodes", "off", "critical"),
        ("degraded_nodes", "down", "critical"),
        ("degraded_nodes", "slow", "warning"),
        ("degraded_nodes", "drain", "info"),
    ]
    assert "1000 s ago" in found[0].description


def test_underutilised_needs_traffic_and_two_nodes() -> None:
    fleet = [NodeState(node_id=n, ollama_url="") for n in ("busy", "idle")]
    scopes = {"n:busy": Usage(requests=100), "n:idle": Usage(requests=1)}
    found = nodes.underutilised_nodes(view(fleet, scopes))
    assert [f.node_id for f in found] == ["idle"]
    assert nodes.underutilised_nodes(view(fleet[:1], scopes)) == []
    quiet = {"n:busy": Usage(requests=5)}
    assert nodes.underutilised_nodes(view(fleet, quiet)) == []


def test_error_rate_thresholds() -> None:
    scopes = {
        "n:ok": Usage(requests=100, errors=2),
        "n:warn": Usage(requests=90, errors=3, attempt_failures=10),
        "n:bad": Usage(requests=30, errors=10),
        "n:few": Usage(requests=3, errors=3),  # too few to judge
    }
    found = {f.node_id: f.severity for f in requests.error_rate(view(scopes=scopes))}
    assert found == {"warn": "warning", "bad": "critical"}


def test_queue_wait_near_timeout_warns_without_waiters() -> None:
    scopes = {"nm:a|m": Usage(requests=10, queue_wait_ms_sum=10 * 200_000.0)}
    found = queues.queue_saturation(view(scopes=scopes))
    assert [(f.data["model"], f.severity) for f in found] == [("m", "warning")]
    assert queues.queue_saturation(view(queue_depths={"m": 1})) == []


def test_zombies_counted_within_the_window() -> None:
    events = [
        {"kind": "zombie_reaped", "ts": 99_990.0, "node_id": "a", "count": 2},
        {"kind": "zombie_reaped", "ts": 10.0, "node_id": "a", "count": 50},  # too old
        {"kind": "node_status", "ts": 99_990.0},
    ]
    found = queues.zombie_requests(view(events=events, now=100_000.0))
    assert [(f.severity, f.data["reaped"]) for f in found] == [("info", 2)]


def test_counts_read_as_english_at_one_and_at_many() -> None:
    assert (counted(1, "request"), counted(2, "request")) == ("1 request", "2 requests")
    assert (counted(1, "copy", "copies"), counted(0, "copy", "copies")) == ("1 copy", "0 copies")
    assert counted(12_345, "time") == "12,345 times"
    one = {"health_zombie_reaps": 9, "health_thrash_loads": 1,
           "health_min_requests": 1, "health_connection_failures": 1}
    settings = Settings.load(environ={f"FLEET_{k.upper()}": str(v) for k, v in one.items()})
    zombie = [{"kind": "zombie_reaped", "ts": 99_990.0, "node_id": "a", "count": 1}]
    found = queues.zombie_requests(view(events=zombie, now=100_000.0, settings=settings))
    assert found[0].description.startswith("1 slot lease expired "), found[0].description
    scopes = {"nm:a|m": Usage(requests=1, cold_loads=1, load_ms_sum=500.0),
              "n:a": Usage(connection_failures=1)}
    thrash = models.model_thrashing(view(scopes=scopes, settings=settings))
    assert "cold-loaded 1 time on a" in thrash[0].description
    assert "1 request)" in thrash[0].description
    refused = requests.connection_failures(view(scopes=scopes, settings=settings))
    assert " 1 time in the last" in refused[0].description
    waiting = queues.queue_saturation(view(queue_depths={"m": 1000}))
    assert waiting[0].description.startswith("1,000 requests wait for m")


def test_recommendation_reasons_count_in_english() -> None:
    node = NodeState(node_id="a", ollama_url="", memory_total_gb=64.0,
                     memory_available_gb=60.0, models_available=("x", "y"),
                     models_loaded=(LoadedModel(name="x", size_gb=1.0),))
    stats = StatsWindow([(1000, {"nm:a|x": Usage(requests=1)})])
    advice = _node_advice(node, stats=stats, fleet_demand={"y": 8}, copies={"y": 1},
                          roomiest={}, min_requests=1)
    reasons = {r.model: r.reason for r in advice}
    assert reasons["x"].startswith("served 1 request here")
    assert reasons["y"].startswith("8 requests in 24 h across only 1 loaded copy;")
