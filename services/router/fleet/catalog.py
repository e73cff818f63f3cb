"""The fleet's catalogue: what the nodes list in /api/tags and /api/ps, merged."""

from __future__ import annotations

import asyncio
from typing import Any

from services.router.context import RouterContext
from shared.models import NodeState, normalize_model

__all__ = ["fan_out", "merge_ps", "merge_tags"]


async def fan_out(ctx: RouterContext, path: str) -> list[tuple[NodeState, dict[str, Any] | None]]:
    """Every servable node's answer to GET `path` (None where it failed)."""
    nodes = [n for n in ctx.fleet.snapshot().nodes.values() if n.servable]
    results = await asyncio.gather(*(ctx.nodes.get_json(n, path) for n in nodes))
    return list(zip(nodes, results, strict=True))


def merge_tags(answers: list[tuple[NodeState, dict[str, Any] | None]]) -> list[dict[str, Any]]:
    """The union of the nodes' /api/tags by name; a node that did not answer adds what its
    heartbeat said."""
    models: dict[str, dict[str, Any]] = {}
    for node, answer in answers:
        listed = answer.get("models") if answer else None
        if isinstance(listed, list):
            for entry in listed:
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    name = normalize_model(entry["name"])
                    models.setdefault(name, {**entry, "name": name, "model": name})
            continue
        for name in node.models_available:
            models.setdefault(name, {
                "name": name, "model": name,
                "size": int(node.model_sizes_gb.get(name, 0.0) * 1e9),
            })
    return [models[name] for name in sorted(models)]


def merge_ps(answers: list[tuple[NodeState, dict[str, Any] | None]]) -> list[dict[str, Any]]:
    """Every loaded copy on every node, each with the node it is on."""
    loaded: list[dict[str, Any]] = []
    for node, answer in answers:
        listed = answer.get("models") if answer else None
        if isinstance(listed, list):
            loaded.extend(
                {**entry, "node_id": node.node_id} for entry in listed if isinstance(entry, dict))
            continue
        loaded.extend({
            "name": m.name, "model": m.name, "size": int(m.size_gb * 1e9),
            "context_length": m.context_length, "expires_at": m.expires_at or None,
            "node_id": node.node_id,
        } for m in node.models_loaded)
    loaded.sort(key=lambda m: (str(m.get("name")), m["node_id"]))
    return loaded
