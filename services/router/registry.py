"""The node registry: heartbeats into Redis, statuses by compare-and-set, a cached snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import msgspec
from redis.exceptions import RedisError, WatchError

from services.router.background import background
from services.router.context import RouterContext
from services.router.events import emit
from shared.errors import BadRequest
from shared.models import FleetSnapshot, LoadedModel, NodeState, NodeStatus, normalize_model

__all__ = [
    "Fleet",
    "Reading",
    "fleet_lifecycle",
    "fleet_of",
    "ollama_url_for",
    "parse_heartbeat",
    "status_for",
]

log = logging.getLogger("herd.registry")

SWEEP_INTERVAL = 1.0  # seconds between sweeps; status changes by silence show this fast
FULL_REFRESH_INTERVAL = 30.0  # re-read every record, in case a pub/sub message was lost
NODE_TTL = 7 * 24 * 3600  # a node silent for a week is forgotten
MAX_NODE_ID = 200
DEFAULT_OLLAMA_PORT = 11434

_state_encoder = msgspec.json.Encoder()
_state_decoder = msgspec.json.Decoder(NodeState)


# --- pure rules (unit-tested) ---------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost.localdomain", "ip6-localhost"}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ollama_url_for(reported: str, source_ip: str) -> str:
    """The URL routers use for a node's Ollama.

    The agent's own view (`http://localhost:11434`) is useless to a router on another
    machine, so a loopback host is replaced by the heartbeat's source address; if that is
    loopback too, router and node share the machine and loopback is right.
    """
    raw = reported.strip() or f"http://localhost:{DEFAULT_OLLAMA_PORT}"
    if "://" not in raw:
        raw = f"http://{raw}"
    parts = urlsplit(raw)
    scheme = parts.scheme or "http"
    host = parts.hostname or "localhost"
    try:
        port = parts.port or (443 if scheme == "https" else DEFAULT_OLLAMA_PORT)
    except ValueError as exc:
        raise BadRequest(f"ollama_host {reported!r} has an invalid port") from exc
    if _is_loopback(host) and source_ip and not _is_loopback(source_ip):
        host = source_ip
    return f"{scheme}://{_host_port(host, port)}"


def status_for(
    silence: float, failures: int, *, timeout: float, offline: float, failures_degraded: int
) -> NodeStatus:
    """The status a node should have (the Lua scripts apply the same rule atomically)."""
    if silence >= offline:
        return NodeStatus.OFFLINE
    if silence >= timeout or failures >= failures_degraded:
        return NodeStatus.DEGRADED
    return NodeStatus.ONLINE


def _num(value: Any, name: str, kind: type[float] | type[int] = float) -> Any:
    if value is None:
        return kind(0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"heartbeat field {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise BadRequest(f"heartbeat field {name} must be finite")
    return kind(value)


def _obj(payload: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = payload.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadRequest(f"heartbeat field {name} must be an object")
    return value


def _str(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"heartbeat field {name} must be a string")
    return value


def _node_id(payload: Mapping[str, Any]) -> str:
    node_id = payload.get("node_id")
    if not isinstance(node_id, str) or not node_id.strip():
        raise BadRequest("heartbeat needs a non-empty string node_id")
    node_id = node_id.strip()
    if len(node_id) > MAX_NODE_ID or not node_id.isprintable() or " " in node_id:
        raise BadRequest(f"node_id must be printable, without spaces, at most {MAX_NODE_ID} chars")
    return node_id


def _loaded(entries: Any) -> tuple[LoadedModel, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise BadRequest("heartbeat field ollama.models_loaded must be a list")
    out: list[LoadedModel] = []
    for entry in entries:
        if isinstance(entry, str):
            out.append(LoadedModel(name=normalize_model(entry)))
            continue
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise BadRequest("each of ollama.models_loaded needs a string name")
        out.append(LoadedModel(
            name=normalize_model(entry["name"]),
            size_gb=_num(entry.get("size_gb"), "size_gb"),
            context_length=_num(entry.get("context_length"), "context_length", int),
            requests_active=_num(entry.get("requests_active"), "requests_active", int),
            expires_at=_str(entry.get("expires_at"), "expires_at"),
        ))
    return tuple(out)


def _names(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"heartbeat field {name} must be a list of strings")
    return tuple(dict.fromkeys(normalize_model(v) for v in value if v.strip()))


def _gpu(value: Any) -> dict[str, float] | None:
    if not isinstance(value, Mapping):
        return None
    return {
        str(k): float(v) for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    } or None


def is_draining_only(payload: Mapping[str, Any]) -> bool:
    """`{"node_id": ..., "draining": true}`: a goodbye that must not erase the node's state."""
    return payload.get("draining") is True and "ollama" not in payload


