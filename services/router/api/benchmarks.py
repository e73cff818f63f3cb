"""GET/POST /dashboard/api/benchmarks: list benchmark runs, or start one."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.datastructures import State

from services.router.api.auth import require_admin
from services.router.context import RouterContext
from services.router.fleet.benchmarks import list_runs, start_run
from shared.bodies import decode_object

__all__ = ["ROUTES"]


@get("/dashboard/api/benchmarks")
async def benchmarks(state: State) -> dict[str, Any]:
    return await list_runs(state.herd)


@post("/dashboard/api/benchmarks", status_code=202)
async def start_benchmark(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    raw = await request.body()
    body = decode_object(raw) if raw.strip() else {}
    return await start_run(ctx, body)


ROUTES = [benchmarks, start_benchmark]
