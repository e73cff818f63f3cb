"""Hourly usage statistics in Redis: counted per request, read by health and usage APIs.

Each hour is one hash `keys.stats(hour)`; a field is `<metric>|<scope>` where the scope is
`nm:<node>|<model>` for a routed request, `n:<node>` for what has no model (rejected
requests under node "", failed attempts) and `t:<tag>`. Node, model and fleet totals are
sums at read time, so writes are increments only. The request path adds a request to this
replica's in-process tally (`count`, no I/O); `stats_lifecycle` writes the summed deltas
once a second in one transaction, so a busy replica sends a few dozen HINCRBYs a second
instead of ten or more per request. Readers on this replica flush first and see their own
requests at once; other replicas' show up within a second. Buckets expire after
`stats_retention_days`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from services.router.fleet.core import Core
from services.router.fleet.metrics import observe
from shared.background import background
from shared.models import Trace, TraceStatus
from shared.usage import LATENCY_BUCKETS_MS, StatsWindow, Usage

__all__ = [
    "FLUSH_INTERVAL",
    "MAX_TAGS",
    "REFUSED_STATUSES",
    "Stats",
    "Tally",
    "add_request",
    "current_hour",
    "increments",
    "observe",
    "parse_bucket",
    "record",
]

log = logging.getLogger("herd.stats")

MAX_TAGS = 4  # tags come from clients: cap how many fields one request may add
MAX_TAG_LENGTH = 48
# Distinct tags one replica counts per hour; more are counted under OTHER_TAG, so a client
# inventing a tag per request cannot grow a bucket without bound.
MAX_TAGS_PER_HOUR = 500
OTHER_TAG = "(other)"
# A bucket whose hour ended this long ago gets no more writes (writers bucket by their own
# clock; replicas' clocks agree to well under this), so a replica may cache it for good.
SEAL_AFTER_S = 120.0
SUMS_KEPT = 8  # pre-summed ranges kept per replica (health, usage, trends use a few)
# Deltas wait in the replica at most this long: dashboards refresh every few seconds, and
# a replica that dies loses at most this much of its counting (its traces are in the stream).
FLUSH_INTERVAL = 1.0

_FIELDS: dict[str, str] = {
    "req": "requests",
    "err": "errors",
    "rej": "rejected",
    "ptok": "prompt_tokens",
    "ctok": "completion_tokens",
    "retry": "retries",
    "retried": "retried_requests",
    "lat": "latency_ms_sum",
    "ttft": "ttft_ms_sum",
    "ttftn": "ttft_count",
    "cold": "cold_loads",
    "ctxrl": "context_reloads",
    "loadms": "load_ms_sum",
    "disc": "disconnects",
    "inc": "incomplete",
    "tmo": "timeouts",
    "conn": "connection_failures",
    "xfail": "attempt_failures",
    "qwait": "queue_wait_ms_sum",
    "r401": "unauthorized",
    "r403": "forbidden",
    "r429": "rate_limited",
}
_TAG_METRICS = frozenset({"req", "err", "rej", "ptok", "ctok", "lat", "retry", "disc",
                          "r401", "r403", "r429"})
# Requests refused at the door, before their body is read or routed: no valid credential,
# a forbidden one, an app over its limit. Counted (not traced) by `Stats.refused`.
REFUSED_STATUSES = frozenset({401, 403, 429})
_ERROR_STATUSES = frozenset({TraceStatus.FAILED, TraceStatus.INCOMPLETE})


def current_hour(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // 3600)


def _bucket_index(latency_ms: float) -> int:
    for index, upper in enumerate(LATENCY_BUCKETS_MS):
        if latency_ms <= upper:
            return index
    return len(LATENCY_BUCKETS_MS) - 1


def increments(trace: Trace) -> list[tuple[str, int]]:
    """The non-zero (metric, amount) pairs one trace adds to its node's scopes."""
    status = trace.status
    message = trace.error_message.lower()
    rejected = status is TraceStatus.REJECTED
    pairs: list[tuple[str, int]] = [("req", 1)]
    if rejected:
        pairs.append(("rej", 1))
    elif status in _ERROR_STATUSES:
        pairs.append(("err", 1))
    if status is TraceStatus.INCOMPLETE:
        pairs.append(("inc", 1))
    elif status is TraceStatus.CLIENT_DISCONNECTED:
        pairs.append(("disc", 1))
    if trace.finish_reason == "timeout" or "timeout" in message or "timed out" in message:
        pairs.append(("tmo", 1))
    if message and "connect" in message:
        pairs.append(("conn", 1))
    if trace.prompt_tokens:
        pairs.append(("ptok", trace.prompt_tokens))
    if trace.completion_tokens:
        pairs.append(("ctok", trace.completion_tokens))
    if trace.retry_count:
        pairs += [("retry", trace.retry_count), ("retried", 1)]
    if not rejected:
        pairs += [("lat", round(trace.latency_ms)), (f"h{_bucket_index(trace.latency_ms)}", 1)]
    if trace.time_to_first_token_ms is not None:
        pairs += [("ttft", round(trace.time_to_first_token_ms)), ("ttftn", 1)]
    if trace.load_duration_ms > 0:
        pairs += [("cold", 1), ("loadms", round(trace.load_duration_ms))]
        if trace.context_reload:
            pairs.append(("ctxrl", 1))
    if trace.queue_wait_ms > 0:
        pairs.append(("qwait", round(trace.queue_wait_ms)))
    return pairs


