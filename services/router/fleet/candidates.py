"""A request's candidates: a shortlist of a few good nodes, widened to every node only when
the shortlist has no free slot.

Scoring every node costs ~15 µs each, and the slot acquisition takes every candidate's keys,
so on a large fleet a request would pay for hundreds of nodes it never uses. When more than
`routing_candidates` servable nodes have the model, the shortlist holds that many: the node
that served the conversation's last turn (its prompt cache), then nodes with the model
loaded and a free slot, then nodes with a free slot that would load it, each group walked
from a point that moves on with every request, so the work spreads like power-of-k choices;
the scorers then rank only the shortlist. If none of it has a free slot the request widens
to every node, scored as before, and waits in the queue with all of them. A shortlist that
the filters empty (a pinned node outside it) also falls back to every node.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.router.fleet.routing import Ranked, RoutingEngine
from services.router.fleet.slots import Scored
from shared.models import NodeState
from shared.routing import RouteRequest, ScoringContext

__all__ = ["Candidates", "shortlist"]


def shortlist(
    request: RouteRequest, context: ScoringContext, limit: int, exclude: Iterable[str],
    turn: int,
) -> list[NodeState] | None:
    """Up to `limit` nodes worth scoring for `request`, or None when the fleet is small
    enough (at most `limit` servable nodes with the model) to score every node."""
    snapshot, inputs, model = context.snapshot, context.inputs, request.model
    warm, cold = snapshot.warm_and_cold(model)
    if limit <= 0 or len(warm) + len(cold) <= limit:
        return None
    excluded = set(exclude)
    chosen: list[NodeState] = []
    taken: set[str] = set()
    session = inputs.session_node(request.session_key)
    if session is not None and session not in excluded:
        node = snapshot.nodes.get(session)
        if node is not None and node.servable and node.has_model(model):
            chosen.append(node)
            taken.add(session)
    full: list[NodeState] = []  # no free slot: used only if the free ones are too few
    for group in (warm, cold):
        size = len(group)
        for i in range(size):
            if len(chosen) >= limit:
                return chosen
            node = group[(turn + i) % size]
            node_id = node.node_id
            if node_id in excluded or node_id in taken:
                continue
            if inputs.in_flight(node_id, model) < context.slots(node):
                chosen.append(node)
                taken.add(node_id)
            elif len(full) < limit:
                full.append(node)
    chosen.extend(full[:limit - len(chosen)])
    return chosen


class Candidates:
    """The ranked candidates of one routing attempt, and their widening to every node."""

    __slots__ = ("_context", "_engine", "_exclude", "_request", "ranked", "widened")

    def __init__(self, engine: RoutingEngine, request: RouteRequest, context: ScoringContext,
                 exclude: Iterable[str], turn: int) -> None:
        self._engine, self._request, self._context = engine, request, context
        self._exclude = list(exclude)
        limit = context.settings.routing_candidates
        nodes = shortlist(request, context, limit, self._exclude, turn)
        self.ranked: list[Ranked] = []
        if nodes is not None:
            self.ranked = engine.rank(request, context, self._exclude, nodes)
        self.widened = nodes is None or not self.ranked
        if self.widened:
            self.ranked = engine.rank(request, context, self._exclude)

    def slots(self) -> list[tuple[str, int]]:
        """(node id, capacity) of each candidate, best first: what the acquisition takes."""
        return [(r.node.node_id, self._context.slots(r.node)) for r in self.ranked]

    def scores(self) -> list[Scored]:
        """Each candidate's score, in the order of `slots()`; for a conversation's turn, with
        the load its score assumed (the acquisition corrects its last node's to live)."""
        context, request = self._context, self._request
        if not request.session_key or context.settings.session_affinity != "fleet":
            return [Scored(r.score) for r in self.ranked]
        inputs, model, engine = context.inputs, request.model, self._engine
        scored = []
        for r in self.ranked:
            busy = inputs.in_flight(r.node.node_id, model)
            scored.append(Scored(r.score, busy, engine.freed(r.node, request, context))
                          if busy else Scored(r.score))
        return scored

    def widen(self) -> tuple[list[tuple[str, int]], list[Scored]]:
        """Every node, ranked, after the shortlist had no free slot (the request then waits
        with all of them); the shortlist's order is kept in front."""
        if not self.widened:
            self.widened = True
            first = {r.node.node_id for r in self.ranked}
            rest = self._engine.rank(self._request, self._context, self._exclude)
            self.ranked += [r for r in rest if r.node.node_id not in first]
        return self.slots(), self.scores()

    def get(self, node_id: str) -> Ranked:
        """The candidate the acquisition chose."""
        return next((r for r in self.ranked if r.node.node_id == node_id), self.ranked[0])