def parse_heartbeat(payload: Any, source_ip: str) -> NodeState:
    """Herd's agent payload or ollama-herd's (same field names) → a NodeState, or BadRequest."""
    if not isinstance(payload, Mapping):
        raise BadRequest("heartbeat body must be a JSON object")
    node_id = _node_id(payload)
    cpu, memory, disk = _obj(payload, "cpu"), _obj(payload, "memory"), _obj(payload, "disk")
    ollama = _obj(payload, "ollama")
    up = ollama.get("up", True) is not False
    sizes = ollama.get("models_available_sizes")
    model_sizes = {
        normalize_model(str(k)): float(v) for k, v in (sizes or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    } if isinstance(sizes, Mapping) else {}
    draining = payload.get("draining", False)
    if not isinstance(draining, bool):
        raise BadRequest("heartbeat field draining must be a boolean")
    return NodeState(
        node_id=node_id,
        ollama_url=ollama_url_for(_str(payload.get("ollama_host"), "ollama_host"), source_ip),
        status=NodeStatus.ONLINE,
        ollama_up=up,
        draining=draining,
        cpu_pct=_num(cpu.get("utilization_pct"), "cpu.utilization_pct"),
        cores=_num(cpu.get("cores_physical") or cpu.get("cores_logical"), "cpu.cores", int),
        memory_total_gb=_num(memory.get("total_gb"), "memory.total_gb"),
        memory_used_gb=_num(memory.get("used_gb"), "memory.used_gb"),
        memory_available_gb=_num(memory.get("available_gb"), "memory.available_gb"),
        memory_pressure=_str(memory.get("pressure"), "memory.pressure") or "normal",
        models_loaded=_loaded(ollama.get("models_loaded")) if up else (),
        models_available=_names(ollama.get("models_available"), "models_available")
        if up else (),
        model_sizes_gb=model_sizes,
        num_parallel=max(0, _num(ollama.get("num_parallel", payload.get("num_parallel")),
                                 "num_parallel", int)),
        max_loaded_models=max(0, _num(ollama.get("max_loaded_models"), "max_loaded_models",
                                      int)),
        ollama_version=_str(ollama.get("version"), "ollama.version"),
        agent_version=_str(payload.get("agent_version"), "agent_version"),
        gpu=_gpu(payload.get("gpu")),
        disk_total_gb=_num(disk.get("total_gb"), "disk.total_gb"),
        disk_available_gb=_num(disk.get("available_gb"), "disk.available_gb"),
        requests_active=_num(ollama.get("requests_active"), "requests_active", int),
        lan_ip=_str(payload.get("lan_ip"), "lan_ip"),
        ollama_error=_str(ollama.get("error"), "ollama.error"),
    )


def node_from_hash(fields: Mapping[str, str]) -> NodeState | None:
    """The registry hash → a NodeState with the routers' view (status, failures) applied."""
    raw = fields.get("state")
    if not raw:
        return None
    try:
        state = _state_decoder.decode(raw)
        status = NodeStatus(fields.get("status") or "online")
        return msgspec.structs.replace(
            state,
            status=status,
            last_seen=float(fields.get("last_seen") or 0.0),
            draining=fields.get("draining") == "1",
            router_failures=int(fields.get("failures") or 0),
        )
    except (msgspec.DecodeError, ValueError):
        log.warning("unreadable node record ignored", extra={"state": raw[:200]})
        return None


def _with_model(state: NodeState, model: str, size_gb: float | None) -> NodeState:
    """The state with `model` added (size known) or removed (size None)."""
    available = [m for m in state.models_available if m != model]
    sizes = {k: v for k, v in state.model_sizes_gb.items() if k != model}
    loaded = tuple(m for m in state.models_loaded if m.name != model)
    if size_gb is not None:
        available.append(model)
        sizes[model] = size_gb
        loaded = state.models_loaded
    return msgspec.structs.replace(
        state, models_available=tuple(available), model_sizes_gb=sizes, models_loaded=loaded)


# --- the registry ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """Every node record as one read found them, and the local generation it began at."""

    nodes: dict[str, NodeState]
    since: int
    redis_now: float


class Fleet:
    """One replica's handle on the registry; `snapshot()` is what the hot path reads.

    Reads of Redis and local writes (a heartbeat this replica stored) interleave: a read
    that began before a node's latest local write must not replace it, or the node would
    vanish or go back in time until the next read. Every local write takes a generation
    number; a read remembers the generation it began at and skips nodes written since.
    """

    def __init__(self, ctx: RouterContext) -> None:
        self._ctx = ctx
        self._snapshot = FleetSnapshot(taken_at=time.time())
        self._clock_offset = 0.0  # Redis time minus this host's time
        self._refresh_lock = asyncio.Lock()
        self._generation = 0
        self._written: dict[str, int] = {}  # node id -> generation of its last local write

    def snapshot(self) -> FleetSnapshot:
        """The cached fleet; no I/O."""
        return self._snapshot

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

    def _status_args(self) -> list[Any]:
        s = self._ctx.settings
        return [s.heartbeat_timeout, s.heartbeat_offline, s.node_failures_degraded,
                self._ctx.keys.fleet_channel()]

    async def ingest_heartbeat(self, payload: Any, source_ip: str) -> NodeState:
        """Store one heartbeat; returns the node as now registered."""
        ctx, keys, s = self._ctx, self._ctx.keys, self._ctx.settings
        draining_only = isinstance(payload, Mapping) and is_draining_only(payload)
        if draining_only:
            node_id = _node_id(payload)
            known = self._snapshot.nodes.get(node_id)
            state_json = ""
            good = False
        else:
            known = parse_heartbeat(payload, source_ip)
            node_id = known.node_id
            state_json = _state_encoder.encode(known).decode()
            good = known.ollama_up
        draining = bool(payload.get("draining") is True)
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
        )
        self._put(node)
        if old != new:
            await self._emit(node_id, old or "unknown", new)
        return node

    async def record_failure(self, node_id: str, reason: str) -> None:
        """A request to this node failed before any output: it loses standing fleet-wide."""
        log.info("node failure observed", extra={"node_id": node_id, "reason": reason})
        await self._apply("fail", [node_id])

    async def record_success(self, node_id: str) -> None:
        """A request succeeded; only a node with failures on record costs a round trip."""
        node = self._snapshot.nodes.get(node_id)
        if node is not None and node.router_failures == 0:
            return
        await self._apply("ok", [node_id])

    async def _apply(self, mode: str, node_ids: list[str]) -> list[tuple[str, str, str]]:
        keys = self._ctx.keys
        flat = await self._ctx.scripts.run(
            "node_status", [keys.node(n) for n in node_ids], [mode, *self._status_args(),
                                                                 *node_ids],
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
        redis, keys = self._ctx.redis, self._ctx.keys
        key = keys.node(node_id)
        async with redis.pipeline(transaction=True) as pipe:
            for _ in range(5):  # a heartbeat in between: read it again
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, "state")
                    if not raw:
                        return False
                    state = _with_model(_state_decoder.decode(raw), model, size_gb)
                    pipe.multi()
                    pipe.hset(key, "state", _state_encoder.encode(state).decode())
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

    async def run(self) -> None:
        """Follow the fleet channel and sweep every second, until cancelled."""
        redis, channel = self._ctx.redis, self._ctx.keys.fleet_channel()
        while True:
            pubsub = redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                await self.refresh()
                next_sweep = time.monotonic() + SWEEP_INTERVAL
                next_full = time.monotonic() + FULL_REFRESH_INTERVAL
                while True:
                    wait = max(0.0, next_sweep - time.monotonic())
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=wait)
                    if message is not None:
                        await self.refresh_node(str(message.get("data") or ""))
                    if time.monotonic() >= next_sweep:
                        if time.monotonic() >= next_full:
                            await self.refresh()
                            next_full = time.monotonic() + FULL_REFRESH_INTERVAL
                        else:
                            await self.tick()
                        next_sweep = time.monotonic() + SWEEP_INTERVAL
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("fleet watcher lost Redis; retrying", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


def fleet_of(ctx: RouterContext) -> Fleet:
    return cast(Fleet, ctx.parts["fleet"])


@contextlib.asynccontextmanager
async def fleet_lifecycle(ctx: RouterContext) -> AsyncIterator[None]:
    """Load the snapshot before the app serves, then keep it current in the background."""
    fleet = Fleet(ctx)
    ctx.parts["fleet"] = fleet
    await fleet.refresh()
    async with background(fleet.run(), "herd-fleet-watcher"):
        yield
