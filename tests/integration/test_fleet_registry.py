"""The node registry through the app: heartbeats in, /fleet/status out, statuses by silence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from services.router.app import create_app
from services.router.fleet.core import Core
from services.router.fleet.events import recent_events
from services.router.fleet.registry import Registry
from shared.keys import Keys
from shared.models import MemoryRefusal
from shared.settings import Settings

EXAMPLE = Path(__file__).parent.parent / "data" / "herd-heartbeat-example.json"


def example() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return data


@pytest.fixture
async def client(settings: Settings, redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    # The degraded window (1.5 s) is longer than a replica's 1 s sweep of silent nodes, so
    # a sweep always lands in it: the test sees each status, however the ticks fall.
    fast = settings.replace(heartbeat_timeout=1.0, heartbeat_offline=2.5)
    async with AsyncTestClient(create_app(fast, redis_url)) as test_client:
        yield test_client


async def first_node_where(
    client: AsyncTestClient[Any], check: Any, timeout: float = 3.0,
) -> dict[str, Any]:
    """Poll /fleet/status until its first node passes `check` (replicas learn by pub/sub)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        node: dict[str, Any] = (await status(client))["nodes"][0]
        if check(node) or asyncio.get_running_loop().time() > deadline:
            return node
        await asyncio.sleep(0.02)


async def status(client: AsyncTestClient[Any]) -> dict[str, Any]:
    response = await client.get("/fleet/status")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


async def test_ollama_herd_heartbeat_verbatim_registers_node(
    client: AsyncTestClient[Any],
) -> None:
    response = await client.post("/heartbeat", content=EXAMPLE.read_bytes())
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "node_status": "online"}
    data = await status(client)
    assert data["fleet"]["nodes_total"] == 1
    assert data["fleet"]["nodes_online"] == 1
    assert data["fleet"]["models_loaded"] == 2
    node = data["nodes"][0]
    assert node["node_id"] == "capnode"
    assert node["status"] == "online"
    assert node["servable"] is True
    assert node["num_parallel"] == 4
    assert node["cpu"]["utilization_pct"] == 50.0
    assert node["memory"]["total_gb"] == 23.54
    assert {m["name"]: m["context_length"] for m in node["models_loaded"]} == {
        "llama3.2:3b": 8192, "nomic-embed-text:latest": 2048}
    assert "qwen3:8b" in node["models_available"]
    snap = client.app.state.herd.fleet.snapshot()
    assert [n.node_id for n in snap.servable_with("qwen3:8b")] == ["capnode"]


async def test_status_moves_by_silence_and_back(
    client: AsyncTestClient[Any], redis: Redis, keys: Keys,
) -> None:
    assert (await client.post("/heartbeat", json=example())).status_code == 200

    async def node_status() -> str:
        return str((await status(client))["nodes"][0]["status"])

    seen: list[str] = []
    for _ in range(160):  # polls the app until the node is offline (2.5 s), at most ~8 s
        current = await node_status()
        if not seen or seen[-1] != current:
            seen.append(current)
        if current == "offline":
            break
        await asyncio.sleep(0.05)
    assert seen == ["online", "degraded", "offline"]
    response = await client.post("/heartbeat", json=example())
    assert response.json()["node_status"] == "online"
    events = [e for e in await recent_events(redis, keys) if e["kind"] == "node_status"]
    transitions = [(e["old"], e["new"]) for e in reversed(events)]
    assert transitions == [
        ("unknown", "online"), ("online", "degraded"), ("degraded", "offline"),
        ("offline", "online")]


async def test_draining_and_ollama_down_are_not_servable(client: AsyncTestClient[Any]) -> None:
    await client.post("/heartbeat", json=example())
    response = await client.post("/heartbeat", json={"node_id": "capnode", "draining": True})
    assert response.status_code == 200
    node = (await status(client))["nodes"][0]
    assert node["draining"] is True and node["servable"] is False
    assert node["models_loaded"], "a goodbye must not erase what the node reported"

    down = example()
    down["ollama"] = {"up": False, "error": "connection refused"}
    await client.post("/heartbeat", json=down)
    node = (await status(client))["nodes"][0]
    assert node["status"] == "online"
    assert node["ollama_up"] is False and node["servable"] is False
    assert node["draining"] is False
    assert node["models_available"] == []


BAD_BODIES = [
    b"not json", b"[1, 2]", b"{}", b'{"node_id": ""}', b'{"node_id": 7}',
    b'{"node_id": "a", "cpu": {"utilization_pct": "high"}}',
    b'{"node_id": "a", "ollama": {"models_loaded": [{"size_gb": 1}]}}',
    b'{"node_id": "a", "draining": "yes"}',
]


async def test_bad_heartbeats_are_400_in_ollama_shape(client: AsyncTestClient[Any]) -> None:
    for body in BAD_BODIES:  # one app for all: starting one costs more than the checks
        response = await client.post("/heartbeat", content=body)
        assert response.status_code == 400, body
        assert isinstance(response.json()["error"], str), body
    assert (await status(client))["nodes"] == []


async def test_node_token_required_when_set(settings: Settings, redis_url: str) -> None:
    app = create_app(settings.replace(node_token="s3cret"), redis_url)
    async with AsyncTestClient(app) as test_client:
        assert (await test_client.post("/heartbeat", json=example())).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await test_client.post("/heartbeat", json=example(),
                                       headers=wrong)).status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        assert (await test_client.post("/heartbeat", json=example(),
                                       headers=right)).status_code == 200


