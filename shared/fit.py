"""Whether a model with a request's num_ctx can fit on a node: what it needs, what the node
can hold. The fit filter, the retry after a node's memory refusal and Herd's 400 for a
request that fits on no node all ask here.

Conservative by construction: the need is a lower bound and the room an upper bound, so
Herd never rules out a node that could serve the request; what it is unsure of counts as
unknown and lets the request through (the node then decides, and its refusal is learned).

The need of `model` at `num_ctx` on a node is the largest of these lower bounds:
- the weights (the model's size on disk, from the node's /api/tags);
- the weights plus the KV cache from the model's own metadata (`ModelShape`, which the
  agent reads from /api/show): f16 bytes per token x min(num_ctx, trained context) x
  `KV_FLOOR` (q4_0, the smallest cache type Ollama can be set to use) x one sequence
  (Ollama may run with OLLAMA_NUM_PARALLEL=1 whatever the agent believes);
- what a node answered when it refused the model (`MemoryRefusal`): valid for a num_ctx at
  least as large, on a node running at least as many parallel sequences, while the model
  has the same size, for `REFUSAL_TTL` (forgetting costs one refusal; believing a stale
  figure after a node was given more memory or a smaller KV cache type costs more).

The room is memory + VRAM + swap: Ollama splits a model between GPU and system memory and
refuses only a load larger than free memory plus free swap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shared.models import MemoryRefusal, NodeState

__all__ = [
    "KV_FLOOR",
    "REFUSAL_TTL",
    "FitReport",
    "Need",
    "fits",
    "need_of",
    "report",
    "room_gb",
    "same_size",
]

GB = 1e9
KV_FLOOR = 4.5 / 16  # q4_0 stores 4.5 bits per element where f16 stores 16
REFUSAL_TTL = 3600.0  # seconds a node's refusal is believed


@dataclass(frozen=True, slots=True)
class Need:
    """A lower bound of the memory a load needs (GB), and where it comes from."""

    gb: float = 0.0
    source: str = ""  # "weights" | "metadata" | "refusal"; "" when nothing is known
    weights_gb: float = 0.0
    kv_gb: float = 0.0  # metadata: the KV cache's lower bound, for `tokens`
    tokens: int = 0  # metadata: the context counted; refusal: the num_ctx refused

    @property
    def detail(self) -> str:
        """How the figure was found, for messages (built only when one is written)."""
        if self.source == "metadata":
            return (f"weights {self.weights_gb:.1f} GB + a KV cache of at least "
                    f"{self.kv_gb:.1f} GB for {self.tokens} tokens")
        if self.source == "refusal":
            return f"as a node answered when asked for num_ctx {self.tokens}"
        return f"weights {self.gb:.1f} GB"


def room_gb(node: NodeState) -> float:
    """The most a node could hold (GB): memory + VRAM + swap; 0 when its memory is unknown."""
    if node.memory_total_gb <= 0:
        return 0.0
    vram = (node.gpu or {}).get("vram_total_gb", 0.0)
    return node.memory_total_gb + max(vram, 0.0) + max(node.swap_total_gb, 0.0)


def same_size(a: float, b: float) -> bool:
    """Two reports of a model's size may describe the same build: equal but for the
    heartbeats' rounding, or one of them unknown (the name is the same)."""
    return a <= 0 or b <= 0 or math.isclose(a, b, rel_tol=1e-3)


def need_of(
    node: NodeState, model: str, num_ctx: int, refusals: Iterable[MemoryRefusal], slots: int,
) -> Need:
    """The largest lower bound known of what loading `model` with `num_ctx` (0: the node's
    default, unknown here) takes on `node`, which runs `slots` parallel sequences."""
    size = node.model_sizes_gb.get(model, 0.0)
    best = Need(size, "weights", size) if size > 0 else Need()
    if num_ctx <= 0:
        return best
    shape = node.model_shapes.get(model) if node.model_shapes else None
    if shape is not None and shape.kv_bytes_per_token > 0:
        tokens = min(num_ctx, shape.context_length) if shape.context_length > 0 else num_ctx
        kv = shape.kv_bytes_per_token * tokens * KV_FLOOR / GB
        if size + kv > best.gb:
            best = Need(size + kv, "metadata", size, kv, tokens)
    for refusal in refusals:
        if (refusal.num_ctx <= num_ctx and refusal.slots <= max(slots, 1)
                and same_size(refusal.size_gb, size) and refusal.need_gb > best.gb):
            best = Need(refusal.need_gb, "refusal", size, tokens=refusal.num_ctx)
    return best


def fits(
    node: NodeState, model: str, num_ctx: int, refusals: Iterable[MemoryRefusal], slots: int,
) -> bool:
    """False only when `node` surely cannot load `model` with `num_ctx`."""
    loaded = node.loaded(model)
    if loaded is not None and (
            num_ctx <= 0 or not loaded.context_length or loaded.context_length >= num_ctx):
        return True  # it is there already, with context enough: nothing to load
    room = room_gb(node)
    if room <= 0:
        return True
    if num_ctx <= 0:  # the weights alone: the common case, kept cheap
        return node.model_sizes_gb.get(model, 0.0) <= room
    return need_of(node, model, num_ctx, refusals, slots).gb <= room


@dataclass(slots=True)
class FitReport:
    """Which of a model's nodes surely cannot load it, and the largest need found."""

    ruled_out: list[str] = field(default_factory=list)
    possible: list[str] = field(default_factory=list)
    largest: tuple[str, float] = ("", 0.0)  # the node with the most room, and its room
    need: Need = field(default_factory=Need)  # what the request needs on that node

    @property
    def nowhere(self) -> bool:
        """Every node with the model surely cannot load it (and there is at least one)."""
        return bool(self.ruled_out) and not self.possible

    def message(self, model: str, num_ctx: int) -> str:
        """The client's 400: model, num_ctx, the need and the largest node's room."""
        node_id, room = self.largest
        return (
            f"{model} with num_ctx {num_ctx} needs at least {self.need.gb:.1f} GB of memory "
            f"({self.need.detail}), more than any node has: the largest, {node_id}, "
            f"has {room:.1f} GB. Ask for a smaller num_ctx."
        )


def report(
    nodes: Iterable[NodeState], model: str, num_ctx_for: Callable[[str], int],
    refusals: Iterable[MemoryRefusal], slots_of: Callable[[NodeState], int],
) -> FitReport:
    """Judge every node in `nodes` (those that have the model) for one request."""
    found = FitReport()
    known = tuple(refusals)
    for node in nodes:
        num_ctx = num_ctx_for(node.node_id)
        slots = slots_of(node)
        room = room_gb(node)
        if room > found.largest[1]:
            found.largest = (node.node_id, room)
            found.need = need_of(node, model, num_ctx, known, slots)
        if fits(node, model, num_ctx, known, slots):
            found.possible.append(node.node_id)
        else:
            found.ruled_out.append(node.node_id)
    return found
