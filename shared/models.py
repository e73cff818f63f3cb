"""The fleet as the router sees it: nodes, their loaded models, and the snapshot routing reads."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = [
    "TRACE_FIELD",
    "FleetSnapshot",
    "LoadedModel",
    "MemoryRefusal",
    "ModelFailures",
    "ModelShape",
    "NodeState",
    "NodeStatus",
    "Trace",
    "TraceStatus",
    "decode_trace",
    "encode_trace",
    "normalize_model",
    "valid_model_name",
]


class NodeStatus(enum.StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


# Ollama's names: [host/][namespace/]model[:tag], or a digest after '@'. Anything else (a
# space, '<', a control character that would split a header, '..') is refused before it
# reaches a node, a header or a Redis key.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")


def valid_model_name(name: str) -> bool:
    """Whether `name` (already stripped) has the shape of an Ollama model name."""
    return _MODEL_NAME.fullmatch(name) is not None and ".." not in name and "//" not in name


def normalize_model(name: str) -> str:
    """Ollama's rule: a name without a tag means `:latest`."""
    name = name.strip()
    if not name:
        return name
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


class LoadedModel(msgspec.Struct, frozen=True):
    """A model resident in a node's memory, as its Ollama's /api/ps reports it."""

    name: str
    size_gb: float = 0.0
    context_length: int = 0
    requests_active: int = 0
    expires_at: str = ""


class ModelShape(msgspec.Struct, frozen=True):
    """What a model's own metadata (Ollama's /api/show model_info) says about its memory:
    the KV cache bytes one token of context takes at f16 across all layers (K and V), and
    the context it was trained for (Ollama clamps a larger num_ctx to it). Sent by the
    agent only for plain full-attention models, where the figure is sure."""

    kv_bytes_per_token: int = 0
    context_length: int = 0


class MemoryRefusal(msgspec.Struct, frozen=True):
    """A node's own word that a model did not fit: "model requires more system memory
    (need) ..." for a load with `num_ctx` and `slots` parallel sequences, while the model
    weighed `size_gb` (a re-pulled model of another size makes the figure stale)."""

    num_ctx: int
    slots: int
    need_gb: float
    size_gb: float = 0.0
    at: float = 0.0  # when it was said (epoch seconds)


class ModelFailures(msgspec.Struct, frozen=True):
    """Failures the routers saw on one model of a node since its last success there, and
    when the last one happened (Redis time)."""

    count: int = 0
    last: float = 0.0


