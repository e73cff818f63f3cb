"""Built-in filters: a node must be servable, have the model, and be able to hold it."""

from __future__ import annotations

from shared.hookspecs import hookimpl
from shared.models import NodeState
from shared.routing import NodeFilter, RouteRequest, ScoringContext

__all__ = ["FitsInMemory", "HasModel", "Servable", "herd_register_filters"]


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


@hookimpl
def herd_register_filters() -> list[NodeFilter]:
    return [Servable(), HasModel(), FitsInMemory()]
