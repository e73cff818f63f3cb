"""/metrics' scrape-time gauges: nodes by status, slots, the queue bound, Redis and the leader,
and an answer (with herd_redis_up 0) while Redis is away or frozen."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from services.router.api.metrics import render_metrics
from services.router.app import create_app
from services.router.context import RouterContext
from shared.settings import Settings
from tests.redisproc import RedisProc

EXAMPLE = Path(__file__).parent.parent / "data" / "herd-heartbeat-example.json"
MODEL = "llama3.2:3b"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(client: AsyncTestClient[Any]) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return parse(response.text)


def heartbeat(node_id: str, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(EXAMPLE.read_text())
    payload["node_id"] = node_id
    payload["ollama_host"] = "http://127.0.0.1:9"  # never called here
    payload["ollama"]["num_parallel"] = 3
    payload.update(extra)
    return payload


@pytest.fixture
async def client(settings: Settings, redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    admin = settings.replace(admin_token="adm1n")
    async with AsyncTestClient(create_app(admin, redis_url)) as test_client:
        test_client.headers["Authorization"] = "Bearer adm1n"
        yield test_client


async def _until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def test_fleet_gauges_follow_the_shared_state(
    client: AsyncTestClient[Any], ctx: RouterContext,
) -> None:
    assert (await client.post("/heartbeat", json=heartbeat("g-1"))).status_code == 200
    down = heartbeat("g-2")
    down["ollama"]["up"] = False
    assert (await client.post("/heartbeat", json=down)).status_code == 200
    changed = await client.post("/dashboard/api/settings", json={"max_queue_depth": 7})
    assert changed.status_code == 200
    # What the request path leaves for a node:model it has served: its counters.
    await ctx.redis.sadd(ctx.keys.counters_index(), f"g-1|{MODEL}")
    await ctx.redis.hset(ctx.keys.counters("g-1", MODEL), mapping={"in_flight": 2, "done": 5})

    async def both_nodes() -> Samples | None:
        got = await scrape(client)
        return got if value(got, "herd_nodes", status="online") == 2 else None

    got = await _until(both_nodes)
    assert got, "the replica never showed both nodes"
    assert value(got, "herd_nodes", status="offline") == 0
    assert value(got, "herd_node_ollama_up", node="g-1") == 1
    assert value(got, "herd_node_ollama_up", node="g-2") == 0
    assert value(got, "herd_node_draining", node="g-1") == 0
    assert value(got, "herd_queue_max_depth") == 7
    assert value(got, "herd_slots_in_flight", node="g-1", model=MODEL) == 2
    assert value(got, "herd_slots_capacity", node="g-1", model=MODEL) == 3
    assert value(got, "herd_redis_up") == 1

    # The agent's goodbye: the node drains.
    goodbye = await client.post("/heartbeat", json={"node_id": "g-1", "draining": True})
    assert goodbye.status_code == 200

    async def drained() -> bool:
        return value(await scrape(client), "herd_node_draining", node="g-1") == 1

    assert await _until(drained)

    async def leads() -> bool:
        return value(await scrape(client), "herd_replica_is_leader") == 1

    assert await _until(leads), "the only replica never took the leader lease"


async def test_leader_gauges(ctx: RouterContext) -> None:
    """A context whose leader campaign is not running: the lease changes only here."""
    got = parse((await render_metrics(ctx)).decode())
    assert value(got, "herd_leader_present") == 0
    assert value(got, "herd_replica_is_leader") == 0
    await ctx.redis.set(ctx.keys.leader(), "a-replica-elsewhere")
    got = parse((await render_metrics(ctx)).decode())
    assert value(got, "herd_leader_present") == 1
    assert value(got, "herd_replica_is_leader") == 0
    await ctx.redis.delete(ctx.keys.leader())
    assert await ctx.leader.try_once()
    try:
        got = parse((await render_metrics(ctx)).decode())
        assert value(got, "herd_leader_present") == 1
        assert value(got, "herd_replica_is_leader") == 1
    finally:
        await ctx.leader.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProc]:
    """A Redis of this test's own: it is frozen and killed."""
    server = RedisProc(tmp_path, "redis").start()
    yield server
    server.stop()


async def test_metrics_answer_while_redis_is_frozen_or_gone(
    own_redis: RedisProc, settings: Settings,
) -> None:
    replica = settings.replace(redis_url=own_redis.url, redis_timeout=0.5)
    async with AsyncTestClient(create_app(replica, own_redis.url)) as client:
        assert (await client.post("/heartbeat", json=heartbeat("r-1"))).status_code == 200
        assert value(await scrape(client), "herd_redis_up") == 1

        own_redis.freeze()
        try:
            started = time.monotonic()
            got = await scrape(client)
            took = time.monotonic() - started
        finally:
            own_redis.thaw()
        assert value(got, "herd_redis_up") == 0
        assert took < 5, f"a frozen Redis held the scrape for {took:.1f} s"
        # What the replica holds itself is still there; what needs Redis is left out.
        assert value(got, "herd_node_status", node="r-1", status="online") == 1
        assert not [name for name, _ in got if name == "herd_queue_waiting"]

        own_redis.kill()
        got = await scrape(client)
        assert value(got, "herd_redis_up") == 0
        assert value(got, "herd_replica_is_leader") is not None
        assert value(got, "herd_queue_max_depth") is not None

        own_redis.start()

        async def back() -> bool:
            return value(await scrape(client), "herd_redis_up") == 1

        assert await _until(back, timeout=15), "herd_redis_up stayed 0 after Redis came back"
