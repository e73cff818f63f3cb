"""GET /dashboard/api/health and /dashboard/api/recommendations."""

from __future__ import annotations

from typing import Any

from litestar import get
from litestar.datastructures import State

from services.router.fleet.health import compute_health, recommendations

__all__ = ["ROUTES"]


@get("/dashboard/api/health")
async def health(state: State) -> dict[str, Any]:
    return await compute_health(state.herd)


@get("/dashboard/api/recommendations")
async def recommendations_route(state: State) -> dict[str, Any]:
    return await recommendations(state.herd)


ROUTES = [health, recommendations_route]
