"""Hourly usage statistics in Redis: written once per request, read by health and usage APIs.

Each hour is one hash `keys.stats(hour)`; a field is `<metric>|<scope>` where the scope is
`nm:<node>|<model>` for a routed request, `n:<node>` for what has no model (rejected
requests under node "", failed attempts) and `t:<tag>`. Node, model and fleet totals are
sums at read time, which keeps the per-request write to about ten HINCRBYs in the caller's
pipeline and no reads. Buckets expire after `stats_retention_days`.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio.client import Pipeline

from services.router.context import RouterContext
from services.router.metrics import observe
from shared.health import LATENCY_BUCKETS_MS, StatsWindow, Usage
from shared.models import Trace, TraceStatus

__all__ = [
    "MAX_TAGS",
    "add_request",
    "current_hour",
    "increments",
    "observe",
    "parse_bucket",
    "read_window",
    "record",
]

MAX_TAGS = 4  # tags come from clients: cap how many fields one request may add
MAX_TAG_LENGTH = 48
# A bucket whose hour ended this long ago gets no more writes (writers bucket by their own
# clock; replicas' clocks agree to well under this), so a replica may cache it for good.
SEAL_AFTER_S = 120.0
SUMS_KEPT = 8  # pre-summed ranges kept per replica (health, usage, trends use a few)

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
    "loadms": "load_ms_sum",
    "disc": "disconnects",
    "inc": "incomplete",
    "tmo": "timeouts",
    "conn": "connection_failures",
    "xfail": "attempt_failures",
    "qwait": "queue_wait_ms_sum",
}
_TAG_METRICS = frozenset({"req", "err", "rej", "ptok", "ctok", "lat", "retry", "disc"})
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
    if trace.queue_wait_ms > 0:
        pairs.append(("qwait", round(trace.queue_wait_ms)))
    return pairs


def add_request(pipe: Pipeline, ctx: RouterContext, trace: Trace, now: float | None = None) -> None:
    """Queue this trace's counters on `pipe` (the caller executes it); no reads, no await."""
    key = ctx.keys.stats(current_hour(now))
    node = trace.node_id
    pairs = increments(trace)
    # Node totals are sums of a node's node:model scopes at read time; only requests
    # rejected before routing (no node, and a model name nobody vetted) go to "n:".
    scope = f"nm:{node}|{trace.model}" if node else "n:"
    for metric, amount in pairs:
        pipe.hincrby(key, f"{metric}|{scope}", amount)
    for tag in trace.tags[:MAX_TAGS]:
        scope = f"t:{tag[:MAX_TAG_LENGTH]}"
        for metric, amount in pairs:
            if metric in _TAG_METRICS or metric[0] == "h":
                pipe.hincrby(key, f"{metric}|{scope}", amount)
    for failed_node in trace.excluded_nodes[:4]:
        pipe.hincrby(key, f"xfail|n:{failed_node}", 1)
    pipe.expire(key, max(3600, int(ctx.settings.stats_retention_days * 86400)))


async def record(ctx: RouterContext, trace: Trace, now: float | None = None) -> None:
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


def _cache(ctx: RouterContext) -> dict[int, dict[str, Usage]]:
    cache = ctx.parts.get("stats_cache")
    if cache is None:
        cache = ctx.parts["stats_cache"] = {}
    return cache  # type: ignore[return-value]


async def read_window(ctx: RouterContext, hours: int = 24, now: float | None = None) -> StatsWindow:
    """The last `hours` buckets (the current one included); sealed hours come from a cache."""
    now = time.time() if now is None else now
    newest = current_hour(now)
    wanted = list(range(newest - max(1, hours) + 1, newest + 1))
    cache = _cache(ctx)
    missing = [h for h in wanted if h not in cache]
    fetched: dict[int, dict[str, Usage]] = {}
    if missing:
        pipe = ctx.redis.pipeline(transaction=False)
        for hour in missing:
            pipe.hgetall(ctx.keys.stats(hour))
        raws: list[Any] = await pipe.execute()
        for hour, raw in zip(missing, raws, strict=True):
            fetched[hour] = parse_bucket(raw or {})
            if now - (hour + 1) * 3600 > SEAL_AFTER_S:
                cache[hour] = fetched[hour]
    oldest_kept = newest - int(ctx.settings.stats_retention_days * 24) - 1
    for hour in [h for h in cache if h < oldest_kept]:
        del cache[hour]
    buckets = [(h, cache[h] if h in cache else fetched[h]) for h in wanted]
    return StatsWindow(buckets, presummed=_presummed(ctx, wanted, cache))


def _presummed(
    ctx: RouterContext, wanted: list[int], cache: dict[int, dict[str, Usage]],
) -> tuple[int, dict[str, Usage]] | None:
    """Totals of the window's leading sealed hours, summed once per replica and range."""
    sealed = 0
    while sealed < len(wanted) and wanted[sealed] in cache:
        sealed += 1
    if sealed < 2:
        return None
    sums = ctx.parts.get("stats_sums")
    if not isinstance(sums, dict):
        sums = ctx.parts["stats_sums"] = {}
    key = (wanted[0], wanted[sealed - 1])
    summed = sums.get(key)
    if summed is None:
        summed = StatsWindow([(h, cache[h]) for h in wanted[:sealed]]).totals
        if len(sums) >= SUMS_KEPT:
            sums.pop(next(iter(sums)))
        sums[key] = summed
    return sealed, summed
