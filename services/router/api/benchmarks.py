"""/dashboard/api/benchmarks: list benchmark runs, start one here, or store a finished one."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State

from services.router.api.auth import require_admin
from services.router.api.errors import error_responses
from services.router.context import RouterContext
from services.router.fleet.benchmarks import list_runs, start_run, store_run
from shared.bodies import decode_json, decode_object
from shared.errors import BadRequest
from shared.schemas import BenchmarkList, BenchmarkRun, BenchmarkStored

__all__ = ["ROUTES"]

FINISHED = {"completed", "failed"}


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


@post("/dashboard/api/benchmarks/runs", status_code=201, tags=["benchmarks"],
      responses=error_responses(400, 401, 403),
      summary="Store a finished run measured elsewhere, e.g. by `herd bench` (admin)")
async def store_benchmark(request: Request[Any, Any, Any], state: State) -> BenchmarkStored:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    body = decode_json(await request.body())
    try:
        run = msgspec.convert(body, type=BenchmarkRun)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"body is not a benchmark run: {exc}") from None
    if run.status not in FINISHED:
        raise BadRequest(f"status must be one of {sorted(FINISHED)}, not {run.status!r}")
    if not run.run_id.strip() or len(run.run_id) > 64:
        raise BadRequest("run_id must be 1 to 64 characters")
    await store_run(ctx, run)
    return BenchmarkStored(run_id=run.run_id)


ROUTES = [benchmarks, start_benchmark, store_benchmark]
