"""GET /dashboard/api/health and /recommendations: fleet state and stats judged by plugins."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import msgspec
from litestar import get
from litestar.datastructures import State

from services.router.context import RouterContext
from services.router.registry import fleet_of
from services.router.stats import read_window
from shared.health import (
    Counters,
    HealthCheck,
    HealthView,
    StatsWindow,
    health_score,
    run_checks,
)
from shared.models import FleetSnapshot, NodeState, NodeStatus
from shared.plugins import build_plugin_manager

__all__ = [
    "ROUTES",
    "build_view",
    "checks_of",
    "compute_health",
    "fleet_snapshot",
    "read_counters",
    "read_queue_depths",
    "recommendations",
]

EVENTS_SCAN = 500  # newest events read per health call; enough for a day of reaps and flaps
DAY_S = 86_400.0


def fleet_snapshot(ctx: RouterContext) -> FleetSnapshot:
    """The replica's cached snapshot (registry), or an empty one before it has started."""
    try:
        return fleet_of(ctx).snapshot()
    except KeyError:
        return FleetSnapshot(taken_at=time.time())


def checks_of(ctx: RouterContext) -> list[HealthCheck]:
    """Checks from every plugin, asked once per replica (hooks register, handlers call)."""
    cached = ctx.parts.get("health_checks")
    if cached is None:
        manager = ctx.plugins or build_plugin_manager(
            ctx.settings.disabled_plugins, ctx.settings.plugins)
        cached = [c for batch in manager.hook.herd_register_health_checks() for c in batch]
        ctx.parts["health_checks"] = cached
    return cast(list[HealthCheck], cached)


async def read_counters(ctx: RouterContext) -> dict[tuple[str, str], Counters]:
    redis, keys = ctx.redis, ctx.keys
    pairs = [p.split("|", 1) for p in sorted(await redis.smembers(keys.counters_index()))]
    pairs = [p for p in pairs if len(p) == 2]
    if not pairs:
        return {}
    pipe = redis.pipeline(transaction=False)
    for node_id, model in pairs:
        pipe.hgetall(keys.counters(node_id, model))
    rows = await pipe.execute()
    out: dict[tuple[str, str], Counters] = {}
    for (node_id, model), fields in zip(pairs, rows, strict=True):
        values = {}
        for name in ("pending", "in_flight", "done", "failed"):
            try:
                values[name] = max(0, int(fields.get(name) or 0))
            except ValueError:
                values[name] = 0
        out[(node_id, model)] = Counters(**values)
    return out


async def read_queue_depths(
    ctx: RouterContext, snapshot: FleetSnapshot | None = None
) -> dict[str, int]:
    """Waiting requests per model the fleet knows."""
    models = sorted((snapshot or fleet_snapshot(ctx)).models())
    if not models:
        return {}
    pipe = ctx.redis.pipeline(transaction=False)
    for model in models:
        pipe.zcard(ctx.keys.wait(model))
    counts = await pipe.execute()
    return {m: int(c) for m, c in zip(models, counts, strict=True)}


async def _read_events(ctx: RouterContext, since: float) -> list[dict[str, Any]]:
    rows = await ctx.redis.xrevrange(ctx.keys.events(), count=EVENTS_SCAN)
    events = []
    for _, fields in rows:
        try:
            event = msgspec.json.decode(fields.get("data", "{}"))
        except msgspec.DecodeError:
            continue
        if isinstance(event, dict):
            if float(event.get("ts", 0)) < since:
                break
            events.append(event)
    return events


async def build_view(ctx: RouterContext, now: float | None = None) -> HealthView:
    now = time.time() if now is None else now
    snapshot = fleet_snapshot(ctx)
    stats, counters, depths, events = await asyncio.gather(
        read_window(ctx, 24, now), read_counters(ctx), read_queue_depths(ctx, snapshot),
        _read_events(ctx, now - DAY_S),
    )
    return HealthView(snapshot=snapshot, settings=ctx.settings, stats=stats, counters=counters,
                      queue_depths=depths, events=events, now=now)


def _vitals(view: HealthView, score: int) -> dict[str, Any]:
    nodes = view.snapshot.nodes.values()
    day = view.stats.fleet()
    return {
        "nodes_total": len(nodes),
        "nodes_online": sum(n.status is NodeStatus.ONLINE for n in nodes),
        "nodes_degraded": sum(n.status is NodeStatus.DEGRADED for n in nodes),
        "nodes_offline": sum(n.status is NodeStatus.OFFLINE for n in nodes),
        "overall_error_rate_pct": round(day.outcome_error_rate_pct, 2),
        "cold_loads_24h": day.cold_loads,
        "avg_ttft_ms": round(day.avg_ttft_ms, 1),
        "total_requests_24h": day.requests,
        "total_retries_24h": day.retries,
        "health_score": score,
    }


