"""GET /dashboard/api/health and /dashboard/api/recommendations."""

from __future__ import annotations

from litestar import get
from litestar.datastructures import State

from services.router.fleet.health import compute_health, recommendations
from shared.schemas import HealthReport, Recommendations

__all__ = ["ROUTES"]


@get("/dashboard/api/health", tags=["dashboard"],
     summary="Fleet vitals and health findings, critical first")
async def health(state: State) -> HealthReport:
    return await compute_health(state.herd)


@get("/dashboard/api/recommendations", tags=["dashboard"],
     summary="Per node: models to keep loaded, load, or remove")
async def recommendations_route(state: State) -> Recommendations:
    return await recommendations(state.herd)


ROUTES = [health, recommendations_route]
