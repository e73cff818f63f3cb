"""The fair queue and the conversation index, decided in Redis across replicas.

Two SlotManagers on their own clients stand for two router replicas; one node with one
slot makes every request after the first wait, so the order in which they are served is
the queue's order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from services.router.fleet.slots import Place, Scored
from shared.keys import Keys
from shared.settings import Settings
from tests.integration.test_slots_queue import MODEL, Replica, wait_depth

ONE_SLOT = [("n1", 1)]


@pytest.fixture
async def two(redis_url: str, keys: Keys, settings: Settings) -> AsyncIterator[list[Replica]]:
    replicas = [Replica(redis_url, keys, settings) for _ in range(2)]
    for replica in replicas:
        await replica.start()
    yield replicas
    for replica in replicas:
        await replica.close()


async def serve_in_order(
    replicas: list[Replica], redis: Redis, keys: Keys,
    queued: list[tuple[str, Place]],
) -> list[str]:
    """Hold n1's one slot, queue `queued` (id, place) in that order, alternating replicas,
    then release: the ids in the order they got the slot."""
    first = replicas[0].slots
    assert await first.acquire(MODEL, "holder", ONE_SLOT, timeout=5) == "n1"
    served: list[str] = []

    async def one(i: int, request_id: str, place: Place) -> None:
        slots = replicas[i % len(replicas)].slots
        grant = await slots.claim(MODEL, request_id, ONE_SLOT, 20, place=place)
        served.append(request_id)
        await asyncio.sleep(0.005)
        assert await slots.release(grant.node_id, MODEL, request_id, True)

    tasks = []
    for i, (request_id, place) in enumerate(queued):
        tasks.append(asyncio.create_task(one(i, request_id, place)))
        await wait_depth(redis, keys, i + 1)  # each takes its place before the next arrives
    await first.release("n1", MODEL, "holder", True)
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return served


async def test_waiting_apps_take_turns_across_replicas(
    two: list[Replica], redis: Redis, keys: Keys,
) -> None:
    # A heavy app queued 6 before a light one queued 2: FIFO would serve all of heavy first.
    queued = [(f"h{i}", Place(app="heavy")) for i in range(6)]
    queued += [(f"l{i}", Place(app="light")) for i in range(2)]
    served = await serve_in_order(two, redis, keys, queued)
    assert served == ["h0", "l0", "h1", "l1", "h2", "h3", "h4", "h5"]
    # /fleet/queue's per-app view empties with the queue, and so does the fair state
    assert await redis.hlen(keys.wait_apps(MODEL)) == 0
    assert not await redis.exists(keys.wait_fair(MODEL))


async def test_weights_share_freed_slots(
    two: list[Replica], redis: Redis, keys: Keys,
) -> None:
    # batch weighs 0.25 against chat's 1: four chat requests for each batch one
    queued = [(f"b{i}", Place(app="batch", weight=0.25)) for i in range(4)]
    queued += [(f"c{i}", Place(app="chat")) for i in range(8)]
    served = await serve_in_order(two, redis, keys, queued)
    first_ten = served[:10]
    assert first_ten.count("b0") + first_ten.count("b1") == 2
    assert sum(s.startswith("c") for s in first_ten) == 8
    # FIFO within each app
    assert [s for s in served if s.startswith("b")] == ["b0", "b1", "b2", "b3"]
    assert [s for s in served if s.startswith("c")] == [f"c{i}" for i in range(8)]


async def test_priority_high_goes_first_fleet_wide_low_last_within_the_app(
    two: list[Replica], redis: Redis, keys: Keys,
) -> None:
    queued = [
        ("a-low", Place(app="a", priority="low")),
        ("a0", Place(app="a")),
        ("b0", Place(app="b")),
        ("a1", Place(app="a")),
        ("b-high", Place(app="b", priority="high")),
    ]
    served = await serve_in_order(two, redis, keys, queued)
    assert served[0] == "b-high"
    assert served.index("a0") < served.index("a1") < served.index("a-low")
    assert served[-1] == "a-low"


async def test_queue_shows_waiting_requests_per_app(
    two: list[Replica], redis: Redis, keys: Keys,
) -> None:
    first = two[0].slots
    assert await first.acquire(MODEL, "holder", ONE_SLOT, timeout=5) == "n1"
    tasks = [asyncio.create_task(two[i % 2].slots.claim(
        MODEL, f"w{i}", ONE_SLOT, 20, place=Place(app="batch" if i < 3 else "chat")))
        for i in range(4)]
    await wait_depth(redis, keys, 4)
    assert await redis.hgetall(keys.wait_apps(MODEL)) == {"batch": "3", "chat": "1"}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await wait_depth(redis, keys, 0)
    assert await redis.hlen(keys.wait_apps(MODEL)) == 0
    assert await redis.hlen(keys.wait_app(MODEL)) == 0
    assert await redis.hlen(keys.wait_pending(MODEL)) == 0
    await first.release("n1", MODEL, "holder", True)


# --- the conversation index ---------------------------------------------------------------


def session(key: str, **kw: Any) -> Place:
    return Place(session=key, affinity_bonus=15.0, **kw)


async def test_the_last_node_wins_within_the_bonus_and_load_still_wins(
    two: list[Replica], redis: Redis, keys: Keys,
) -> None:
    r1, r2 = (r.slots for r in two)
    both = [("a", 2), ("b", 2)]

    async def turn(slots: Any, rid: str, scores: list[float],
                   candidates: list[tuple[str, int]] = both) -> tuple[str, str]:
        grant = await slots.claim(MODEL, rid, candidates, 5, place=session("chat-1"),
                                  scores=scores)
        await slots.release(grant.node_id, MODEL, rid, True)
        return grant.node_id, grant.remembered

    assert await turn(r1, "t1", [80, 70], [("b", 2), ("a", 2)]) == ("b", "")  # new
    # through the other replica: b scores 10 less than a, within the bonus of 15: a hit
    assert await turn(r2, "t2", [80, 70], [("a", 2), ("b", 2)]) == ("b", "b")
    # b scores 20 less: the bonus does not cover it, the turn moves to a
    assert await turn(r1, "t3", [80, 60], [("a", 2), ("b", 2)]) == ("a", "b")
    # b is remembered now only if it served the last turn: it was a
    assert await turn(r2, "t4", [80, 70], [("b", 2), ("a", 2)]) == ("a", "a")
    # a full: the turn moves however much a would have scored
    await r1.acquire(MODEL, "busy1", [("a", 2)], 5)
    await r1.acquire(MODEL, "busy2", [("a", 2)], 5)

async def test_the_last_node_is_rated_on_its_live_leases(
    two: list[Replica], redis: Redis, keys: Keys,
) -> None:
    """A replica's view, up to half a second old, may still count the conversation's last
    turn on its node (answered since, through the other replica): the score it passes for
    that node is corrected to the node's live leases before the bonus is weighed."""
    r1, r2 = (r.slots for r in two)

    async def turn(slots: Any, rid: str, first: str, scores: list[Scored]) -> tuple[str, str]:
        candidates = [(first, 2), ("b" if first == "a" else "a", 2)]
        grant = await slots.claim(MODEL, rid, candidates, 5, place=session("chat-2"),
                                  scores=scores)
        await slots.release(grant.node_id, MODEL, rid, True)
        return grant.node_id, grant.remembered

    assert await turn(r1, "t1", "a", [Scored(80), Scored(70)]) == ("a", "")
    # r2's view still counts t1 on a, 40 points of load: 40 + 15 < 70, yet a has no lease
    # left, so it is rated 80: a hit
    stale = [Scored(70), Scored(40, busy=1, freed=40)]
    assert await turn(r2, "t2", "b", stale) == ("a", "a")
    # a really is as busy as the view says: no correction, the turn moves to b
    await r1.acquire(MODEL, "other", [("a", 2)], 5)
    assert await turn(r2, "t3", "b", stale) == ("b", "a")
    await r1.release("a", MODEL, "other", True)


