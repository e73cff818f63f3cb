"""The leader lease: one replica at a time runs the fleet-wide background jobs.

A lock `leader` (SET NX PX) held by a replica id and extended by a compare-and-extend
script. Jobs run only while the lock is held and are cancelled as soon as it is lost.
Every job must be safe if, for a moment, two replicas run it (a paused old leader may
not know yet that it lost): the reaper is a Lua script per key, the recorder writes each
trace once whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.router.fleet.core import Core
from shared.keys import Keys
from shared.scripts import Scripts

__all__ = [
    "Leader",
    "LeaderJob",
    "periodic",
]

log = logging.getLogger("herd.leader")

# A job runs until cancelled (it loops itself); `periodic` makes one from a step.
LeaderJob = Callable[[Core], Awaitable[None]]

LEASE_SECONDS = 10.0  # a crashed leader's jobs stop for at most this long
JOB_RESTART_SECONDS = 5.0


def periodic(
    interval: float, step: Callable[[Core], Awaitable[object]], name: str = ""
) -> LeaderJob:
    """A job that runs `step` now and then every `interval` seconds; a failing step is
    logged and tried again at the next interval."""
    label = name or getattr(step, "__name__", "job")

    async def job(ctx: Core) -> None:
        while True:
            try:
                await step(ctx)
            except (RedisError, OSError) as exc:
                log.warning("leader job step failed", extra={"job": label, "error": str(exc)})
            await asyncio.sleep(interval)

    job.__name__ = label
    return job


class Leader:
    """Campaigns for the lock, and runs `jobs` while holding it."""

    def __init__(
        self,
        ctx: Core,
        jobs: Sequence[LeaderJob],
        *,
        holder: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._ctx = ctx
        self._redis: Redis = ctx.redis
        self._keys: Keys = ctx.keys
        self._scripts = Scripts(ctx.redis)
        self.holder = holder or ctx.replica_id
        self._jobs = list(jobs)
        self._lease_ms = int(lease_seconds * 1000)
        self._running: list[asyncio.Task[None]] = []
        self._campaign: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()  # set on every gain or loss (tests wait on it)

    @property
    def is_leader(self) -> bool:
        return bool(self._running)

    async def start(self) -> None:
        self._campaign = asyncio.create_task(self._loop(), name="leader-campaign")

    async def stop(self) -> None:
        if self._campaign is not None:
            self._campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._campaign
            self._campaign = None
        was_leader = self.is_leader
        await self._stop_jobs()
        if was_leader:
            # Hand over at once rather than after the lease runs out.
            with contextlib.suppress(RedisError):
                await self._scripts.run("leader_release", [self._keys.leader()], [self.holder])

    async def try_once(self) -> bool:
        """One campaign step: take or extend the lock; start or stop the jobs to match."""
        try:
            if self.is_leader:
                held = bool(
                    await self._scripts.run(
                        "leader_renew", [self._keys.leader()], [self.holder, self._lease_ms]
                    )
                )
            else:
                held = bool(
                    await self._redis.set(
                        self._keys.leader(), self.holder, nx=True, px=self._lease_ms
                    )
                )
        except RedisError as exc:
            # Unsure whether we still hold it: stop, as the lease may lapse meanwhile.
            log.warning("leader lock unreachable", extra={"error": str(exc)})
            held = False
        if held and not self.is_leader:
            log.info("became leader", extra={"replica": self.holder})
            self._running = [
                asyncio.create_task(self._supervise(job), name=f"leader-{_name(job)}")
                for job in self._jobs
            ]
            self.changed.set()
        elif not held and self.is_leader:
            log.info("lost leadership", extra={"replica": self.holder})
            await self._stop_jobs()
            self.changed.set()
        return held

    async def _loop(self) -> None:
        while True:
            await self.try_once()
            await asyncio.sleep(self._lease_ms / 3000)

    async def _supervise(self, job: LeaderJob) -> None:
        while True:
            try:
                await job(self._ctx)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken job must not take the replica down
                log.exception("leader job crashed; restarting", extra={"job": _name(job)})
                await asyncio.sleep(JOB_RESTART_SECONDS)

    async def _stop_jobs(self) -> None:
        tasks, self._running = self._running, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _name(job: LeaderJob) -> str:
    return str(getattr(job, "__name__", "job"))
