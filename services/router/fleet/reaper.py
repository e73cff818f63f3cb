"""Leader jobs that keep shared state honest: the zombie reaper and stream retention."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.router.fleet.core import Core
from services.router.fleet.events import emit
from services.router.fleet.traces import trim_traces
from shared.keys import Keys
from shared.scripts import script_source

__all__ = ["Reaped", "reap_once", "reaper_job", "retention_job"]

log = logging.getLogger("herd.reaper")

REAP_INTERVAL_SECONDS = 2.0
RETENTION_INTERVAL_SECONDS = 3600.0


@dataclass
class Reaped:
    """What one pass returned: expired leases per (node, model), dropped waiters per model."""

    leases: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    waiters: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(map(len, self.leases.values())) + sum(map(len, self.waiters.values()))


async def reap_once(redis: Redis, keys: Keys) -> Reaped:
    """Return every expired lease's slot, give free slots to waiters that can use them, and
    drop dead waiters, fleet-wide, in one pipeline.

    Walks `counters-index` (every node|model that ever held a slot or a waiter), never KEYS.
    """
    members = sorted(await redis.smembers(keys.counters_index()))
    pairs = [tuple(m.rsplit("|", 1)) for m in members if "|" in m]
    models = sorted({model for _, model in pairs})
    now = str(int(time.time() * 1000))
    result = Reaped()
    if not pairs:
        return result
    # Loaded once per pass, then run by SHA: each script carries the queue's shared part
    # (~9 KB), too much to send and hash once per node|model.
    reap = await redis.script_load(script_source("reap"))
    reap_waiters = await redis.script_load(script_source("reap_waiters"))
    async with redis.pipeline(transaction=False) as pipe:
        queues = {model: keys.queue(model) for model in models}
        # Dead waiters first: the reap scripts would drop them too, unreported.
        for model in models:
            queue = queues[model]
            pipe.evalsha(reap_waiters, len(queue), *queue, now)
        for node_id, model in pairs:
            # Also settles the node: its free slots go to the waiters that can use it.
            queue = queues[model]
            pipe.evalsha(
                reap, len(queue) + 2, *queue, keys.slots(node_id, model),
                keys.counters(node_id, model), now, node_id, model,
            )
        replies = await pipe.execute()
    for model, ids in zip(models, replies[: len(models)], strict=True):
        if ids:
            result.waiters[model] = [str(i) for i in ids]
    for (node_id, model), ids in zip(pairs, replies[len(models):], strict=True):
        if ids:
            result.leases[(node_id, model)] = [str(i) for i in ids]
    for (node_id, model), ids in result.leases.items():
        log.warning(
            "reaped zombie slots",
            extra={"node_id": node_id, "model": model, "count": len(ids)},
        )
        await emit(
            redis, keys, "zombie_reaped",
            node_id=node_id, model=model, count=len(ids), request_ids=ids[:20],
        )
    for model, ids in result.waiters.items():
        log.info("dropped dead waiters", extra={"model": model, "count": len(ids)})
    return result


async def reaper_job(ctx: Core) -> None:
    """Leader job: reap every couple of seconds (a lease expires `lease_seconds` after its
    last renewal, so a dead replica's slots return within lease + this interval)."""
    while True:
        try:
            await reap_once(ctx.redis, ctx.keys)
        except RedisError as exc:
            log.warning("zombie reaper pass failed", extra={"error": str(exc)})
        await asyncio.sleep(REAP_INTERVAL_SECONDS)


async def retention_job(ctx: Core) -> None:
    """Leader job: trim the traces stream to `trace_retention_days`, hourly."""
    while True:
        try:
            await trim_traces(ctx.redis, ctx.keys, ctx.settings.trace_retention_days)
        except RedisError as exc:
            log.warning("trace retention failed", extra={"error": str(exc)})
        await asyncio.sleep(RETENTION_INTERVAL_SECONDS)
