"""What the leader should load, refresh or release this round: pins and queue copies, planned
from one fleet snapshot, purely (no I/O; fleet/pins.py carries the plan out).

- A pin wants `copies` loaded copies of its model on servable nodes (only the nodes it
  names, if any). A missing copy is loaded where the model fits beside what must stay
  (models busy there, pinned copies, loads under way), roomiest and least busy node
  first; at most one load per model is in flight. The copies that count for the pin are
  held with a keep_alive that never runs out; a request with no keep_alive of its own
  resets a copy to the node's default, so a held copy whose expiry is not "forever" is
  refreshed (a load-only request on a loaded model costs nothing). A held copy the pin no
  longer needs (unpinned, fewer copies) is released: loaded again with the node's default
  keep_alive, so it ages out like any other.
- Copies that follow the queue: when a model's waiting requests would wait longer for a
  slot on the loaded copies than a cold load of it takes, one more copy is loaded on a
  node with room (in memory, and running fewer requests than its slots), with the node's
  default keep_alive (demand keeps it warm; without demand it ages out like any other).
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.estimates import load_seconds as estimated_load
from shared.estimates import wait_seconds as estimated_wait
from shared.models import FleetSnapshot, NodeState

__all__ = [
    "FOREVER",
    "LOADED_OVERHEAD",
    "Action",
    "Kind",
    "PinState",
    "PinStatus",
    "World",
    "kept_on",
    "load_seconds",
    "plan",
    "wait_seconds",
]

LOADED_OVERHEAD = 1.2  # a copy takes its weights and a KV cache (as plugins/routing/filters)
FOREVER = -1  # Ollama's keep_alive for "never unload"
FRESH_TRUST_S = 10.0  # two heartbeat intervals: our finished load counts as loaded meanwhile


class PinState(enum.StrEnum):
    SATISFIED = "satisfied"
    LOADING = "loading"
    SHORT = "short"


class Kind(enum.StrEnum):
    PIN = "pin"  # load a missing pinned copy (keep_alive forever)
    REFRESH = "refresh"  # a held copy's keep_alive was reset by a request: forever again
    RELEASE = "release"  # a held copy no pin needs: back to the node's keep_alive
    QUEUE = "queue"  # one more copy for a model whose queue outlasts a cold load


@dataclass(frozen=True, slots=True)
class Action:
    """One load-only request to send: `keep_alive` None means the node's default."""

    kind: Kind
    node_id: str
    model: str
    reason: str

    @property
    def keep_alive(self) -> int | None:
        return FOREVER if self.kind in (Kind.PIN, Kind.REFRESH) else None

    @property
    def loads(self) -> bool:
        """A cold load (one per model at a time), not bookkeeping on a loaded copy."""
        return self.kind in (Kind.PIN, Kind.QUEUE)


@dataclass(slots=True)
class PinStatus:
    model: str
    copies: int
    nodes: list[str]
    state: PinState
    reason: str
    loaded_on: list[str] = field(default_factory=list)
    loading_on: list[str] = field(default_factory=list)


@dataclass(slots=True)
class World:
    """What the plan reads: the snapshot and the leader's own book-keeping."""

    snapshot: FleetSnapshot
    now: float
    in_flight: Callable[[str, str], int]  # requests running on node:model
    queued: Mapping[str, int]  # model -> requests waiting fleet-wide
    loading: Mapping[str, str]  # model -> node of the load in flight
    fresh: Mapping[tuple[str, str], float]  # (node, model) -> when our load of it ended
    held: frozenset[tuple[str, str]]  # copies held with keep_alive forever
    busy_actions: frozenset[tuple[str, str]] = frozenset()  # refresh/release in flight
    failed: Mapping[tuple[str, str], float] = field(default_factory=dict)  # -> retry after
    latency_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)
    load_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)  # measured cold loads
    slots: Callable[[NodeState], int] = lambda node: 4
    node_in_flight: Callable[[str], int] = lambda node_id: 0


def _forever(expires_at: str, now: float) -> bool:
    """Whether /api/ps's expires_at is "never" (keep_alive < 0 gives year 2318)."""
    try:
        year = int(expires_at[:4])
    except ValueError:
        return False
    return year > datetime.datetime.fromtimestamp(now, datetime.UTC).year + 10