async def test_the_index_stays_bounded_and_expires(
    two: list[Replica], redis: Redis, keys: Keys,
) -> None:
    slots = two[0].slots
    for i in range(12):
        grant = await slots.claim(MODEL, f"r{i}", [("a", 4)], 5,
                                  place=session(f"s{i}", affinity_max=5, affinity_ttl=60))
        await slots.release(grant.node_id, MODEL, f"r{i}", True)
        await asyncio.sleep(0.002)  # distinct last-use times: least recent is well defined
    assert await redis.zcard(keys.affinity()) == 5
    assert await redis.hlen(keys.affinity_node()) == 5
    assert await redis.zrange(keys.affinity(), 0, -1) == [f"s{i}" for i in range(7, 12)]
    # the index lapses after a ttl without use, and an expired entry is not a hit
    short = session("s12", affinity_max=5, affinity_ttl=0.3)
    for request_id in ("w", "x"):
        grant = await slots.claim(MODEL, request_id, [("a", 4)], 5, place=short)
        await slots.release("a", MODEL, request_id, True)
    assert grant.remembered == "a"
    assert 0 < await redis.pttl(keys.affinity()) <= 300
    await asyncio.sleep(0.35)
    grant = await slots.claim(MODEL, "y", [("a", 4)], 5, place=short)
    await slots.release("a", MODEL, "y", True)
    assert grant.remembered == ""
    deadline = time.monotonic() + 5
    while await redis.exists(keys.affinity(), keys.affinity_node()):
        assert time.monotonic() < deadline, "the index never expired"
        await asyncio.sleep(0.05)


async def test_no_session_no_index(two: list[Replica], redis: Redis, keys: Keys) -> None:
    slots: Callable[..., Any] = two[0].slots.claim
    grant = await slots(MODEL, "r", [("a", 1)], 5)
    await two[0].slots.release("a", MODEL, "r", True)
    assert grant.remembered == "" and not await redis.exists(keys.affinity())
