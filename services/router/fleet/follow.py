"""Following a Redis pub/sub channel: the one loop that the registry, the runtime settings and
the client keys each run to hear of a change at once.

A message is a hint, never the only news: a quiet wait is heard too (as None), so a part
re-reads what it follows on every interval, and a message lost while the subscription
reconnects costs at most one interval. A lost connection is retried every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["follow"]

log = logging.getLogger("herd.router")

RECONNECT_SECONDS = 1.0


async def follow(
    redis: Redis, channel: str, what: str, heard: Callable[[str | None], Awaitable[None]], *,
    wait: Callable[[], float], subscribed: Callable[[], Awaitable[None]] | None = None,
    logger: logging.Logger = log,
) -> None:
    """Until cancelled: subscribe to `channel`, run `subscribed` (after every reconnection
    too), then pass `heard` each message's data, or None after `wait()` seconds of quiet.
    `what` names the follower in `logger`'s warnings."""
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(channel)
            if subscribed is not None:
                await subscribed()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=wait())
                await heard(None if message is None else str(message.get("data") or ""))
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            logger.warning("%s lost Redis; retrying", what, extra={"error": str(exc)})
            await asyncio.sleep(RECONNECT_SECONDS)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
