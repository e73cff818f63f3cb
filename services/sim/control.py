"""The simulator's own endpoints: /sim/node, /sim/stats, /sim/reset and /sim/fault."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from services.sim.catalogue import GB
from services.sim.engine import Engine, RunnerState
from services.sim.faults import FaultMode, FaultState
from services.sim.listing import ps_body
from services.sim.stats import Stats

__all__ = ["ROUTES", "node_body", "stats_body"]


def node_body(app: web.Application) -> dict[str, Any]:
    """The machine this simulator models, in the heartbeat's own field names and units
    (decimal GB), so a node agent beside it reports the modelled machine, not the host.

    CPU use is a model too: a running request or a loading model keeps one core busy.
    """
    engine: Engine = app["engine"]
    config = engine.config
    loading = sum(r.state is RunnerState.LOADING for r in engine.runners.values())
    busy = min(config.cpu_cores, engine.active + loading)
    memory_total = engine.memory_total / GB
    memory_used = engine.memory_used / GB
    disk_used = sum(spec.size for spec in engine.installed.values()) / GB
    return {
        "node_name": config.node_name,
        "simulated": True,
        "max_loaded_models": config.max_loaded_models,
        "num_parallel": config.num_parallel,
        "cpu": {"cores_physical": config.cpu_cores, "cores_logical": config.cpu_cores,
                "utilization_pct": round(100.0 * busy / config.cpu_cores, 1)},
        "memory": {"total_gb": round(memory_total, 2), "used_gb": round(memory_used, 2),
                   "available_gb": round(max(0.0, memory_total - memory_used), 2)},
        "disk": {"total_gb": round(config.disk_gb, 2), "used_gb": round(disk_used, 2),
                 "available_gb": round(max(0.0, config.disk_gb - disk_used), 2)},
    }


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


async def get_node(request: web.Request) -> web.Response:
    return web.json_response(node_body(request.app))


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
    web.get("/sim/node", get_node),
    web.get("/sim/stats", get_stats),
    web.post("/sim/reset", reset),
    web.get("/sim/fault", get_fault),
    web.post("/sim/fault", set_fault),
]
