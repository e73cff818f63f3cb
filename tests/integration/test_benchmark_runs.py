"""Benchmark runs started from the dashboard: one at a time, even when two starts race."""

from __future__ import annotations

import asyncio

import pytest

from services.router.context import RouterContext
from services.router.fleet.benchmarks import start_run
from shared.errors import BadRequest
from shared.schemas import BenchmarkRun


async def finish_runs(ctx: RouterContext) -> None:
    await asyncio.gather(*ctx.benchmark_tasks, return_exceptions=True)


async def test_two_racing_starts_run_one_benchmark(ctx: RouterContext) -> None:
    # Two replicas' handlers, both past the "is one running?" read before either claims.
    results = await asyncio.gather(
        start_run(ctx, {"model": "m:1", "requests": 1}),
        start_run(ctx, {"model": "m:1", "requests": 1}),
        return_exceptions=True,
    )
    try:
        started = [r for r in results if isinstance(r, BenchmarkRun)]
        refused = [r for r in results if isinstance(r, BadRequest)]
        assert len(started) == 1 and len(refused) == 1, results
        assert await ctx.redis.get(ctx.keys.benchmark_lock()) == started[0].run_id
    finally:
        await finish_runs(ctx)  # the run ends: nothing serves its model
    # A finished run frees the lock: the next one may start.
    assert await ctx.redis.get(ctx.keys.benchmark_lock()) is None
    again = await start_run(ctx, {"model": "m:1", "requests": 1})
    assert again.run_id != started[0].run_id
    await finish_runs(ctx)


async def test_a_running_benchmark_refuses_another(ctx: RouterContext) -> None:
    first = await start_run(ctx, {"model": "m:1", "requests": 1})
    try:
        with pytest.raises(BadRequest, match=r"still running|starting or running"):
            await start_run(ctx, {"model": "m:1", "requests": 1})
    finally:
        await finish_runs(ctx)
    assert first.status in {"completed", "failed"}
