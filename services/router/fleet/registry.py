"""The node registry: heartbeats into Redis, statuses by compare-and-set, a cached snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from services.router.fleet.core import Core
from services.router.fleet.events import emit
from services.router.fleet.follow import follow
from services.router.fleet.heartbeat import (
    is_draining_only,
    node_from_hash,
    node_id_of,
    parse_heartbeat,
    state_decoder,
    state_encoder,
    status_for,
    with_model,
)
from services.router.fleet.rebuild import Rebuild
from shared.background import background
from shared.keys import REFUSED_FIELD
from shared.models import FleetSnapshot, MemoryRefusal, NodeState, NodeStatus

__all__ = ["Reading", "Registry"]

log = logging.getLogger("herd.registry")

SWEEP_INTERVAL = 1.0  # seconds between sweeps; status changes by silence show this fast
FULL_REFRESH_INTERVAL = 30.0  # re-read every record, in case a pub/sub message was lost
NODE_TTL = 7 * 24 * 3600  # a node silent for a week is forgotten


# --- the registry ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """Every node record as one read found them, and the local generation it began at."""

    nodes: dict[str, NodeState]
    since: int
    redis_now: float


class Registry:
    """One replica's handle on the registry; `snapshot()` is what the hot path reads.

    Reads of Redis and local writes (a heartbeat this replica stored) interleave: a read
    that began before a node's latest local write must not replace it, or the node would
    vanish or go back in time until the next read. Every local write takes a generation
    number; a read remembers the generation it began at and skips nodes written since.
    """

    def __init__(self, ctx: Core) -> None:
        self._ctx = ctx
        self.rebuild = Rebuild(ctx)  # noticing a Redis that came back empty
        self._snapshot = FleetSnapshot(taken_at=time.time())
        self._clock_offset = 0.0  # Redis time minus this host's time
        self._refresh_lock = asyncio.Lock()
        self._generation = 0
        self._written: dict[str, int] = {}  # node id -> generation of its last local write
        self._next_sweep = self._next_full = 0.0  # the watcher's next sweep and full re-read

    def snapshot(self) -> FleetSnapshot:
        """The cached fleet; no I/O."""
        return self._snapshot

    def rebuilding(self) -> bool:
        """Redis came back empty and some node known before has not re-registered yet."""
        return self.rebuild.active(self._snapshot)

    def _live_ids(self) -> list[str]:
        return [n.node_id for n in self._snapshot.nodes.values()
                if n.status is not NodeStatus.OFFLINE]

    def _put(self, node: NodeState, since: int | None = None) -> bool:
        """Install one node; with `since` (a read's start), not over a newer local write."""
        if since is not None and self._written.get(node.node_id, 0) > since:
            return False
        self._generation += 1
        self._written[node.node_id] = self._generation
        nodes = dict(self._snapshot.nodes)
        nodes[node.node_id] = node
        self._snapshot = FleetSnapshot(nodes=nodes, taken_at=time.time())
        return True

    def _status_args(self, model: str = "") -> list[Any]:
        s = self._ctx.settings
        return [s.heartbeat_timeout, s.heartbeat_offline, s.node_failures_degraded,
                self._ctx.keys.fleet_channel(), model, s.model_failure_cooldown]

    async def ingest_heartbeat(self, payload: Any, source_ip: str) -> NodeState:
        """Store one heartbeat; returns the node as now registered."""
        ctx, keys, s = self._ctx, self._ctx.keys, self._ctx.settings
        draining_only = isinstance(payload, Mapping) and is_draining_only(payload)
        if draining_only:
            node_id = node_id_of(payload)
            known = self._snapshot.nodes.get(node_id)
            state_json = ""
            good = False
        else:
            known = parse_heartbeat(payload, source_ip)
            node_id = known.node_id
            state_json = state_encoder.encode(known).decode()
            good = known.ollama_up
        draining = bool(payload.get("draining") is True)
        before = self._snapshot.nodes.get(node_id)
        old, new, now = await ctx.scripts.run(
            "node_heartbeat",
            [keys.node(node_id), keys.nodes(), keys.node_alive(node_id)],
            [node_id, state_json, "1" if draining else "0", "1" if good else "0",
             s.node_failures_degraded, max(1, int(s.heartbeat_offline * 1000)), NODE_TTL,
             keys.fleet_channel()],
        )
        if known is None:  # a goodbye from a node this replica has not seen yet
            fields = await ctx.redis.hgetall(keys.node(node_id))
            known = node_from_hash(fields) or NodeState(node_id=node_id, ollama_url="")
        node = msgspec.structs.replace(
            known, status=NodeStatus(new), last_seen=float(now), draining=draining,
            router_failures=0 if good else known.router_failures,
            # a heartbeat says nothing of these: the routers' record stands
            model_failures=before.model_failures if before else known.model_failures,
            memory_refusals=before.memory_refusals if before else known.memory_refusals,
        )
        self._put(node)
        if old != new:
            await self._emit(node_id, old or "unknown", new)
        if before is not None and not draining_only:
            await self._emit_models(before, node)
        return node

    async def _emit_models(self, before: NodeState, after: NodeState) -> None:
        """One event per model the node loaded or unloaded since its previous heartbeat (a
        node's first heartbeat is its node_status event, not a load of everything)."""
        was = {m.name for m in before.models_loaded}
        now = {m.name for m in after.models_loaded}
        for loaded in after.models_loaded:
            if loaded.name not in was:
                await emit(self._ctx.redis, self._ctx.keys, "model_loaded",
                           node_id=after.node_id, model=loaded.name, size_gb=loaded.size_gb,
                           context_length=loaded.context_length)
        for name in sorted(was - now):
            await emit(self._ctx.redis, self._ctx.keys, "model_unloaded",
                       node_id=after.node_id, model=name)

    async def record_failure(self, node_id: str, reason: str, model: str = "") -> None:
        """A request to this node failed before any output: it loses standing fleet-wide.

        With `model`, the node answered but that model failed there: the failure counts
        for node:model (after node_failures_degraded in a row the model is not sent there
        for model_failure_cooldown), and for the node only when other models failed there
        lately. Without, the node could not be reached: it counts for the node.
        """
        log.info("node failure observed",
                 extra={"node_id": node_id, "model": model, "reason": reason})
        await self._apply("fail_model" if model else "fail", [node_id], model)

    async def record_success(self, node_id: str, model: str = "") -> None:
        """A request succeeded; only a node with failures on record costs a round trip."""
        node = self._snapshot.nodes.get(node_id)
        if node is not None and node.router_failures == 0 and (
                model not in node.model_failures):
            return
        await self._apply("ok", [node_id], model)

    async def note_refusal(self, node_id: str, model: str, refusal: MemoryRefusal) -> bool:
        """Keep what `node_id` said about `model` not fitting, so every replica's fit
        estimate has it (shared/fit.py). False if the node is unknown."""
        value = state_encoder.encode(msgspec.structs.replace(refusal, at=time.time()))

        async def field(pipe: Pipeline, key: str) -> tuple[str, str | bytes] | None:
            return (REFUSED_FIELD + model, value) if await pipe.exists(key) else None

        return await self._edit_node(node_id, field)

    async def _apply(self, mode: str, node_ids: list[str],
                     model: str = "") -> list[tuple[str, str, str]]:
        keys = self._ctx.keys
        flat = await self._ctx.scripts.run(
            "node_status", [keys.node(n) for n in node_ids],
            [mode, *self._status_args(model), *node_ids],
        )
        changes = [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
        for node_id, old, new in changes:
            await self._emit(node_id, old or "unknown", new)
        if mode != "sweep" and node_ids:
            await self.refresh_node(node_ids[0])
        return changes

    async def note_model(self, node_id: str, model: str, size_gb: float | None) -> bool:
        """Correct the node's model list between heartbeats: the routers saw it change.

        `size_gb` None: the node said it does not have `model` (a stale registry);
        otherwise a pull this router ran put it there. The agent's next heartbeat replaces
        the record as usual. Returns False if the node is unknown.
        """
        async def field(pipe: Pipeline, key: str) -> tuple[str, str | bytes] | None:
            raw = await pipe.hget(key, "state")
            if not raw:
                return None
            state = with_model(state_decoder.decode(raw), model, size_gb)
            return "state", state_encoder.encode(state).decode()

        return await self._edit_node(node_id, field)

    async def _edit_node(
        self, node_id: str,
        field: Callable[[Pipeline, str], Awaitable[tuple[str, str | bytes] | None]],
    ) -> bool:
        """Write one field of `node_id`'s hash between heartbeats and tell every replica:
        `field` reads what it needs under WATCH and says which field and value (None: the
        node is unknown, and its hash is never re-created: it has no TTL). A heartbeat in
        between: read again. False if the node is unknown."""
        redis, keys = self._ctx.redis, self._ctx.keys
        key = keys.node(node_id)
        async with redis.pipeline(transaction=True) as pipe:
            for _ in range(5):
                try:
                    await pipe.watch(key)
                    written = await field(pipe, key)
                    if written is None:
                        return False
                    pipe.multi()
                    pipe.hset(key, *written)
                    pipe.publish(keys.fleet_channel(), node_id)
                    await pipe.execute()
                    break
                except WatchError:
                    await pipe.reset()
        await self.refresh_node(node_id)
        return True

    async def _emit(self, node_id: str, old: str, new: str) -> None:
        log.info("node %s: %s -> %s", node_id, old, new,
                 extra={"node_id": node_id, "old": old, "new": new})
        await emit(self._ctx.redis, self._ctx.keys, "node_status", node_id=node_id, old=old,
                   new=new)

    async def refresh_node(self, node_id: str) -> None:
        since = self._generation
        fields = await self._ctx.redis.hgetall(self._ctx.keys.node(node_id))
        node = node_from_hash(fields)
        if node is not None:
            self._put(node, since)

    async def refresh(self, *, sweep: bool = True) -> FleetSnapshot:
        """Re-read every node; with `sweep`, move statuses that silence has changed."""
        async with self._refresh_lock:
            reading = await self.read()
            stale = self._due(reading.nodes, reading.redis_now)
            if sweep and stale:
                for node_id, _old, new in await self._apply("sweep", stale):
                    reading.nodes[node_id] = msgspec.structs.replace(
                        reading.nodes[node_id], status=NodeStatus(new))
            return self.install(reading)

    async def read(self) -> Reading:
        """The first half of `refresh`: every node record, read in one round trip."""
        since = self._generation
        redis, keys = self._ctx.redis, self._ctx.keys
        ids = sorted(await redis.smembers(keys.nodes()))
        pipe = redis.pipeline(transaction=False)
        for node_id in ids:
            pipe.hgetall(keys.node(node_id))
        pipe.time()
        *rows, (sec, usec) = await pipe.execute()
        redis_now = sec + usec / 1e6
        self._clock_offset = redis_now - time.time()
        nodes: dict[str, NodeState] = {}
        gone: list[str] = []
        for node_id, fields in zip(ids, rows, strict=True):
            node = node_from_hash(fields) if fields else None
            if node is None:
                if not fields:
                    gone.append(node_id)
                continue
            nodes[node_id] = node
        if gone:
            await self._forget(gone)
        return Reading(nodes=nodes, since=since, redis_now=redis_now)

    def install(self, reading: Reading) -> FleetSnapshot:
        """The second half of `refresh`: swap in what was read, keeping newer local writes.

        A node this replica wrote after the read began (a heartbeat it stored meanwhile)
        keeps its current record, even when the read did not see the node at all.
        """
        nodes = dict(reading.nodes)
        current = self._snapshot.nodes
        for node_id, generation in self._written.items():
            if generation > reading.since and node_id in current:
                nodes[node_id] = current[node_id]
        self._written = {
            node_id: generation for node_id, generation in self._written.items()
            if node_id in nodes or generation > reading.since
        }
        self._snapshot = FleetSnapshot(nodes=nodes, taken_at=time.time())
        return self._snapshot

    async def _forget(self, gone: list[str]) -> None:
        """Drop ids whose hashes expired, unless a heartbeat re-created one meanwhile."""
        redis, keys = self._ctx.redis, self._ctx.keys
        hashes = [keys.node(node_id) for node_id in gone]
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(*hashes)
                if await pipe.exists(*hashes):
                    return  # a node came back; the next refresh forgets the rest
                pipe.multi()
                pipe.srem(keys.nodes(), *gone)
                await pipe.execute()
            except WatchError:
                return  # a heartbeat touched one of them: same as above

    def _due(self, nodes: Mapping[str, NodeState], now: float) -> list[str]:
        """Nodes whose status silence or failures should have changed by `now`."""
        s = self._ctx.settings
        return [
            n.node_id for n in nodes.values()
            if status_for(now - n.last_seen, n.router_failures, timeout=s.heartbeat_timeout,
                          offline=s.heartbeat_offline,
                          failures_degraded=s.node_failures_degraded) is not n.status
        ]

    async def tick(self) -> None:
        """The once-a-second sweep, judged locally first: no Redis call unless a node is due.

        The snapshot's last-seen times are kept current by pub/sub, so this replica knows
        which nodes silence has moved; the script then decides (by Redis's clock, and only
        once fleet-wide). Re-reading every record each second would cost ~70 ms of CPU per
        200 nodes and replica.
        """
        due = self._due(self._snapshot.nodes, self.redis_now())
        if not due:
            return
        since = self._generation
        await self._apply("sweep", due)
        pipe = self._ctx.redis.pipeline(transaction=False)
        for node_id in due:
            pipe.hgetall(self._ctx.keys.node(node_id))
        for fields in await pipe.execute():
            node = node_from_hash(fields)
            if node is not None:
                self._put(node, since)

    def redis_now(self) -> float:
        """This host's clock corrected to Redis's (the clock last_seen is measured by)."""
        return time.time() + self._clock_offset

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Load the snapshot before the app serves, then keep it current in the background."""
        await self.rebuild.check(())
        await self.refresh()
        async with background(self.run(), "herd-fleet-watcher"):
            yield

    async def run(self) -> None:
        """Follow the fleet channel and sweep every second, until cancelled."""
        await follow(self._ctx.redis, self._ctx.keys.fleet_channel(), "fleet watcher",
                     self._heard, wait=self._until_sweep, subscribed=self._subscribed,
                     logger=log)

    async def _subscribed(self) -> None:
        # Every reconnection (Redis restarted, failed over, came back empty) passes here
        # before the registry is re-read.
        await self.rebuild.check(self._live_ids())
        await self.refresh()
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL
        self._next_full = time.monotonic() + FULL_REFRESH_INTERVAL

    def _until_sweep(self) -> float:
        return max(0.0, self._next_sweep - time.monotonic())

    async def _heard(self, node_id: str | None) -> None:
        """A node's record changed (its id), or a quiet wait ended: sweep when it is due."""
        if node_id is not None:
            await self.refresh_node(node_id)
        if time.monotonic() >= self._next_sweep:
            if time.monotonic() >= self._next_full:
                await self.refresh()
                self._next_full = time.monotonic() + FULL_REFRESH_INTERVAL
            else:
                await self.tick()
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL

