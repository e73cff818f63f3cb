"""The plugin contract: pluggy markers and every hook Herd calls, with who calls it and when.

Hooks *register* things; the request path then calls the returned objects directly, so
pluggy never runs per request. Hooks are plain functions: pluggy cannot await.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from shared.health import HealthCheck
    from shared.models import NodeState
    from shared.routing import NodeFilter, RouteRequest, Scorer, ScoringContext, Transform

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "herd"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def herd_register_scorers() -> list[Scorer]:
    """Scorers that rank candidate nodes for a request.

    Called once per replica at start-up; every plugin's lists are concatenated. A node's
    score is the weighted sum of all scorers (weight from the scorer, or from the
    `weight_<name>` setting when one exists).
    """


@hookspec
def herd_register_filters() -> list[NodeFilter]:
    """Filters that remove nodes from a request's candidates (all must allow a node).

    Called once per replica at start-up; results are concatenated.
    """


@hookspec
def herd_register_transforms() -> list[Transform]:
    """Transforms applied to each request before routing (context protection, tags...).

    Called once per replica at start-up; results are concatenated and applied in order.
    """


@hookspec
def herd_register_health_checks() -> list[HealthCheck]:
    """Health checks run by /dashboard/api/health over a view of the fleet's state.

    Called once per replica at start-up; results are concatenated.
    """


@hookspec(firstresult=True)
def herd_choose_node(
    request: RouteRequest,
    ranked: list[tuple[NodeState, float]],
    context: ScoringContext,
) -> NodeState | None:
    """Pick the node for a request from the scored candidates (best first).

    Called per routing decision; the first non-None answer wins. The built-in policy
    (`trylast`) takes the best-scored node; a plugin may override it.
    """
