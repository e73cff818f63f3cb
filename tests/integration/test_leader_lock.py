"""The leader lease: one replica at a time runs the fleet-wide jobs, and hands over on exit."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from services.router.fleet.core import Core
from services.router.fleet.leader import Leader, LeaderJob, periodic
from shared.keys import Keys
from shared.redisconn import connect
from shared.settings import Settings


def counting_job(counts: dict[str, int], name: str) -> LeaderJob:
    async def step(ctx: Core) -> None:
        counts[name] = counts.get(name, 0) + 1

    return periodic(0.02, step, name)


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_one_leader_runs_jobs_and_hands_over(
    redis_url: str, redis: Redis, keys: Keys, settings: Settings
) -> None:
    counts: dict[str, int] = {}
    clients = [connect(redis_url) for _ in range(2)]
    leaders = [
        Leader(Core.create(settings, c), [counting_job(counts, f"L{i}")],
               holder=f"L{i}", lease_seconds=0.6)
        for i, c in enumerate(clients)
    ]
    try:
        for leader in leaders:
            await leader.start()
        await wait_for(lambda: any(le.is_leader for le in leaders))
        await asyncio.sleep(0.3)
        assert sum(le.is_leader for le in leaders) == 1
        first = next(le for le in leaders if le.is_leader)
        other = next(le for le in leaders if not le.is_leader)
        assert await redis.get(keys.leader()) == first.holder
        assert set(counts) == {first.holder}, "only the leader's jobs ran"
        # The leader keeps the lock past its lease by renewing it.
        await asyncio.sleep(0.8)
        assert first.is_leader and await redis.get(keys.leader()) == first.holder
        await first.stop()
        assert await redis.get(keys.leader()) is None, "released on stop, not left to expire"
        await wait_for(lambda: other.is_leader, timeout=2.0)
        await wait_for(lambda: counts.get(other.holder, 0) > 0)
    finally:
        for leader in leaders:
            await leader.stop()
        for c in clients:
            await c.aclose()


async def test_losing_the_lock_stops_the_jobs(
    redis: Redis, keys: Keys, settings: Settings
) -> None:
    counts: dict[str, int] = {}
    leader = Leader(Core.create(settings, redis), [counting_job(counts, "x")],
                    holder="me", lease_seconds=5)
    try:
        assert await leader.try_once()
        await wait_for(lambda: counts.get("x", 0) > 0)
        # Another replica took over (this one was paused longer than its lease).
        await redis.set(keys.leader(), "someone-else")
        assert not await leader.try_once()
        assert not leader.is_leader
        seen = counts["x"]
        await asyncio.sleep(0.1)
        assert counts["x"] == seen, "jobs stopped"
        await leader.stop()
        assert await redis.get(keys.leader()) == "someone-else", "never frees another's lock"
    finally:
        await leader.stop()


async def test_a_crashing_job_is_restarted_not_fatal(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.router.fleet.leader as leader_module

    monkeypatch.setattr(leader_module, "JOB_RESTART_SECONDS", 0.01)
    runs: list[int] = []

    async def flaky(ctx: Core) -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    leader = Leader(Core.create(settings, redis), [flaky], holder="me")
    try:
        assert await leader.try_once()
        await wait_for(lambda: len(runs) >= 3)
        assert leader.is_leader
    finally:
        await leader.stop()
