"""The fleet's event log: a capped Redis stream of things an operator wants to see happen."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from redis.asyncio import Redis

from shared.keys import Keys

__all__ = ["EVENTS_MAXLEN", "emit", "recent_events"]

EVENTS_MAXLEN = 10_000  # about a week of a busy fleet's status changes and retries


async def emit(redis: Redis, keys: Keys, kind: str, **fields: Any) -> None:
    """Append one event (`kind` e.g. node_status, retry, context_protection, zombie_reaped)."""
    entry = {"kind": kind, "ts": time.time(), **fields}
    await redis.xadd(
        keys.events(),
        {"kind": kind, "data": msgspec.json.encode(entry)},
        maxlen=EVENTS_MAXLEN,
        approximate=True,
    )


async def recent_events(redis: Redis, keys: Keys, count: int = 100) -> list[dict[str, Any]]:
    """The newest events first."""
    rows = await redis.xrevrange(keys.events(), count=count)
    return [msgspec.json.decode(fields["data"]) for _, fields in rows]
