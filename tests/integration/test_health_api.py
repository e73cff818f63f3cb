"""/dashboard/api/health through the app: heartbeats and traces in, findings and score out."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from services.router.app import create_app
from services.router.context import RouterContext
from services.router.fleet.events import emit
from services.router.fleet.stats import record
from shared.models import Trace, TraceStatus
from shared.settings import Settings
from tests.helpers import make_trace

EXAMPLE = json.loads(
    (Path(__file__).parent.parent / "data" / "herd-heartbeat-example.json").read_text()
)


def heartbeat(node_id: str, *, used_gb: float = 4.0, total_gb: float = 32.0,
              pressure: str = "normal", loaded: tuple[str, ...] = ("llama3.2:3b",),
              available: tuple[str, ...] = ("llama3.2:3b", "qwen3:8b")) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLE)
    body["node_id"] = node_id
    body["memory"].update(total_gb=total_gb, used_gb=used_gb,
                          available_gb=total_gb - used_gb, pressure=pressure)
    body["ollama"]["models_loaded"] = [
        {"name": name, "size_gb": 2.0, "context_length": 4096} for name in loaded
    ]
    body["ollama"]["models_available"] = list(available)
    return body


def trace(node: str, model: str = "llama3.2:3b", **fields: Any) -> Trace:
    figures: dict[str, Any] = {"latency_ms": 400.0, "time_to_first_token_ms": 80.0,
                               "prompt_tokens": 10, "completion_tokens": 20}
    return make_trace(node, model, **{**figures, **fields})


@pytest.fixture
async def client(settings: Settings, redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    fast = settings.replace(heartbeat_timeout=0.5, heartbeat_offline=1.0, admin_token="adm1n")
    async with AsyncTestClient(create_app(fast, redis_url)) as test_client:
        test_client.headers["Authorization"] = "Bearer adm1n"  # not loopback: changes need it
        yield test_client


def app_ctx(client: AsyncTestClient[Any]) -> RouterContext:
    ctx: RouterContext = client.app.state.herd
    return ctx




async def beat(client: AsyncTestClient[Any], *payloads: dict[str, Any]) -> None:
    """Post heartbeats, then wait until the replica's snapshot shows every node."""
    for payload in payloads:
        assert (await client.post("/heartbeat", json=payload)).status_code == 200
    wanted = {p["node_id"] for p in payloads}
    deadline = time.monotonic() + 3
    while True:
        nodes = {n["node_id"] for n in (await client.get("/fleet/status")).json()["nodes"]}
        if wanted <= nodes or time.monotonic() > deadline:
            assert wanted <= nodes
            return
        await asyncio.sleep(0.02)


async def health(client: AsyncTestClient[Any]) -> dict[str, Any]:
    response = await client.get("/dashboard/api/health")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def by_check(data: dict[str, Any], check_id: str) -> list[dict[str, Any]]:
    return [f for f in data["recommendations"] if f["check_id"] == check_id]


async def test_healthy_fleet_scores_100(client: AsyncTestClient[Any], ctx: RouterContext) -> None:
    await beat(client, heartbeat("a"), heartbeat("b"))
    for _ in range(30):
        await record(ctx, trace("a"))
        await record(ctx, trace("b"))
    data = await health(client)
    assert data["recommendations"] == []
    vitals = data["vitals"]
    assert vitals["health_score"] == 100
    assert vitals["nodes_total"] == vitals["nodes_online"] == 2
    assert vitals["total_requests_24h"] == 60
    assert vitals["avg_ttft_ms"] == 80.0
    assert vitals["overall_error_rate_pct"] == 0.0
    assert data["checked_at"] == pytest.approx(time.time(), abs=5)


async def test_memory_pressure_and_node_going_offline(client: AsyncTestClient[Any]) -> None:
    await beat(client, heartbeat("tight", used_gb=29.5, total_gb=32.0), heartbeat("gone"),
               heartbeat("red", pressure="critical"))
    data = await health(client)
    memory = {f["node_id"]: f["severity"] for f in by_check(data, "memory_pressure")}
    assert memory == {"tight": "warning", "red": "critical"}
    assert "Unload" in by_check(data, "memory_pressure")[0]["fix"]

    # "gone" falls silent; the others keep beating.
    deadline = time.monotonic() + 5
    while True:
        await client.post("/heartbeat", json=heartbeat("tight", used_gb=29.5))
        await client.post("/heartbeat", json=heartbeat("red", pressure="critical"))
        data = await health(client)
        if by_check(data, "offline_nodes") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    offline = by_check(data, "offline_nodes")
    assert [f["node_id"] for f in offline] == ["gone"]
    assert offline[0]["severity"] == "critical"
    assert data["vitals"]["nodes_offline"] == 1
    severities = [f["severity"] for f in data["recommendations"]]
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)
    expected = 100 - 20 * severities.count("critical") - 10 * severities.count("warning") \
        - 3 * severities.count("info")
    assert data["vitals"]["health_score"] == max(0, expected) == 50


