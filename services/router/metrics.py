"""Prometheus metrics: request counters and histograms in-process, fleet gauges at scrape time."""

from __future__ import annotations

import time
from typing import Any

from litestar import MediaType, Response, get
from litestar.datastructures import State
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from services.router.context import RouterContext
from shared.models import NodeStatus, Trace, TraceStatus

__all__ = ["REGISTRY", "ROUTES", "observe", "render_metrics"]

# Own registry: the process's default one would also export Python internals per scrape, and
# a test process that builds several apps must not register the same names twice.
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "herd_requests", "Requests finished, by model, node and final status.",
    ["model", "node", "status"], registry=REGISTRY,
)
ERRORS = Counter(
    "herd_errors", "Requests that ended in an error (failed or incomplete).",
    ["model", "node"], registry=REGISTRY,
)
RETRIES = Counter(
    "herd_retries", "Retries on another node after a failure.", ["model", "node"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "herd_tokens", "Tokens processed, by kind (prompt or completion).",
    ["model", "node", "kind"], registry=REGISTRY,
)
COLD_LOADS = Counter(
    "herd_cold_loads", "Requests that made the node load the model first.",
    ["model", "node"], registry=REGISTRY,
)
LATENCY = Histogram(
    "herd_request_latency_seconds", "Whole-request latency seen by Herd.",
    ["model", "node"], buckets=_LATENCY_BUCKETS_S, registry=REGISTRY,
)
TTFT = Histogram(
    "herd_time_to_first_token_seconds", "Time until the first token reached Herd.",
    ["model", "node"], buckets=_TTFT_BUCKETS_S, registry=REGISTRY,
)

_ERROR_STATUSES = frozenset({TraceStatus.FAILED, TraceStatus.INCOMPLETE})


def observe(trace: Trace) -> None:
    """Count one finished request in this process's metrics (cheap: a few dict lookups)."""
    node = trace.node_id or "none"
    # A rejected request may name any model a client typed; keep label sets bounded.
    model = trace.model if trace.node_id else "(none)"
    REQUESTS.labels(model, node, str(trace.status)).inc()
    if trace.status in _ERROR_STATUSES:
        ERRORS.labels(model, node).inc()
    if trace.retry_count:
        RETRIES.labels(model, node).inc(trace.retry_count)
    if trace.status is TraceStatus.REJECTED:
        return
    if trace.prompt_tokens:
        TOKENS.labels(model, node, "prompt").inc(trace.prompt_tokens)
    if trace.completion_tokens:
        TOKENS.labels(model, node, "completion").inc(trace.completion_tokens)
    if trace.load_duration_ms > 0:
        COLD_LOADS.labels(model, node).inc()
    LATENCY.labels(model, node).observe(trace.latency_ms / 1000.0)
    if trace.time_to_first_token_ms is not None:
        TTFT.labels(model, node).observe(trace.time_to_first_token_ms / 1000.0)


async def _fleet_registry(ctx: RouterContext) -> CollectorRegistry:
    """Gauges read from the shared state now, so every replica exports the same fleet view."""
    from services.router.health_api import fleet_snapshot, read_counters, read_queue_depths

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
    snapshot = fleet_snapshot(ctx)
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


@get("/metrics", media_type=MediaType.TEXT)
async def metrics(state: State) -> Response[Any]:
    ctx: RouterContext = state.herd
    return Response(await render_metrics(ctx), media_type=CONTENT_TYPE_LATEST)


ROUTES = [metrics]
