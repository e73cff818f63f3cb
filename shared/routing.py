"""The routing contract: what scorer, filter and transform plugins receive and return."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from shared.endpoints import endpoint_for, parse_version
from shared.models import FleetSnapshot, NodeState
from shared.settings import Settings

__all__ = [
    "NO_APP",
    "PRIORITIES",
    "FreeingScorer",
    "LatencyStats",
    "NodeFilter",
    "RouteRequest",
    "RoutingInputs",
    "Scorer",
    "ScoringContext",
    "Transform",
    "TransformNote",
    "node_serves",
]

_encode = msgspec.json.Encoder().encode

NO_APP = "(none)"  # the app of a request with no client-key app and no tags
# X-Herd-Priority -> the band of the fair queue (docs/queueing.md): lower goes first
PRIORITIES: dict[str, int] = {"high": 0, "normal": 1, "low": 2}


@dataclass(slots=True)
class TransformNote:
    """Something a transform did that operators should see: logged and appended as an event."""

    kind: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RouteRequest:
    """One inference request as routing sees it. The body is parsed once; `raw` is what the
    client sent and is forwarded unchanged unless a transform called `set_body`."""

    request_id: str
    api: Literal["ollama", "openai", "anthropic"]
    endpoint: str
    model: str
    body: dict[str, Any]
    raw: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    client_ip: str = ""
    path: str = ""  # the request path: "/api/chat", "/v1/messages", ...
    asked_model: str = ""  # the client's name for the model, when it was an alias
    # The app of the client key the request came with ("" without a key): it tags the
    # request in usage and traces, and is what fairness between apps is keyed by.
    app: str = ""
    tags: list[str] = field(default_factory=list)
    estimated_tokens: int = 0
    # num_ctx the client asked for, kept after context protection strips it from the body
    requested_num_ctx: int = 0
    # Identifies a conversation across its turns (set by a transform); the node that served
    # its last turn holds its prompt in cache.
    session_key: str = ""
    priority: str = "normal"  # X-Herd-Priority: high | normal | low (see PRIORITIES)
    # The body's options are not Ollama's to read (Anthropic Messages, Responses, audio;
    # a multipart form cannot even hold them): context protection leaves it as sent.
    fixed_body: bool = False
    # num_ctx to send to a node instead of the request's own, so that node's loaded copy
    # serves it without a reload (context protection); nodes not listed get the body as is
    node_num_ctx: dict[str, int] = field(default_factory=dict)
    body_changed: bool = False
    notes: list[TransformNote] = field(default_factory=list)
    _num_ctx: int = -1  # the body's num_ctx as num_ctx_for reads it; -1: not read yet

    def set_body(self, body: dict[str, Any]) -> None:
        """Replace the body; it is re-encoded once when forwarded."""
        self.body = body
        self.body_changed = True
        self._num_ctx = -1

    def payload(self) -> bytes:
        """The bytes to forward: the client's own unless a transform changed the body."""
        if self.body_changed:
            self.raw = _encode(self.body)
            self.body_changed = False
        return self.raw

    def payload_for(self, node_id: str) -> bytes:
        """The bytes to forward to `node_id`: `payload()` with that node's num_ctx, if any."""
        num_ctx = self.node_num_ctx.get(node_id) if self.node_num_ctx else None
        if not num_ctx or self.fixed_body:
            return self.payload()
        return _encode({**self.body, "options": {**self.options(), "num_ctx": num_ctx}})

    @property
    def queue_app(self) -> str:
        """Whose request this is for fair queueing: the client key's app, else the first
        tag, else NO_APP."""
        return self.app or (self.tags[0] if self.tags else NO_APP)

    def options(self) -> dict[str, Any]:
        options = self.body.get("options")
        return options if isinstance(options, dict) else {}

    def num_ctx_for(self, node_id: str) -> int:
        """The num_ctx `node_id` would load the model with for this request, 0 for its own
        default. Only Ollama's API carries one: its OpenAI endpoints ignore `options`."""
        if self.node_num_ctx and (num_ctx := self.node_num_ctx.get(node_id)):
            return num_ctx
        if self._num_ctx < 0:  # asked per node by the filters: read the body once
            value = self.options().get("num_ctx") if self.api == "ollama" else None
            # Ollama takes any JSON number (float64) and truncates it; anything else it
            # refuses
            valid = isinstance(value, int | float) and not isinstance(value, bool) and (
                math.isfinite(value))
            self._num_ctx = max(0, int(value)) if valid else 0  # type: ignore[arg-type]
        return self._num_ctx


