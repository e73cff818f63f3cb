"""Noticing a Redis that came back empty, and the rebuild of the fleet state that follows.

The first replica to reach a Redis stores an epoch token in it (SET NX). Each replica
checks the token whenever its registry watcher (re)connects: a different token, or none,
means Redis lost everything while this replica was away from it (a restart without
persistence, a new instance behind the same address). Then:

- nodes re-register from their agents' next heartbeats; until every node this replica knew
  is back (or `heartbeat_timeout` has passed, after which a silent node would be degraded
  anyway), a request that finds no node for its model is told the state is being rebuilt
  (503 with Retry-After) instead of 404 "model not found";
- slots and counters start clean (their keys are gone, and release.lua counts only the
  leases it finds);
- each replica runs its `on_wiped` callbacks: the runtime settings it holds are written
  back, so they do not silently revert to their defaults.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection

from redis.exceptions import RedisError

from services.router.fleet.core import Core
from shared.models import FleetSnapshot

__all__ = ["Rebuild"]

log = logging.getLogger("herd.registry")


class Rebuild:
    """One replica's view of the Redis epoch, and whether a rebuild is under way."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self.token: str | None = None  # the epoch this replica last saw
        self._until = 0.0  # monotonic deadline of the rebuild; 0: none under way
        self._expected: frozenset[str] = frozenset()  # nodes known before the wipe
        self._on_wiped: list[Callable[[], Awaitable[None]]] = []

    def on_wiped(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` after Redis is found empty (before the registry is re-read)."""
        self._on_wiped.append(callback)

    async def check(self, known: Collection[str]) -> bool:
        """Compare the epoch with the one last seen; True (and a rebuild begun) if Redis
        came back empty. `known`: the node ids this replica knew until then."""
        redis, key = self._core.redis, self._core.keys.epoch()
        pipe = redis.pipeline(transaction=False)
        pipe.set(key, uuid.uuid4().hex, nx=True)
        pipe.get(key)
        _, current = await pipe.execute()
        previous, self.token = self.token, current
        if previous is None or current == previous:
            return False
        self._expected = frozenset(known)
        self._until = time.monotonic() + max(1.0, self._core.settings.heartbeat_timeout)
        log.warning("Redis came back empty: rebuilding the fleet state",
                    extra={"nodes_expected": len(self._expected)})
        for callback in self._on_wiped:
            try:
                await callback()
            except RedisError as exc:
                log.warning("rebuild step failed", extra={"error": str(exc)})
        return True

    def active(self, snapshot: FleetSnapshot) -> bool:
        """True while the registry is being rebuilt: some node known before is not back."""
        if not self._until:
            return False
        if time.monotonic() >= self._until or self._expected <= snapshot.nodes.keys():
            self._until = 0.0
            log.info("fleet state rebuilt", extra={"nodes": len(snapshot.nodes)})
            return False
        return True