def _fields(trace: Trace, tags: list[str] | None = None) -> list[tuple[str, int]]:
    """The (field, amount) increments of one trace within its hour's hash (`tags`: the
    trace's tags as counted, when they differ from the trace's own)."""
    pairs = increments(trace)
    # Node totals are sums of a node's node:model scopes at read time; only requests
    # rejected before routing (no node, and a model name nobody vetted) go to "n:".
    scope = f"nm:{trace.node_id}|{trace.model}" if trace.node_id else "n:"
    out = [(f"{metric}|{scope}", amount) for metric, amount in pairs]
    for tag in trace.tags[:MAX_TAGS] if tags is None else tags:
        scope = f"t:{tag[:MAX_TAG_LENGTH]}"
        out += [(f"{metric}|{scope}", amount) for metric, amount in pairs
                if metric in _TAG_METRICS or metric[0] == "h"]
    out += [(f"xfail|n:{failed}", 1) for failed in trace.excluded_nodes[:4]]
    return out


def _ttl(ctx: Core) -> int:
    return max(3600, int(ctx.settings.stats_retention_days * 86400))


def add_request(pipe: Pipeline, ctx: Core, trace: Trace, now: float | None = None) -> None:
    """Queue this trace's counters on `pipe` (the caller executes it); no reads, no await."""
    key = ctx.keys.stats(current_hour(now))
    for name, amount in _fields(trace):
        pipe.hincrby(key, name, amount)
    pipe.expire(key, _ttl(ctx))


class Tally:
    """This replica's counts not yet in Redis: hour -> field -> delta."""

    __slots__ = ("lock", "pending", "tags")

    def __init__(self) -> None:
        self.pending: dict[int, dict[str, int]] = {}
        self.tags: tuple[int, set[str]] = (0, set())  # the hour, and the tags counted in it
        self.lock = asyncio.Lock()  # one flush at a time, so a reader's flush sees the rest

    def add(self, trace: Trace, now: float | None = None) -> None:
        hour = current_hour(now)
        deltas = self.pending.get(hour)
        if deltas is None:
            deltas = self.pending[hour] = {}
        for name, amount in _fields(trace, self._counted_tags(hour, trace.tags)):
            deltas[name] = deltas.get(name, 0) + amount

    def _counted_tags(self, hour: int, tags: list[str]) -> list[str]:
        if self.tags[0] != hour:
            self.tags = (hour, set())
        seen = self.tags[1]
        counted = []
        for given in tags[:MAX_TAGS]:
            tag = given[:MAX_TAG_LENGTH]
            if tag not in seen and len(seen) >= MAX_TAGS_PER_HOUR:
                tag = OTHER_TAG
            seen.add(tag)
            counted.append(tag)
        return counted

    def refuse(self, app: str, status: int, now: float | None = None) -> None:
        """Count one request refused at the door with `status` (REFUSED_STATUSES) as a
        request rejected before routing (node "") of `app`."""
        hour = current_hour(now)
        deltas = self.pending.get(hour)
        if deltas is None:
            deltas = self.pending[hour] = {}
        scopes = ["n:", *(f"t:{tag}" for tag in self._counted_tags(hour, [app]))]
        for metric in ("req", "rej", f"r{status}"):
            for scope in scopes:
                name = f"{metric}|{scope}"
                deltas[name] = deltas.get(name, 0) + 1

    def merge(self, pending: dict[int, dict[str, int]]) -> None:
        """Put back deltas a failed flush did not write."""
        for hour, deltas in pending.items():
            mine = self.pending.setdefault(hour, {})
            for name, amount in deltas.items():
                mine[name] = mine.get(name, 0) + amount


async def record(ctx: Core, trace: Trace, now: float | None = None) -> None:
    """Count one trace on its own (tests, benchmark runs); the request path batches instead."""
    pipe = ctx.redis.pipeline(transaction=False)
    add_request(pipe, ctx, trace, now)
    await pipe.execute()
    observe(trace)


