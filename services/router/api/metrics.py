"""GET /metrics: this process's request metrics, and fleet gauges read at scrape time."""

from __future__ import annotations

import time
from typing import Any

from litestar import MediaType, Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from services.router.context import RouterContext
from services.router.fleet.metrics import REGISTRY
from services.router.fleet.reads import read_counters, read_queue_depths
from shared.models import NodeStatus

__all__ = ["ROUTES", "render_metrics"]


async def _fleet_registry(ctx: RouterContext) -> CollectorRegistry:
    """Gauges read from the shared state now, so every replica exports the same fleet view."""
    registry = CollectorRegistry(auto_describe=True)
    status = Gauge("herd_node_status", "1 for the node's current status.", ["node", "status"],
                   registry=registry)
    memory = Gauge("herd_node_memory_used_ratio", "Memory used / total on the node.", ["node"],
                   registry=registry)
    loaded = Gauge("herd_node_models_loaded", "Models resident on the node.", ["node"],
                   registry=registry)
    waiting = Gauge("herd_queue_waiting", "Requests waiting fleet-wide for a model.", ["model"],
                    registry=registry)
    slots: dict[str, Gauge] = {
        name: Gauge(f"herd_slots_{name}", f"Counter {name} of a node:model.", ["node", "model"],
                    registry=registry)
        for name in ("pending", "in_flight", "done", "failed")
    }
    snapshot = ctx.fleet.snapshot()
    for node in snapshot.nodes.values():
        for value in NodeStatus:
            status.labels(node.node_id, str(value)).set(1 if node.status is value else 0)
        if node.memory_total_gb:
            memory.labels(node.node_id).set(node.memory_used_gb / node.memory_total_gb)
        loaded.labels(node.node_id).set(len(node.models_loaded))
    for model, depth in (await read_queue_depths(ctx, snapshot)).items():
        waiting.labels(model).set(depth)
    for (node_id, model), counters in (await read_counters(ctx)).items():
        for name, gauge in slots.items():
            gauge.labels(node_id, model).set(getattr(counters, name))
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