@dataclass(slots=True)
class LatencyStats:
    """Decaying averages for one node:model, as kept in Redis `keys.latency(node, model)`."""

    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    samples: int = 0


MAX_SESSIONS = 20_000  # conversations a replica remembers; the least recent are forgotten
# How long a node that answered 404 for a path itself is not sent that path again (an
# Ollama upgrade, seen in its heartbeat's version, ends it at once).
UNSERVED_S = 300.0
MAX_UNSERVED = 4096  # (node, path) pairs remembered; a fleet has a few of each


def _version_serves(version: str, path: str) -> bool:
    """Whether an Ollama of `version` serves `path` by the table (shared/endpoints.py); an
    unknown or unreadable version, or a path the table lacks, may."""
    found = _SERVES.get((version, path))
    if found is None:
        endpoint = endpoint_for(path)
        try:
            found = endpoint is None or not version or endpoint.served_by(parse_version(version))
        except ValueError:
            found = True
        if len(_SERVES) < 4096:
            _SERVES[(version, path)] = found
    return found


_SERVES: dict[tuple[str, str], bool] = {}


def node_serves(node: NodeState, path: str, inputs: RoutingInputs) -> bool:
    """Whether `node` may get a request for `path`: its Ollama is new enough (its
    heartbeat's version), and it did not lately answer 404 for the path itself."""
    if not path:
        return True
    return _version_serves(node.ollama_version, path) and not inputs.unserved_by(node, path)


