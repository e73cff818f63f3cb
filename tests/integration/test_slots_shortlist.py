"""A shortlist first, the whole fleet when it is full: acquire's `more` on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from redis.asyncio import Redis

from services.router.fleet.slots import SlotManager, parse_counters
from shared.keys import Keys
from shared.redisconn import connect
from shared.settings import Settings

MODEL = "llama3.2:3b"


@pytest.fixture
async def slots(redis_url: str, keys: Keys, settings: Settings) -> AsyncIterator[SlotManager]:
    client = connect(redis_url)
    manager = SlotManager(client, keys, lambda: settings)
    await manager.start()
    yield manager
    await manager.stop()
    await client.aclose()


class Wider:
    """The `more` callback, counting its calls."""

    def __init__(self, nodes: Sequence[tuple[str, int]]) -> None:
        self.nodes, self.calls = list(nodes), 0

    def __call__(self) -> list[tuple[str, int]]:
        self.calls += 1
        return self.nodes


async def test_a_full_shortlist_widens_at_once_to_a_free_node(
    slots: SlotManager, redis: Redis, keys: Keys
) -> None:
    assert await slots.acquire(MODEL, "a", [("short", 1)], 1.0) == "short"
    wider = Wider([("short", 1), ("far", 1)])
    # the shortlist has room: the wider list is never asked for
    assert await slots.acquire(MODEL, "b", [("far", 1)], 1.0, more=wider) == "far"
    assert wider.calls == 0
    await slots.release("far", MODEL, "b", ok=True)
    node = await asyncio.wait_for(slots.acquire(MODEL, "c", [("short", 1)], 1.0, more=wider), 2)
    assert (node, wider.calls) == ("far", 1)
    assert await redis.zcard(keys.wait(MODEL)) == 0  # it queued for a moment, then left
    assert parse_counters(await redis.hgetall(keys.counters("far", MODEL)))["in_flight"] == 1


async def test_with_no_room_anywhere_it_waits_with_the_wider_list(
    slots: SlotManager, redis: Redis, keys: Keys
) -> None:
    assert await slots.acquire(MODEL, "a", [("short", 1)], 1.0) == "short"
    assert await slots.acquire(MODEL, "b", [("far", 1)], 1.0) == "far"
    wider = Wider([("short", 1), ("far", 1)])
    waiting = asyncio.create_task(slots.acquire(MODEL, "c", [("short", 1)], 5.0, more=wider))
    while await redis.zcard(keys.wait(MODEL)) != 1:
        await asyncio.sleep(0.01)
    # a slot frees on a node outside the shortlist: the waiter takes it
    await slots.release("far", MODEL, "b", ok=True)
    assert await asyncio.wait_for(waiting, 3) == "far"
    assert wider.calls == 1
