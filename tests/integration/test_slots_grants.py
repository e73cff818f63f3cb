"""Who gets a freed slot, decided in Redis: a waiter that cannot use a node never holds
back one that can, and a grant whose message is lost is still found."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from services.router.fleet.slots import Place, SlotManager
from shared.keys import Keys
from shared.settings import Settings
from tests.integration.test_slots_queue import MODEL, Replica, counters, wait_depth


@pytest.fixture
async def make_replicas(
    redis_url: str, keys: Keys, settings: Settings
) -> AsyncIterator[Callable[..., Any]]:
    """Replicas whose tick is given: at 60 s no timer can stand in for a lost wake-up."""
    made: list[Replica] = []

    async def make(n: int, *, tick: float) -> list[Replica]:
        group = [Replica(redis_url, keys, settings, tick=tick) for _ in range(n)]
        for r in group:
            await r.start()
        made.extend(group)
        return group

    yield make
    for r in made:
        await r.close()


async def wait_queued(redis: Redis, keys: Keys, request_id: str) -> None:
    deadline = time.monotonic() + 5
    while await redis.zscore(keys.wait(MODEL), request_id) is None:
        assert time.monotonic() < deadline, f"{request_id} never queued"
        await asyncio.sleep(0.01)


async def test_a_head_that_cannot_use_the_freed_node_does_not_block_the_queue(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    r1, r2 = await make_replicas(2, tick=60)
    assert await r1.slots.acquire(MODEL, "h1", [("n1", 1)], 5) == "n1"
    assert await r1.slots.acquire(MODEL, "h2", [("n2", 1)], 5) == "n2"
    # The head is pinned to n1 (a retry excluding n2, an X-Herd-Node pin); the next can use
    # either node.
    pinned = asyncio.create_task(r1.slots.acquire(MODEL, "pinned", [("n1", 1)], 10))
    await wait_queued(redis, keys, "pinned")
    either = asyncio.create_task(r2.slots.acquire(MODEL, "either", [("n1", 1), ("n2", 1)], 10))
    await wait_depth(redis, keys, 2)
    assert await r1.slots.release("n2", MODEL, "h2", True)
    assert await asyncio.wait_for(either, 1.0) == "n2"
    assert not pinned.done()
    assert await r1.slots.release("n1", MODEL, "h1", True)
    assert await asyncio.wait_for(pinned, 1.0) == "n1"
    for node, rid, owner in (("n1", "pinned", r1), ("n2", "either", r2)):
        assert await owner.slots.release(node, MODEL, rid, True)
    assert await redis.zcard(keys.wait(MODEL)) == 0
    assert not await redis.exists(keys.wait_nodes(MODEL), keys.wait_cap(MODEL))


async def test_a_grant_is_extended_to_a_full_lease_by_its_replica(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    r1, r2 = await make_replicas(2, tick=60)
    assert await r1.slots.acquire(MODEL, "holder", [("n1", 1)], 5) == "n1"
    waiter = asyncio.create_task(r2.slots.acquire(MODEL, "w", [("n1", 1)], 10))
    await wait_depth(redis, keys, 1)
    granted_at = time.time() * 1000
    assert await r1.slots.release("n1", MODEL, "holder", True)
    assert await asyncio.wait_for(waiter, 1.0) == "n1"
    # The script held it while the waiter would look alive (6 s); its replica, alive,
    # makes it a lease of lease_seconds (30 s) right away.
    deadline = time.monotonic() + 2
    while (await redis.zscore(keys.slots("n1", MODEL), "w") or 0) < granted_at + 20_000:
        assert time.monotonic() < deadline, "the granted lease was never extended"
        await asyncio.sleep(0.01)
    assert await r2.slots.release("n1", MODEL, "w", True)


async def test_a_lost_grant_message_is_found_by_the_tick(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    (r1,) = await make_replicas(1, tick=0.2)
    assert await r1.slots.acquire(MODEL, "holder", [("n1", 1)], 5) == "n1"
    waiter = asyncio.create_task(r1.slots.claim(
        MODEL, "w", [("n1", 1)], 10, place=Place(session="chat", affinity_bonus=10)))
    await wait_depth(redis, keys, 1)
    # The grant will be published where nobody listens: as if the message were lost.
    record = json.loads(await redis.hget(keys.wait_nodes(MODEL), "w"))
    record["o"] = keys.grant_channel("nobody")
    await redis.hset(keys.wait_nodes(MODEL), "w", json.dumps(record))
    started = time.monotonic()
    assert await r1.slots.release("n1", MODEL, "holder", True)
    grant = await asyncio.wait_for(waiter, 2.0)
    assert grant.node_id == "n1"
    assert time.monotonic() - started < 1.0, "one or two ticks, not the queue timeout"
    # Its acquire, called again, found the lease and made it a full one.
    assert await redis.zscore(keys.slots("n1", MODEL), "w") > time.time() * 1000 + 20_000
    assert await r1.slots.release("n1", MODEL, "w", True)
    assert (await counters(redis, keys, "n1"))["in_flight"] == 0


async def test_grants_published_while_the_subscription_was_down_are_found(
    make_replicas: Any, redis: Redis, keys: Keys, redis_url: str, settings: Settings
) -> None:
    """A dropped pub/sub connection: whether redis-py reconnects by itself or the listener
    subscribes again, every waiter calls acquire once more (the tick is 60 s here)."""
    # Its own client, named, so its subscription is found even on a shared server.
    name = f"herdtest-{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(redis_url, decode_responses=True, client_name=name)
    slots = SlotManager(client, keys, lambda: settings, tick=60)
    await slots.start()
    ours = [c["id"] for c in await redis.client_list()
            if c.get("name") == name and int(c.get("sub", 0)) > 0]
    assert len(ours) == 1, ours
    holder = await make_replicas(1, tick=60)
    assert await holder[0].slots.acquire(MODEL, "holder", [("n1", 1)], 5) == "n1"
    waiter = asyncio.create_task(slots.acquire(MODEL, "w", [("n1", 1)], 10))
    try:
        await wait_depth(redis, keys, 1)
        await redis.execute_command("CLIENT", "KILL", "ID", ours[0])
        assert await holder[0].slots.release("n1", MODEL, "holder", True)  # nobody hears it
        assert await asyncio.wait_for(waiter, 3.0) == "n1"
        assert await slots.release("n1", MODEL, "w", True)
    finally:
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        await slots.stop()
        await client.aclose()


async def test_a_cancelled_claim_returns_a_slot_granted_meanwhile_to_the_next_waiter(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    r1, r2 = await make_replicas(2, tick=60)
    assert await r1.slots.acquire(MODEL, "holder", [("n1", 1)], 5) == "n1"
    doomed = asyncio.create_task(r1.slots.acquire(MODEL, "doomed", [("n1", 1)], 10))
    await wait_queued(redis, keys, "doomed")
    nxt = asyncio.create_task(r2.slots.acquire(MODEL, "next", [("n1", 1)], 10))
    await wait_depth(redis, keys, 2)
    # Stop r1 hearing grants, so the slot granted to "doomed" reaches it only as a lease.
    await r1.slots.stop()
    assert await r1.slots.release("n1", MODEL, "holder", True)
    assert await redis.zscore(keys.slots("n1", MODEL), "doomed") is not None
    doomed.cancel()
    assert await asyncio.gather(doomed, return_exceptions=True) != ["n1"]
    # leave.lua returned the lease and gave the slot on in the same script.
    assert await asyncio.wait_for(nxt, 1.0) == "n1"
    assert await r2.slots.release("n1", MODEL, "next", True)
    assert await counters(redis, keys, "n1") == {
        "pending": 0, "in_flight": 0, "done": 2, "failed": 0,
    }


async def test_a_capacity_raised_while_requests_wait_is_used_at_once(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    (r1,) = await make_replicas(1, tick=60)
    assert await r1.slots.acquire(MODEL, "holder", [("n1", 1)], 5) == "n1"
    old = asyncio.create_task(r1.slots.acquire(MODEL, "old", [("n1", 1)], 10))
    await wait_depth(redis, keys, 1)
    # The node now reports two slots: the next request says so, and the older waiter gets
    # the new slot (it is ahead), the newcomer waits.
    new = asyncio.create_task(r1.slots.acquire(MODEL, "new", [("n1", 2)], 10))
    assert await asyncio.wait_for(old, 1.0) == "n1"
    await wait_depth(redis, keys, 1)
    assert not new.done()
    assert await r1.slots.release("n1", MODEL, "holder", True)
    assert await asyncio.wait_for(new, 1.0) == "n1"
    for rid in ("old", "new"):
        assert await r1.slots.release("n1", MODEL, rid, True)


async def test_stored_candidate_lists_match_node_ids_exactly(
    make_replicas: Any, redis: Redis, keys: Keys
) -> None:
    """The scripts find a node in a waiter's stored list without decoding it: names that
    contain quotes, commas or brackets, and a conversation key that looks like a list, must
    not make a waiter look as if it listed a node it does not."""
    (r1,) = await make_replicas(1, tick=60)
    odd = ['n1"', 'n1,', "[n1]", "n1\\"]
    for i, node in enumerate(["n1", *odd]):
        assert await r1.slots.acquire(MODEL, f"h{i}", [(node, 1)], 5) == node
    tricky = Place(session='["n1",["n1"],"n1"]')
    waiter = asyncio.create_task(r1.slots.claim(
        MODEL, "w", [(node, 1) for node in odd], 10, place=tricky))
    await wait_depth(redis, keys, 1)
    assert await r1.slots.release("n1", MODEL, "h0", True)
    await asyncio.sleep(0.1)
    assert not waiter.done(), "granted a node it does not list"
    assert await r1.slots.release("[n1]", MODEL, "h3", True)
    assert (await asyncio.wait_for(waiter, 1.0)).node_id == "[n1]"
