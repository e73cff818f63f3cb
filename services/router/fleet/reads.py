"""Reads of the shared state that the APIs and the live events are built from."""

from __future__ import annotations

from typing import Any, Protocol

from redis.asyncio import Redis

from services.router.fleet.events import events_since
from services.router.fleet.registry import Registry
from shared.health import Counters
from shared.keys import Keys
from shared.models import FleetSnapshot, LoadedModel, NodeState, NodeStatus
from shared.schemas import (
    CpuView,
    DiskView,
    FleetSummary,
    InstalledModel,
    LoadedModelView,
    MemoryView,
    ModelManagement,
    NodeModels,
    NodeView,
    QueueCounters,
)
from shared.settings import Settings

__all__ = [
    "QUEUE_FIELDS",
    "ReadParts",
    "counter_rows",
    "fleet_summary",
    "loaded_view",
    "model_management",
    "node_view",
    "read_counters",
    "read_events",
    "read_leader",
    "read_queue_apps",
    "read_queue_depths",
    "read_queues",
]

QUEUE_FIELDS = ("pending", "in_flight", "done", "failed")


class ReadParts(Protocol):
    """What the reads use of a replica's context."""

    settings: Settings
    redis: Redis
    keys: Keys
    fleet: Registry


def _int(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


async def read_counters(ctx: ReadParts) -> dict[tuple[str, str], Counters]:
    """The request path's counters per (node, model)."""
    return {(node_id, model): Counters(**{name: getattr(entry, name) for name in QUEUE_FIELDS})
            for node_id, model, entry in await counter_rows(ctx)}


async def counter_rows(ctx: ReadParts) -> list[tuple[str, str, QueueCounters]]:
    """Counters per node:model (written by the request path), with each pair's slots."""
    redis, keys = ctx.redis, ctx.keys
    pairs = sorted(await redis.smembers(keys.counters_index()))
    split = [p.split("|", 1) for p in pairs if "|" in p]
    if not split:
        return []
    models = sorted({model for _, model in split})
    pipe = redis.pipeline(transaction=False)
    for node_id, model in split:
        pipe.hgetall(keys.counters(node_id, model))
    for model in models:
        pipe.hgetall(keys.wait_pending(model))
    replies = await pipe.execute()
    rows = replies[: len(split)]
    # `pending` lives per model (the queue scripts own it), the rest per node:model
    pending = dict(zip(models, replies[len(split):], strict=True))
    nodes = ctx.fleet.snapshot().nodes
    default = ctx.settings.default_num_parallel
    out: list[tuple[str, str, QueueCounters]] = []
    for (node_id, model), fields in zip(split, rows, strict=True):
        node = nodes.get(node_id)
        counts = {name: _int(fields.get(name)) for name in QUEUE_FIELDS}
        counts["pending"] = _int(pending[model].get(node_id))
        entry = QueueCounters(**counts, max_concurrent=node.slots(default) if node else default)
        out.append((node_id, model, entry))
    return out


async def read_queues(ctx: ReadParts) -> dict[str, QueueCounters]:
    """Counters keyed "node:model", as /fleet/status shows them."""
    return {f"{node}:{model}": entry for node, model, entry in await counter_rows(ctx)}


async def read_queue_depths(
    ctx: ReadParts, snapshot: FleetSnapshot | None = None, extra: set[str] | None = None,
) -> dict[str, int]:
    """Waiting requests per model the fleet knows (and any in `extra`)."""
    models = sorted(set((snapshot or ctx.fleet.snapshot()).models()) | (extra or set()))
    if not models:
        return {}
    pipe = ctx.redis.pipeline(transaction=False)
    for model in models:
        pipe.zcard(ctx.keys.wait(model))
    counts = await pipe.execute()
    return {m: int(c) for m, c in zip(models, counts, strict=True)}


async def read_leader(ctx: ReadParts) -> str | None:
    """The replica id that holds the leader lease, or None while nobody does."""
    holder: str | None = await ctx.redis.get(ctx.keys.leader())
    return holder


async def read_queue_apps(ctx: ReadParts, models: list[str]) -> dict[str, dict[str, int]]:
    """Waiting requests per model and app (models with nobody waiting are left out)."""
    if not models:
        return {}
    pipe = ctx.redis.pipeline(transaction=False)
    for model in models:
        pipe.hgetall(ctx.keys.wait_apps(model))
    rows = await pipe.execute()
    out: dict[str, dict[str, int]] = {}
    for model, fields in zip(models, rows, strict=True):
        apps = {app: n for app, raw in sorted(fields.items()) if (n := _int(raw)) > 0}
        if apps:
            out[model] = apps
    return out


async def read_events(ctx: ReadParts, since: float, limit: int) -> list[dict[str, Any]]:
    """The newest events (at most `limit`) no older than `since`, newest first."""
    return await events_since(ctx.redis, ctx.keys, since, limit)


def fleet_summary(nodes: list[NodeState], queues: dict[str, QueueCounters],
                  waiting: dict[str, int]) -> FleetSummary:
    """The fleet's totals, as /fleet/status and the live events show them."""
    return FleetSummary(
        nodes_total=len(nodes),
        nodes_online=sum(n.status is NodeStatus.ONLINE for n in nodes),
        nodes_degraded=sum(n.status is NodeStatus.DEGRADED for n in nodes),
        nodes_offline=sum(n.status is NodeStatus.OFFLINE for n in nodes),
        nodes_servable=sum(n.servable for n in nodes),
        models_loaded=sum(len(n.models_loaded) for n in nodes
                          if n.status is not NodeStatus.OFFLINE),
        requests_active=sum(q.in_flight for q in queues.values()),
        requests_waiting=sum(waiting.values()),
    )


def loaded_view(model: LoadedModel) -> LoadedModelView:
    return LoadedModelView(name=model.name, size_gb=model.size_gb,
                           context_length=model.context_length,
                           requests_active=model.requests_active, expires_at=model.expires_at)


def node_view(node: NodeState, now: float, default_parallel: int) -> NodeView:
    """One node as /fleet/status shows it (ollama-herd's groups: cpu, memory, disk, ollama)."""
    return NodeView(
        node_id=node.node_id,
        status=node.status,
        servable=node.servable,
        ollama_url=node.ollama_url,
        ollama_up=node.ollama_up,
        ollama_error=node.ollama_error,
        draining=node.draining,
        last_seen=node.last_seen,
        seconds_since_heartbeat=round(max(0.0, now - node.last_seen), 3),
        router_failures=node.router_failures,
        cpu=CpuView(utilization_pct=node.cpu_pct, cores_physical=node.cores),
        memory=MemoryView(total_gb=node.memory_total_gb, used_gb=node.memory_used_gb,
                          available_gb=node.memory_available_gb,
                          pressure=node.memory_pressure),
        disk=DiskView(total_gb=node.disk_total_gb, available_gb=node.disk_available_gb),
        gpu=node.gpu,
        models_loaded=[loaded_view(m) for m in node.models_loaded],
        models_available=list(node.models_available),
        num_parallel=node.slots(default_parallel),
        num_parallel_reported=node.num_parallel,
        max_loaded_models=node.max_loaded_models,
        ollama_version=node.ollama_version,
        agent_version=node.agent_version,
        lan_ip=node.lan_ip,
    )


def model_management(ctx: ReadParts) -> ModelManagement:
    """Per node: installed and loaded models with sizes, and free memory."""
    snapshot = ctx.fleet.snapshot()
    nodes = []
    where: dict[str, list[str]] = {}
    for node in sorted(snapshot.nodes.values(), key=lambda n: n.node_id):
        loaded = {m.name for m in node.models_loaded}
        installed = sorted(set(node.models_available) | loaded)
        for model in installed:
            where.setdefault(model, []).append(node.node_id)
        nodes.append(NodeModels(
            node_id=node.node_id,
            status=node.status,
            servable=node.servable,
            memory_total_gb=node.memory_total_gb,
            memory_available_gb=node.memory_available_gb,
            disk_available_gb=node.disk_available_gb,
            installed=[InstalledModel(name=m, size_gb=node.model_size_gb(m), loaded=m in loaded)
                       for m in installed],
            loaded=[loaded_view(m) for m in node.models_loaded],
        ))
    return ModelManagement(nodes=nodes, models=where)
