"""GET /dashboard/events: server-sent events with the fleet, its queues and its events, live.

Two kinds of message: `fleet` (a snapshot: at once, every EVENT_PERIOD, and as soon as a
node's status or loaded models change) and `event` (one entry of the fleet's events
stream: node status changes, retries, context protection, reaped zombies, pulls; the
newest EVENT_BACKLOG at once, then each as it is appended, by any replica).

The opening snapshot and backlog are read before the answer starts, so a Redis that does
not answer gets a 503 like any other endpoint. If Redis stops answering later, a last
`error` message (`{"error": "..."}`) ends the stream; reconnecting then gets the 503 until
Redis is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import ServerSentEvent, ServerSentEventMessage

from services.router.api.errors import error_responses
from services.router.context import RouterContext
from services.router.fleet.events import events_after, latest_events
from services.router.fleet.reads import fleet_summary, node_view, read_queue_depths, read_queues
from shared.errors import StateUnavailable
from shared.models import FleetSnapshot
from shared.redisconn import REDIS_UNAVAILABLE
from shared.schemas import FleetEvent

__all__ = ["EVENT_PERIOD", "ROUTES", "Opening", "fleet_event", "opening", "sse_stream"]

EVENT_PERIOD = 2.0  # seconds between snapshots when nothing changes
WATCH_INTERVAL = 0.2  # how often the (in-memory) snapshot is compared for status changes
EVENT_BACKLOG = 20  # events a new subscriber gets at once, so its feed starts filled
EVENT_BATCH = 100  # events read per poll at most; a burst beyond it follows on the next


def _signature(snapshot: FleetSnapshot) -> tuple[tuple[str, str, bool], ...]:
    """What counts as a node status change: the set of nodes and their statuses."""
    return tuple(sorted((n.node_id, str(n.status), n.servable) for n in snapshot.nodes.values()))


def _loaded(snapshot: FleetSnapshot) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The models each node has loaded (a load or an unload is worth a snapshot at once)."""
    return tuple(sorted((n.node_id, tuple(sorted(m.name for m in n.models_loaded)))
                        for n in snapshot.nodes.values()))


def _event_message(entry: Any) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=msgspec.json.encode(entry).decode(), event="event")


async def fleet_event(ctx: RouterContext, reason: str) -> FleetEvent:
    snapshot = ctx.fleet.snapshot()
    nodes = sorted(snapshot.nodes.values(), key=lambda n: n.node_id)
    queues = await read_queues(ctx)
    waiting = await read_queue_depths(ctx, snapshot)
    now = time.time()
    return FleetEvent(
        reason=reason,
        fleet=fleet_summary(nodes, queues, waiting),
        nodes=[node_view(n, now, ctx.settings.default_num_parallel) for n in nodes],
        queues=queues,
        waiting=waiting,
        timestamp=now,
    )


Opening = tuple[FleetEvent, str, list[Any]]  # the first snapshot, the event id, the backlog


async def opening(ctx: RouterContext) -> Opening:
    """What a new subscriber gets at once: the snapshot and the newest events."""
    last_id, backlog = await latest_events(ctx.redis, ctx.keys, EVENT_BACKLOG)
    return await fleet_event(ctx, "initial"), last_id, backlog


async def sse_stream(ctx: RouterContext, first: Opening) -> AsyncIterator[ServerSentEventMessage]:
    """A snapshot at once, then every EVENT_PERIOD, and at once when a node's status moves;
    the latest events at once, then each new one within WATCH_INTERVAL."""
    seen = _signature(ctx.fleet.snapshot())
    seen_loaded = _loaded(ctx.fleet.snapshot())
    body, last_id, backlog = first
    sequence = 0
    try:
        while True:
            sequence += 1
            yield ServerSentEventMessage(
                data=msgspec.json.encode(body).decode(), event="fleet", id=sequence)
            for entry in backlog:
                yield _event_message(entry)
            backlog = []
            deadline = time.monotonic() + EVENT_PERIOD
            reason = "periodic"
            while time.monotonic() < deadline:
                await asyncio.sleep(WATCH_INTERVAL)
                if ctx.stopping:
                    return  # the EventSource reconnects, to another replica if need be
                last_id, entries = await events_after(ctx.redis, ctx.keys, last_id,
                                                      EVENT_BATCH)
                for entry in entries:
                    yield _event_message(entry)
                snapshot = ctx.fleet.snapshot()
                current, loaded = _signature(snapshot), _loaded(snapshot)
                if current != seen or loaded != seen_loaded:
                    reason = "node_status" if current != seen else "models_loaded"
                    seen, seen_loaded = current, loaded
                    break
            body = await fleet_event(ctx, reason)
    except REDIS_UNAVAILABLE:
        # The answer has begun: too late for a 503. Say why, and end; a reconnection is
        # answered 503 until Redis is back.
        error = msgspec.json.encode({"error": StateUnavailable().message}).decode()
        yield ServerSentEventMessage(data=error, event="error")


@get("/dashboard/events", tags=["dashboard"],
     summary="Server-sent events: a `fleet` message at once, every 2 s and on a change",
     responses={200: ResponseSpec(FleetEvent, media_type="text/event-stream",
                                  generate_examples=False,
                                  description="Each `fleet` message's data is this object; "
                                  "each `event` message's data is one entry of the fleet's "
                                  "events stream, `{kind, ts, ...}`; a last `error` "
                                  "message, `{error}`, ends the stream when the fleet state "
                                  "(Redis) stops answering."),
                **error_responses(503)})
async def dashboard_events(state: State) -> ServerSentEvent:
    ctx: RouterContext = state.herd
    first = await opening(ctx)  # before the answer starts: a Redis away is a 503
    # retry: a browser's EventSource reconnects after 2 s when a replica goes away
    return ServerSentEvent(sse_stream(ctx, first), retry_duration=2000,
                           headers={"Cache-Control": "no-cache"})


ROUTES = [dashboard_events]
