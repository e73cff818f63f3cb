"""redis-py's client from shared.redisconn against a real Redis stopped with SIGSTOP: every
kind of call fails within the reply timeout, nothing leaks, blocking reads and idle
subscriptions are left alone, and a cancelled caller is always cancelled."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.boundedredis import HOLD_S
from shared.redisconn import connect
from tests.redisproc import RedisProc

REPLY = 0.3  # the reply timeout under test
GUARD = 10.0  # no call here may take this long: a hang fails the test instead of the suite


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProc]:
    proc = RedisProc(tmp_path, "bounded").start()
    yield proc
    proc.stop()  # thaws first


async def _timed(call: object) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await asyncio.wait_for(call, GUARD)  # type: ignore[arg-type]
    except RedisError as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def _in_use(client: Redis) -> int:
    return len(client.connection_pool._in_use_connections)


async def _pipeline_with_watch(client: Redis) -> None:
    async with client.pipeline(transaction=True) as pipe:
        await pipe.watch("herd:bounded:w")
        pipe.multi()
        pipe.set("herd:bounded:w", "1")
        await pipe.execute()


async def test_every_kind_of_call_fails_in_time_and_the_client_recovers(
    server: RedisProc,
) -> None:
    client = connect(server.url, timeout=REPLY)
    pubsub = client.pubsub()
    try:
        assert await client.set("herd:bounded:k", "v")
        server.freeze()
        seconds, error = await _timed(client.get("herd:bounded:k"))
        assert isinstance(error, RedisTimeoutError) and "did not answer" in str(error)
        assert REPLY * 0.8 <= seconds < REPLY + 1.0
        # Within HOLD_S of that late reply nothing is sent: each kind of call fails at once.
        for call in (client.get("herd:bounded:k"),
                     client.pipeline(transaction=False).get("a").get("b").execute(),
                     _pipeline_with_watch(client), pubsub.subscribe("herd:bounded:ch")):
            seconds, error = await _timed(call)
            assert isinstance(error, RedisTimeoutError), error
            assert seconds < REPLY / 2
        await asyncio.sleep(HOLD_S)
        # Then one caller asks again, and waits out one reply timeout, no more.
        for call in (_pipeline_with_watch(client), client.xlen("herd:bounded:s")):
            seconds, error = await _timed(call)
            assert isinstance(error, RedisTimeoutError), error
            assert seconds < REPLY + 1.0
        assert _in_use(client) == 0  # every connection given back, none stuck
        server.thaw()
        await asyncio.sleep(HOLD_S)
        assert await asyncio.wait_for(client.get("herd:bounded:k"), GUARD) == "v"
        await asyncio.wait_for(_pipeline_with_watch(client), GUARD)
        assert await client.get("herd:bounded:w") == "1"
    finally:
        server.thaw()
        await pubsub.aclose()
        await client.aclose()


async def test_a_blocking_read_gets_its_block_on_top_of_the_reply_timeout(
    server: RedisProc,
) -> None:
    client = connect(server.url, timeout=REPLY)
    try:
        await client.ping()
        started = time.monotonic()
        # BLOCK 900 ms on an empty stream: Redis answers nil after the block, not an error.
        assert await asyncio.wait_for(
            client.xread({"herd:bounded:empty": "$"}, block=900), GUARD) in ([], None)
        assert time.monotonic() - started >= 0.85
    finally:
        await client.aclose()


async def test_an_idle_subscription_is_left_open(server: RedisProc) -> None:
    client = connect(server.url, timeout=REPLY)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe("herd:bounded:idle")

        async def first_message() -> object:
            async for message in pubsub.listen():
                return message["data"]
            return None

        waiting = asyncio.create_task(first_message())
        await asyncio.sleep(REPLY * 4)  # silent for four reply timeouts: not a late reply
        assert not waiting.done()
        await client.publish("herd:bounded:idle", "hello")
        assert await asyncio.wait_for(waiting, GUARD) == "hello"
    finally:
        await pubsub.aclose()
        await client.aclose()


async def test_a_cancelled_caller_is_always_cancelled(server: RedisProc) -> None:
    """The hang this module exists for: with redis-py's socket_timeout, about one cancel in
    600 against a frozen Redis was lost (asyncio.wait_for on Python 3.11), and a replica's
    shutdown waited forever. Callers here loop over commands and transactions, as the
    background jobs do, and are cancelled at moments spread over the reply timeout."""
    client = connect(server.url, timeout=0.05)
    await client.ping()
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs.get("socket_timeout") is None  # redis-py's own bound is the one that lost them
    kwargs["outage"].hold = 0.0  # no failing at once: every call waits on the frozen Redis
    server.freeze()
    rng = random.Random(17)

    async def caller(transactions: bool) -> None:
        while True:
            try:
                if transactions:
                    await _pipeline_with_watch(client)
                else:
                    await client.set("herd:bounded:lock", "me", nx=True, px=1000)
            except RedisError:
                pass

    lost = 0
    try:
        for index in range(60):
            task = asyncio.create_task(caller(index % 2 == 0))
            await asyncio.sleep(rng.uniform(0, 0.1))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2.0)
            if not done:
                lost += 1
                task.cancel()
        assert lost == 0
        assert _in_use(client) == 0
    finally:
        server.thaw()
        await client.aclose()
