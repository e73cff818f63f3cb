"""The retry plan of one request: which model it is served with, which nodes are ruled
out, and when to give up — decisions only, no I/O, so each is testable alone."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.router.nodes import (
    ModelMissing,
    PathMissing,
    RequestRefused,
    TooLarge,
    UpstreamFailure,
)
from shared.endpoints import since
from shared.errors import (
    EndpointUnserved,
    HerdError,
    ModelNotFound,
    NoNodeAvailable,
    RefusedByNode,
    UpstreamError,
)
from shared.fit import fits, room_gb
from shared.models import FleetSnapshot, MemoryRefusal, NodeState, normalize_model
from shared.routing import RouteRequest, ScoringContext, node_serves

__all__ = ["RetryPlan", "pick_model", "unserved_path"]


def pick_model(request: RouteRequest, snapshot: FleetSnapshot) -> None:
    """The asked model, else the first of `fallback_models` the fleet has: never another.

    Rewrites the request's model (and body) for a fallback; ModelNotFound if none is known.
    """
    known = snapshot.models()
    if request.model in known:
        return
    fallbacks = request.body.get("fallback_models")
    if isinstance(fallbacks, list):
        for name in fallbacks:
            if isinstance(name, str) and normalize_model(name) in known:
                request.model = normalize_model(name)
                request.set_body({**request.body, "model": name})
                return
    raise ModelNotFound(asked_model(request))


def asked_model(request: RouteRequest) -> str:
    """The model as the client wrote it (for error messages)."""
    asked = request.body.get("model")
    return asked if isinstance(asked, str) else request.model


def unserved_path(request: RouteRequest, context: ScoringContext) -> EndpointUnserved | None:
    """The error for a request whose model some servable node has, none of them serving
    its path (their Ollama is too old, or answered 404 for the path); None otherwise."""
    nodes = context.snapshot.servable_with(request.model)
    if not nodes or any(node_serves(n, request.path, context.inputs) for n in nodes):
        return None
    first = since(request.path)
    found = sorted({n.ollama_version or "unknown" for n in nodes})
    needs = f"Ollama {first} or later" if first else "an Ollama that serves it"
    return EndpointUnserved(
        f"{request.path} needs {needs}; no node with {request.model} serves it "
        f"(their Ollama: {', '.join(found)})")


@dataclass
class RetryPlan:
    """Nodes tried so far for one request, and whether another may be tried.

    A node that 404s for the model (the registry was stale) is a routing miss: misses are
    bounded by the fleet's size, not by `max_retries`. A node that refuses the request
    itself ends it at once with the node's words (the client's 400), unless the refusal
    is that the model does not fit: then only nodes that may hold it are tried (not
    counted against `max_retries` either: bounded by the fleet's size too), and what the
    node said is kept in `learned` for the registry, so the next such request is answered
    at once. If none is left, the client gets the refusal; if one that might have held it
    failed, that failure.
    """

    max_retries: int
    excluded: list[str] = field(default_factory=list)
    misses: int = 0
    unserved: int = 0  # nodes that answered 404 for the path itself (not retries either)
    reason: str = ""
    too_large: int = 0
    # nodes never tried that cannot succeed after a memory refusal
    ruled_out: list[str] = field(default_factory=list)
    refusal: RequestRefused | None = None
    learned: MemoryRefusal | None = None

    @property
    def retries(self) -> int:
        return len(self.excluded)

    @property
    def skip(self) -> list[str]:
        """Every node the next attempt must not use: tried, or ruled out."""
        return self.excluded + self.ruled_out if self.ruled_out else self.excluded

    def slot_id(self, request_id: str) -> str:
        """Each attempt holds its own slot id, so a late release never frees a newer one."""
        return request_id if not self.excluded else f"{request_id}.{len(self.excluded)}"

    def nothing_to_try(self, request: RouteRequest,
                       context: ScoringContext | None = None) -> HerdError:
        """The error for a request with no candidate left (with `context`, the fleet: an
        endpoint no node with the model serves is said so)."""
        if context is not None and (unserved := unserved_path(request, context)) is not None:
            return unserved
        if self.refusal is not None:
            return RefusedByNode(self.refusal.message, self.refusal.status)
        if self.excluded and self.misses == len(self.excluded):
            return ModelNotFound(asked_model(request))
        if self.excluded:
            return UpstreamError(f"every node failed for {request.model}: {self.reason}")
        pinned = request.headers.get("x-herd-node", "").strip()
        where = f" on node {pinned[:100]!r} (X-Herd-Node)" if pinned else ""
        return NoNodeAvailable(f"no node can serve {request.model}{where} right now")

    def failed(self, node_id: str, failure: UpstreamFailure, request: RouteRequest,
               context: ScoringContext | None = None) -> None:
        """Rule `node_id` out after `failure`. Raises the error the client gets when no
        other node may be tried: the node's own refusal, or UpstreamError once the retry
        budget is spent. `context` (the fleet) decides where a model too large may fit."""
        self.reason = failure.reason
        self.learned = None  # only this failure's
        self.excluded.append(node_id)
        self.misses += isinstance(failure, ModelMissing)
        self.unserved += isinstance(failure, PathMissing)
        # the answer is the latest refusal, unless a node that might have served failed since
        self.refusal = None
        if isinstance(failure, RequestRefused):
            self.refusal = failure
            if not isinstance(failure, TooLarge):
                raise RefusedByNode(failure.message, failure.status)
            self.too_large += 1
            if context is not None:
                self._rule_out(node_id, failure, request, context)
        if len(self.excluded) - self.misses - self.unserved - self.too_large > self.max_retries:
            raise UpstreamError(
                f"{request.model} failed on {len(self.excluded)} node(s); last: {self.reason}")

    def _rule_out(self, node_id: str, failure: TooLarge, request: RouteRequest,
                  context: ScoringContext) -> None:
        """After `node_id` said the model does not fit: skip every node where it cannot."""
        nodes = context.snapshot.nodes
        refusing = nodes.get(node_id)
        if refusing is None:
            return
        slots = context.slots(refusing)
        model = request.model
        num_ctx = request.num_ctx_for(node_id)
        size = refusing.model_sizes_gb.get(model, 0.0)
        if failure.need_gb > 0 and num_ctx > 0:
            self.learned = MemoryRefusal(num_ctx=num_ctx, slots=slots,
                                         need_gb=round(failure.need_gb, 3), size_gb=size)
        for node in nodes.values():
            if node.node_id in self.excluded or node.node_id in self.ruled_out:
                continue
            if not _may_fit(node, refusing, request, context, self.learned):
                self.ruled_out.append(node.node_id)


def _may_fit(node: NodeState, refusing: NodeState, request: RouteRequest,
             context: ScoringContext, learned: MemoryRefusal | None) -> bool:
    """Whether `node` may hold what `refusing` could not (unsure: yes)."""
    model = request.model
    num_ctx = request.num_ctx_for(node.node_id)
    slots = context.slots(node)
    if learned is not None:  # the need is known: the fit filter's own test
        return fits(node, model, num_ctx, (learned,), slots)
    loaded = node.loaded(model)
    if loaded is not None and (not num_ctx or loaded.context_length >= num_ctx):
        return True
    # Without a figure: a node no larger, running as many sequences, would refuse it too.
    room = room_gb(node)
    return not (0 < room <= room_gb(refusing) and slots >= context.slots(refusing))
