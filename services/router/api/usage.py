"""Usage APIs for the dashboard: traces, usage, apps (tags), trends and per-model stats.

Aggregates come from the hourly stats buckets, so every replica answers the same; only
/traces reads the traces stream (newest first, bounded).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get
from litestar.datastructures import State

from services.router.context import RouterContext
from services.router.fleet.traces import recent_traces
from shared.errors import BadRequest
from shared.health import Usage
from shared.models import TraceStatus, normalize_model

__all__ = ["ROUTES", "int_param"]

MAX_TRACES = 1000
MAX_HOURS = 24 * 31


def int_param(request: Request[Any, Any, Any], name: str, default: int, low: int,
              high: int) -> int:
    """A bounded integer query parameter, or a 400 naming it."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def _hours(request: Request[Any, Any, Any], ctx: RouterContext) -> int:
    kept = max(1, int(ctx.settings.stats_retention_days * 24))
    return int_param(request, "hours", 24, 1, min(MAX_HOURS, kept))


@get("/dashboard/api/traces")
async def traces(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    limit = int_param(request, "limit", 100, 1, MAX_TRACES)
    query = request.query_params
    status = query.get("status") or None
    if status is not None and status not in {s.value for s in TraceStatus}:
        raise BadRequest(f"status must be one of {', '.join(s.value for s in TraceStatus)}")
    model = query.get("model") or None
    found = await recent_traces(
        ctx, limit,
        model=normalize_model(model) if model else None,
        node_id=query.get("node") or query.get("node_id") or None,
        status=TraceStatus(status) if status else None,
        tag=query.get("tag") or None,
    )
    return {"traces": [msgspec.to_builtins(t) for t in found], "count": len(found)}


def _table(items: dict[str, Usage]) -> dict[str, dict[str, Any]]:
    return {name: usage.summary() for name, usage in sorted(items.items())}


@get("/dashboard/api/usage")
async def usage(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    hours = _hours(request, ctx)
    window = await ctx.stats.read_window(hours)
    nodes = window.nodes()
    rejected = nodes.pop("", None)
    return {
        "window_hours": hours,
        "fleet": window.fleet().summary(),
        "rejected_before_routing": rejected.requests if rejected else 0,
        "models": _table(window.models()),
        "nodes": _table(nodes),
        "node_models": [
            {"node_id": node, "model": model, **u.summary()}
            for (node, model), u in sorted(window.node_models().items())
        ],
    }


@get("/dashboard/api/apps")
async def apps(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    hours = _hours(request, ctx)
    window = await ctx.stats.read_window(hours)
    return {"window_hours": hours, "apps": _table(window.tags())}


@get("/dashboard/api/trends")
async def trends(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    hours = _hours(request, ctx)
    window = await ctx.stats.read_window(hours)
    model, tag = request.query_params.get("model"), request.query_params.get("tag")
    scope = f"m:{normalize_model(model)}" if model else f"t:{tag}" if tag else ""
    series = [
        {
            "hour": hour * 3600,
            "requests": u.requests,
            "errors": u.errors,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "retries": u.retries,
            "cold_loads": u.cold_loads,
            "avg_latency_ms": round(u.avg_latency_ms, 1),
            "p95_latency_ms": round(u.percentile(95), 1),
            "avg_ttft_ms": round(u.avg_ttft_ms, 1),
        }
        for hour, u in window.series(scope)
    ]
    return {"window_hours": hours, "model": model, "tag": tag, "hours": series}


@get("/dashboard/api/models")
async def models(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    hours = _hours(request, ctx)
    window = await ctx.stats.read_window(hours)
    snapshot = ctx.fleet.snapshot()
    stats = window.models()
    names = sorted(set(stats) | snapshot.models())
    per_node = window.node_models()
    out = []
    for name in names:
        u = stats.get(name) or Usage()
        out.append({
            "model": name,
            **u.summary(),
            "requests_per_hour": round(u.requests / hours, 2),
            "avg_load_ms": round(u.load_ms_sum / u.cold_loads, 1) if u.cold_loads else 0.0,
            "loaded_on": sorted(n.node_id for n in snapshot.nodes.values() if n.loaded(name)),
            "installed_on": sorted(
                n.node_id for n in snapshot.nodes.values() if name in n.models_available),
            "requests_by_node": {
                node: nu.requests for (node, model), nu in sorted(per_node.items())
                if model == name
            },
        })
    return {"window_hours": hours, "models": out}


ROUTES = [traces, usage, apps, trends, models]
