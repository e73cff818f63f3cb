"""What one router replica holds while it runs: settings, Redis, and its long-lived parts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from shared.fastredis import FastRedis
from shared.keys import Keys
from shared.scripts import Scripts
from shared.settings import Settings

if TYPE_CHECKING:
    import pluggy

__all__ = ["RouterContext"]


@dataclass
class RouterContext:
    """Shared by every handler of one replica; `settings` is swapped when runtime ones change.

    The parts below `plugins` are set by their own lifecycles (see app.LIFECYCLES) before
    the app accepts requests.
    """

    settings: Settings
    redis: Redis
    keys: Keys
    scripts: Scripts
    replica_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # The lean connection for the per-request Redis calls (slot acquire, request end).
    fast: FastRedis | None = None
    # Set when the server begins a graceful shutdown: long-lived responses (the live-events
    # stream) end themselves instead of holding the shutdown until its timeout.
    stopping: bool = False
    plugins: pluggy.PluginManager | None = None
    # Each part is typed where it is defined; handlers reach it through the owning module.
    parts: dict[str, object] = field(default_factory=dict)

    @classmethod
    def create(
        cls, settings: Settings, redis: Redis, fast: FastRedis | None = None
    ) -> RouterContext:
        return cls(
            settings=settings,
            redis=redis,
            keys=Keys(settings.redis_prefix),
            scripts=Scripts(redis, fast),
            fast=fast,
        )
