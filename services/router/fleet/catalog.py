"""The fleet's catalogue: what the nodes list in /api/tags and /api/ps, merged."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import msgspec

from services.router.fleet.registry import Registry
from services.router.nodes import Nodes
from shared.models import NodeState, normalize_model
from shared.schemas import PsModel, TagModel

__all__ = ["CatalogParts", "fan_out", "merge_ps", "merge_tags"]


class CatalogParts(Protocol):
    """What the catalogue uses of a replica's context."""

    fleet: Registry
    nodes: Nodes


async def fan_out(ctx: CatalogParts, path: str) -> list[tuple[NodeState, dict[str, Any] | None]]:
    """Every servable node's answer to GET `path` (None where it failed)."""
    nodes = [n for n in ctx.fleet.snapshot().nodes.values() if n.servable]
    results = await asyncio.gather(*(ctx.nodes.get_json(n, path) for n in nodes))
    return list(zip(nodes, results, strict=True))


def _listed(answer: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    listed = answer.get("models") if answer else None
    if not isinstance(listed, list):
        return None
    return [entry for entry in listed if isinstance(entry, dict)]


def _tag(entry: dict[str, Any], name: str) -> TagModel:
    """A node's entry in the contract's shape; a field of the wrong type is left out."""
    try:
        return msgspec.convert({**entry, "name": name, "model": name}, TagModel)
    except msgspec.ValidationError:
        size = entry.get("size")
        return TagModel(name=name, model=name, size=size if isinstance(size, int) else 0)


def merge_tags(answers: list[tuple[NodeState, dict[str, Any] | None]]) -> list[TagModel]:
    """The union of the nodes' /api/tags by name; a node that did not answer adds what its
    heartbeat said."""
    models: dict[str, TagModel] = {}
    for node, answer in answers:
        listed = _listed(answer)
        if listed is not None:
            for entry in listed:
                if isinstance(entry.get("name"), str) and entry["name"].strip():
                    name = normalize_model(entry["name"])
                    if name not in models:
                        models[name] = _tag(entry, name)
            continue
        for name in node.models_available:
            if name not in models:
                models[name] = TagModel(name=name, model=name,
                                        size=int(node.model_sizes_gb.get(name, 0.0) * 1e9))
    return [models[name] for name in sorted(models)]


def _ps(entry: dict[str, Any], node_id: str) -> PsModel | None:
    name = entry.get("name") or entry.get("model")
    if not isinstance(name, str) or not name:
        return None
    base = {**entry, "name": name, "model": entry.get("model") or name, "node_id": node_id}
    try:
        return msgspec.convert(base, PsModel)
    except msgspec.ValidationError:
        size = entry.get("size")
        return PsModel(name=name, model=name, node_id=node_id,
                       size=size if isinstance(size, int) else 0)


def merge_ps(answers: list[tuple[NodeState, dict[str, Any] | None]]) -> list[PsModel]:
    """Every loaded copy on every node, each with the node it is on."""
    loaded: list[PsModel] = []
    for node, answer in answers:
        listed = _listed(answer)
        if listed is not None:
            loaded.extend(m for m in (_ps(e, node.node_id) for e in listed) if m is not None)
            continue
        loaded.extend(PsModel(
            name=m.name, model=m.name, size=int(m.size_gb * 1e9),
            context_length=m.context_length, expires_at=m.expires_at or None,
            node_id=node.node_id,
        ) for m in node.models_loaded)
    loaded.sort(key=lambda m: (m.name, m.node_id))
    return loaded
