"""Usage APIs for the dashboard: traces, usage, apps (tags), trends and per-model stats.

Aggregates come from the hourly stats buckets, so every replica answers the same; only
/traces reads the traces stream (newest first, bounded).
"""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.datastructures import State
from litestar.params import FromQuery, QueryParameter

from services.router.api.errors import error_responses
from services.router.context import RouterContext
from services.router.fleet.traces import recent_traces
from shared.errors import BadRequest
from shared.models import TraceStatus, normalize_model
from shared.schemas import (
    AppsReport,
    HourPoint,
    ModelsReport,
    ModelStats,
    NodeModelUsage,
    TraceList,
    TrendsReport,
    UsageReport,
    UsageSummary,
)
from shared.usage import Usage

__all__ = ["ROUTES"]

MAX_TRACES = 1000
MAX_HOURS = 24 * 31
BAD_QUERY = error_responses(400)

Hours = Annotated[int, QueryParameter(ge=1, le=MAX_HOURS, description=(
    "Hours back from now, the current hour included; at most the stats retention."))]


def _kept(ctx: RouterContext, hours: int) -> int:
    """`hours`, or a 400 when the stats are not kept that long."""
    kept = max(1, int(ctx.settings.stats_retention_days * 24))
    if hours > kept:
        raise BadRequest(f"hours must be between 1 and {min(MAX_HOURS, kept)}, got {hours}")
    return hours


def _summary(usage: Usage) -> UsageSummary:
    return UsageSummary(**usage.summary())


@get("/dashboard/api/traces", tags=["dashboard"], responses=BAD_QUERY,
     summary="The newest traces, optionally filtered")
async def traces(
    *,
    state: State,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_TRACES)] = 100,
    status: FromQuery[TraceStatus | None] = None,
    model: FromQuery[str | None] = None,
    node: Annotated[str | None, QueryParameter(description="A node id (alias: node_id).")] = None,
    node_id: FromQuery[str | None] = None,
    tag: FromQuery[str | None] = None,
) -> TraceList:
    ctx: RouterContext = state.herd
    found = await recent_traces(
        ctx, limit,
        model=normalize_model(model) if model else None,
        node_id=node or node_id or None,
        status=status,
        tag=tag or None,
    )
    return TraceList(traces=found, count=len(found))


def _table(items: dict[str, Usage]) -> dict[str, UsageSummary]:
    return {name: _summary(usage) for name, usage in sorted(items.items())}


@get("/dashboard/api/usage", tags=["dashboard"], responses=BAD_QUERY,
     summary="Usage per model, node and node:model over the last hours")
async def usage(state: State, hours: Hours = 24) -> UsageReport:
    ctx: RouterContext = state.herd
    window = await ctx.stats.read_window(_kept(ctx, hours))
    nodes = window.nodes()
    rejected = nodes.pop("", None)
    return UsageReport(
        window_hours=hours,
        fleet=_summary(window.fleet()),
        rejected_before_routing=rejected.requests if rejected else 0,
        models=_table(window.models()),
        nodes=_table(nodes),
        node_models=[
            NodeModelUsage(node_id=node, model=model, **u.summary())
            for (node, model), u in sorted(window.node_models().items())
        ],
    )


@get("/dashboard/api/apps", tags=["dashboard"], responses=BAD_QUERY,
     summary="Usage per tag (app) over the last hours")
async def apps(state: State, hours: Hours = 24) -> AppsReport:
    ctx: RouterContext = state.herd
    window = await ctx.stats.read_window(_kept(ctx, hours))
    return AppsReport(window_hours=hours, apps=_table(window.tags()))


@get("/dashboard/api/trends", tags=["dashboard"], responses=BAD_QUERY,
     summary="One point per hour, for the fleet, a model or a tag")
async def trends(state: State, hours: Hours = 24, model: FromQuery[str | None] = None,
                 tag: FromQuery[str | None] = None) -> TrendsReport:
    ctx: RouterContext = state.herd
    window = await ctx.stats.read_window(_kept(ctx, hours))
    scope = f"m:{normalize_model(model)}" if model else f"t:{tag}" if tag else ""
    series = [
        HourPoint(
            hour=hour * 3600,
            requests=u.requests,
            errors=u.errors,
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            retries=u.retries,
            cold_loads=u.cold_loads,
            avg_latency_ms=round(u.avg_latency_ms, 1),
            p95_latency_ms=round(u.percentile(95), 1),
            avg_ttft_ms=round(u.avg_ttft_ms, 1),
        )
        for hour, u in window.series(scope)
    ]
    return TrendsReport(window_hours=hours, model=model, tag=tag, hours=series)


@get("/dashboard/api/models", tags=["dashboard"], responses=BAD_QUERY,
     summary="Per model: demand, latency, cold loads, and where it is")
async def models(state: State, hours: Hours = 24) -> ModelsReport:
    ctx: RouterContext = state.herd
    window = await ctx.stats.read_window(_kept(ctx, hours))
    snapshot = ctx.fleet.snapshot()
    stats = window.models()
    names = sorted(set(stats) | snapshot.models())
    per_node = window.node_models()
    out = []
    for name in names:
        u = stats.get(name) or Usage()
        out.append(ModelStats(
            model=name,
            **u.summary(),
            requests_per_hour=round(u.requests / hours, 2),
            avg_load_ms=round(u.load_ms_sum / u.cold_loads, 1) if u.cold_loads else 0.0,
            loaded_on=sorted(n.node_id for n in snapshot.nodes.values() if n.loaded(name)),
            installed_on=sorted(
                n.node_id for n in snapshot.nodes.values() if name in n.models_available),
            requests_by_node={
                node: nu.requests for (node, model), nu in sorted(per_node.items())
                if model == name
            },
        ))
    return ModelsReport(window_hours=hours, models=out)


ROUTES = [traces, usage, apps, trends, models]
