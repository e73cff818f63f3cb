"""The traces stream: one encoded Trace per request, read by the recorder and the dashboard."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.router.fleet.core import Core
from shared.fastredis import FastPipeline
from shared.keys import Keys
from shared.models import TRACE_FIELD, Trace, decode_trace, encode_trace

__all__ = [
    "TRACES_MAXLEN",
    "add_trace",
    "recent_traces",
    "trim_traces",
]

# A transport to the recorder plus the dashboard's recent view, not the archive (that is
# latency.db): ~100k traces is hours of a busy fleet, enough to ride out a recorder restart.
TRACES_MAXLEN = 100_000
_SCAN_BATCH = 500



def add_trace(pipe: Pipeline | FastPipeline, ctx: Core, trace: Trace) -> None:
    """Queue the XADD of `trace` on `pipe` (run it with the slot release in one round trip)."""
    pipe.xadd(
        ctx.keys.traces(),
        {TRACE_FIELD: encode_trace(trace)},
        maxlen=TRACES_MAXLEN,
        approximate=True,
    )


def _matches(trace: Trace, filters: dict[str, Any]) -> bool:
    for name, wanted in filters.items():
        if wanted is None or wanted == "":
            continue
        if name == "tag":
            if wanted not in trace.tags:
                return False
        elif name == "since":
            if trace.timestamp < float(wanted):
                return False
        elif getattr(trace, name) != wanted:
            return False
    return True


async def recent_traces(ctx: Core, limit: int = 100, **filters: Any) -> list[Trace]:
    """Newest first, at most `limit`, keeping those whose fields equal the filters.

    Filters: any Trace field by name (`model="llama3.2:3b"`, `node_id=...`, `status=...`),
    plus `tag` (one of the trace's tags) and `since` (epoch seconds). None or "" is ignored.
    Raises ValueError for an unknown filter name.
    """
    unknown = set(filters) - set(Trace.__struct_fields__) - {"tag", "since"}
    if unknown:
        raise ValueError(f"unknown trace filter(s): {', '.join(sorted(unknown))}")
    return await _scan(ctx.redis, ctx.keys, max(int(limit), 0), filters)


async def _scan(redis: Redis, keys: Keys, limit: int, filters: dict[str, Any]) -> list[Trace]:
    found: list[Trace] = []
    if limit == 0:
        return found
    # A request's end written again after Redis failed over may be in the stream twice
    # (fleet/ends.py): show it once.
    seen: set[str] = set()
    upper = "+"
    active = {k: v for k, v in filters.items() if v is not None and v != ""}
    batch = limit if not active else max(limit, _SCAN_BATCH)
    while len(found) < limit:
        rows = await redis.xrevrange(keys.traces(), max=upper, min="-", count=batch)
        for _entry_id, fields in rows:
            trace = decode_trace(fields)
            if trace is not None and trace.request_id not in seen and _matches(trace, active):
                seen.add(trace.request_id)
                found.append(trace)
                if len(found) == limit:
                    break
        if len(rows) < batch:
            break
        upper = "(" + str(rows[-1][0])  # exclusive: continue below the last entry seen
    return found


async def trim_traces(redis: Redis, keys: Keys, retention_days: float) -> None:
    """Drop stream entries older than the retention (entry ids start with epoch ms)."""
    min_id = int((time.time() - retention_days * 86400) * 1000)
    if min_id > 0:
        await redis.xtrim(keys.traces(), minid=min_id, approximate=True)