async def test_router_failures_degrade_until_success(
    client: AsyncTestClient[Any], settings: Settings, redis: Redis,
) -> None:
    await client.post("/heartbeat", json=example())
    # Another replica (in this test's loop) sees the failures; the app learns by pub/sub.
    other = Registry(Core.create(settings, redis))
    await other.refresh(sweep=False)
    for _ in range(settings.node_failures_degraded):
        await other.record_failure("capnode", "connect refused")
    assert other.snapshot().nodes["capnode"].status == "degraded"
    node = await first_node_where(client, lambda n: n["status"] == "degraded")
    assert (node["status"], node["router_failures"], node["servable"]) == ("degraded", 3, False)
    await other.record_success("capnode")
    assert other.snapshot().nodes["capnode"].status == "online"
    node = await first_node_where(client, lambda n: n["status"] == "online")
    assert node["status"] == "online"


async def test_a_models_failures_stay_with_it_unless_they_span_models(
    client: AsyncTestClient[Any], settings: Settings, redis: Redis, keys: Keys,
) -> None:
    await client.post("/heartbeat", json=example())
    other = Registry(Core.create(settings, redis))
    await other.refresh(sweep=False)
    for _ in range(settings.node_failures_degraded + 1):
        await other.record_failure("capnode", "answered 500", model="llama3.2:3b")
    node = other.snapshot().nodes["capnode"]
    # one model failing on a node leaves the node, and so its other models, servable
    assert (node.status, node.router_failures) == ("online", 0)
    assert node.model_failures["llama3.2:3b"].count == settings.node_failures_degraded + 1
    # a heartbeat proves the node answers, not that the model works: the count stands
    await client.post("/heartbeat", json=example())
    await other.refresh_node("capnode")
    assert other.snapshot().nodes["capnode"].model_failures["llama3.2:3b"].count == 4
    # another model failing there within model_failure_cooldown points at the node
    for _ in range(settings.node_failures_degraded):
        await other.record_failure("capnode", "answered 500", model="qwen3:8b")
    node = other.snapshot().nodes["capnode"]
    assert (node.status, node.router_failures) == ("degraded", 3)
    await other.record_success("capnode", "llama3.2:3b")
    node = other.snapshot().nodes["capnode"]
    assert node.status == "online" and "llama3.2:3b" not in node.model_failures
    assert node.model_failures["qwen3:8b"].count == 3
    assert not await redis.hexists(keys.node("capnode"), "mfail_at:llama3.2:3b")


async def test_a_nodes_refusal_reaches_every_replica_and_outlives_heartbeats(
    client: AsyncTestClient[Any], settings: Settings, redis: Redis, keys: Keys,
) -> None:
    await client.post("/heartbeat", json=example())
    first, second = Registry(Core.create(settings, redis)), Registry(Core.create(settings, redis))
    await first.refresh(sweep=False)
    said = MemoryRefusal(num_ctx=131072, slots=4, need_gb=62.9, size_gb=2.147483648)
    assert await first.note_refusal("capnode", "llama3.2:3b", said)
    await client.post("/heartbeat", json=example())
    await second.refresh(sweep=False)
    kept = second.snapshot().nodes["capnode"].memory_refusals["llama3.2:3b"]
    assert (kept.num_ctx, kept.need_gb) == (131072, 62.9) and kept.at > 0
    assert second.snapshot().refusals("llama3.2:3b") == (kept,)
    # a node the registry forgot is not brought back by a late refusal
    assert not await first.note_refusal("gone", "llama3.2:3b", said)
    assert not await redis.exists(keys.node("gone"))


async def test_two_replicas_see_each_others_heartbeats_and_queues(
    settings: Settings, redis_url: str, redis: Redis, keys: Keys,
) -> None:
    await redis.hset(keys.counters("capnode", "llama3.2:3b"),
                     mapping={"in_flight": 3, "done": 10, "failed": 1})
    await redis.hset(keys.wait_pending("llama3.2:3b"), "capnode", 2)
    await redis.hset(keys.wait_apps("llama3.2:3b"), mapping={"batch": 1, "chat": 1})
    await redis.sadd(keys.counters_index(), "capnode|llama3.2:3b")
    await redis.zadd(keys.wait("llama3.2:3b"), {"r1": 1, "r2": 2})
    async with AsyncTestClient(create_app(settings, redis_url)) as a, \
            AsyncTestClient(create_app(settings, redis_url)) as b:
        await a.post("/heartbeat", json=example())
        fleet_b = b.app.state.herd.fleet
        for _ in range(60):
            if "capnode" in fleet_b.snapshot().nodes:
                break
            await asyncio.sleep(0.05)
        assert "capnode" in fleet_b.snapshot().nodes
        data = (await b.get("/fleet/status")).json()
        assert data["queues"] == {"capnode:llama3.2:3b": {
            "pending": 2, "in_flight": 3, "done": 10, "failed": 1, "max_concurrent": 4}}
        assert data["fleet"]["requests_active"] == 3
        queue = (await b.get("/fleet/queue")).json()
        assert queue["waiting"]["llama3.2:3b"] == 2
        assert queue["waiting_by_app"] == {"llama3.2:3b": {"batch": 1, "chat": 1}}
        assert queue["waiting_apps"] == {"batch": 1, "chat": 1}
        assert queue["waiting"]["qwen3:8b"] == 0
