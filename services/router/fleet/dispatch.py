"""A request's one partner in fleet state: its candidates, the slot it is granted, its failed
attempts and its end.

The request path (proxy/exchange.py) reads and answers the client and plans the retries;
everything the fleet keeps of a request in between lives here, in one `Dispatch` per
request: its trace, its scoring context and place in the fair queue, the slot it holds
and the node it holds it on. So the request path talks to fleet state through this one
object, and each step of it (transforms, ranking, the slot, the in-flight count, the
remembered conversation, the latency figures, the end's one round trip) has one caller.
"""

from __future__ import annotations

import contextlib
import logging
import time

from redis.exceptions import RedisError

from services.router.fleet import metrics
from services.router.fleet.candidates import Candidates
from services.router.fleet.client_keys import ClientKeys, KeyRecord
from services.router.fleet.core import Core
from services.router.fleet.ends import RequestEnd, RequestEnds
from services.router.fleet.events import emit, event
from services.router.fleet.registry import Registry
from services.router.fleet.routing import Ranked, RoutingEngine
from services.router.fleet.slots import Place, SlotManager
from services.router.fleet.stats import REFUSED_STATUSES, Stats
from services.router.nodes import (
    Blame,
    ModelMissing,
    PathMissing,
    RequestRefused,
    UpstreamFailure,
)
from shared.errors import (
    HerdError,
    ModelNotFound,
    NoNodeAvailable,
    StateRebuilding,
    UpstreamError,
)
from shared.models import FleetSnapshot, MemoryRefusal, Trace, TraceStatus
from shared.routing import NO_APP, RouteRequest, ScoringContext

__all__ = ["Dispatch", "Dispatcher"]

log = logging.getLogger("herd.proxy")  # the request path's logger: one name to filter a request by


class Dispatcher:
    """The fleet parts a request touches, and the start of each request's Dispatch."""

    def __init__(self, core: Core, *, fleet: Registry, slots: SlotManager, ends: RequestEnds,
                 routing: RoutingEngine, stats: Stats, client_keys: ClientKeys) -> None:
        self.core, self.fleet, self.slots, self.ends = core, fleet, slots, ends
        self.routing, self.stats, self.client_keys = routing, stats, client_keys

    def begin(self, request: RouteRequest, *, api: str, endpoint: str, started: float,
              key: KeyRecord | None) -> Dispatch:
        """The Dispatch of a request whose body was read; `started` is its perf_counter
        start, which its latency and time to first token count from."""
        return Dispatch(self, request, api=api, endpoint=endpoint, started=started, key=key)

    def refused(self, key: KeyRecord | None, exc: HerdError) -> None:
        """Count a refusal at the door (401, 403, 429) for the key's app, or NO_APP
        without a valid key: in-process tallies only, no trace (Stats.refused)."""
        if exc.status_code in REFUSED_STATUSES:
            app = key.app if key is not None else NO_APP
            self.stats.refused(app, exc.status_code)
            metrics.refused(app, exc.status_code)


