"""Built-in filters: a node must be servable, have the model, be able to hold it, and be
the node an `X-Herd-Node` header pins the request to, if any."""

from __future__ import annotations

from shared.hookspecs import hookimpl
from shared.models import NodeState
from shared.routing import NodeFilter, RouteRequest, ScoringContext

__all__ = ["PIN_HEADER", "FitsInMemory", "HasModel", "PinnedNode", "Servable",
           "herd_register_filters"]

PIN_HEADER = "x-herd-node"  # RouteRequest.headers has lower-case names


class Servable:
    """Online, its Ollama answering, not draining."""

    name = "servable"

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool:
        return node.servable


class HasModel:
    """The model is on the node's disk or in its memory: Herd never substitutes another."""

    name = "has_model"

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool:
        return node.has_model(request.model)


class FitsInMemory:
    """A model bigger than all of a node's memory can never load there (unknown sizes pass)."""

    name = "fits_in_memory"

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool:
        if node.loaded(request.model) is not None:
            return True
        size = node.model_size_gb(request.model)
        return not (size and node.memory_total_gb) or size <= node.memory_total_gb


class PinnedNode:
    """`X-Herd-Node: <node_id>` keeps only that node, e.g. to load a model on a chosen node
    from the dashboard. The other filters still apply: a pinned node that cannot serve the
    request leaves no candidate (503), never a silent move to another node."""

    name = "pinned_node"

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool:
        pinned = request.headers.get(PIN_HEADER, "").strip()
        return not pinned or node.node_id == pinned


@hookimpl
def herd_register_filters() -> list[NodeFilter]:
    return [PinnedNode(), Servable(), HasModel(), FitsInMemory()]
