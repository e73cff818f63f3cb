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
    """Scorers that rank candidate nodes for a request (`shared.routing.Scorer`).

    Called once per replica at start-up (the routing lifecycle); every plugin's lists are
    concatenated. Per request, each scorer's `score(node, request, context)` (0..1) is
    multiplied by the `weight_<name>` setting when one exists, else by its own `weight`,
    and a node's score is the sum; the breakdown goes into the trace and `X-Fleet-Score`.
    """
    raise NotImplementedError


@hookspec
def herd_register_filters() -> list[NodeFilter]:
    """Filters that remove nodes from a request's candidates (`shared.routing.NodeFilter`).

    Called once per replica at start-up; results are concatenated. Per request a node is a
    candidate only if every filter's `allows(node, request, context)` is true.
    """
    raise NotImplementedError


@hookspec
def herd_register_transforms() -> list[Transform]:
    """Transforms applied to each request before routing (`shared.routing.Transform`):
    context protection, tag extraction...

    Called once per replica at start-up; results are concatenated and, per request, applied
    in that order. A transform changes the forwarded body only through `request.set_body`.
    """
    raise NotImplementedError


@hookspec
def herd_register_health_checks() -> list[HealthCheck]:
    """Health checks run by /dashboard/api/health over a view of the fleet's state.

    Called once per replica, the first time health is asked for; every plugin's lists are
    concatenated. Each check's `check(view: shared.health.HealthView)` runs on every
    /dashboard/api/health call and returns a list of `shared.health.Finding`; it must be
    fast and pure (no I/O: the view already holds what Redis knows). A check that raises is
    reported as an info finding instead of failing the call. See docs/plugins.md.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def herd_choose_node(
    request: RouteRequest,
    ranked: list[tuple[NodeState, float]],
    context: ScoringContext,
) -> NodeState | None:
    """Pick the node for a request from the scored candidates (best first).

    Called per routing decision, and only when a plugin besides the built-in policy
    implements it (the built-in alone is called directly, keeping pluggy off the hot
    path); the first non-None answer wins. The built-in policy (`trylast`) takes the
    best-scored node. The chosen node is tried first; if its slots are full, the others
    follow in score order.
    """
    raise NotImplementedError
