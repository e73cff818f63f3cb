"""GET /dashboard/events: server-sent events with the fleet and its queues, live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import get
from litestar.datastructures import State
from litestar.response import ServerSentEvent, ServerSentEventMessage

from services.router.context import RouterContext
from services.router.fleet.reads import node_view, read_queue_depths, read_queues
from shared.models import FleetSnapshot, NodeStatus

__all__ = ["EVENT_PERIOD", "ROUTES", "fleet_event", "sse_stream"]

EVENT_PERIOD = 2.0  # seconds between snapshots when nothing changes
WATCH_INTERVAL = 0.2  # how often the (in-memory) snapshot is compared for status changes


def _signature(snapshot: FleetSnapshot) -> tuple[tuple[str, str, bool], ...]:
    """What counts as a node status change: the set of nodes and their statuses."""
    return tuple(sorted((n.node_id, str(n.status), n.servable) for n in snapshot.nodes.values()))


async def fleet_event(ctx: RouterContext, reason: str) -> dict[str, Any]:
    snapshot = ctx.fleet.snapshot()
    nodes = sorted(snapshot.nodes.values(), key=lambda n: n.node_id)
    queues = await read_queues(ctx)
    waiting = await read_queue_depths(ctx, snapshot)
    now = time.time()
    return {
        "reason": reason,
        "fleet": {
            "nodes_total": len(nodes),
            "nodes_online": sum(n.status is NodeStatus.ONLINE for n in nodes),
            "nodes_degraded": sum(n.status is NodeStatus.DEGRADED for n in nodes),
            "nodes_offline": sum(n.status is NodeStatus.OFFLINE for n in nodes),
            "requests_active": sum(q.get("in_flight", 0) for q in queues.values()),
            "requests_waiting": sum(waiting.values()),
        },
        "nodes": [node_view(n, now, ctx.settings.default_num_parallel) for n in nodes],
        "queues": queues,
        "waiting": waiting,
        "timestamp": now,
    }


async def sse_stream(ctx: RouterContext) -> AsyncIterator[ServerSentEventMessage]:
    """A snapshot at once, then every EVENT_PERIOD, and at once when a node's status moves."""
    seen = _signature(ctx.fleet.snapshot())
    reason = "initial"
    sequence = 0
    while True:
        sequence += 1
        body = await fleet_event(ctx, reason)
        yield ServerSentEventMessage(
            data=msgspec.json.encode(body).decode(), event="fleet", id=sequence)
        deadline = time.monotonic() + EVENT_PERIOD
        reason = "periodic"
        while time.monotonic() < deadline:
            await asyncio.sleep(WATCH_INTERVAL)
            if ctx.stopping:
                return  # the browser's EventSource reconnects, to another replica if need be
            current = _signature(ctx.fleet.snapshot())
            if current != seen:
                seen = current
                reason = "node_status"
                break


@get("/dashboard/events")
async def dashboard_events(state: State) -> ServerSentEvent:
    # retry: a browser's EventSource reconnects after 2 s when a replica goes away
    return ServerSentEvent(sse_stream(state.herd), retry_duration=2000,
                           headers={"Cache-Control": "no-cache"})


ROUTES = [dashboard_events]
