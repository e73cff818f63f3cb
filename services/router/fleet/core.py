"""What every part of a replica shares: settings, Redis, its key builder and scripts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Self

from redis.asyncio import Redis

from shared.fastredis import FastRedis
from shared.keys import Keys
from shared.redisconn import is_cluster
from shared.scripts import Scripts
from shared.settings import Settings

__all__ = ["Core"]


@dataclass
class Core:
    """The base of a replica's context; the fleet-state parts are built on it.

    `settings` is swapped (not mutated) when runtime settings change, so a part reads
    `core.settings` each time rather than keeping its own copy.
    """

    settings: Settings
    redis: Redis
    keys: Keys
    scripts: Scripts
    # The lean connection for the per-request Redis calls (slot acquire, request end).
    fast: FastRedis | None = None
    replica_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # Set when the server begins a graceful shutdown: long-lived responses (the live-events
    # stream) end themselves instead of holding the shutdown until its timeout.
    stopping: bool = False
    # The URL `redis` was connected with ("" when unknown): what a child process (the
    # recorder) connects with.
    redis_url: str = ""

    @classmethod
    def create(cls, settings: Settings, redis: Redis, fast: FastRedis | None = None) -> Self:
        keys = Keys.for_redis(settings.redis_prefix, cluster=is_cluster(redis))
        return cls(settings=settings, redis=redis, keys=keys, scripts=Scripts(redis, fast),
                   fast=fast)