class Dispatch:
    """One request in fleet state, from its routing to its end (which runs once)."""

    __slots__ = ("_parts", "chosen", "hold", "key", "place", "request", "retries", "scoring",
                 "started", "trace")

    def __init__(self, parts: Dispatcher, request: RouteRequest, *, api: str, endpoint: str,
                 started: float, key: KeyRecord | None) -> None:
        self._parts = parts
        self.request, self.key, self.started = request, key, started
        self.trace: Trace | None = Trace(
            request_id=request.request_id, model=request.model,
            original_model=request.asked_model or request.model,  # the name before an alias
            client_ip=request.client_ip, original_format=api, timestamp=time.time(),
            endpoint=endpoint, replica_id=parts.core.replica_id,
        )
        self.scoring: ScoringContext | None = None
        self.place = Place()
        self.hold: tuple[str, str, str] | None = None  # node, model, slot id
        self.chosen: Ranked | None = None  # the candidate of the latest slot
        self.retries = 0  # attempts that failed (X-Fleet-Retries)

    def route(self, snapshot: FleetSnapshot) -> None:
        """Once the model is settled: the scoring context, the transforms, the queue place."""
        parts, request, trace = self._parts, self.request, self._trace
        settings = parts.core.settings
        # a fallback replaced the model asked for (after an alias: the alias's model)
        trace.fallback_used = request.model != trace.model
        trace.model = request.model
        self.scoring = parts.routing.context(settings, snapshot)
        parts.routing.prepare(request, self.scoring)
        trace.tags = request.tags
        trace.estimated_tokens = request.estimated_tokens
        self.place = parts.routing.place(request, settings)
        trace.app = self.place.app

    def candidates(self, excluded: list[str]) -> Candidates:
        """The ranked candidates of the next attempt, without the `excluded` nodes."""
        assert self.scoring is not None, "route() first"
        engine = self._parts.routing
        return Candidates(engine, self.request, self.scoring, excluded, next(engine.turns))

    async def claim(self, candidates: Candidates, slot_id: str) -> Ranked:
        """Take a slot among `candidates` (or wait in the fleet-wide queue for one) under
        `slot_id`, and return the candidate it was granted on."""
        parts, request, trace = self._parts, self.request, self._trace
        settings = parts.core.settings
        waited = time.perf_counter()
        grant = await parts.slots.claim(
            request.model, slot_id, candidates.slots(), settings.queue_timeout,
            place=self.place, scores=candidates.scores(),
            more=None if candidates.widened else candidates.widen,
        )
        trace.queue_wait_ms += (time.perf_counter() - waited) * 1000
        node_id = grant.node_id
        chosen, trace.affinity = parts.routing.granted(
            request, settings, self.place, grant, candidates.ranked)
        self.chosen = chosen
        self.hold = (node_id, request.model, slot_id)
        parts.routing.inputs.started(node_id, request.model)
        trace.node_id, trace.score = node_id, chosen.score
        trace.scores_breakdown = chosen.breakdown
        # a load now would be a reload of the copy the node has (the answer tells)
        trace.context_reload = chosen.node.loaded(request.model) is not None
        return chosen

    def renewing(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Keep the held slot's lease alive while an answer streams."""
        assert self.hold is not None
        return self._parts.slots.renewing(*self.hold)

    async def failed(self, node_id: str, failure: UpstreamFailure,
                     learned: MemoryRefusal | None) -> None:
        """An attempt failed: note it in the trace, return the slot, count the failure
        against whom it blames (nodes.Blame), keep what a node said about memory, and
        note the retry in the fleet's events."""
        trace = self._trace
        self.retries = trace.retry_count = self.retries + 1
        if not isinstance(failure, RequestRefused):  # no node's failure
            trace.excluded_nodes = [*trace.excluded_nodes, node_id]
        assert self.hold is not None
        _, model, slot_id = self.hold
        self.hold = None
        parts = self._parts
        parts.routing.inputs.finished(node_id, model)
        refused = isinstance(failure, RequestRefused)
        (log.info if refused else log.warning)(
            "node refused the request" if refused else "node failed", extra={
                "node_id": node_id, "model": model, "reason": failure.reason,
                "blame": str(failure.blame), "request_id": self.request.request_id})
        fleet = parts.fleet
        try:
            await parts.slots.release(node_id, model, slot_id, False)
            if isinstance(failure, PathMissing):  # its Ollama lacks the path: skip it a while
                if self.chosen is not None:
                    parts.routing.inputs.mark_unserved(self.chosen.node, self.request.path)
            elif isinstance(failure, ModelMissing):  # the node is fine; its record is not
                await fleet.note_model(node_id, model, None)
            elif failure.blame is not Blame.NOBODY:
                await fleet.record_failure(
                    node_id, failure.reason, model if failure.blame is Blame.MODEL else "")
            if learned is not None:
                await fleet.note_refusal(node_id, model, learned)
            if not refused:  # the client's own error is in its trace, not the fleet's events
                await emit(parts.core.redis, parts.core.keys, "retry", node_id=node_id,
                           model=model, reason=failure.reason,
                           request_id=self.request.request_id)
        except RedisError as exc:
            log.warning("could not record a node failure", extra={"error": str(exc)})

    def refused(self, exc: HerdError) -> HerdError:
        """The request ends with `exc`: note it in the trace; returns the error the client
        gets (a 404 or 503 while Redis is being rebuilt is not yet a real one)."""
        if isinstance(exc, ModelNotFound | NoNodeAvailable) and self._parts.fleet.rebuilding():
            exc = StateRebuilding()
        trace = self._trace
        trace.status = TraceStatus.FAILED if isinstance(exc, UpstreamError) else \
            TraceStatus.REJECTED
        trace.error_message = exc.message
        return exc

    def broke(self, message: str) -> None:
        """The request ends on an error of Redis or of the router itself."""
        trace = self._trace
        trace.status, trace.error_message = TraceStatus.FAILED, message

    def disconnected(self) -> None:
        """The client left before its answer was complete."""
        trace = self.trace
        if trace is None:
            return
        trace.status = TraceStatus.CLIENT_DISCONNECTED
        trace.error_message = "client disconnected"

    async def end(self, *, ok: bool, tokens_per_s: float = 0.0) -> None:
        """Release the slot and append the trace and events: one round trip, once.

        Usage stats and latency averages are counted in process and written in batches
        (Stats.count, RoutingEngine.latency), not per request.
        """
        trace = self.trace
        if trace is None:
            return
        self.trace = None  # exactly once
        parts = self._parts
        core = parts.core
        trace.latency_ms = round((time.perf_counter() - self.started) * 1000, 2)
        end = RequestEnd(trace)
        hold, self.hold = self.hold, None
        request = self.request
        if hold is not None:
            node_id, model, slot_id = hold
            end.release = (node_id, model, slot_id, ok)
            engine = parts.routing
            engine.inputs.finished(node_id, model)
            if trace.status is TraceStatus.COMPLETED:
                # Remembered here too with the fleet-wide index: on a large fleet the
                # shortlist then keeps the conversation's node (fleet/candidates.py).
                if request.session_key and core.settings.session_affinity != "off":
                    engine.inputs.remember_session(request.session_key, node_id)
                engine.latency.add(node_id, model, trace.latency_ms,
                                   trace.time_to_first_token_ms, tokens_per_s)
        parts.stats.count(trace)
        end.events = [event(note.kind, message=note.message, **note.fields)
                      for note in request.notes]
        pipe = core.fast.pipeline() if core.fast else core.redis.pipeline(transaction=False)
        parts.ends.add(pipe, end)
        parts.client_keys.add_usage(pipe, self.key,
                                    trace.prompt_tokens + trace.completion_tokens)
        try:
            await pipe.execute()
        except RedisError as exc:
            parts.ends.failed(end, exc)  # kept and written again once Redis answers
        metrics.observe(trace)
        chosen = self.chosen
        if hold is not None and trace.status is TraceStatus.COMPLETED and chosen and (
                chosen.node.router_failures or hold[1] in chosen.node.model_failures):
            with contextlib.suppress(RedisError):
                await parts.fleet.record_success(hold[0], hold[1])

    @property
    def _trace(self) -> Trace:
        assert self.trace is not None, "the request has ended"
        return self.trace
