"""Background tasks: started with a lifecycle (a replica's part, the mDNS advertiser), cancelled
and awaited when it ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol

__all__ = ["Startable", "background", "started"]


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, Any], name: str) -> AsyncIterator[None]:
    """Run `coro` as a task for the duration of the block; on exit cancel it and wait."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Startable(Protocol):
    """A part with its own start and stop (the slot manager, the leader)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@contextlib.asynccontextmanager
async def started(part: Startable) -> AsyncIterator[None]:
    """`part` started for the duration of the block, and stopped at its end."""
    await part.start()
    try:
        yield
    finally:
        await part.stop()
