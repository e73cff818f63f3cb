"""The default routing policy: the best-scored candidate. `trylast`, so any plugin can override."""

from __future__ import annotations

from shared.hookspecs import hookimpl
from shared.models import NodeState
from shared.routing import RouteRequest, ScoringContext

__all__ = ["herd_choose_node"]


@hookimpl(trylast=True)
def herd_choose_node(
    request: RouteRequest,
    ranked: list[tuple[NodeState, float]],
    context: ScoringContext,
) -> NodeState | None:
    return ranked[0][0] if ranked else None
