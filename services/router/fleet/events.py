"""The fleet's event log: a capped Redis stream of things an operator wants to see happen.

The one writer (`event` builds an entry, `append` adds it: alone through `emit`, or on a
request's last pipeline) and the one reader (`recent_events`, `events_since`,
`latest_events`, `events_after`) of the stream; nothing else names its key.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.fastredis import FastPipeline
from shared.keys import Keys

__all__ = [
    "EVENTS_MAXLEN",
    "append",
    "emit",
    "event",
    "events_after",
    "events_since",
    "latest_events",
    "recent_events",
]

EVENTS_MAXLEN = 10_000  # about a week of a busy fleet's status changes and retries

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

Entry = dict[str, Any]


def event(kind: str, **fields: Any) -> Entry:
    """One entry: `kind` (node_status, retry, context_protection, zombie_reaped, ...), its
    time, and its fields."""
    return {"kind": kind, "ts": time.time(), **fields}


def append(target: Redis | Pipeline | FastPipeline, keys: Keys, entry: Entry) -> Any:
    """Append `entry`: on a pipeline, queued (the caller runs it); on Redis, the command to
    await."""
    return target.xadd(keys.events(), {"kind": str(entry["kind"]), "data": _encode(entry)},
                       maxlen=EVENTS_MAXLEN, approximate=True)


async def emit(redis: Redis, keys: Keys, kind: str, **fields: Any) -> None:
    """Append one event now."""
    await append(redis, keys, event(kind, **fields))


def _entries(rows: list[Any]) -> list[Entry]:
    """The entries of stream rows, in their order; one that does not decode is skipped."""
    entries = []
    for _, fields in rows:
        try:
            entry = _decode(fields.get("data", "{}"))
        except msgspec.DecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


async def recent_events(redis: Redis, keys: Keys, count: int = 100) -> list[Entry]:
    """The newest events first."""
    return _entries(await redis.xrevrange(keys.events(), count=count))


async def events_since(redis: Redis, keys: Keys, since: float, limit: int) -> list[Entry]:
    """The newest events (at most `limit`) no older than `since`, newest first."""
    events = []
    for entry in await recent_events(redis, keys, limit):
        if float(entry.get("ts", 0)) < since:
            break
        events.append(entry)
    return events


async def latest_events(redis: Redis, keys: Keys, count: int) -> tuple[str, list[Entry]]:
    """The newest `count` events (oldest first) and the id to follow the stream from: one
    read, so nothing appended meanwhile is missed or read twice."""
    rows = await redis.xrevrange(keys.events(), count=count)
    return (str(rows[0][0]) if rows else "0-0"), _entries(rows[::-1])


async def events_after(redis: Redis, keys: Keys, last_id: str,
                       count: int) -> tuple[str, list[Entry]]:
    """Events appended after `last_id` (oldest first, at most `count`), and the id to read
    after next."""
    rows = await redis.xrange(keys.events(), min=f"({last_id}", count=count)
    if not rows:
        return last_id, []
    return str(rows[-1][0]), _entries(rows)
