"""Fleet health and recommendations: fleet state and stats judged by the health plugins."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import msgspec

from services.router.fleet.pins import read_pins
from services.router.fleet.reads import ReadParts, read_counters, read_events, read_queue_depths
from services.router.fleet.stats import Stats
from shared.health import (
    HealthCheck,
    HealthView,
    counted,
    health_score,
    run_checks,
)
from shared.models import NodeState, NodeStatus
from shared.schemas import HealthReport, ModelAdvice, NodeAdvice, Recommendations, Vitals
from shared.usage import StatsWindow

__all__ = ["HealthParts", "build_view", "compute_health", "recommendations"]

EVENTS_SCAN = 500  # newest events read per health call; enough for a day of reaps and flaps
DAY_S = 86_400.0


class HealthParts(ReadParts, Protocol):
    """What health uses of a replica's context: the reads' parts, stats and the checks."""

    stats: Stats
    health_checks: list[HealthCheck]


async def build_view(ctx: HealthParts, now: float | None = None) -> HealthView:
    now = time.time() if now is None else now
    snapshot = ctx.fleet.snapshot()
    stats, counters, depths, events, pins = await asyncio.gather(
        ctx.stats.read_window(24, now), read_counters(ctx), read_queue_depths(ctx, snapshot),
        read_events(ctx, now - DAY_S, EVENTS_SCAN), read_pins(ctx),
    )
    return HealthView(snapshot=snapshot, settings=ctx.settings, stats=stats, counters=counters,
                      queue_depths=depths, events=events, now=now,
                      pins={p.model: msgspec.structs.asdict(p) for p in pins})


def _vitals(view: HealthView, score: int) -> Vitals:
    nodes = view.snapshot.nodes.values()
    day = view.stats.fleet()
    return Vitals(
        nodes_total=len(nodes),
        nodes_online=sum(n.status is NodeStatus.ONLINE for n in nodes),
        nodes_degraded=sum(n.status is NodeStatus.DEGRADED for n in nodes),
        nodes_offline=sum(n.status is NodeStatus.OFFLINE for n in nodes),
        overall_error_rate_pct=round(day.outcome_error_rate_pct, 2),
        cold_loads_24h=day.cold_loads,
        avg_ttft_ms=round(day.avg_ttft_ms, 1),
        total_requests_24h=day.requests,
        total_retries_24h=day.retries,
        health_score=score,
    )


async def compute_health(ctx: HealthParts, now: float | None = None) -> HealthReport:
    """The /dashboard/api/health body (the shape ollama-herd users rely on; docs/api.md)."""
    view = await build_view(ctx, now)
    findings = run_checks(ctx.health_checks, view)
    score = health_score(findings)
    return HealthReport(vitals=_vitals(view, score), recommendations=findings,
                        checked_at=view.now)


# --- recommendations ------------------------------------------------------------------


def _node_advice(
    node: NodeState, *, stats: StatsWindow, fleet_demand: dict[str, int],
    copies: dict[str, int], roomiest: dict[str, str], min_requests: int,
) -> list[ModelAdvice]:
    here = {m: u for (n, m), u in stats.node_models().items() if n == node.node_id}
    tight = node.memory_pressure.lower() in {"high", "warn", "warning", "critical"} or (
        node.memory_total_gb > 0 and node.memory_available_gb < 0.15 * node.memory_total_gb
    )
    advice: list[ModelAdvice] = []
    for loaded in node.models_loaded:
        usage = here.get(loaded.name)
        served = usage.requests if usage else 0
        cold = usage.cold_loads if usage else 0
        if served:
            reason = f"served {counted(served, 'request')} here in the last 24 h"
            if cold > 1:
                reason += f" and was cold-loaded {cold} times: keeping it resident saves reloads"
            advice.append(ModelAdvice(action="keep", model=loaded.name, reason=reason,
                                      requests_24h=served, cold_loads_24h=cold))
        else:
            size = f" and frees {loaded.size_gb:.1f} GB" if loaded.size_gb else ""
            why = "memory is tight here, so unloading it" if tight else "unloading it"
            advice.append(ModelAdvice(
                action="remove", model=loaded.name,
                reason=f"loaded but served no requests here in 24 h; {why} "
                f"makes room for models in demand{size}",
                requests_24h=0, cold_loads_24h=cold))
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
            reason = (f"{counted(demand, 'request')} in 24 h and not loaded on any node; "
                      "this node has "
                      f"the most free memory ({node.memory_available_gb:.1f} GB)")
        elif node.has_model(model) and per_copy >= 2 * min_requests:
            loaded_copies = counted(copies.get(model, 0), "loaded copy", "loaded copies")
            reason = (f"{counted(demand, 'request')} in 24 h across only {loaded_copies}; "
                      "it is installed here and fits in the free "
                      f"{node.memory_available_gb:.1f} GB")
        else:
            continue
        advice.append(ModelAdvice(action="load", model=model, reason=reason,
                                  requests_24h=demand, size_gb=size_gb))
    for model in node.models_available:
        if model not in loaded_names and fleet_demand.get(model, 0) == 0 and tight:
            advice.append(ModelAdvice(
                action="remove", model=model,
                reason="installed but requested nowhere in the fleet for 24 h; "
                "deleting it frees disk, and memory is tight here"))
    return advice


async def recommendations(ctx: HealthParts, now: float | None = None) -> Recommendations:
    """Per node: models to keep loaded, load, or remove, each with a plain-words reason."""
    snapshot = ctx.fleet.snapshot()
    stats = await ctx.stats.read_window(24, now)
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
        NodeAdvice(
            node_id=node.node_id,
            status=node.status,
            memory_available_gb=node.memory_available_gb,
            memory_total_gb=node.memory_total_gb,
            recommendations=_node_advice(
                node, stats=stats, fleet_demand=demand, copies=copies, roomiest=roomiest,
                min_requests=minimum,
            ),
        )
        for node in sorted(servable, key=lambda n: n.node_id)
    ]
    return Recommendations(nodes=nodes, model_demand_24h=demand,
                           generated_at=time.time() if now is None else now)
