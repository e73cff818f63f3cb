"""Request-end figures counted in process and written in batches equal one-by-one writes."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from services.router.context import RouterContext
from services.router.fleet import stats
from services.router.fleet.routing import LatencyBatch, add_latency
from shared.models import Trace, TraceStatus
from shared.settings import Settings
from tests.helpers import make_trace as trace


def mixed() -> list[Trace]:
    return [
        trace("n1", "m:1", tags=["app", "batch"]),
        trace("n1", "m:1", latency_ms=2500.0, retry_count=1, excluded_nodes=["n2"]),
        trace("n2", "m:2", status=TraceStatus.FAILED, error_message="connect refused"),
        trace("", "nope", status=TraceStatus.REJECTED, time_to_first_token_ms=None),
        trace("n2", "m:2", load_duration_ms=1200.0, queue_wait_ms=40.0, tags=["app"]),
    ]


async def test_counted_then_flushed_equals_written_per_request(
    settings: Settings, redis: Redis,
) -> None:
    now = time.time()
    one_by_one = RouterContext.create(
        settings.replace(redis_prefix=settings.redis_prefix + "a:"), redis)
    batched = RouterContext.create(
        settings.replace(redis_prefix=settings.redis_prefix + "b:"), redis)
    for item in mixed():
        await stats.record(one_by_one, item, now)
        batched.stats.count(item, now)
    hour = stats.current_hour(now)
    assert await redis.hgetall(batched.keys.stats(hour)) == {}  # nothing written yet
    assert await batched.stats.flush() > 0
    expected = await redis.hgetall(one_by_one.keys.stats(hour))
    assert expected
    assert await redis.hgetall(batched.keys.stats(hour)) == expected
    assert await redis.ttl(batched.keys.stats(hour)) > 0
    assert await batched.stats.flush() == 0  # the tally is empty after a flush


async def test_a_reader_sees_its_own_replicas_requests_at_once(ctx: RouterContext) -> None:
    for item in mixed():
        ctx.stats.count(item)
    window = await ctx.stats.read_window(1)
    assert window.fleet().requests == 5
    assert window.node("n1").requests == 2
    assert window.node("n1").retries == 1


async def test_latency_batch_equals_one_update_per_request(
    ctx: RouterContext, redis: Redis,
) -> None:
    samples = [(120.0, 30.0, 50.0), (80.0, None, 0.0), (300.0, 45.0, 40.0), (95.0, 20.0, 60.0)]
    for node, first_existing in (("seq", False), ("bat", False), ("seq2", True), ("bat2", True)):
        if first_existing:  # an average already there from earlier requests
            pipe = redis.pipeline(transaction=False)
            add_latency(pipe, ctx, node, "m:1", latency_ms=500.0, ttft_ms=100.0,
                        tokens_per_s=10.0)
            await pipe.execute()
    for node in ("seq", "seq2"):
        for latency, ttft, tps in samples:
            pipe = redis.pipeline(transaction=False)
            add_latency(pipe, ctx, node, "m:1", latency_ms=latency, ttft_ms=ttft,
                        tokens_per_s=tps)
            await pipe.execute()
    batch = LatencyBatch()
    for node in ("bat", "bat2"):
        for latency, ttft, tps in samples:
            batch.add(node, "m:1", latency, ttft, tps)
    pipe = redis.pipeline(transaction=False)
    assert batch.write(pipe, ctx) == 2
    await pipe.execute()
    assert batch.pending == {}
    for one, folded in (("seq", "bat"), ("seq2", "bat2")):
        a = await redis.hgetall(ctx.keys.latency(one, "m:1"))
        b = await redis.hgetall(ctx.keys.latency(folded, "m:1"))
        assert set(a) == set(b) == {"latency_ms", "ttft_ms", "tokens_per_s", "samples"}
        assert a["samples"] == b["samples"]
        for name in ("latency_ms", "ttft_ms", "tokens_per_s"):
            assert abs(float(a[name]) - float(b[name])) < 1e-6 * float(a[name]), name
