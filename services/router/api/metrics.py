"""GET /metrics: this process's request metrics, and fleet gauges read at scrape time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar import MediaType, Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from redis.exceptions import RedisError

from services.router.context import RouterContext
from services.router.fleet.metrics import REGISTRY
from services.router.fleet.reads import counter_rows, read_leader, read_queue_depths
from shared.models import FleetSnapshot, NodeStatus

__all__ = ["ROUTES", "render_metrics"]

_SLOT_FIELDS = ("pending", "in_flight", "done", "failed")


def _node_gauges(registry: CollectorRegistry, snapshot: FleetSnapshot) -> None:
    """Gauges from the replica's cached node registry (no I/O)."""
    status = Gauge("herd_node_status", "1 for the node's current status.", ["node", "status"],
                   registry=registry)
    memory = Gauge("herd_node_memory_used_ratio", "Memory used / total on the node.", ["node"],
                   registry=registry)
    loaded = Gauge("herd_node_models_loaded", "Models resident on the node.", ["node"],
                   registry=registry)
    ollama_up = Gauge("herd_node_ollama_up", "1 if the node's agent last saw its Ollama answer.",
                      ["node"], registry=registry)
    draining = Gauge("herd_node_draining", "1 if the node's agent said it is shutting down.",
                     ["node"], registry=registry)
    by_status = Gauge("herd_nodes", "Nodes the fleet knows, by status.", ["status"],
                      registry=registry)
    counts = dict.fromkeys(NodeStatus, 0)
    for node in snapshot.nodes.values():
        counts[node.status] += 1
        for value in NodeStatus:
            status.labels(node.node_id, str(value)).set(1 if node.status is value else 0)
        if node.memory_total_gb:
            memory.labels(node.node_id).set(node.memory_used_gb / node.memory_total_gb)
        loaded.labels(node.node_id).set(len(node.models_loaded))
        ollama_up.labels(node.node_id).set(1 if node.ollama_up else 0)
        draining.labels(node.node_id).set(1 if node.draining else 0)
    for value, count in counts.items():
        by_status.labels(str(value)).set(count)


async def _shared_gauges(registry: CollectorRegistry, ctx: RouterContext,
                         snapshot: FleetSnapshot) -> None:
    """Gauges read from Redis now: queues, slots, the leader lease."""
    waiting = Gauge("herd_queue_waiting", "Requests waiting fleet-wide for a model.", ["model"],
                    registry=registry)
    slots: dict[str, Gauge] = {
        name: Gauge(f"herd_slots_{name}", f"Counter {name} of a node:model.", ["node", "model"],
                    registry=registry)
        for name in _SLOT_FIELDS
    }
    capacity = Gauge("herd_slots_capacity", "Slots (parallel requests) of a node:model.",
                     ["node", "model"], registry=registry)
    leader = Gauge("herd_leader_present", "1 if some replica holds the leader lease (it runs "
                   "the reaper and the recorder).", registry=registry)
    depths = await read_queue_depths(ctx, snapshot)
    rows = await counter_rows(ctx)
    holder = await read_leader(ctx)
    for model, depth in depths.items():
        waiting.labels(model).set(depth)
    for node_id, model, entry in rows:
        for name, gauge in slots.items():
            gauge.labels(node_id, model).set(getattr(entry, name))
        capacity.labels(node_id, model).set(entry.max_concurrent)
    leader.set(1 if holder else 0)


async def _fleet_registry(ctx: RouterContext) -> CollectorRegistry:
    """Gauges read from the shared state now, so every replica exports the same fleet view;
    and this replica's own view of Redis and of the leader lease."""
    registry = CollectorRegistry(auto_describe=True)
    snapshot = ctx.fleet.snapshot()
    _node_gauges(registry, snapshot)
    Gauge("herd_queue_max_depth", "Requests that may wait per model before new ones get 503 "
          "(the max_queue_depth setting).", registry=registry).set(ctx.settings.max_queue_depth)
    redis_up = Gauge("herd_redis_up", "1 if this replica read the fleet's state from Redis for "
                     "this scrape within FLEET_REDIS_TIMEOUT.", registry=registry)
    try:
        # Bounded like /healthz: a frozen Redis must not hang the scrape. Without Redis the
        # replica still answers, with redis_up 0 and its own counters.
        await asyncio.wait_for(_shared_gauges(registry, ctx, snapshot),
                               ctx.settings.redis_timeout)
    except (RedisError, OSError, TimeoutError):
        redis_up.set(0)
    else:
        redis_up.set(1)
    Gauge("herd_replica_is_leader", "1 if this replica holds the leader lease.",
          registry=registry).set(1 if ctx.leader.is_leader else 0)
    Gauge("herd_scrape_timestamp_seconds", "When this replica built the fleet gauges.",
          registry=registry).set(time.time())
    return registry


async def render_metrics(ctx: RouterContext) -> bytes:
    return generate_latest(REGISTRY) + generate_latest(await _fleet_registry(ctx))


@get("/metrics", media_type=MediaType.TEXT, tags=["router"],
     summary="Prometheus metrics: this replica's requests and the fleet's gauges")
async def metrics(state: State) -> Response[Any]:
    ctx: RouterContext = state.herd
    return Response(await render_metrics(ctx), media_type=CONTENT_TYPE_LATEST)


ROUTES = [metrics]
