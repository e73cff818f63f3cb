"""A request's end (release, trace, events) that Redis did not take is kept and written once
it answers; writing one twice counts it once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.router.context import RouterContext
from services.router.fleet.ends import RequestEnd
from services.router.fleet.events import recent_events
from services.router.fleet.traces import recent_traces
from shared.fastredis import FastRedis
from shared.redisconn import connect
from shared.settings import Settings
from tests.helpers import make_trace
from tests.redisproc import RedisProc

MODEL = "m:1"


def _end(node: str = "n1") -> RequestEnd:
    trace = make_trace(node, MODEL)
    return RequestEnd(trace, release=(node, MODEL, trace.request_id, True),
                      events=[{"kind": "context_protection", "ts": time.time(),
                               "message": "num_ctx stripped"}])


async def _hold_lease(ctx: RouterContext, end: RequestEnd) -> None:
    """The lease acquire.lua would have left for this request."""
    assert end.release is not None
    node, model, request_id, _ = end.release
    await ctx.redis.zadd(ctx.keys.slots(node, model), {request_id: int(time.time() * 1000)
                                                       + 60_000})
    await ctx.redis.hset(ctx.keys.counters(node, model), "in_flight", 1)


@pytest.fixture
async def own(tmp_path: Path, settings: Settings) -> AsyncIterator[
        tuple[RedisProc, RouterContext]]:
    """A context on a Redis of its own, which the test stops and starts."""
    server = RedisProc(tmp_path, "own").start()
    redis: Redis = connect(server.url)
    fast = FastRedis(server.url, reply_timeout=1.0)
    ctx = RouterContext.create(settings.replace(redis_url=server.url), redis, fast)
    yield server, ctx
    await fast.close()
    await redis.aclose()
    server.stop()


async def test_an_end_redis_did_not_take_is_written_once_it_answers(
        own: tuple[RedisProc, RouterContext]) -> None:
    server, ctx = own
    end = _end()
    await _hold_lease(ctx, end)
    server.kill()
    assert ctx.fast is not None
    pipe = ctx.fast.pipeline()
    ctx.ends.add(pipe, end)
    with pytest.raises(RedisError) as failure:
        await pipe.execute()
    ctx.ends.failed(end, failure.value)
    assert ctx.ends.kept() == 1
    with pytest.raises(RedisError):
        await ctx.ends.flush()  # still away: kept for the next try
    assert ctx.ends.kept() == 1

    server.start()  # back (empty: the lease went with it, the trace must not)
    deadline = time.monotonic() + 10
    while ctx.ends.kept():
        assert time.monotonic() < deadline, "the kept end was never written"
        try:
            assert await ctx.ends.flush() == 1
        except RedisError:
            await asyncio.sleep(0.1)  # the lean connection waits a moment between tries
    traces = await recent_traces(ctx, 10)
    assert [t.request_id for t in traces] == [end.trace.request_id]
    assert [e["kind"] for e in await recent_events(ctx.redis, ctx.keys)] == [
        "context_protection"]
    # The lease was lost with the old data: nothing to count, nothing counted twice.
    counters = await ctx.redis.hgetall(ctx.keys.counters("n1", MODEL))
    assert counters.get("done") is None


async def test_an_end_written_twice_counts_once(ctx: RouterContext) -> None:
    """The first try ran but its reply was lost (the connection dropped): the kept end is
    written again, and the slot, the counters and the traces view show it once."""
    end = _end()
    await _hold_lease(ctx, end)
    for _ in range(2):
        pipe = ctx.redis.pipeline(transaction=False)
        ctx.ends.add(pipe, end)
        await pipe.execute()
    counters = await ctx.redis.hgetall(ctx.keys.counters("n1", MODEL))
    assert (counters["in_flight"], counters["done"]) == ("0", "1")
    assert await ctx.redis.zcard(ctx.keys.slots("n1", MODEL)) == 0
    assert await ctx.redis.xlen(ctx.keys.traces()) == 2  # the stream holds both copies
    traces = await recent_traces(ctx, 10)
    assert [t.request_id for t in traces] == [end.trace.request_id]  # shown once


def test_an_end_refused_for_another_reason_is_not_kept(ctx: RouterContext) -> None:
    ctx.ends.failed(_end(), ResponseError("ERR something the script did not like"))
    assert ctx.ends.kept() == 0
