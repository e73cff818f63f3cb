"""Slots and the fleet-wide queue across several replicas (SlotManagers on their own clients)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from services.router.fleet.core import Core
from services.router.fleet.events import recent_events
from services.router.fleet.reaper import reap_once
from services.router.fleet.slots import SlotManager, parse_counters
from services.router.fleet.traces import add_trace, recent_traces
from shared.errors import QueueFull
from shared.keys import Keys
from shared.models import Trace, TraceStatus
from shared.redisconn import connect
from shared.scripts import Scripts
from shared.settings import Settings

MODEL = "llama3.2:3b"


class Replica:
    """One simulated router replica: its own Redis client and SlotManager."""

    def __init__(self, redis_url: str, keys: Keys, settings: Settings, **kwargs: Any) -> None:
        self.redis = connect(redis_url)
        self.settings = settings
        self.slots = SlotManager(self.redis, keys, lambda: self.settings, **kwargs)
        self.closed = False

    async def start(self) -> None:
        await self.slots.start()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.slots.stop()
        await self.redis.aclose()


@pytest.fixture
async def make_replicas(
    redis_url: str, keys: Keys, settings: Settings
) -> AsyncIterator[Callable[..., Any]]:
    made: list[Replica] = []

    async def make(n: int, **changes: Any) -> list[Replica]:
        s = settings.replace(**changes) if changes else settings
        group = [Replica(redis_url, keys, s) for _ in range(n)]
        for r in group:
            await r.start()
        made.extend(group)
        return group

    yield make
    for r in made:
        await r.close()


async def counters(redis: Redis, keys: Keys, node: str, model: str = MODEL) -> dict[str, int]:
    raw = await redis.hgetall(keys.counters(node, model))
    raw["pending"] = await redis.hget(keys.wait_pending(model), node) or "0"
    return parse_counters(raw)


async def queue_ghost(redis: Redis, keys: Keys, request_id: str, waiter_ttl_ms: int) -> Any:
    """What a replica that then died did: queue a request behind a full node n1."""
    now = int(time.time() * 1000)
    return await Scripts(redis).run(
        "acquire",
        [*keys.queue(MODEL), keys.slots("n1", MODEL), keys.counters("n1", MODEL)],
        [request_id, now, 30000, 100, waiter_ttl_ms, MODEL, keys.grant_channel("ghost"),
         "(none)", 1, 1, "", 0, 60000, 100, 0, "n1", 0, 0, 0, 0],
    )


async def wait_depth(redis: Redis, keys: Keys, depth: int, model: str = MODEL) -> None:
    deadline = time.monotonic() + 5
    while await redis.zcard(keys.wait(model)) != depth:
        assert time.monotonic() < deadline, f"queue never reached depth {depth}"
        await asyncio.sleep(0.01)


async def test_capacity_never_exceeded_under_concurrency(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    replicas = await make_replicas(3)
    caps = {"a": 2, "b": 3}
    live = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}
    rng = random.Random(7)

    async def one(i: int) -> str:
        replica = replicas[i % 3]
        candidates = sorted(caps.items(), key=lambda _: rng.random())
        node = await replica.slots.acquire(MODEL, f"r{i}", candidates, timeout=30)
        live[node] += 1
        peak[node] = max(peak[node], live[node])
        await asyncio.sleep(rng.uniform(0.0, 0.02))
        live[node] -= 1
        ok = i % 5 != 0
        assert await replica.slots.release(node, MODEL, f"r{i}", ok)
        return node

    served = await asyncio.gather(*(one(i) for i in range(60)))
    assert peak["a"] <= 2 and peak["b"] <= 3
    assert peak["a"] + peak["b"] == 5, "with 60 requests both nodes fill up"
    assert set(served) == {"a", "b"}
    a, b = await counters(redis, keys, "a"), await counters(redis, keys, "b")
    assert a["in_flight"] == b["in_flight"] == 0
    assert a["pending"] == b["pending"] == 0
    assert a["done"] + b["done"] == 48 and a["failed"] + b["failed"] == 12
    assert await redis.zcard(keys.wait(MODEL)) == 0
    assert await redis.zcard(keys.wait_lease(MODEL)) == 0
    assert await redis.hlen(keys.wait_first(MODEL)) == 0
    for book in (keys.wait_pending(MODEL), keys.wait_app(MODEL), keys.wait_apps(MODEL),
                 keys.wait_fair(MODEL)):
        assert not await redis.exists(book), book
    assert await redis.smembers(keys.counters_index()) == {f"a|{MODEL}", f"b|{MODEL}"}


async def test_freed_slot_goes_to_oldest_waiter_on_any_replica(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    replicas = await make_replicas(3)
    cand = [("n1", 1)]
    holder = await replicas[0].slots.acquire(MODEL, "holder", cand, timeout=5)
    assert holder == "n1"
    order: list[str] = []
    tasks = []
    for i in range(6):
        replica = replicas[(i * 2 + 1) % 3]  # 1, 0, 2, 1, 0, 2: owners interleave

        async def wait_turn(r: Replica = replica, rid: str = f"w{i}") -> None:
            node = await r.slots.acquire(MODEL, rid, cand, timeout=10)
            order.append(rid)
            await asyncio.sleep(0.01)
            await r.slots.release(node, MODEL, rid, True)

        tasks.append(asyncio.create_task(wait_turn()))
        await wait_depth(redis, keys, i + 1)
    assert (await counters(redis, keys, "n1"))["pending"] == 6
    started = time.monotonic()
    await replicas[0].slots.release("n1", MODEL, "holder", True)
    await asyncio.gather(*tasks)
    assert order == [f"w{i}" for i in range(6)]
    # Woken by the release channel, not by the 1 s timer: six hand-overs well under 6 s.
    assert time.monotonic() - started < 3.0
    c = await counters(redis, keys, "n1")
    assert c == {"pending": 0, "in_flight": 0, "done": 7, "failed": 0}


async def test_newcomer_does_not_jump_the_queue(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    r1, r2 = await make_replicas(2)
    cand = [("n1", 1)]
    await r1.slots.acquire(MODEL, "holder", cand, timeout=5)
    first = asyncio.create_task(r1.slots.acquire(MODEL, "first", cand, timeout=5))
    await wait_depth(redis, keys, 1)
    await r1.slots.release("n1", MODEL, "holder", True)
    # A newcomer arriving as the slot frees must queue behind "first".
    late = asyncio.create_task(r2.slots.acquire(MODEL, "late", cand, timeout=5))
    assert await first == "n1"
    await asyncio.sleep(0.05)
    assert not late.done(), "the newcomer took the slot meant for the older waiter"
    await r1.slots.release("n1", MODEL, "first", True)
    assert await late == "n1"
    await r2.slots.release("n1", MODEL, "late", True)
    assert (await counters(redis, keys, "n1"))["in_flight"] == 0


async def test_queue_bound_gives_queue_full(make_replicas: Any, redis: Redis, keys: Keys) -> None:
    r1, r2 = await make_replicas(2, max_queue_depth=2)
    cand = [("n1", 1)]
    await r1.slots.acquire(MODEL, "holder", cand, timeout=5)
    waiting = [
        asyncio.create_task(r.slots.acquire(MODEL, f"w{i}", cand, timeout=10))
        for i, r in enumerate((r1, r2))
    ]
    await wait_depth(redis, keys, 2)
    started = time.monotonic()
    with pytest.raises(QueueFull) as info:
        await r2.slots.acquire(MODEL, "third", cand, timeout=10)
    assert time.monotonic() - started < 1.0, "a full queue answers at once"
    assert info.value.status_code == 503 and "Retry-After" in info.value.headers
    assert await redis.zscore(keys.wait(MODEL), "third") is None
    await r1.slots.release("n1", MODEL, "holder", True)
    for task, rid in zip(waiting, ("w0", "w1"), strict=True):
        node = await task
        await r1.slots.release(node, MODEL, rid, True)
    assert await counters(redis, keys, "n1") == {
        "pending": 0, "in_flight": 0, "done": 3, "failed": 0,
    }


async def test_timeout_gives_queue_full_and_leaves_no_trace(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    (r1,) = await make_replicas(1)
    cand = [("n1", 1), ("n2", 1)]
    await r1.slots.acquire(MODEL, "h1", cand, timeout=5)
    await r1.slots.acquire(MODEL, "h2", cand, timeout=5)
    started = time.monotonic()
    with pytest.raises(QueueFull, match="within"):
        await r1.slots.acquire(MODEL, "late", cand, timeout=0.3)
    assert 0.25 < time.monotonic() - started < 2.0
    assert await redis.zcard(keys.wait(MODEL)) == 0
    assert await redis.zcard(keys.wait_lease(MODEL)) == 0
    assert (await counters(redis, keys, "n1"))["pending"] == 0
    assert r1.slots.waiting() == 0
    for node, rid in (("n1", "h1"), ("n2", "h2")):
        await r1.slots.release(node, MODEL, rid, True)
    assert (await counters(redis, keys, "n1"))["in_flight"] == 0
    assert (await counters(redis, keys, "n2"))["in_flight"] == 0


async def test_cancelled_waiter_leaves_and_next_one_is_served(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    r1, r2 = await make_replicas(2)
    cand = [("n1", 1)]
    await r1.slots.acquire(MODEL, "holder", cand, timeout=5)
    doomed = asyncio.create_task(r1.slots.acquire(MODEL, "doomed", cand, timeout=10))
    await wait_depth(redis, keys, 1)
    nxt = asyncio.create_task(r2.slots.acquire(MODEL, "next", cand, timeout=10))
    await wait_depth(redis, keys, 2)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await redis.zscore(keys.wait(MODEL), "doomed") is None
    assert await redis.zscore(keys.wait_lease(MODEL), "doomed") is None
    assert (await counters(redis, keys, "n1"))["pending"] == 1
    await r1.slots.release("n1", MODEL, "holder", True)
    assert await asyncio.wait_for(nxt, 3) == "n1"
    await r2.slots.release("n1", MODEL, "next", False)
    assert await counters(redis, keys, "n1") == {
        "pending": 0, "in_flight": 0, "done": 1, "failed": 1,
    }


async def test_cancel_while_acquiring_never_leaks_a_slot(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    (r1,) = await make_replicas(1)
    cand = [("n1", 2)]
    # Cancel at every point of the acquire: whatever happened in Redis is undone.
    for i in range(30):
        task = asyncio.create_task(r1.slots.acquire(MODEL, f"c{i}", cand, timeout=5))
        for _ in range(i % 4):
            await asyncio.sleep(0)
        task.cancel()
        try:
            node = await task
        except asyncio.CancelledError:
            continue
        await r1.slots.release(node, MODEL, f"c{i}", True)
    c = await counters(redis, keys, "n1")
    assert c["in_flight"] == 0 and c["pending"] == 0
    assert await redis.zcard(keys.slots("n1", MODEL)) == 0


async def test_crashed_replica_leases_expire_and_reaper_returns_them(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    # A lease long enough that a loaded machine reaches the first pass before it expires.
    crashed, alive = await make_replicas(2, lease_seconds=1.0)
    cand = [("n1", 1)]
    await crashed.slots.acquire(MODEL, "zombie", cand, timeout=5)
    expiry = await redis.zscore(keys.slots("n1", MODEL), "zombie")
    # The replica dies: no renewal, no release.
    await crashed.close()
    waiter = asyncio.create_task(alive.slots.acquire(MODEL, "patient", cand, timeout=10))
    await wait_depth(redis, keys, 1)
    if time.time() * 1000 < expiry - 100:
        assert (await reap_once(redis, keys)).total == 0, "nothing expired yet"
    while time.time() * 1000 <= expiry:
        await asyncio.sleep(0.05)
    reaped = await reap_once(redis, keys)
    assert reaped.leases == {("n1", MODEL): ["zombie"]}
    # The reaper's pass gave the slot to the waiter in the same script.
    assert await asyncio.wait_for(waiter, 2.0) == "n1"
    events = [e for e in await recent_events(redis, keys) if e["kind"] == "zombie_reaped"]
    assert events and events[0]["count"] == 1 and events[0]["node_id"] == "n1"
    await alive.slots.release("n1", MODEL, "patient", True)
    assert not await crashed_release_counts(redis, keys)
    assert await counters(redis, keys, "n1") == {
        "pending": 0, "in_flight": 0, "done": 1, "failed": 1,
    }


async def crashed_release_counts(redis: Redis, keys: Keys) -> bool:
    """A late release of a reaped lease must not count twice."""
    scripts = Scripts(redis)
    return bool(await scripts.run(
        "release", [*keys.queue(MODEL), keys.slots("n1", MODEL), keys.counters("n1", MODEL)],
        ["zombie", 1, int(time.time() * 1000), "n1", MODEL],
    ))


async def test_a_dead_replicas_waiter_holds_a_granted_slot_only_briefly(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    """Redis cannot tell that a waiter's replica died until its liveness lapses: a slot
    granted to it meanwhile is held only until then (at least a second), not a full lease,
    and the reaper's pass gives it on."""
    (r1,) = await make_replicas(1)
    cand = [("n1", 1)]
    # A replica queued "ghost" (its liveness lasting 0.2 s; to it n1 was full) and died.
    reply = await queue_ghost(redis, keys, "ghost", 200)
    assert int(reply[0]) == 0
    assert (await counters(redis, keys, "n1"))["pending"] == 1
    started = time.time() * 1000
    live = asyncio.create_task(r1.slots.acquire(MODEL, "live", cand, timeout=5))
    # The ghost, ahead of it in the order and still looking alive, got n1's slot.
    deadline = time.monotonic() + 5
    while await redis.zrange(keys.wait(MODEL), 0, -1) != ["live"]:
        assert time.monotonic() < deadline, "the ghost was never granted the slot"
        await asyncio.sleep(0.01)
    expiry = await redis.zscore(keys.slots("n1", MODEL), "ghost")
    assert expiry is not None and expiry <= started + 1500, "a short lease, not 30 s"
    while time.time() * 1000 <= expiry:
        await asyncio.sleep(0.05)
    reaped = await reap_once(redis, keys)
    assert reaped.leases == {("n1", MODEL): ["ghost"]}
    assert await asyncio.wait_for(live, 1.0) == "n1"
    await r1.slots.release("n1", MODEL, "live", True)
    assert await counters(redis, keys, "n1") == {
        "pending": 0, "in_flight": 0, "done": 1, "failed": 1,
    }


