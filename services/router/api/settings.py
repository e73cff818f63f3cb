"""Runtime settings: GET/POST /dashboard/api/settings (applied by every replica)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.datastructures import State

from services.router.api.auth import require_admin
from services.router.context import RouterContext
from services.router.fleet.runtime import jsonable, settings_listing, validate
from shared.bodies import decode_json

__all__ = ["ROUTES"]


def _body(ctx: RouterContext) -> dict[str, Any]:
    return {"settings": settings_listing(ctx.settings)}


@get("/dashboard/api/settings")
async def get_settings(state: State) -> dict[str, Any]:
    return _body(state.herd)


@post("/dashboard/api/settings", status_code=200)
async def post_settings(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    changes = decode_json(await request.body())
    valid = validate(changes)
    await ctx.runtime.save(valid)
    return {"updated": {k: jsonable(v) for k, v in valid.items()}, **_body(ctx)}


ROUTES = [get_settings, post_settings]
