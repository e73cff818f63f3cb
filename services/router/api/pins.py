"""Pins: GET/POST/DELETE /fleet/pins, models the fleet keeps loaded (admin to change)."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.params import FromQuery

from services.router.api.auth import require_admin
from services.router.api.errors import error_responses
from services.router.context import RouterContext
from services.router.fleet.pins import read_pins, remove_pin, save_pin
from shared.bodies import decode_object
from shared.errors import BadRequest, NotFound
from shared.pins import PinError
from shared.schemas import PinChange, PinRequest, PinsListing

__all__ = ["ROUTES"]


@get("/fleet/pins", tags=["fleet"],
     summary="Pinned models and their state (satisfied, loading, short with the reason)")
async def get_pins(state: State) -> PinsListing:
    ctx: RouterContext = state.herd
    return PinsListing(pins=await read_pins(ctx), queue_copies=ctx.settings.queue_copies,
                       timestamp=time.time())


@post("/fleet/pins", status_code=200, tags=["fleet"],
      responses=error_responses(400, 401, 403),
      summary="Pin a model: keep it loaded on N nodes, optionally only on the nodes named "
              "(admin)")
async def post_pin(request: Request[Any, Any, Any], state: State) -> PinChange:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    body = decode_object(await request.body())
    unknown = sorted(set(body) - set(PinRequest.__struct_fields__))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} (model, copies, nodes)")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model is required: {\"model\": NAME, \"copies\": N, \"nodes\": [...]}")
    try:
        pin = await save_pin(ctx, ctx.runtime, model, body.get("copies"), body.get("nodes"))
    except PinError as exc:
        raise BadRequest(str(exc)) from None
    return PinChange(model=pin["model"], copies=pin["copies"], nodes=pin["nodes"],
                     pins=await read_pins(ctx))


@delete("/fleet/pins", status_code=200, tags=["fleet"],
        responses=error_responses(400, 401, 403, 404),
        summary="Unpin a model (?model=NAME, or a JSON body {\"model\": NAME}); its copies "
                "go back to the nodes' keep_alive (admin)")
async def delete_pin(request: Request[Any, Any, Any], state: State,
                     model: FromQuery[str | None] = None) -> PinChange:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    if model is None:
        raw = await request.body()
        body = decode_object(raw) if raw.strip() else {}
        model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("say which model to unpin: ?model=NAME or {\"model\": NAME}")
    try:
        found = await remove_pin(ctx, ctx.runtime, model)
    except PinError as exc:
        raise BadRequest(str(exc)) from None
    if not found:
        raise NotFound(f"model {model!r} is not pinned")
    return PinChange(model=model, removed=True, pins=await read_pins(ctx))


ROUTES = [get_pins, post_pin, delete_pin]
