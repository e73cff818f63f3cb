"""Runtime settings: GET/POST /dashboard/api/settings (applied by every replica)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.datastructures import State

from services.router.api.auth import require_admin
from services.router.api.errors import error_responses
from services.router.context import RouterContext
from services.router.fleet.runtime import jsonable, settings_listing, validate
from shared.bodies import decode_json
from shared.schemas import SettingsListing, SettingsUpdate

__all__ = ["ROUTES"]


@get("/dashboard/api/settings", tags=["settings"],
     summary="Every runtime setting with its value, default, help and choices")
async def get_settings(state: State) -> SettingsListing:
    return SettingsListing(settings=settings_listing(state.herd.settings))


@post("/dashboard/api/settings", status_code=200, tags=["settings"],
      responses=error_responses(400, 401, 403, 409),
      summary="Change runtime settings (admin); every replica applies them")
async def post_settings(request: Request[Any, Any, Any], state: State) -> SettingsUpdate:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    changes = decode_json(await request.body())
    valid = validate(changes)
    await ctx.runtime.save(valid)
    return SettingsUpdate(updated={k: jsonable(v) for k, v in valid.items()},
                          settings=settings_listing(ctx.settings))


ROUTES = [get_settings, post_settings]