def parse_bucket(raw: dict[str, str]) -> dict[str, Usage]:
    """A bucket hash as Usage per scope; unknown fields (a newer writer's) are skipped."""
    scopes: dict[str, Usage] = {}
    for name, value in raw.items():
        metric, sep, scope = name.partition("|")
        if not sep:
            continue
        usage = scopes.get(scope)
        if usage is None:
            usage = scopes[scope] = Usage()
        amount = int(float(value))
        if metric[0] == "h" and metric[1:].isdigit():
            index = int(metric[1:])
            if index < len(usage.hist):
                usage.hist[index] += amount
            continue
        attribute = _FIELDS.get(metric)
        if attribute is not None:
            setattr(usage, attribute, getattr(usage, attribute) + amount)
    return scopes


class Stats:
    """This replica's side of the stats: a tally of its requests, written once a second, and
    a cache of sealed hours for readers."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self.tally = Tally()
        self._cache: dict[int, dict[str, Usage]] = {}
        self._sums: dict[tuple[int, int], dict[str, Usage]] = {}

    def count(self, trace: Trace, now: float | None = None) -> None:
        """Count one finished request in this replica's tally (the request path: no I/O)."""
        self.tally.add(trace, now)

    def refused(self, app: str, status: int, now: float | None = None) -> None:
        """Count one request refused at the door (401, 403, 429) for `app` (the key's app,
        or NO_APP): in the tally like `count`, so a flood of refusals costs no Redis round
        trip of its own. Such a request has no trace: a client refused by the thousand
        would otherwise push everyone's traces out of the capped stream."""
        if status in REFUSED_STATUSES:
            self.tally.refuse(app, status, now)

    async def flush(self) -> int:
        """Write the tally to Redis in one transaction; returns how many fields it changed.

        On a Redis error the deltas go back into the tally (MULTI/EXEC: none of them was
        applied) and the error is raised.
        """
        core, tally = self._core, self.tally
        async with tally.lock:
            pending, tally.pending = tally.pending, {}
            if not pending:
                return 0
            ttl = _ttl(core)
            pipe = core.redis.pipeline(transaction=True)
            written = 0
            for hour, deltas in pending.items():
                key = core.keys.stats(hour)
                for name, amount in deltas.items():
                    if amount:
                        pipe.hincrby(key, name, amount)
                        written += 1
                pipe.expire(key, ttl)
            try:
                await pipe.execute()
            except (RedisError, OSError):
                tally.merge(pending)
                raise
            return written

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush()
            except (RedisError, OSError) as exc:
                log.warning("usage stats not flushed; kept for the next try",
                            extra={"error": str(exc)})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Flush the tally every FLUSH_INTERVAL, and once more at shutdown."""
        try:
            async with background(self._flush_loop(), "herd-stats-flush"):
                yield
        finally:
            try:
                await self.flush()
            except (RedisError, OSError) as exc:
                log.warning("usage stats lost at shutdown", extra={"error": str(exc)})

    async def read_window(self, hours: int = 24, now: float | None = None) -> StatsWindow:
        """The last `hours` buckets (the current one included); sealed hours come from a cache.

        This replica's tally is flushed first, so its own requests are in the answer.
        """
        core = self._core
        with contextlib.suppress(RedisError, OSError):
            await self.flush()  # on failure the read still shows what Redis has
        now = time.time() if now is None else now
        newest = current_hour(now)
        wanted = list(range(newest - max(1, hours) + 1, newest + 1))
        cache = self._cache
        missing = [h for h in wanted if h not in cache]
        fetched: dict[int, dict[str, Usage]] = {}
        if missing:
            pipe = core.redis.pipeline(transaction=False)
            for hour in missing:
                pipe.hgetall(core.keys.stats(hour))
            raws: list[Any] = await pipe.execute()
            for hour, raw in zip(missing, raws, strict=True):
                fetched[hour] = parse_bucket(raw or {})
                if now - (hour + 1) * 3600 > SEAL_AFTER_S:
                    cache[hour] = fetched[hour]
        oldest_kept = newest - int(core.settings.stats_retention_days * 24) - 1
        for hour in [h for h in cache if h < oldest_kept]:
            del cache[hour]
        buckets = [(h, cache[h] if h in cache else fetched[h]) for h in wanted]
        return StatsWindow(buckets, presummed=self._presummed(wanted))

    def _presummed(self, wanted: list[int]) -> tuple[int, dict[str, Usage]] | None:
        """Totals of the window's leading sealed hours, summed once per replica and range."""
        cache, sums = self._cache, self._sums
        sealed = 0
        while sealed < len(wanted) and wanted[sealed] in cache:
            sealed += 1
        if sealed < 2:
            return None
        key = (wanted[0], wanted[sealed - 1])
        summed = sums.get(key)
        if summed is None:
            summed = StatsWindow([(h, cache[h]) for h in wanted[:sealed]]).totals
            if len(sums) >= SUMS_KEPT:
                sums.pop(next(iter(sums)))
            sums[key] = summed
        return sealed, summed