def _fresh(node: NodeState, model: str, world: World) -> bool:
    """Our load of `model` on `node` ended recently enough that the node's heartbeats may not
    show it yet: after the last one arrived, or within FRESH_TRUST_S (a heartbeat that
    arrives just after the load ended may have been written before it)."""
    at = world.fresh.get((node.node_id, model))
    return at is not None and (at >= node.last_seen or world.now - at < FRESH_TRUST_S)


def _loaded(node: NodeState, model: str, world: World) -> bool:
    return node.loaded(model) is not None or _fresh(node, model, world)


def kept_on(node: NodeState, world: World, pinned: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The models on `node` that a load must not evict: busy (running here or waited for
    fleet-wide), pinned, or being loaded here; with their sizes."""
    out: dict[str, float] = {}
    for loaded in node.models_loaded:
        name = loaded.name
        if (world.in_flight(node.node_id, name) > 0 or world.queued.get(name)
                or name in pinned or (node.node_id, name) in world.held):
            out[name] = loaded.size_gb or node.model_size_gb(name)
    for model, node_id in world.loading.items():
        if node_id == node.node_id:
            out[model] = node.model_size_gb(model)
    return list(out.items())


def _room(node: NodeState, model: str, world: World,
          pinned: Mapping[str, Any]) -> tuple[bool, float]:
    """Whether `model` fits beside what must stay on `node`, and the memory left after it
    (what ranks the nodes); an unknown size or memory lets the node decide."""
    kept = kept_on(node, world, pinned)
    size = node.model_size_gb(model)
    left = node.memory_total_gb - sum(s for _, s in kept)
    most = node.max_loaded_models
    if most > 0 and len(kept) >= most:
        return False, left
    if not size or not node.memory_total_gb:
        return True, left
    return size * LOADED_OVERHEAD <= left, left - size * LOADED_OVERHEAD


def load_seconds(node: NodeState, model: str, world: World) -> float:
    """A cold load of `model` on `node` (shared/estimates.py)."""
    return estimated_load(node, model, world.load_ms, world.snapshot)


def wait_seconds(model: str, world: World, extra: int = 0) -> float | None:
    """How long the newest of the model's waiting requests (plus `extra` more) would wait
    for a slot on its loaded copies (shared/estimates.py); None without loaded copies or a
    measured running time."""
    slots = 0
    latencies: list[float] = []
    for node in world.snapshot.nodes.values():
        if node.servable and node.loaded(model) is not None:
            slots += world.slots(node)
            latencies.append(world.latency_ms.get((node.node_id, model), 0.0))
    return estimated_wait(latencies, slots, world.queued.get(model, 0) + extra)


def _candidates(model: str, world: World, pinned: Mapping[str, Any],
                named: list[str]) -> list[tuple[NodeState, float]]:
    out = []
    for node in world.snapshot.nodes.values():
        key = (node.node_id, model)
        if (not node.servable or not node.has_model(model) or _loaded(node, model, world)
                or (named and node.node_id not in named) or world.failed.get(key, 0) > world.now):
            continue
        fits, left = _room(node, model, world, pinned)
        if fits:
            out.append((node, left))
    out.sort(key=lambda pair: (-pair[1], world.node_in_flight(pair[0].node_id),
                               pair[0].node_id))
    return out


def _short_reason(model: str, world: World, named: list[str]) -> str:
    nodes = [n for n in world.snapshot.nodes.values() if not named or n.node_id in named]
    having = [n for n in nodes if n.has_model(model)]
    missing_named = [n for n in named if n not in world.snapshot.nodes]
    if named and not nodes:
        return f"node offline: {', '.join(missing_named)} (not in the fleet)"
    if not having:
        where = f"the nodes named ({', '.join(named)})" if named else "any node"
        return f"model missing: {model} is not installed on {where}"
    up = [n for n in having if n.servable]
    if not up or (missing_named and len(up) < len(named)):
        down = sorted({n.node_id for n in having if not n.servable} | set(missing_named))
        if down:
            return f"node offline: {', '.join(down)}"
    if any(world.failed.get((n.node_id, model), 0) > world.now for n in up):
        return "no node has room: a load was refused; trying again shortly"
    return (f"no node has room: {model} does not fit beside the busy and pinned models on "
            + ", ".join(n.node_id for n in up if n.loaded(model) is None))


def plan(pins: Mapping[str, Mapping[str, Any]], world: World,
         queue_copies: bool) -> tuple[list[PinStatus], list[Action]]:
    """Each pin's status, and the actions for this round."""
    actions: list[Action] = []
    statuses: list[PinStatus] = []
    held_next: set[tuple[str, str]] = set()
    loading = dict(world.loading)
    for model, pin in sorted(pins.items()):
        copies = int(pin.get("copies", 1))
        named = list(pin.get("nodes", []))
        counted = [n for n in world.snapshot.nodes.values()
                   if n.servable and (not named or n.node_id in named)
                   and _loaded(n, model, world)]
        # copies already held go first, so a pin keeps the same copies round after round
        counted.sort(key=lambda n: ((n.node_id, model) not in world.held, n.node_id))
        keep = counted[:copies]
        for node in keep:
            key = (node.node_id, model)
            held_next.add(key)
            loaded = node.loaded(model)
            if (loaded is not None and not _forever(loaded.expires_at, world.now)
                    and key not in world.busy_actions and not _fresh(node, model, world)):
                actions.append(Action(Kind.REFRESH, node.node_id, model,
                                      "pinned copy: keep_alive back to forever"))
        status = PinStatus(model=model, copies=copies, nodes=named, state=PinState.SATISFIED,
                           reason="", loaded_on=sorted(n.node_id for n in keep))
        if len(keep) < copies:
            if model in loading:
                status.state, status.loading_on = PinState.LOADING, [loading[model]]
                status.reason = f"{len(keep)} of {copies} loaded; loading on {loading[model]}"
            else:
                candidates = _candidates(model, world, pins, named)
                if candidates:
                    node = candidates[0][0]
                    loading[model] = node.node_id
                    room = candidates[0][1] + node.model_size_gb(model) * LOADED_OVERHEAD
                    why = (f"pinned: {len(keep)} of {copies} copies loaded; {node.node_id} "
                           f"has {room:.1f} GB beside its busy and pinned models")
                    actions.append(Action(Kind.PIN, node.node_id, model, why))
                    status.state, status.loading_on = PinState.LOADING, [node.node_id]
                    status.reason = f"{len(keep)} of {copies} loaded; loading on {node.node_id}"
                else:
                    status.state = PinState.SHORT
                    status.reason = (f"{len(keep)} of {copies} loaded; "
                                     + _short_reason(model, world, named))
        statuses.append(status)
    for key in sorted(world.held - held_next):
        gone = world.snapshot.nodes.get(key[0])
        if gone is not None and gone.servable and gone.loaded(key[1]) is not None and (
                key not in world.busy_actions):
            why = ("unpinned" if key[1] not in pins else "no longer one of the pin's copies")
            actions.append(Action(Kind.RELEASE, key[0], key[1],
                                  f"{why}: back to the node's keep_alive"))
    if queue_copies:
        actions += _queue_actions(world, pins, loading)
    return statuses, actions


def _queue_actions(world: World, pins: Mapping[str, Any],
                   loading: dict[str, str]) -> list[Action]:
    out: list[Action] = []
    for model, waiting in sorted(world.queued.items()):
        if not waiting or model in loading:
            continue
        wait = wait_seconds(model, world)
        if wait is None:
            continue
        # room in memory and in work: a node already running as much as its slots gain
        # nothing from another copy (past the fleet's capacity, copies only move the queue)
        candidates = [(n, left) for n, left in _candidates(model, world, pins, [])
                      if world.node_in_flight(n.node_id) < world.slots(n)]
        if not candidates:
            continue
        node = candidates[0][0]
        load = load_seconds(node, model, world)
        if wait <= load:
            continue
        loading[model] = node.node_id
        out.append(Action(Kind.QUEUE, node.node_id, model,
                          f"{waiting} waiting: expected wait {wait:.1f} s on the loaded copies "
                          f"is longer than a cold load on {node.node_id} ({load:.1f} s)"))
    return out
