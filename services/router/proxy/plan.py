"""The retry plan of one request: which model it is served with, which nodes are ruled
out, and when to give up — decisions only, no I/O, so each is testable alone."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.router.nodes import ModelMissing, UpstreamFailure
from shared.errors import HerdError, ModelNotFound, NoNodeAvailable, UpstreamError
from shared.models import FleetSnapshot, normalize_model
from shared.routing import RouteRequest

__all__ = ["RetryPlan", "pick_model"]


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


@dataclass
class RetryPlan:
    """Nodes tried so far for one request, and whether another may be tried.

    A node that 404s for the model (the registry was stale) is a routing miss: misses are
    bounded by the fleet's size, not by `max_retries`.
    """

    max_retries: int
    excluded: list[str] = field(default_factory=list)
    misses: int = 0
    reason: str = ""

    @property
    def retries(self) -> int:
        return len(self.excluded)

    def slot_id(self, request_id: str) -> str:
        """Each attempt holds its own slot id, so a late release never frees a newer one."""
        return request_id if not self.excluded else f"{request_id}.{len(self.excluded)}"

    def nothing_to_try(self, request: RouteRequest) -> HerdError:
        """The error for a request with no candidate left."""
        if self.excluded and self.misses == len(self.excluded):
            return ModelNotFound(asked_model(request))
        if self.excluded:
            return UpstreamError(f"every node failed for {request.model}: {self.reason}")
        pinned = request.headers.get("x-herd-node", "").strip()
        where = f" on node {pinned[:100]!r} (X-Herd-Node)" if pinned else ""
        return NoNodeAvailable(f"no node can serve {request.model}{where} right now")

    def failed(self, node_id: str, failure: UpstreamFailure, model: str) -> None:
        """Rule `node_id` out after `failure`; UpstreamError if the retry budget is spent."""
        self.reason = failure.reason
        self.excluded.append(node_id)
        self.misses += isinstance(failure, ModelMissing)
        if len(self.excluded) - self.misses > self.max_retries:
            raise UpstreamError(
                f"{model} failed on {len(self.excluded)} node(s); last: {self.reason}")
