"""The inference endpoints (Ollama and OpenAI): parse once, route, take a slot, forward,
stream back, then release the slot and record the trace in one pipeline.

They are plain ASGI handlers rather than Litestar handlers: the hot path then pays for no
signature parsing or dependency injection, and a client that goes away is noticed at once
(a watcher on `receive`) so its upstream request is cancelled and its slot freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

import msgspec
from litestar import asgi
from litestar.handlers.asgi_handlers import ASGIRouteHandler
from litestar.types import HTTPScope, Receive, Scope, Send
from redis.exceptions import RedisError

from services.router.context import RouterContext
from services.router.fleet import metrics
from services.router.fleet.candidates import Candidates
from services.router.fleet.ends import RequestEnd
from services.router.fleet.events import emit
from services.router.fleet.keys import KeyRecord
from services.router.fleet.pulls import pull_for_request
from services.router.fleet.routing import Ranked
from services.router.fleet.stats import REFUSED_STATUSES
from services.router.nodeclient import NodeBroken, NodeResponse
from services.router.nodes import (
    Blame,
    ModelMissing,
    PathMissing,
    RequestRefused,
    UpstreamFailure,
)
from services.router.proxy.aliases import apply_alias
from services.router.proxy.apis import DIALECTS, credential, forward_headers, read_usage
from services.router.proxy.forward import (
    TAIL_BYTES,
    Usage,
    content_type,
    error_tail,
    is_stream,
)
from services.router.proxy.plan import RetryPlan, pick_model
from services.router.proxy.request import (
    ENDPOINTS,
    Api,
    MethodNotAllowed,
    header_map,
    parse_request,
    read_body,
)
from shared.errors import (
    HerdError,
    ModelNotFound,
    NoNodeAvailable,
    StateRebuilding,
    StateUnavailable,
    UpstreamError,
    error_body,
)
from shared.models import FleetSnapshot, MemoryRefusal, Trace, TraceStatus
from shared.routing import NO_APP, RouteRequest

__all__ = ["ENDPOINTS", "ROUTES", "Exchange", "handle"]

log = logging.getLogger("herd.proxy")

_encode = msgspec.json.Encoder().encode
_JSON = b"application/json"
# A client that leaves within this time is noticed when it ends, not at once: cheap, since
# a request that short has little left to cancel.
WATCH_AFTER_S = 0.02

# Control characters cannot go in a header value (the server refuses to send the response).
_CONTROLS = {code: "?" for code in (*range(9), *range(10, 32), 127)}


def _header_value(text: str) -> bytes:
    """A client's text (a model name) made safe for a response header."""
    if text.isprintable():
        return text.encode()
    return text.translate(_CONTROLS).encode("utf-8", "replace")


