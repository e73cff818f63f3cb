"""How long a cold load and a wait for a loaded copy take: the one pair of estimates the
wait rule (plugins/routing/filters.py) and the leader's queue copies (fleet/pinplan.py)
both decide from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shared.models import FleetSnapshot, NodeState

__all__ = ["DEFAULT_LOAD_BASE_S", "DEFAULT_LOAD_S_PER_GB", "load_seconds", "wait_seconds"]

# Without any measured load: seconds per GB of weights, and a fixed start-up (a local NVMe
# and a mid-range GPU load ~1-2 GB/s); measurements replace this first guess.
DEFAULT_LOAD_S_PER_GB = 1.0
DEFAULT_LOAD_BASE_S = 1.0


def load_seconds(node: NodeState, model: str, load_ms: Mapping[tuple[str, str], float],
                 snapshot: FleetSnapshot) -> float:
    """A cold load of `model` on `node`: the load time measured there (the nodes'
    load_duration); else the fleet's median measured seconds per GB times the model's
    size; else a first guess from its size."""
    measured = load_ms.get((node.node_id, model))
    if measured:
        return measured / 1000.0
    size = node.model_size_gb(model)
    rates = []
    for (node_id, name), ms in load_ms.items():
        other = snapshot.nodes.get(node_id)
        weight = other.model_size_gb(name) if other is not None else 0.0
        if weight > 0 and ms > 0:
            rates.append(ms / 1000.0 / weight)
    if rates and size:
        rates.sort()
        return rates[len(rates) // 2] * size
    return DEFAULT_LOAD_BASE_S + DEFAULT_LOAD_S_PER_GB * size


def wait_seconds(latencies_ms: Iterable[float], slots: int, ahead: int) -> float | None:
    """How long a request with `ahead` requests before it waits for one of `slots` slots on
    the loaded copies, each request taking a copy's running time (the average of
    `latencies_ms`): `ahead / slots` rounds of it. None when nothing is measured."""
    measured = [x for x in latencies_ms if x > 0]
    if slots <= 0 or not measured:
        return None
    return ahead / slots * (sum(measured) / len(measured)) / 1000.0
