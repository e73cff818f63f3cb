"""Fleet endpoints: POST /heartbeat from node agents, GET /fleet/status and /fleet/queue."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, get, post
from litestar.datastructures import State

from services.router.api.auth import require_node
from services.router.api.errors import error_responses
from services.router.context import RouterContext
from services.router.fleet.reads import (
    counter_rows,
    fleet_summary,
    node_view,
    read_queue_apps,
    read_queue_depths,
    read_queues,
)
from services.router.fleet.versions import fleet_version
from shared.bodies import decode_json
from shared.schemas import FleetQueue, FleetStatus, HeartbeatAnswer
from shared.version import VERSION

__all__ = ["ROUTES"]


@post("/heartbeat", status_code=200, responses=error_responses(400, 401), tags=["fleet"],
      summary="A node agent's heartbeat (Herd's or ollama-herd's payload)")
async def heartbeat(request: Request[Any, Any, Any], state: State) -> HeartbeatAnswer:
    ctx: RouterContext = state.herd
    require_node(ctx, request)
    body = await request.body()
    payload = decode_json(body, "heartbeat body")
    source = request.client.host if request.client else ""
    node = await ctx.fleet.ingest_heartbeat(payload, source)
    return HeartbeatAnswer(node_status=node.status)


@get("/fleet/status", tags=["fleet"], summary="Every node, the fleet's totals and its queues")
async def fleet_status(state: State) -> FleetStatus:
    ctx: RouterContext = state.herd
    fleet = ctx.fleet
    snap = fleet.snapshot()
    now = fleet.redis_now()
    queues = await read_queues(ctx)
    waiting = await read_queue_depths(ctx, snap)
    nodes = sorted(snap.nodes.values(), key=lambda n: n.node_id)
    default = ctx.settings.default_num_parallel
    return FleetStatus(
        fleet=fleet_summary(nodes, queues, waiting),
        nodes=[node_view(n, now, default) for n in nodes],
        queues=queues,
        timestamp=time.time(),
        herd_version=VERSION,
        ollama_version=fleet_version(nodes),
    )


@get("/fleet/queue", tags=["fleet"], summary="Slot counters and waiting requests")
async def fleet_queue(state: State) -> FleetQueue:
    ctx: RouterContext = state.herd
    counters = await counter_rows(ctx)
    queues = {f"{node}:{model}": entry for node, model, entry in counters}
    waiting = await read_queue_depths(
        ctx, extra={model for _node, model, _entry in counters})
    by_app = await read_queue_apps(ctx, [m for m, n in waiting.items() if n])
    apps: dict[str, int] = {}
    for of_model in by_app.values():
        for app, n in of_model.items():
            apps[app] = apps.get(app, 0) + n
    return FleetQueue(queues=queues, waiting=waiting, waiting_total=sum(waiting.values()),
                      waiting_by_app=by_app, waiting_apps=dict(sorted(apps.items())),
                      timestamp=time.time())


ROUTES = [heartbeat, fleet_status, fleet_queue]