async def compute_health(ctx: RouterContext, now: float | None = None) -> dict[str, Any]:
    """The /dashboard/api/health body (COMPAT.md shape)."""
    view = await build_view(ctx, now)
    findings = run_checks(checks_of(ctx), view)
    score = health_score(findings)
    return {
        "vitals": _vitals(view, score),
        "recommendations": [msgspec.to_builtins(f) for f in findings],
        "checked_at": view.now,
    }


# --- recommendations ------------------------------------------------------------------


def _node_advice(
    node: NodeState, *, stats: StatsWindow, fleet_demand: dict[str, int],
    copies: dict[str, int], roomiest: dict[str, str], min_requests: int,
) -> list[dict[str, Any]]:
    here = {m: u for (n, m), u in stats.node_models().items() if n == node.node_id}
    tight = node.memory_pressure.lower() in {"high", "warn", "warning", "critical"} or (
        node.memory_total_gb > 0 and node.memory_available_gb < 0.15 * node.memory_total_gb
    )
    advice: list[dict[str, Any]] = []
    for loaded in node.models_loaded:
        usage = here.get(loaded.name)
        served = usage.requests if usage else 0
        cold = usage.cold_loads if usage else 0
        if served:
            reason = f"served {served} requests here in the last 24 h"
            if cold > 1:
                reason += f" and was cold-loaded {cold} times: keeping it resident saves reloads"
            advice.append({"action": "keep", "model": loaded.name, "reason": reason,
                           "requests_24h": served, "cold_loads_24h": cold})
        else:
            size = f" and frees {loaded.size_gb:.1f} GB" if loaded.size_gb else ""
            why = "memory is tight here, so unloading it" if tight else "unloading it"
            advice.append({"action": "remove", "model": loaded.name,
                           "reason": f"loaded but served no requests here in 24 h; {why} "
                           f"makes room for models in demand{size}",
                           "requests_24h": 0, "cold_loads_24h": cold})
    loaded_names = {m.name for m in node.models_loaded}
    for model, demand in sorted(fleet_demand.items(), key=lambda item: -item[1]):
        if model in loaded_names or demand < min_requests:
            continue
        size_gb = node.model_size_gb(model)
        fits = (not size_gb) or size_gb <= node.memory_available_gb
        per_copy = demand / max(1, copies.get(model, 0))
        if not fits or tight:
            continue
        if copies.get(model, 0) == 0 and roomiest.get(model) == node.node_id:
            reason = (f"{demand} requests in 24 h and not loaded on any node; this node has "
                      f"the most free memory ({node.memory_available_gb:.1f} GB)")
        elif node.has_model(model) and per_copy >= 2 * min_requests:
            reason = (f"{demand} requests in 24 h across only {copies.get(model, 0)} loaded "
                      f"copies; it is installed here and fits in the free "
                      f"{node.memory_available_gb:.1f} GB")
        else:
            continue
        advice.append({"action": "load", "model": model, "reason": reason,
                       "requests_24h": demand, "size_gb": size_gb})
    for model in node.models_available:
        if model not in loaded_names and fleet_demand.get(model, 0) == 0 and tight:
            advice.append({"action": "remove", "model": model,
                           "reason": "installed but requested nowhere in the fleet for 24 h; "
                           "deleting it frees disk, and memory is tight here",
                           "requests_24h": 0})
    return advice


async def recommendations(ctx: RouterContext, now: float | None = None) -> dict[str, Any]:
    """Per node: models to keep loaded, load, or remove, each with a plain-words reason."""
    snapshot = fleet_snapshot(ctx)
    stats = await read_window(ctx, 24, now)
    demand = {m: u.requests for m, u in stats.models().items()}
    servable = [n for n in snapshot.nodes.values() if n.servable]
    copies: dict[str, int] = {}
    for node in servable:
        for loaded in node.models_loaded:
            copies[loaded.name] = copies.get(loaded.name, 0) + 1
    roomiest: dict[str, str] = {}
    for model in demand:
        fitting = [n for n in servable if n.has_model(model)] or servable
        if fitting:
            roomiest[model] = max(fitting, key=lambda n: n.memory_available_gb).node_id
    minimum = max(1, ctx.settings.health_min_requests // 4)
    nodes = [
        {
            "node_id": node.node_id,
            "status": str(node.status),
            "memory_available_gb": node.memory_available_gb,
            "memory_total_gb": node.memory_total_gb,
            "recommendations": _node_advice(
                node, stats=stats, fleet_demand=demand, copies=copies, roomiest=roomiest,
                min_requests=minimum,
            ),
        }
        for node in sorted(servable, key=lambda n: n.node_id)
    ]
    return {"nodes": nodes, "model_demand_24h": demand,
            "generated_at": time.time() if now is None else now}


@get("/dashboard/api/health")
async def health(state: State) -> dict[str, Any]:
    return await compute_health(state.herd)


@get("/dashboard/api/recommendations")
async def recommendations_route(state: State) -> dict[str, Any]:
    return await recommendations(state.herd)


ROUTES = [health, recommendations_route]