async def test_reaper_drops_dead_waiters_of_idle_models(redis: Redis, keys: Keys) -> None:
    await queue_ghost(redis, keys, "ghost", 1)
    await asyncio.sleep(0.01)
    reaped = await reap_once(redis, keys)
    assert reaped.waiters == {MODEL: ["ghost"]}
    assert (await counters(redis, keys, "n1"))["pending"] == 0
    assert await redis.zcard(keys.wait(MODEL)) == 0


async def test_renewing_keeps_a_long_request_alive(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    (r1,) = await make_replicas(1, lease_seconds=0.3)
    cand = [("n1", 1)]
    node = await r1.slots.acquire(MODEL, "long", cand, timeout=5)
    async with r1.slots.renewing(node, MODEL, "long"):
        for _ in range(4):
            await asyncio.sleep(0.25)
            assert (await reap_once(redis, keys)).total == 0
    await asyncio.sleep(0.4)
    assert (await reap_once(redis, keys)).leases == {("n1", MODEL): ["long"]}
    assert not await r1.slots.release(node, MODEL, "long", True), "already reaped"
    assert await counters(redis, keys, "n1") == {
        "pending": 0, "in_flight": 0, "done": 0, "failed": 1,
    }


async def test_release_and_trace_in_one_pipeline(
    make_replicas: Any, redis: Redis, keys: Keys, settings: Settings
) -> None:
    (r1,) = await make_replicas(1)
    ctx = Core.create(settings, redis)
    node = await r1.slots.acquire(MODEL, "req-1", [("n1", 2)], timeout=5)
    trace = Trace(
        request_id="req-1", model=MODEL, original_model="llama3.2", node_id=node,
        status=TraceStatus.COMPLETED, latency_ms=12.5, completion_tokens=7,
        timestamp=time.time(), tags=["app1"],
    )
    async with redis.pipeline(transaction=False) as pipe:
        r1.slots.add_release(pipe, node, MODEL, "req-1", True)
        add_trace(pipe, ctx, trace)
        released, entry_id = await pipe.execute()
    assert released == 1 and entry_id
    assert await counters(redis, keys, "n1") == {
        "pending": 0, "in_flight": 0, "done": 1, "failed": 0,
    }
    found = await recent_traces(ctx, 10, tag="app1")
    assert [t.request_id for t in found] == ["req-1"]
    assert found[0].completion_tokens == 7
    assert await recent_traces(ctx, 10, node_id="elsewhere") == []


async def test_grants_are_published_only_to_the_waiters_replica(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    """Nothing is published when nobody waits; a slot granted to a waiter is announced on
    its own replica's channel only, and that replica completes the claim from the message."""
    r1, r2 = await make_replicas(2)
    pubsub = redis.pubsub()
    await pubsub.psubscribe(keys.grant_channel("*"))
    try:
        assert (await pubsub.get_message(timeout=1.0))["type"] == "psubscribe"
        assert await r1.slots.acquire(MODEL, "a", [("n1", 1)], 2.0) == "n1"
        assert await r1.slots.release("n1", MODEL, "a", True)
        assert await pubsub.get_message(timeout=0.3) is None  # nobody waited: no message
        assert await r1.slots.acquire(MODEL, "b", [("n1", 1)], 2.0) == "n1"
        waiter = asyncio.create_task(r2.slots.acquire(MODEL, "c", [("n1", 1)], 5.0))
        await wait_depth(redis, keys, 1)
        assert await r1.slots.release("n1", MODEL, "b", True)
        message = await pubsub.get_message(timeout=1.0)
        assert message is not None and message["channel"] == r2.slots._channel
        assert json.loads(message["data"]) == ["c", "n1", ""]
        assert await asyncio.wait_for(waiter, 2.0) == "n1"
        assert await pubsub.get_message(timeout=0.2) is None  # one grant, one message
        await r2.slots.release("n1", MODEL, "c", True)
    finally:
        await pubsub.aclose()