class RoutingInputs:
    """Per-node work and speed figures, refreshed from Redis in the background.

    Between refreshes this replica adds its own starts and finishes, so a burst of requests
    arriving together spreads out instead of piling on the node that looked idle.
    """

    __slots__ = ("_base", "_local", "_node_base", "_node_local", "best", "latency", "load_ms",
                 "queued", "sessions", "unserved")

    def __init__(self) -> None:
        self._base: dict[tuple[str, str], int] = {}
        self._node_base: dict[str, int] = {}
        self._local: dict[tuple[str, str], int] = {}
        self._node_local: dict[str, int] = {}  # _local summed per node: asked per candidate
        self.latency: dict[tuple[str, str], LatencyStats] = {}
        self.queued: dict[str, int] = {}
        # (node, model) -> a cold load's measured duration there (the leader's load-times)
        self.load_ms: dict[tuple[str, str], float] = {}
        # model -> the best figures any node has for it, the yardstick of the latency scorer
        self.best: dict[str, LatencyStats] = {}
        # conversation -> the node that served its last turn (this replica's, bounded)
        self.sessions: OrderedDict[str, str] = OrderedDict()
        # (node, path) -> (its Ollama version then, until when): it answered 404 for the
        # path itself. This replica's own lesson: another replica pays one 404 to learn it.
        self.unserved: dict[tuple[str, str], tuple[str, float]] = {}

    def replace(
        self,
        in_flight: dict[tuple[str, str], int],
        latency: dict[tuple[str, str], LatencyStats],
        queued: dict[str, int],
    ) -> None:
        """Install fresh figures read from Redis (they already include this replica's work)."""
        node_base: dict[str, int] = {}
        for (node_id, _), count in in_flight.items():
            node_base[node_id] = node_base.get(node_id, 0) + count
        self._base, self._node_base = in_flight, node_base
        self._local, self._node_local = {}, {}
        self.latency, self.queued = latency, queued
        best: dict[str, LatencyStats] = {}
        for (_, model), stats in latency.items():
            mark = best.setdefault(model, LatencyStats(latency_ms=float("inf")))
            mark.tokens_per_s = max(mark.tokens_per_s, stats.tokens_per_s)
            if 0 < stats.latency_ms < mark.latency_ms:
                mark.latency_ms = stats.latency_ms
            if stats.ttft_ms and (not mark.ttft_ms or stats.ttft_ms < mark.ttft_ms):
                mark.ttft_ms = stats.ttft_ms
        self.best = best

    def started(self, node_id: str, model: str) -> None:
        key = (node_id, model)
        self._local[key] = self._local.get(key, 0) + 1
        self._node_local[node_id] = self._node_local.get(node_id, 0) + 1

    def finished(self, node_id: str, model: str) -> None:
        key = (node_id, model)
        self._local[key] = self._local.get(key, 0) - 1
        self._node_local[node_id] = self._node_local.get(node_id, 0) - 1

    def in_flight(self, node_id: str, model: str) -> int:
        key = (node_id, model)
        return max(0, self._base.get(key, 0) + self._local.get(key, 0))

    def session_node(self, key: str) -> str | None:
        return self.sessions.get(key) if key else None

    def remember_session(self, key: str, node_id: str) -> None:
        """The node that just served a turn of conversation `key`."""
        sessions = self.sessions
        sessions[key] = node_id
        sessions.move_to_end(key)
        if len(sessions) > MAX_SESSIONS:
            sessions.popitem(last=False)

    def mark_unserved(self, node: NodeState, path: str, now: float | None = None) -> None:
        """`node` answered 404 for `path` itself: skip it for that path for a while."""
        if len(self.unserved) >= MAX_UNSERVED:
            self.unserved.clear()
        until = (time.monotonic() if now is None else now) + UNSERVED_S
        self.unserved[(node.node_id, path)] = (node.ollama_version, until)

    def unserved_by(self, node: NodeState, path: str, now: float | None = None) -> bool:
        if not self.unserved:
            return False
        mark = self.unserved.get((node.node_id, path))
        if mark is None:
            return False
        version, until = mark
        if version != node.ollama_version or (
                time.monotonic() if now is None else now) >= until:
            del self.unserved[(node.node_id, path)]
            return False
        return True

    def node_in_flight(self, node_id: str) -> int:
        return max(0, self._node_base.get(node_id, 0) + self._node_local.get(node_id, 0))


@dataclass(slots=True)
class ScoringContext:
    """What scorers may read besides the node and request: all cached, nothing awaits."""

    settings: Settings
    snapshot: FleetSnapshot
    inputs: RoutingInputs = field(default_factory=RoutingInputs)
    # nodes this request already failed on (retries): the engine skips them
    excluded: frozenset[str] = frozenset()

    def slots(self, node: NodeState) -> int:
        return node.slots(self.settings.default_num_parallel)

    def latency(self, node_id: str, model: str) -> LatencyStats | None:
        return self.inputs.latency.get((node_id, model))


@runtime_checkable
class Scorer(Protocol):
    """Rates a candidate node for a request, 0 (worst) to 1 (best).

    The engine multiplies the rating by the `weight_<name>` setting when one exists, else by
    `weight`, and sums over scorers. Called per request: no I/O, microseconds.

    A scorer that reads the in-flight counts (`context.inputs`) may also define
    `freed(node, request, context) -> float`: the rating it gains per request fewer in
    flight on the node for the model. The replica's counts are up to half a second old; with
    it, the slot acquisition rates the conversation's last node on its live leases.
    """

    name: str
    weight: float

    def score(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> float: ...


@runtime_checkable
class FreeingScorer(Scorer, Protocol):
    """A scorer that also says what its rating gains per request that ended (see Scorer)."""

    def freed(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> float: ...


@runtime_checkable
class NodeFilter(Protocol):
    """Says whether a node may serve a request at all. Called per request and node; no I/O."""

    name: str

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool: ...


@runtime_checkable
class Transform(Protocol):
    """Adjusts a request before routing (in place; `request.set_body` to change the body).

    Anything an operator should see goes into `request.notes`. Called per request; no I/O.
    """

    name: str

    def apply(self, request: RouteRequest, context: ScoringContext) -> None: ...
