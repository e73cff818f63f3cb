"""Client keys: POST/GET /dashboard/api/keys and DELETE /dashboard/api/keys/{app}, admin only."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post
from litestar.datastructures import State

from services.router.api.auth import require_admin
from services.router.api.errors import error_responses
from services.router.context import RouterContext
from services.router.fleet.client_keys import CLOSED, valid_app, validate_new_key
from shared.bodies import decode_json
from shared.schemas import KeyCreated, KeyInfo, KeyList, KeyRevoked

__all__ = ["ROUTES"]


@post("/dashboard/api/keys", status_code=201, tags=["keys"],
      responses=error_responses(400, 401, 403, 409),
      summary="Create a client key for an app (admin)")
async def create_key(request: Request[Any, Any, Any], state: State) -> KeyCreated:
    """A key for one app; the answer is the only place its secret ever appears."""
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    app, rpm, tpm = validate_new_key(decode_json(await request.body()))
    secret, record = await ctx.client_keys.create(app, rpm, tpm)
    return KeyCreated(key=secret, app=record.app, requests_per_minute=record.requests_per_minute,
                      tokens_per_minute=record.tokens_per_minute, created=record.created)


@get("/dashboard/api/keys", tags=["keys"], responses=error_responses(401, 403),
     summary="Every client key, without its secret, and client_auth (admin)")
async def list_keys(request: Request[Any, Any, Any], state: State) -> KeyList:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    listed = await ctx.client_keys.listing()
    view = ctx.client_keys
    return KeyList(
        keys=[KeyInfo(app=k.app, requests_per_minute=k.requests_per_minute,
                      tokens_per_minute=k.tokens_per_minute, created=k.created,
                      last_used=k.last_used) for k in listed],
        # A key in Redis this replica has not loaded yet closes it as well.
        client_auth=CLOSED if listed else view.mode(),
        inference_open=not listed and view.is_open(),
    )


@delete("/dashboard/api/keys/{app:str}", status_code=200, tags=["keys"],
        responses=error_responses(400, 401, 403, 404), summary="Revoke an app's key (admin)")
async def revoke_key(request: Request[Any, Any, Any], state: State) -> KeyRevoked:
    """Every replica refuses the key within a second (fleet/client_keys.py)."""
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    app = valid_app(request.path_params["app"])
    await ctx.client_keys.revoke(app)
    return KeyRevoked(app=app)


ROUTES = [create_key, list_keys, revoke_key]
