"""Fleet endpoints: POST /heartbeat from node agents, GET /fleet/status and /fleet/queue."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State

from services.router.context import RouterContext
from services.router.registry import fleet_of
from shared.auth import require_bearer
from shared.errors import BadRequest
from shared.models import NodeState, NodeStatus

__all__ = ["ROUTES", "node_view", "read_queues"]

_QUEUE_FIELDS = ("pending", "in_flight", "done", "failed")


def _check_node_token(ctx: RouterContext, request: Request[Any, Any, Any]) -> None:
    require_bearer(request.headers.get("authorization", ""), ctx.settings.node_token,
                   "heartbeat needs Authorization: Bearer <node token>")


@post("/heartbeat", status_code=200)
async def heartbeat(request: Request[Any, Any, Any], state: State) -> dict[str, str]:
    ctx: RouterContext = state.herd
    _check_node_token(ctx, request)
    body = await request.body()
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"heartbeat body is not valid JSON: {exc}") from exc
    source = request.client.host if request.client else ""
    node = await fleet_of(ctx).ingest_heartbeat(payload, source)
    return {"status": "ok", "node_status": str(node.status)}


def node_view(node: NodeState, now: float, default_parallel: int) -> dict[str, Any]:
    """One node as /fleet/status shows it (ollama-herd's groups: cpu, memory, disk, ollama)."""
    return {
        "node_id": node.node_id,
        "status": str(node.status),
        "servable": node.servable,
        "ollama_url": node.ollama_url,
        "ollama_up": node.ollama_up,
        "ollama_error": node.ollama_error,
        "draining": node.draining,
        "last_seen": node.last_seen,
        "seconds_since_heartbeat": round(max(0.0, now - node.last_seen), 3),
        "router_failures": node.router_failures,
        "cpu": {"utilization_pct": node.cpu_pct, "cores_physical": node.cores},
        "memory": {
            "total_gb": node.memory_total_gb,
            "used_gb": node.memory_used_gb,
            "available_gb": node.memory_available_gb,
            "pressure": node.memory_pressure,
        },
        "disk": {"total_gb": node.disk_total_gb, "available_gb": node.disk_available_gb},
        "gpu": node.gpu,
        "models_loaded": [
            {"name": m.name, "size_gb": m.size_gb, "context_length": m.context_length,
             "requests_active": m.requests_active, "expires_at": m.expires_at}
            for m in node.models_loaded
        ],
        "models_available": list(node.models_available),
        "num_parallel": node.slots(default_parallel),
        "num_parallel_reported": node.num_parallel,
        "max_loaded_models": node.max_loaded_models,
        "ollama_version": node.ollama_version,
        "agent_version": node.agent_version,
        "lan_ip": node.lan_ip,
    }


async def read_queues(ctx: RouterContext) -> dict[str, dict[str, int]]:
    """Counters per "node:model" (written by the request path), with each pair's slots."""
    return {f"{node}:{model}": entry for node, model, entry in await _counters(ctx)}


async def _counters(ctx: RouterContext) -> list[tuple[str, str, dict[str, int]]]:
    redis, keys = ctx.redis, ctx.keys
    pairs = sorted(await redis.smembers(keys.counters_index()))
    if not pairs:
        return []
    pipe = redis.pipeline(transaction=False)
    split = [p.split("|", 1) for p in pairs if "|" in p]
    for node_id, model in split:
        pipe.hgetall(keys.counters(node_id, model))
    rows = await pipe.execute()
    nodes = fleet_of(ctx).snapshot().nodes
    default = ctx.settings.default_num_parallel
    out: list[tuple[str, str, dict[str, int]]] = []
    for (node_id, model), fields in zip(split, rows, strict=True):
        entry = {name: _int(fields.get(name)) for name in _QUEUE_FIELDS}
        node = nodes.get(node_id)
        entry["max_concurrent"] = node.slots(default) if node else default
        out.append((node_id, model, entry))
    return out


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


@get("/fleet/status")
async def fleet_status(state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    fleet = fleet_of(ctx)
    snap = fleet.snapshot()
    now = fleet.redis_now()
    queues = await read_queues(ctx)
    nodes = sorted(snap.nodes.values(), key=lambda n: n.node_id)
    default = ctx.settings.default_num_parallel
    return {
        "fleet": {
            "nodes_total": len(nodes),
            "nodes_online": sum(n.status is NodeStatus.ONLINE for n in nodes),
            "nodes_degraded": sum(n.status is NodeStatus.DEGRADED for n in nodes),
            "nodes_offline": sum(n.status is NodeStatus.OFFLINE for n in nodes),
            "nodes_servable": sum(n.servable for n in nodes),
            "models_loaded": sum(len(n.models_loaded) for n in nodes
                                 if n.status is not NodeStatus.OFFLINE),
            "requests_active": sum(q["in_flight"] for q in queues.values()),
        },
        "nodes": [node_view(n, now, default) for n in nodes],
        "queues": queues,
        "timestamp": time.time(),
    }


@get("/fleet/queue")
async def fleet_queue(state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    counters = await _counters(ctx)
    queues = {f"{node}:{model}": entry for node, model, entry in counters}
    models = set(fleet_of(ctx).snapshot().models())
    models.update(model for _node, model, _entry in counters)
    ordered = sorted(models)
    pipe = ctx.redis.pipeline(transaction=False)
    for model in ordered:
        pipe.zcard(ctx.keys.wait(model))
    counts = await pipe.execute() if ordered else []
    return {
        "queues": queues,
        "waiting": {m: int(c) for m, c in zip(ordered, counts, strict=True)},
        "waiting_total": int(sum(counts)),
        "timestamp": time.time(),
    }


ROUTES = [heartbeat, fleet_status, fleet_queue]
