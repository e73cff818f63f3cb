"""The inference endpoints (Ollama and OpenAI): parse once, route, take a slot, forward,
stream back, then release the slot and record the trace in one pipeline.

They are plain ASGI handlers rather than Litestar handlers: the hot path then pays for no
signature parsing or dependency injection, and a client that goes away is noticed at once
(a watcher on `receive`) so its upstream request is cancelled and its slot freed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from litestar import asgi
from litestar.handlers.asgi_handlers import ASGIRouteHandler
from litestar.types import HTTPScope, Receive, Scope, Send
from redis.exceptions import RedisError

from services.router.context import RouterContext
from services.router.fleet.dispatch import Dispatch
from services.router.nodes import UpstreamFailure
from services.router.proxy.aliases import apply_alias
from services.router.proxy.apis import DIALECTS, credential, forward_headers
from services.router.proxy.forward import Relay
from services.router.proxy.plan import RetryPlan, pick_model
from services.router.proxy.request import (
    ENDPOINTS,
    MethodNotAllowed,
    header_map,
    parse_request,
    read_body,
)
from shared.errors import HerdError, ModelNotFound, StateUnavailable
from shared.models import FleetSnapshot
from shared.routing import RouteRequest

if TYPE_CHECKING:
    from services.router.telemetry import RequestSpans

__all__ = ["ENDPOINTS", "ROUTES", "Exchange", "handle"]

log = logging.getLogger("herd.proxy")

# A client that leaves within this time is noticed when it ends, not at once: cheap, since
# a request that short has little left to cancel.
WATCH_AFTER_S = 0.02


class Exchange:
    """One client request, from its first byte to its trace."""

    __slots__ = ("ctx", "disconnected", "dispatch", "receive", "relay", "scope", "spans",
                 "started", "task", "watcher")

    def __init__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        self.started = time.perf_counter()
        self.scope, self.receive = scope, receive
        self.ctx: RouterContext = scope["app"].state.herd
        self.relay = Relay(send, scope["path"])
        self.dispatch: Dispatch | None = None  # once the body is read and admitted
        self.disconnected = False
        self.task: asyncio.Task[Any] | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.spans: RequestSpans | None = None  # OpenTelemetry's, when tracing is on

    # --- entry ------------------------------------------------------------------------

    async def run(self) -> None:
        ctx, scope, path = self.ctx, self.scope, self.scope["path"]
        key = None  # the client key the request came with
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"method {scope['method']} not allowed on {path}")
            headers = header_map(scope)
            key = ctx.client_keys.authenticate(credential(headers))
            raw = await read_body(self.receive, headers, ctx.settings.max_body_mb)
            if raw is None:
                return  # the client left while sending
            client = scope.get("client")
            request = parse_request(raw, path, headers, client[0] if client else "",
                                    app=key.app if key is not None else "")
            if ctx.settings.model_aliases:  # before the trace: it keeps both names
                apply_alias(request, ctx.settings.model_aliases)
            await ctx.client_keys.admit(key)
        except HerdError as exc:
            ctx.dispatcher.refused(key, exc)
            await self.relay.error(exc)
            return
        self.dispatch = ctx.dispatcher.begin(
            request, api=ENDPOINTS[path][0], endpoint=path, started=self.started, key=key)
        if ctx.tracing is not None:  # telemetry/: the request's spans
            assert self.dispatch.trace is not None
            self.spans = ctx.tracing.request(headers, path, request,
                                             trace=self.dispatch.trace, t0=self.started)
        self.task = asyncio.current_task()
        # The disconnect watcher is a task of its own; a request that ends within
        # WATCH_AFTER_S never needs one (most of a small request's cost is such overhead).
        timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start_watch)
        try:
            await self._route(self.dispatch)
        except asyncio.CancelledError:
            if not self.disconnected or self.task is None:
                raise
            self.task.uncancel()
            self.relay.close()  # drops the connection: the node stops generating
            self.dispatch.disconnected()
            await self.dispatch.end(ok=True)
        finally:
            self.relay.finished = True
            timer.cancel()
            if self.watcher is not None and not self.watcher.done():
                self.watcher.cancel()
            if self.spans is not None:  # last: the request's own clean-up comes first
                self.spans.end(self.relay.status)

    def _start_watch(self) -> None:
        if not self.relay.finished:
            self.watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """Cancel the request when the client goes away before its response is complete."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                if not self.relay.finished and self.task is not None:
                    self.disconnected = True
                    self.task.cancel()
                return

    # --- routing and forwarding ---------------------------------------------------------

    async def _route(self, dispatch: Dispatch) -> None:
        """Settle the model, then try candidates until one node answers or the plan gives
        up; every outcome ends in the dispatch's one end."""
        ctx, request, relay = self.ctx, dispatch.request, self.relay
        settings = ctx.settings
        try:
            dispatch.route(await self._choose_model(request))
            plan = RetryPlan(settings.max_retries)
            while True:
                candidates = dispatch.candidates(plan.skip)
                if not candidates.ranked:
                    raise plan.nothing_to_try(request, dispatch.scoring)
                chosen = await dispatch.claim(candidates, plan.slot_id(request.request_id))
                node_id = chosen.node.node_id
                if self.spans is not None:
                    self.spans.waited(node_id)
                try:
                    ctype, extra = forward_headers(DIALECTS[request.path], request.headers)
                    reply = await ctx.nodes.forward(
                        chosen.node, self.scope["path"], request.payload_for(node_id),
                        connect_timeout=settings.connect_timeout,
                        stale_timeout=settings.stale_timeout, content_type=ctype,
                        extra=extra if self.spans is None else
                        extra + self.spans.calling(chosen.node),
                    )
                    ok, tokens_per_s = await relay.answer(reply, dispatch)
                except UpstreamFailure as failure:
                    if self.spans is not None:
                        self.spans.call_failed(failure)
                    relay.reply = None
                    try:
                        plan.failed(node_id, failure, request, dispatch.scoring)
                    finally:
                        await dispatch.failed(node_id, failure, plan.learned)
                    continue
                await dispatch.end(ok=ok, tokens_per_s=tokens_per_s)
                return
        except HerdError as exc:
            exc = dispatch.refused(exc)
            if self.spans is not None:
                self.spans.refused(exc)
            await relay.error(exc, dispatch)
            await dispatch.end(ok=True)
        except (RedisError, OSError) as exc:
            log.warning("request failed on Redis", extra={"error": str(exc)})
            dispatch.broke(f"redis: {exc}")
            await relay.error(StateUnavailable(), dispatch)
            await dispatch.end(ok=False)
        except Exception as exc:
            log.exception("request failed", extra={"request_id": request.request_id})
            dispatch.broke(f"internal: {exc!r}")
            relay.close()
            await relay.error(HerdError(f"internal error: {type(exc).__name__}"), dispatch)
            await dispatch.end(ok=True)

    async def _choose_model(self, request: RouteRequest) -> FleetSnapshot:
        """Settle the model (asked, or a fallback; auto_pull if on) and return the snapshot."""
        snapshot = self.ctx.fleet.snapshot()
        try:
            pick_model(request, snapshot)
        except ModelNotFound:
            if not self.ctx.settings.auto_pull:
                raise
            await self.ctx.pulls.for_request(request.model)
            snapshot = self.ctx.fleet.snapshot()
            pick_model(request, snapshot)
        return snapshot


async def handle(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry of every inference path (its API is looked up from the path)."""
    await Exchange(cast(HTTPScope, scope), receive, send).run()


def _handler(path: str) -> ASGIRouteHandler:
    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        await Exchange(cast(HTTPScope, scope), receive, send).run()

    handle.__name__ = "inference_" + path.strip("/").replace("/", "_")
    return asgi(path, copy_scope=False, name=handle.__name__)(handle)


ROUTES = [_handler(path) for path in ENDPOINTS]