class NodeState(msgspec.Struct, frozen=True):
    """One node, built from its last heartbeat plus what the routers observed."""

    node_id: str
    ollama_url: str
    status: NodeStatus = NodeStatus.ONLINE
    ollama_up: bool = True
    draining: bool = False
    last_seen: float = 0.0
    cpu_pct: float = 0.0
    cores: int = 0
    memory_total_gb: float = 0.0
    memory_used_gb: float = 0.0
    memory_available_gb: float = 0.0
    memory_pressure: str = "normal"
    swap_total_gb: float = 0.0
    models_loaded: tuple[LoadedModel, ...] = ()
    models_available: tuple[str, ...] = ()
    model_sizes_gb: dict[str, float] = msgspec.field(default_factory=dict)
    model_shapes: dict[str, ModelShape] = msgspec.field(default_factory=dict)
    num_parallel: int = 0
    max_loaded_models: int = 0
    ollama_version: str = ""
    agent_version: str = ""
    router_failures: int = 0
    # Router-observed, kept in the node's registry hash beside `failures` (not in its
    # heartbeat state): failures per model, and what the node said did not fit.
    model_failures: dict[str, ModelFailures] = msgspec.field(default_factory=dict)
    memory_refusals: dict[str, MemoryRefusal] = msgspec.field(default_factory=dict)
    gpu: dict[str, float] | None = None
    disk_total_gb: float = 0.0
    disk_available_gb: float = 0.0
    requests_active: int = 0
    lan_ip: str = ""
    ollama_error: str = ""

    @property
    def servable(self) -> bool:
        """May receive new requests: seen recently, Ollama answering, not draining."""
        return self.status is NodeStatus.ONLINE and self.ollama_up and not self.draining

    def loaded(self, model: str) -> LoadedModel | None:
        for loaded in self.models_loaded:
            if loaded.name == model:
                return loaded
        return None

    def has_model(self, model: str) -> bool:
        return model in self.models_available or self.loaded(model) is not None

    def model_size_gb(self, model: str) -> float:
        loaded = self.loaded(model)
        if loaded is not None and loaded.size_gb:
            return loaded.size_gb
        return self.model_sizes_gb.get(model, 0.0)

    def slots(self, default: int) -> int:
        """Parallel requests per model: the node's own figure, else the fleet default."""
        return self.num_parallel if self.num_parallel > 0 else default


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """Every known node at one moment; replicas cache it and refresh on change."""

    nodes: dict[str, NodeState] = field(default_factory=dict)
    taken_at: float = 0.0
    # Per-model answers of servable_with: a snapshot never changes, and the hot path asks
    # the same question for every request.
    _servable: dict[str, tuple[NodeState, ...]] = field(
        default_factory=dict, compare=False, repr=False)

    _warm: dict[str, tuple[tuple[NodeState, ...], tuple[NodeState, ...]]] = field(
        default_factory=dict, compare=False, repr=False)
    _models: list[frozenset[str]] = field(default_factory=list, compare=False, repr=False)
    _refusals: dict[str, tuple[MemoryRefusal, ...]] = field(
        default_factory=dict, compare=False, repr=False)

    def servable_with(self, model: str) -> list[NodeState]:
        return list(self._servable_with(model))

    def _servable_with(self, model: str) -> tuple[NodeState, ...]:
        found = self._servable.get(model)
        if found is None:
            found = tuple(n for n in self.nodes.values() if n.servable and n.has_model(model))
            if len(self._servable) < 1024:  # clients can ask for any name; stay bounded
                self._servable[model] = found
        return found

    def warm_and_cold(
        self, model: str
    ) -> tuple[tuple[NodeState, ...], tuple[NodeState, ...]]:
        """The servable nodes with `model`: those that have it loaded, and the others."""
        found = self._warm.get(model)
        if found is None:
            nodes = self._servable_with(model)
            found = (tuple(n for n in nodes if n.loaded(model) is not None),
                     tuple(n for n in nodes if n.loaded(model) is None))
            if len(self._warm) < 1024:
                self._warm[model] = found
        return found

    def refusals(self, model: str) -> tuple[MemoryRefusal, ...]:
        """What any node said about `model` not fitting (a model's need does not depend on
        the node that measured it); cached like the other per-model answers."""
        found = self._refusals.get(model)
        if found is None:
            found = tuple(r for n in self.nodes.values()
                          if (r := n.memory_refusals.get(model)) is not None)
            if len(self._refusals) < 1024:
                self._refusals[model] = found
        return found

    def models(self) -> frozenset[str]:
        """Every model some node has, loaded or on disk (asked per request: cached)."""
        if not self._models:
            names: set[str] = set()
            for node in self.nodes.values():
                names.update(node.models_available)
                names.update(m.name for m in node.models_loaded)
            self._models.append(frozenset(names))
        return self._models[0]


class TraceStatus(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    RETRIED = "retried"
    INCOMPLETE = "incomplete"
    CLIENT_DISCONNECTED = "client_disconnected"
    REJECTED = "rejected"


class Trace(msgspec.Struct, kw_only=True):
    """One request's record: ollama-herd's columns of `request_traces` (docs/queueing.md)
    plus a few extras.

    Appended to the traces stream once per request; the recorder copies it to latency.db.
    """

    request_id: str
    model: str
    original_model: str
    node_id: str = ""
    score: float = 0.0
    scores_breakdown: dict[str, float] = msgspec.field(default_factory=dict)
    status: TraceStatus = TraceStatus.COMPLETED
    latency_ms: float = 0.0
    time_to_first_token_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retry_count: int = 0
    fallback_used: bool = False
    excluded_nodes: list[str] = msgspec.field(default_factory=list)
    client_ip: str = ""
    original_format: str = "ollama"  # "ollama" | "openai"
    error_message: str = ""
    timestamp: float = 0.0  # epoch seconds, when the request arrived
    tags: list[str] = msgspec.field(default_factory=list)
    finish_reason: str = ""
    estimated_tokens: int = 0
    # extras, not in ollama-herd's table
    endpoint: str = ""
    queue_wait_ms: float = 0.0
    load_duration_ms: float = 0.0  # > 0 means the node cold-loaded the model
    replica_id: str = ""
    # the load was a reload of a copy the node already had (its context or options differed)
    context_reload: bool = False
    affinity: str = ""  # hit | moved | new: where the conversation's last turn went
    app: str = ""  # whose share of the fair queue the request used


# A trace's field in a stream entry of the traces stream (the router writes, the recorder
# and the dashboard read).
TRACE_FIELD = "t"
_trace_encoder = msgspec.json.Encoder()
_trace_decoder = msgspec.json.Decoder(Trace)


def encode_trace(trace: Trace) -> bytes:
    return _trace_encoder.encode(trace)


def decode_trace(fields: dict[Any, Any]) -> Trace | None:
    """The Trace in a stream entry, or None if the entry is not one (foreign or corrupt)."""
    raw = fields.get(TRACE_FIELD)
    if raw is None:
        raw = fields.get(TRACE_FIELD.encode())
    if raw is None:
        return None
    try:
        return _trace_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