async def test_thrashing_errors_and_retries(
    client: AsyncTestClient[Any], ctx: RouterContext,
) -> None:
    await beat(client, heartbeat("good"), heartbeat("flaky"), heartbeat("idle"))
    for i in range(30):
        # "good" reloads qwen3 every few requests; "flaky" answers 500 a third of the time.
        await record(ctx, trace("good", "qwen3:8b", load_duration_ms=3000.0 if i % 3 == 0 else 0))
        if i % 3 == 0:
            await record(ctx, trace("good", retry_count=1, excluded_nodes=["flaky"],
                                    status=TraceStatus.RETRIED))
        else:
            await record(ctx, trace("flaky"))
    await record(ctx, trace("flaky", status=TraceStatus.FAILED,
                            error_message="upstream returned 500"))
    data = await health(client)
    thrash = by_check(data, "model_thrashing")
    assert len(thrash) == 1
    assert thrash[0]["node_id"] == "good"
    assert thrash[0]["data"]["cold_loads"] == 10
    assert thrash[0]["severity"] == "critical"  # 10 >= 3 x 3
    errors = by_check(data, "error_rate")
    assert [(f["node_id"], f["severity"]) for f in errors] == [("flaky", "critical")]
    assert errors[0]["data"]["attempt_failures"] == 10
    retry = by_check(data, "retry_rate")
    assert retry and retry[0]["data"]["nodes"] == {"flaky": 10}
    assert data["vitals"]["cold_loads_24h"] == 10
    assert data["vitals"]["total_retries_24h"] == 10
    idle = by_check(data, "underutilised_nodes")
    assert [(f["node_id"], f["data"]["requests"]) for f in idle] == [("idle", 0)]


async def test_timeouts_disconnects_connection_failures_and_zombies(
    client: AsyncTestClient[Any], ctx: RouterContext,
) -> None:
    await beat(client, heartbeat("slow"))
    for i in range(20):
        status = TraceStatus.COMPLETED
        message = ""
        if i < 3:
            status, message = TraceStatus.FAILED, "stream timed out after 600 s"
        elif i < 6:
            status = TraceStatus.CLIENT_DISCONNECTED
        elif i < 9:
            status, message = TraceStatus.FAILED, "cannot connect to http://127.0.0.1:1"
        await record(ctx, trace("slow", status=status, error_message=message))
    await emit(ctx.redis, ctx.keys, "zombie_reaped", node_id="slow", model="m", count=4)
    data = await health(client)
    ids = {f["check_id"] for f in data["recommendations"]}
    assert {"request_timeouts", "client_disconnects", "connection_failures",
            "zombie_requests", "error_rate"} <= ids
    assert by_check(data, "zombie_requests")[0]["severity"] == "warning"  # 4 >= 3
    assert by_check(data, "connection_failures")[0]["data"]["connection_failures"] == 3


async def test_queue_saturation_from_waiters(
    client: AsyncTestClient[Any], ctx: RouterContext,
) -> None:
    response = await client.post("/dashboard/api/settings", json={"max_queue_depth": 10})
    assert response.status_code == 200, response.text
    await beat(client, heartbeat("busy"))
    await ctx.redis.zadd(ctx.keys.wait("llama3.2:3b"), {f"r{i}": i for i in range(9)})
    data = await health(client)
    saturated = by_check(data, "queue_saturation")
    assert [(f["data"]["model"], f["severity"]) for f in saturated] == [("llama3.2:3b", "warning")]
    await ctx.redis.zadd(ctx.keys.wait("llama3.2:3b"), {"r9": 9, "r10": 10})
    data = await health(client)
    assert by_check(data, "queue_saturation")[0]["severity"] == "critical"


async def test_recommendations_keep_load_remove(
    client: AsyncTestClient[Any], ctx: RouterContext,
) -> None:
    await beat(client, heartbeat(
        "big", used_gb=4, total_gb=64, loaded=("llama3.2:3b", "idle:7b"),
        available=("llama3.2:3b", "qwen3:8b", "idle:7b")),
        heartbeat("small", used_gb=2, total_gb=16))
    for _ in range(12):
        await record(ctx, trace("big"))
        await record(ctx, trace("small", "qwen3:8b", load_duration_ms=2000.0))
    response = await client.get("/dashboard/api/recommendations")
    assert response.status_code == 200
    nodes = {n["node_id"]: n["recommendations"] for n in response.json()["nodes"]}
    big = {(r["action"], r["model"]) for r in nodes["big"]}
    assert ("keep", "llama3.2:3b") in big
    assert ("remove", "idle:7b") in big
    assert ("load", "qwen3:8b") in big  # not loaded anywhere, big has the most room
    assert all(r["reason"] for r in nodes["big"])
