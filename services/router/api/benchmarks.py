"""/dashboard/api/benchmarks: list benchmark runs, start one here, or store a finished one."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State

from services.bench.results import BenchRun
from services.router.api.auth import require_admin
from services.router.context import RouterContext
from services.router.fleet.benchmarks import list_runs, start_run, store_run
from shared.bodies import decode_json, decode_object
from shared.errors import BadRequest

__all__ = ["ROUTES"]

FINISHED = {"completed", "failed"}


@get("/dashboard/api/benchmarks")
async def benchmarks(state: State) -> dict[str, Any]:
    return await list_runs(state.herd)


@post("/dashboard/api/benchmarks", status_code=202)
async def start_benchmark(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    raw = await request.body()
    body = decode_object(raw) if raw.strip() else {}
    run: dict[str, Any] = msgspec.to_builtins(await start_run(ctx, body))
    return run


@post("/dashboard/api/benchmarks/runs", status_code=201)
async def store_benchmark(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """A finished run measured elsewhere (`herd bench`), kept beside the dashboard's own."""
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    body = decode_json(await request.body())
    try:
        run = msgspec.convert(body, type=BenchRun)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"body is not a benchmark run: {exc}") from None
    if run.status not in FINISHED:
        raise BadRequest(f"status must be one of {sorted(FINISHED)}, not {run.status!r}")
    if not run.run_id.strip() or len(run.run_id) > 64:
        raise BadRequest("run_id must be 1 to 64 characters")
    await store_run(ctx, run)
    return {"run_id": run.run_id, "stored": True}


ROUTES = [benchmarks, start_benchmark, store_benchmark]
