"""GET/POST /dashboard/api/benchmarks: list benchmark runs, or start one."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.datastructures import State

from services.router.api.auth import require_admin
from services.router.api.errors import error_responses
from services.router.context import RouterContext
from services.router.fleet.benchmarks import list_runs, start_run
from shared.bodies import decode_object
from shared.schemas import BenchmarkList, BenchmarkRun

__all__ = ["ROUTES"]


@get("/dashboard/api/benchmarks", tags=["benchmarks"],
     summary="Runs in progress and the newest finished runs")
async def benchmarks(state: State) -> BenchmarkList:
    return await list_runs(state.herd)


@post("/dashboard/api/benchmarks", status_code=202, tags=["benchmarks"],
      responses=error_responses(400, 401, 403, 503),
      summary="Start a bounded benchmark run through this router (admin)")
async def start_benchmark(request: Request[Any, Any, Any], state: State) -> BenchmarkRun:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    raw = await request.body()
    body = decode_object(raw) if raw.strip() else {}
    return await start_run(ctx, body)


ROUTES = [benchmarks, start_benchmark]
