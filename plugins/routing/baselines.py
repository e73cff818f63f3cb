"""Simple routing policies to measure Herd's own against: round-robin, least-connections, random.

Not registered by default. `benchmarks/scheduling.py` starts a router with one of them, e.g.
`FLEET_PLUGINS=plugins.routing.baselines:round_robin`, and with
`FLEET_DISABLED_PLUGINS=plugins.routing.scorers`, so nothing of Herd's scoring is left: the
policy's pick goes first, and when its slots are full the slot acquisition falls back to the
engine's tie order (least work first). That fallback and the fleet-wide queue make each
baseline somewhat stronger than the same policy in a plain HTTP balancer.
"""

from __future__ import annotations

import random

from shared.hookspecs import hookimpl
from shared.models import NodeState
from shared.routing import RouteRequest, ScoringContext

__all__ = [
    "LeastConnections",
    "RandomChoice",
    "RoundRobin",
    "least_connections",
    "random_choice",
    "round_robin",
]


class RoundRobin:
    """Each model's candidates in turn, by node id, whatever they hold or do."""

    def __init__(self) -> None:
        self._turn: dict[str, int] = {}

    @hookimpl
    def herd_choose_node(
        self, request: RouteRequest, ranked: list[tuple[NodeState, float]],
        context: ScoringContext,
    ) -> NodeState | None:
        if not ranked:
            return None
        nodes = sorted((node for node, _ in ranked), key=lambda n: n.node_id)
        turn = self._turn.get(request.model, 0)
        self._turn[request.model] = turn + 1
        return nodes[turn % len(nodes)]


class LeastConnections:
    """The candidate with the fewest requests in flight on the whole node (ties by id)."""

    @hookimpl
    def herd_choose_node(
        self, request: RouteRequest, ranked: list[tuple[NodeState, float]],
        context: ScoringContext,
    ) -> NodeState | None:
        if not ranked:
            return None
        return min((node for node, _ in ranked),
                   key=lambda n: (context.inputs.node_in_flight(n.node_id), n.node_id))


class RandomChoice:
    """A uniformly random candidate (seeded, so a replayed workload makes the same draws)."""

    def __init__(self, seed: int = 0) -> None:
        self._random = random.Random(seed)

    @hookimpl
    def herd_choose_node(
        self, request: RouteRequest, ranked: list[tuple[NodeState, float]],
        context: ScoringContext,
    ) -> NodeState | None:
        if not ranked:
            return None
        nodes = sorted((node for node, _ in ranked), key=lambda n: n.node_id)
        return self._random.choice(nodes)


round_robin = RoundRobin()
least_connections = LeastConnections()
random_choice = RandomChoice()
