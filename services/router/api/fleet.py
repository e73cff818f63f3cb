"""Fleet endpoints: POST /heartbeat from node agents, GET /fleet/status and /fleet/queue."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, get, post
from litestar.datastructures import State

from services.router.api.auth import require_node
from services.router.context import RouterContext
from services.router.fleet.reads import counter_rows, node_view, read_queue_depths, read_queues
from shared.bodies import decode_json
from shared.models import NodeStatus

__all__ = ["ROUTES"]


@post("/heartbeat", status_code=200)
async def heartbeat(request: Request[Any, Any, Any], state: State) -> dict[str, str]:
    ctx: RouterContext = state.herd
    require_node(ctx, request)
    body = await request.body()
    payload = decode_json(body, "heartbeat body")
    source = request.client.host if request.client else ""
    node = await ctx.fleet.ingest_heartbeat(payload, source)
    return {"status": "ok", "node_status": str(node.status)}


@get("/fleet/status")
async def fleet_status(state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    fleet = ctx.fleet
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
    counters = await counter_rows(ctx)
    queues = {f"{node}:{model}": entry for node, model, entry in counters}
    waiting = await read_queue_depths(
        ctx, extra={model for _node, model, _entry in counters})
    return {
        "queues": queues,
        "waiting": waiting,
        "waiting_total": sum(waiting.values()),
        "timestamp": time.time(),
    }


ROUTES = [heartbeat, fleet_status, fleet_queue]
