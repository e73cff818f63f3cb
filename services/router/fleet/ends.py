"""Request ends: the slot's release, the trace and the events a finished request writes, and
those Redis did not take, kept and written again once it answers.

The end is written after the client has its answer. When that write fails because Redis is
away (restarting, failing over to a replica), the request was served all the same, and
dropping its end would lose its trace. So the end is kept, in this replica's memory and
bounded, and written again every RETRY_INTERVAL until Redis takes it.

Writing an end again is safe whether or not the first try ran (a lost connection does not
say): the release script counts only a lease it still finds (one the reaper took meanwhile
was counted then), the recorder stores a trace once per request id, and the recent-traces
view skips a second copy. The usage counters of client keys' token limits (written beside
the end by the exchange) are not written again: counting twice would throttle an app for
tokens it did not use, while counting once less only loosens its limit for that minute.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from services.router.fleet import events, traces
from services.router.fleet.core import Core
from services.router.fleet.slots import SlotManager
from shared.background import background
from shared.fastredis import FastPipeline
from shared.models import Trace
from shared.redisconn import REDIS_UNAVAILABLE

__all__ = ["RequestEnd", "RequestEnds"]

log = logging.getLogger("herd.router")

RETRY_INTERVAL = 0.5  # seconds between tries while ends are kept
MAX_KEPT = 10_000  # ends kept at most (a few MB); beyond it the oldest are dropped
_BATCH = 100  # ends per round trip when writing kept ones


@dataclass(slots=True)
class RequestEnd:
    """What a finished request writes to Redis (besides its usage counters)."""

    trace: Trace
    # node id, model, request id, ok: the slot to return, if one was held
    release: tuple[str, str, str, bool] | None = None
    events: list[dict[str, object]] = field(default_factory=list)  # event entries to append


class RequestEnds:
    """Queues each end on the request's last pipeline; keeps those that failed."""

    def __init__(self, core: Core, slots: SlotManager) -> None:
        self._core = core
        self._slots = slots
        self._kept: collections.deque[RequestEnd] = collections.deque()
        self.dropped = 0  # ends lost because too many were kept

    def add(self, pipe: Pipeline | FastPipeline, end: RequestEnd) -> None:
        """Queue `end`'s commands on `pipe` (the caller runs it)."""
        if end.release is not None:
            node_id, model, request_id, ok = end.release
            self._slots.add_release(pipe, node_id, model, request_id, ok)
        traces.add_trace(pipe, self._core, end.trace)
        for entry in end.events:
            events.append(pipe, self._core.keys, entry)

    def failed(self, end: RequestEnd, error: RedisError) -> None:
        """`end` was not (or not surely) written: keep it if Redis is away, else log it."""
        if not isinstance(error, REDIS_UNAVAILABLE):
            log.warning("request end not recorded", extra={
                "error": str(error), "request_id": end.trace.request_id})
            return
        if not self._kept:
            log.warning("Redis did not take a request's end; kept to write again",
                        extra={"error": str(error), "request_id": end.trace.request_id})
        self._kept.append(end)
        if len(self._kept) > MAX_KEPT:
            self._kept.popleft()
            self.dropped += 1

    def kept(self) -> int:
        return len(self._kept)

    async def flush(self) -> int:
        """Write the kept ends, oldest first; returns how many. Raises on a Redis error
        (the ends not written stay kept)."""
        written = 0
        core = self._core
        while self._kept:
            batch = [self._kept.popleft() for _ in range(min(_BATCH, len(self._kept)))]
            pipe = core.fast.pipeline() if core.fast else core.redis.pipeline(transaction=False)
            for end in batch:
                self.add(pipe, end)
            try:
                await pipe.execute()
            except BaseException:
                self._kept.extendleft(reversed(batch))
                raise
            written += len(batch)
        return written

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_INTERVAL)
            if not self._kept:
                continue
            with contextlib.suppress(RedisError, OSError):
                written = await self.flush()
                log.info("kept request ends written", extra={"count": written})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Write kept ends in the background, and once more at shutdown."""
        try:
            async with background(self._retry_loop(), "herd-request-ends"):
                yield
        finally:
            if self._kept:
                try:
                    await self.flush()
                except (RedisError, OSError) as exc:
                    log.warning("request ends lost at shutdown",
                                extra={"count": len(self._kept), "error": str(exc)})
