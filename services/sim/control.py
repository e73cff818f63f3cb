"""The simulator's own endpoints: /sim/stats, /sim/reset and /sim/fault."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from services.sim.engine import Engine
from services.sim.faults import FaultMode, FaultState
from services.sim.listing import ps_body
from services.sim.stats import Stats

__all__ = ["ROUTES", "stats_body"]


def stats_body(app: web.Application) -> dict[str, Any]:
    engine: Engine = app["engine"]
    stats: Stats = app["stats"]
    faults: FaultState = app["faults"]
    runners = {
        name: {
            "state": str(r.state), "num_ctx": r.num_ctx, "in_use": r.in_use,
            "memory": r.memory, "keep_alive": r.keep_alive,
            "slots": [{"busy": s.busy, "cached_tokens": len(s.cache)} for s in r.slots],
        }
        for name, r in engine.runners.items()
    }
    return stats.snapshot({
        "loaded": runners,
        "installed": list(engine.installed),
        "memory_total": engine.memory_total,
        "memory_used": engine.memory_used,
        "active": engine.active,
        "fault": faults.describe(),
        "listening": app["listening"](),
        "ps": ps_body(engine)["models"],
    })


async def _json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(text=f'{{"error": "invalid JSON: {exc}"}}',
                                 content_type="application/json") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "expected a JSON object"}',
                                 content_type="application/json")
    return body


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(stats_body(request.app))


async def reset(request: web.Request) -> web.Response:
    """Zero the counters; {"unload": true} also unloads idle models and empties caches."""
    body = await _json(request)
    if body.get("unload"):
        request.app["engine"].unload_all()
    request.app["stats"].reset()
    return web.json_response({"status": "reset"})


async def get_fault(request: web.Request) -> web.Response:
    return web.json_response(request.app["faults"].describe())


async def set_fault(request: web.Request) -> web.Response:
    body = await _json(request)
    params = dict(body)
    mode = str(params.pop("mode", "none"))
    faults: FaultState = request.app["faults"]
    try:
        faults.set(mode, params)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    response = web.json_response(faults.describe())
    if faults.mode is FaultMode.REFUSE:
        # Answer this request first, then stop listening and reset the other connections.
        response.force_close()
        await request.app["refuse"](request, faults.params["seconds"])
    else:
        await request.app["restore"]()
    return response


ROUTES = [
    web.get("/sim/stats", get_stats),
    web.post("/sim/reset", reset),
    web.get("/sim/fault", get_fault),
    web.post("/sim/fault", set_fault),
]