class Exchange:
    """One client request, from its first byte to its trace."""

    __slots__ = (
        "api",
        "ctx",
        "disconnected",
        "finished",
        "headers",
        "hold",
        "key",
        "path",
        "ranked",
        "receive",
        "request",
        "response",
        "retries",
        "scope",
        "send",
        "served",
        "started",
        "t0",
        "task",
        "trace",
        "usage",
        "watcher",
    )

    def __init__(self, scope: HTTPScope, receive: Receive, send: Send, api: Api) -> None:
        self.t0 = time.perf_counter()
        self.scope, self.receive, self.send, self.api = scope, receive, send, api
        self.ctx: RouterContext = scope["app"].state.herd
        self.path: str = scope["path"]
        self.headers: dict[str, str] = {}
        self.key: KeyRecord | None = None  # the client key the request came with
        self.request: RouteRequest | None = None
        self.trace: Trace | None = None
        self.hold: tuple[str, str, str] | None = None  # node, model, slot id
        self.response: NodeResponse | None = None
        self.ranked: Ranked | None = None
        self.served = ""
        self.retries = 0
        self.usage: Usage | None = None
        self.started = False  # the response's first byte went out
        self.finished = False  # the response is complete: a disconnect now is normal
        self.disconnected = False
        self.task: asyncio.Task[Any] | None = None
        self.watcher: asyncio.Task[None] | None = None

    # --- entry ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.scope["method"] != "POST":
                raise MethodNotAllowed(f"method {self.scope['method']} not allowed on {self.path}")
            self.headers = header_map(self.scope)
            self._authorize()
            raw = await read_body(self.receive, self.headers, self.ctx.settings.max_body_mb)
            if raw is None:
                return  # the client left while sending
            client = self.scope.get("client")
            request = parse_request(raw, self.path, self.headers, client[0] if client else "",
                                    app=self.key.app if self.key is not None else "")
            await self.ctx.client_keys.admit(self.key)
        except HerdError as exc:
            self._refused(exc)
            await self._send_error(exc)
            return
        self.task = asyncio.current_task()
        # The disconnect watcher is a task of its own; a request that ends within
        # WATCH_AFTER_S never needs one (most of a small request's cost is such overhead).
        timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start_watch)
        try:
            await self._route(request)
        except asyncio.CancelledError:
            if not self.disconnected or self.task is None:
                raise
            self.task.uncancel()
            await self._on_disconnect()
        finally:
            self.finished = True
            timer.cancel()
            if self.watcher is not None and not self.watcher.done():
                self.watcher.cancel()

    def _start_watch(self) -> None:
        if not self.finished:
            self.watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """Cancel the request when the client goes away before its response is complete."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                if not self.finished and self.task is not None:
                    self.disconnected = True
                    self.task.cancel()
                return

    def _authorize(self) -> None:
        self.key = self.ctx.client_keys.authenticate(credential(self.headers))

    def _refused(self, exc: HerdError) -> None:
        """Count a refusal at the door (401, 403, 429) for the key's app, or NO_APP
        without a valid key: in-process tallies only, no trace (Stats.refused)."""
        if exc.status_code in REFUSED_STATUSES:
            app = self.key.app if self.key is not None else NO_APP
            self.ctx.stats.refused(app, exc.status_code)
            metrics.refused(app, exc.status_code)

    # --- routing and forwarding ---------------------------------------------------------

    async def _route(self, request: RouteRequest) -> None:
        ctx = self.ctx
        settings = ctx.settings
        self.request = request
        requested = request.model
        self.trace = trace = Trace(
            request_id=request.request_id, model=requested, original_model=requested,
            client_ip=request.client_ip, original_format=self.api, timestamp=time.time(),
            endpoint=self.path, replica_id=ctx.replica_id,
        )
        try:
            aliases = settings.model_aliases
            if aliases and (asked := apply_alias(request, aliases)):
                trace.original_model, requested = asked, request.model  # the client's name
            snapshot = await self._choose_model(request)
            trace.model = self.served = request.model
            trace.fallback_used = request.model != requested
            engine = ctx.routing
            scoring = engine.context(settings, snapshot)
            engine.prepare(request, scoring)
            trace.tags = request.tags
            trace.estimated_tokens = request.estimated_tokens
            place = engine.place(request, settings)
            trace.app = place.app
            plan = RetryPlan(settings.max_retries)
            while True:
                candidates = Candidates(engine, request, scoring, plan.skip,
                                        next(engine.turns))
                if not candidates.ranked:
                    raise plan.nothing_to_try(request, scoring)
                slot_id = plan.slot_id(request.request_id)
                waited = time.perf_counter()
                grant = await ctx.slots.claim(
                    request.model, slot_id, candidates.slots(), settings.queue_timeout,
                    place=place, scores=candidates.scores(),
                    more=None if candidates.widened else candidates.widen,
                )
                trace.queue_wait_ms += (time.perf_counter() - waited) * 1000
                node_id = grant.node_id
                chosen, trace.affinity = engine.granted(
                    request, settings, place, grant, candidates.ranked)
                self.ranked = chosen
                self.hold = (node_id, request.model, slot_id)
                engine.inputs.started(node_id, request.model)
                trace.node_id, trace.score = node_id, chosen.score
                trace.scores_breakdown = chosen.breakdown
                try:
                    await self._forward(chosen)
                    return
                except UpstreamFailure as failure:
                    self.retries = trace.retry_count = plan.retries + 1
                    if not isinstance(failure, RequestRefused):  # no node's failure
                        trace.excluded_nodes = [*trace.excluded_nodes, node_id]
                    try:
                        plan.failed(node_id, failure, request, scoring)
                    finally:
                        await self._attempt_failed(node_id, failure, plan.learned)
        except HerdError as exc:
            if isinstance(exc, ModelNotFound | NoNodeAvailable) and ctx.fleet.rebuilding():
                exc = StateRebuilding()  # Redis came back empty: not yet a real 404
            failed = isinstance(exc, UpstreamError)
            trace.status = TraceStatus.FAILED if failed else TraceStatus.REJECTED
            trace.error_message = exc.message
            await self._send_error(exc)
            await self._finish(ok=True)
        except (RedisError, OSError) as exc:
            log.warning("request failed on Redis", extra={"error": str(exc)})
            trace.status, trace.error_message = TraceStatus.FAILED, f"redis: {exc}"
            await self._send_error(StateUnavailable())
            await self._finish(ok=False)
        except Exception as exc:
            log.exception("request failed", extra={"request_id": request.request_id})
            trace.status, trace.error_message = TraceStatus.FAILED, f"internal: {exc!r}"
            if self.response is not None:
                self.response.close()
            await self._send_error(HerdError(f"internal error: {type(exc).__name__}"))
            await self._finish(ok=True)

    async def _choose_model(self, request: RouteRequest) -> FleetSnapshot:
        """Settle the model (asked, or a fallback; auto_pull if on) and return the snapshot."""
        snapshot = self.ctx.fleet.snapshot()
        try:
            pick_model(request, snapshot)
        except ModelNotFound:
            if not self.ctx.settings.auto_pull:
                raise
            await pull_for_request(self.ctx, request.model)
            snapshot = self.ctx.fleet.snapshot()
            pick_model(request, snapshot)
        return snapshot

    async def _attempt_failed(self, node_id: str, failure: UpstreamFailure,
                              learned: MemoryRefusal | None) -> None:
        """Return the slot, count the failure against whom it blames (nodes.Blame), keep
        what a node said about memory, and note the attempt."""
        assert self.hold is not None and self.request is not None
        _, model, slot_id = self.hold
        self.hold = None
        self.response = None
        self.ctx.routing.inputs.finished(node_id, model)
        refused = isinstance(failure, RequestRefused)
        (log.info if refused else log.warning)(
            "node refused the request" if refused else "node failed", extra={
                "node_id": node_id, "model": model, "reason": failure.reason,
                "blame": str(failure.blame), "request_id": self.request.request_id})
        try:
            await self.ctx.slots.release(node_id, model, slot_id, False)
            if isinstance(failure, PathMissing):  # its Ollama lacks the path: skip it a while
                node = self.ctx.fleet.snapshot().nodes.get(node_id)
                if node is not None:
                    self.ctx.routing.inputs.mark_unserved(node, self.path)
            elif isinstance(failure, ModelMissing):  # the node is fine; its record is not
                await self.ctx.fleet.note_model(node_id, model, None)
            elif failure.blame is not Blame.NOBODY:
                await self.ctx.fleet.record_failure(
                    node_id, failure.reason, model if failure.blame is Blame.MODEL else "")
            if learned is not None:
                await self.ctx.fleet.note_refusal(node_id, model, learned)
            if not refused:  # the client's own error is in its trace, not the fleet's events
                await emit(self.ctx.redis, self.ctx.keys, "retry", node_id=node_id,
                           model=model, reason=failure.reason,
                           request_id=self.request.request_id)
        except RedisError as exc:
            log.warning("could not record a node failure", extra={"error": str(exc)})

    async def _forward(self, chosen: Ranked) -> None:
        assert self.request is not None and self.trace is not None
        settings = self.ctx.settings
        copy = chosen.node.loaded(self.request.model)
        self.trace.context_reload = copy is not None  # a load now would be a reload
        ctype_sent, extra = forward_headers(DIALECTS[self.path], self.request.headers)
        response = await self.ctx.nodes.forward(
            chosen.node, self.path, self.request.payload_for(chosen.node.node_id),
            connect_timeout=settings.connect_timeout, stale_timeout=settings.stale_timeout,
            content_type=ctype_sent, extra=extra,
        )
        self.response = response
        ctype = content_type(response)
        if is_stream(ctype):
            await self._stream(response, ctype)
            return
        try:
            data = await response.read()
        except (NodeBroken, TimeoutError) as exc:
            response.close()
            raise UpstreamFailure(f"{chosen.node.node_id}: {type(exc).__name__} {exc}") from exc
        finally:
            response.release()
        trace = self.trace
        ok = response.status < 400
        usage = read_usage(DIALECTS[self.path], data, stream=False, sse=False) if ok else Usage()
        if ok:
            trace.status = TraceStatus.COMPLETED
            if usage.load_ms or usage.prompt_eval_ms:
                trace.time_to_first_token_ms = round(
                    (time.perf_counter() - self.t0) * 1000 - self._elapsed_gen_ms(usage), 2)
        else:  # a 4xx (nodes.forward raises for the rest): the request's own error
            trace.status = TraceStatus.REJECTED
            trace.error_message = data[:500].decode(errors="replace")
        self._apply_usage(usage)
        self.finished = True
        await self.send({"type": "http.response.start", "status": response.status,
                         "headers": self._headers(ctype, len(data))})
        await self.send({"type": "http.response.body", "body": data, "more_body": False})
        self.started = True
        await self._finish(ok=True)

    @staticmethod
    def _elapsed_gen_ms(usage: Usage) -> float:
        if usage.tokens_per_s and usage.completion_tokens:
            return usage.completion_tokens / usage.tokens_per_s * 1000
        return 0.0

    async def _stream(self, response: NodeResponse, ctype: str) -> None:
        assert self.trace is not None and self.hold is not None
        trace = self.trace
        sse = ctype.startswith("text/event-stream")
        reader = response
        stale = self.ctx.settings.stale_timeout
        try:
            first = await reader.readany()
        except (NodeBroken, TimeoutError) as exc:
            response.close()
            raise UpstreamFailure(f"{self.hold[0]}: {type(exc).__name__} {exc}") from exc
        if not first:
            response.close()
            raise UpstreamFailure(f"{self.hold[0]} closed the stream without output")
        trace.time_to_first_token_ms = round((time.perf_counter() - self.t0) * 1000, 2)
        send = self.send
        await send({"type": "http.response.start", "status": response.status,
                    "headers": self._headers(ctype, None)})
        self.started = True
        await send({"type": "http.response.body", "body": first, "more_body": True})
        previous, last = b"", first
        events = first.count(b"data: ") if sse else 0
        error = ""
        node_id, model, slot_id = self.hold
        async with self.ctx.slots.renewing(node_id, model, slot_id):
            try:
                while True:
                    chunk = await reader.readany()
                    if not chunk:
                        break
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    # only the end is parsed: keep the last two reads, no copying per chunk
                    previous, last = last, chunk
                    if sse:
                        events += chunk.count(b"data: ")
            except TimeoutError:
                error = f"no output from {node_id} for {stale:g} s"
            except NodeBroken as exc:
                error = f"{node_id} broke off the stream: {type(exc).__name__} {exc}"
            finally:
                if error:
                    response.close()
                else:
                    response.release()
        tail = (previous + last)[-TAIL_BYTES:]
        usage = read_usage(DIALECTS[self.path], tail, stream=True, sse=sse, first=first)
        if sse and not usage.completion_tokens:
            usage.completion_tokens = max(0, events - 2)  # role chunk and [DONE] carry no text
        self._apply_usage(usage)
        if error:
            trace.status, trace.error_message = TraceStatus.INCOMPLETE, error
            await send({"type": "http.response.body",
                        "body": error_tail(self.path, error, sse), "more_body": True})
        else:
            trace.status = TraceStatus.COMPLETED
        self.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        await self._finish(ok=not error)

    def _apply_usage(self, usage: Usage) -> None:
        assert self.trace is not None
        trace = self.trace
        trace.prompt_tokens = usage.prompt_tokens
        trace.completion_tokens = usage.completion_tokens
        trace.finish_reason = usage.finish_reason
        trace.load_duration_ms = round(usage.load_ms, 2)
        trace.context_reload = trace.context_reload and usage.load_ms > 0
        self.usage = usage

    def _headers(self, ctype: str, length: int | None) -> list[tuple[bytes, bytes]]:
        assert self.request is not None
        chosen = self.ranked
        headers = [
            (b"content-type", ctype.encode("latin-1")),
            (b"x-fleet-node", (chosen.node.node_id if chosen else "").encode()),
            (b"x-fleet-retries", str(self.retries).encode()),
            (b"x-fleet-score", f"{chosen.score:.2f}".encode() if chosen else b"0"),
            (b"x-fleet-requested-model", _header_value(self.trace.original_model)
             if self.trace else b""),
            (b"x-fleet-served-model", self.served.encode()),
            (b"x-herd-request-id", self.request.request_id.encode()),
            (b"x-fleet-affinity", self.trace.affinity.encode() if self.trace else b"new"),
        ]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        return headers

    # --- endings ------------------------------------------------------------------------

    async def _on_disconnect(self) -> None:
        if self.response is not None:
            self.response.close()  # drops the connection: the node stops generating
        if self.trace is None:
            return
        self.trace.status = TraceStatus.CLIENT_DISCONNECTED
        self.trace.error_message = "client disconnected"
        await self._finish(ok=True)

    async def _finish(self, *, ok: bool) -> None:
        """Release the slot and append the trace and events: one round trip.

        Usage stats and latency averages are counted in process and written in batches
        (Stats.count, RoutingEngine.latency), not per request.
        """
        trace = self.trace
        if trace is None:
            return
        self.trace = None  # exactly once
        ctx = self.ctx
        trace.latency_ms = round((time.perf_counter() - self.t0) * 1000, 2)
        end = RequestEnd(trace)
        hold, self.hold = self.hold, None
        if hold is not None:
            node_id, model, slot_id = hold
            end.release = (node_id, model, slot_id, ok)
            engine = ctx.routing
            engine.inputs.finished(node_id, model)
            if trace.status is TraceStatus.COMPLETED:
                request = self.request
                # Remembered here too with the fleet-wide index: on a large fleet the
                # shortlist then keeps the conversation's node (fleet/candidates.py).
                if request is not None and request.session_key and (
                        ctx.settings.session_affinity != "off"):
                    engine.inputs.remember_session(request.session_key, node_id)
                engine.latency.add(node_id, model, trace.latency_ms,
                                   trace.time_to_first_token_ms,
                                   self.usage.tokens_per_s if self.usage else 0.0)
        ctx.stats.count(trace)
        if self.request is not None:
            end.events = [{"kind": note.kind, "ts": time.time(), "message": note.message,
                           **note.fields} for note in self.request.notes]
        pipe = ctx.fast.pipeline() if ctx.fast else ctx.redis.pipeline(transaction=False)
        ctx.ends.add(pipe, end)
        ctx.client_keys.add_usage(pipe, self.key, trace.prompt_tokens + trace.completion_tokens)
        try:
            await pipe.execute()
        except RedisError as exc:
            ctx.ends.failed(end, exc)  # kept and written again once Redis answers
        metrics.observe(trace)
        if hold is not None and trace.status is TraceStatus.COMPLETED and self.ranked and (
                self.ranked.node.router_failures or hold[1] in self.ranked.node.model_failures):
            with contextlib.suppress(RedisError):
                await ctx.fleet.record_success(hold[0], hold[1])

    async def _send_error(self, exc: HerdError) -> None:
        if self.started:
            return
        self.started = self.finished = True
        body = _encode(error_body(self.path, exc.status_code, exc.message, exc))
        headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        if self.trace is not None or self.request is not None:
            headers.append((b"x-fleet-retries", str(self.retries).encode()))
            requested = self.request.body.get("model") if self.request else ""
            if isinstance(requested, str):
                headers.append((b"x-fleet-requested-model", _header_value(requested)))
        await self.send({"type": "http.response.start", "status": exc.status_code,
                         "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


async def handle(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry of every inference path (its API is looked up from the path)."""
    api, _ = ENDPOINTS[scope["path"]]
    await Exchange(cast(HTTPScope, scope), receive, send, api).run()


def _handler(path: str, api: Api) -> ASGIRouteHandler:
    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        await Exchange(cast(HTTPScope, scope), receive, send, api).run()

    handle.__name__ = "inference_" + path.strip("/").replace("/", "_")
    return asgi(path, copy_scope=False, name=handle.__name__)(handle)


ROUTES = [_handler(path, api) for path, (api, _) in ENDPOINTS.items()]
