"""Built-in scorers. Each rates a node 0..1; the engine weighs them by the `weight_*` settings.

Balance (measured on a simulated heterogeneous fleet, docs/routing.md): a loaded model is
worth a lot, since a cold load costs seconds, but the slot acquisition takes the first
candidate with a free slot, so a loaded-but-full node never makes a request wait while an
idle one is free.
"""

from __future__ import annotations

from shared.hookspecs import hookimpl
from shared.models import NodeState
from shared.routing import RouteRequest, Scorer, ScoringContext

__all__ = [
    "Affinity",
    "ContextFit",
    "FailurePenalty",
    "Latency",
    "Load",
    "Loaded",
    "MemoryFit",
    "herd_register_scorers",
]


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


class Loaded:
    """The model is resident on the node: no cold load. A copy whose context is smaller
    than the num_ctx asked for counts as not loaded: Ollama reloads it, which costs as much."""

    name = "loaded"
    weight = 40.0

    def score(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> float:
        copy = node.loaded(request.model)
        if copy is None:
            return 0.0
        wanted = request.requested_num_ctx
        return 0.0 if wanted and 0 < copy.context_length < wanted else 1.0


class MemoryFit:
    """Room to load the model without evicting another; loaded counts as a perfect fit."""

    name = "memory"
    weight = 10.0

    def score(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> float:
        if node.loaded(request.model) is not None:
            return 1.0
        size = node.model_size_gb(request.model)
        free = node.memory_available_gb
        if not size or not node.memory_total_gb:
            return 0.5
        if size <= free:
            # headroom beyond the model itself keeps the node out of memory pressure
            return 0.5 + 0.5 * _clamp((free - size) / size)
        return 0.3 * _clamp(free / size)


class Load:
    """Free slots for this model, and how busy the node is overall (other models share it)."""

    name = "load"
    weight = 30.0

    def score(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> float:
        slots = context.slots(node)
        busy = context.inputs.in_flight(node.node_id, request.model)
        free = _clamp((slots - busy) / slots)
        capacity = slots * max(1, len(node.models_loaded))
        overall = 1.0 - _clamp(context.inputs.node_in_flight(node.node_id) / capacity)
        return 0.75 * free + 0.25 * overall

    def freed(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> float:
        """The rating gained per request fewer in flight on the node for the model."""
        slots = context.slots(node)
        return 0.75 / slots + 0.25 / (slots * max(1, len(node.models_loaded)))


class Latency:
    """Recent speed of this node for this model against the fleet's best (decaying averages)."""

    name = "latency"
    weight = 15.0

    def score(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> float:
        stats = context.latency(node.node_id, request.model)
        best = context.inputs.best.get(request.model)
        if stats is None or best is None or stats.samples == 0:
            return 0.5  # unknown: neither favoured nor avoided, so new nodes get tried
        if stats.tokens_per_s > 0 and best.tokens_per_s > 0:
            return _clamp(stats.tokens_per_s / best.tokens_per_s)
        if stats.latency_ms > 0 and best.latency_ms != float("inf"):
            return _clamp(best.latency_ms / stats.latency_ms)
        return 0.5


class ContextFit:
    """The loaded copy's context holds the num_ctx the client asked for."""

    name = "context"
    weight = 10.0

    def score(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> float:
        wanted = request.requested_num_ctx
        if wanted <= 0:
            return 1.0
        loaded = node.loaded(request.model)
        if loaded is None:
            return 0.6  # it would load with the asked context: the load is the loaded scorer's
        if not loaded.context_length or loaded.context_length >= wanted:
            return 1.0
        return 0.0  # a reload, and the next default-context request would reload it back


class FailurePenalty:
    """Errors the routers saw on this node recently (proxy failures), its own and those of
    the request's model there, until it recovers."""

    name = "failures"
    weight = 20.0

    def score(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> float:
        failures = node.router_failures
        if node.model_failures and (model := node.model_failures.get(request.model)):
            failures += model.count
        return 1.0 / (1.0 + failures)


class Affinity:
    """The node that served this conversation's last turn: its prompt cache spares the
    node re-reading the whole history. Worth less than a free slot elsewhere (the load
    scorer outweighs it once that node fills up).

    With `session_affinity=fleet` (the default) the conversation index lives in Redis and
    the slot acquisition applies this weight to the remembered node, atomically with
    taking the slot (docs/routing.md): here it then rates every node 0. With `replica`
    it rates from this replica's own memory.
    """

    name = "affinity"
    weight = 15.0

    def score(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> float:
        if context.settings.session_affinity != "replica":
            return 0.0
        return 1.0 if context.inputs.session_node(request.session_key) == node.node_id else 0.0


@hookimpl
def herd_register_scorers() -> list[Scorer]:
    return [Loaded(), MemoryFit(), Load(), Latency(), ContextFit(), FailurePenalty(), Affinity()]
