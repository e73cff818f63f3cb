"""The HTTP side of herd sim: the aiohttp app, faults at the edge, and the listening socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from services.sim.anthropic_api import anthropic_error
from services.sim.config import SimConfig
from services.sim.engine import Engine, SimError
from services.sim.faults import FaultMode, FaultState
from services.sim.routes import METHOD_NOT_ALLOWED_SINCE, served_routes
from services.sim.stats import Stats
from shared.endpoints import parse_version

__all__ = ["SimServer", "build_app", "error_response", "router_miss", "serve"]

log = logging.getLogger("herd.sim")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPENAI_TYPES = {400: "invalid_request_error", 404: "not_found_error"}
# Paths whose answers are streamed tokens: die_mid_stream and hang act inside them.
_GENERATION = ("/api/chat", "/api/generate", "/v1/chat/completions", "/v1/completions",
               "/v1/responses", "/v1/messages", "/v1/audio/transcriptions", "/v1/audio/speech")
# (and the W3C trace context, so a test sees which span of a trace called the node)
_KEPT_HEADERS = ("anthropic-version", "anthropic-beta", "content-type", "traceparent",
                 "tracestate")
# Bodies that are not JSON: handlers read them themselves (multipart, blob uploads).
_RAW_BODY = ("/api/blobs/", "/v1/audio/transcriptions")


def error_response(path: str, status: int, message: str) -> web.Response:
    """Ollama's {"error": "..."}, OpenAI's error object on /v1/*, Anthropic's on
    /v1/messages."""
    if path.startswith("/v1/messages"):
        body: dict[str, Any] = anthropic_error(status, message)
    elif path.startswith("/v1/"):
        body = {"error": {"message": message,
                                          "type": _OPENAI_TYPES.get(status, "api_error"),
                                          "param": None, "code": None}}
    else:
        body = {"error": message}
    return web.Response(body=msgspec.json.encode(body), status=status,
                        content_type="application/json")


def router_miss(status: int) -> web.Response:
    """What Ollama's HTTP router (gin) answers for a path it has no route for, or a route
    without the method: plain text, unlike every handler's JSON errors."""
    text = b"405 method not allowed" if status == 405 else b"404 page not found"
    return web.Response(body=text, status=status, headers={"Content-Type": "text/plain"})


def reset_transport(transport: asyncio.BaseTransport | None) -> None:
    """Close a connection with a TCP RST, as a crashed or firewalled server's peer sees."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Faults, body parsing (JSON whatever the Content-Type) and error shapes."""
    app = request.app
    path = request.path
    stats: Stats = app["stats"]
    stats.http_requests += 1
    if path.startswith("/sim/"):
        return await handler(request)
    faults: FaultState = app["faults"]
    fault = faults.pick(path)
    try:
        if fault is not FaultMode.NONE:
            stats.faults_triggered += 1
            early = await _early_fault(request, faults, fault)
            if early is not None:
                return early
        miss = request.match_info.http_exception
        if miss is not None:
            return _router_miss(app, miss.status)
        if request.method in ("POST", "DELETE") and not path.startswith(_RAW_BODY):
            raw = await request.read()
            try:
                body = msgspec.json.decode(raw) if raw.strip() else {}
            except msgspec.DecodeError as exc:
                stats.record_body(path, raw.decode(errors="replace"))
                raise SimError(400, f"invalid JSON: {exc}") from exc
            # what an agent SDK sends beside the body, so tests see it reach the node
            sent = {name: request.headers[name] for name in _KEPT_HEADERS
                    if name in request.headers}
            stats.record_body(path, body, sent)
            if not isinstance(body, dict):
                raise SimError(400, "the request body must be a JSON object")
            request["body"] = body
        return await handler(request)
    except SimError as exc:
        return error_response(path, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status in (404, 405) and request.match_info.http_exception is not None:
            return _router_miss(app, exc.status)
        if exc.status >= 400:
            return error_response(path, exc.status, exc.reason)
        raise
    except ConnectionAbortedError:
        # die_mid_stream / hang: the connection ends without a complete response.
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError from None


def _router_miss(app: web.Application, status: int) -> web.Response:
    if status == 405 and app["version"] < METHOD_NOT_ALLOWED_SINCE:
        status = 404
    return router_miss(status)


async def _early_fault(request: web.Request, faults: FaultState,
                       fault: FaultMode) -> web.StreamResponse | None:
    params = faults.params
    if fault is FaultMode.REFUSE:
        reset_transport(request.transport)
        raise asyncio.CancelledError
    if fault is FaultMode.ERROR500:
        return error_response(request.path, params["status"], params["message"])
    if fault is FaultMode.SLOW:
        request["slow"] = params["factor"]
        if params["delay_s"] > 0:
            await asyncio.sleep(params["delay_s"])
        return None
    mid_stream = request.path in _GENERATION and params["after_tokens"] >= 0
    if fault is FaultMode.HANG and not mid_stream:
        await faults.until_changed()
        raise ConnectionAbortedError
    if fault is FaultMode.DIE_MID_STREAM and not mid_stream:
        raise ConnectionAbortedError
    request["fault"] = fault
    return None


def build_app(config: SimConfig) -> web.Application:
    app = web.Application(middlewares=[edge], client_max_size=64 * 1024**2)
    stats = Stats(config.node_name, config.keep_bodies)
    app["config"] = config
    app["stats"] = stats
    app["engine"] = Engine(config, stats)
    app["faults"] = FaultState(config.seed)
    app["listening"] = lambda: True
    app["version"] = parse_version(config.version)
    app.router.add_routes(served_routes(config))
    return app


class SimServer:
    """Owns the listening socket, so that the "refuse" fault can close and reopen it."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.app = build_app(config)
        self.app["refuse"] = self.refuse
        self.app["restore"] = self.restore
        self.app["listening"] = lambda: self._server is not None
        self.runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None,
                                    shutdown_timeout=0.5)
        self._server: asyncio.Server | None = None
        self._restore_timer: asyncio.TimerHandle | None = None
        self.port = config.port

    async def start(self) -> None:
        await self.runner.setup()
        await self.listen()
        if self.config.control_port:
            site = web.TCPSite(self.runner, self.config.host, self.config.control_port)
            await site.start()
        if self.config.fault != "none":
            faults: FaultState = self.app["faults"]
            faults.set(self.config.fault, dict(self.config.fault_params))
            if faults.mode is FaultMode.REFUSE:
                await self.refuse(None, faults.params["seconds"])

    async def listen(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET6 if ":" in self.config.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.port))
        self.port = sock.getsockname()[1]
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        assert self.runner.server is not None
        self._server = await loop.create_server(self.runner.server, sock=sock, backlog=1024)

    async def refuse(self, request: web.Request | None, seconds: float) -> None:
        """Stop listening (new connections are refused) and reset every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        keep = request.transport if request is not None else None
        assert self.runner.server is not None
        for handler in self.runner.server.connections:
            transport = handler.transport
            if transport is None or transport is keep:
                continue
            sockname = transport.get_extra_info("sockname")
            if sockname and sockname[1] == self.port:  # the control port's stay up
                reset_transport(transport)
        if self._restore_timer is not None:
            self._restore_timer.cancel()
        if seconds > 0:
            loop = asyncio.get_running_loop()
            self._restore_timer = loop.call_later(
                seconds, lambda: loop.create_task(self._restore_after()))

    async def _restore_after(self) -> None:
        faults: FaultState = self.app["faults"]
        if faults.mode is FaultMode.REFUSE:
            faults.set("none", {})
        await self.restore()

    async def restore(self) -> None:
        if self._restore_timer is not None:
            self._restore_timer.cancel()
            self._restore_timer = None
        for _ in range(50):
            try:
                await self.listen()
                return
            except OSError as exc:  # the port is briefly taken by someone else
                log.warning("cannot listen again on %s: %s", self.port, exc)
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self.runner.cleanup()


async def _main(config: SimConfig) -> int:
    server = SimServer(config)
    try:
        await server.start()
    except OSError as exc:
        print(f"herd sim: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    models = ",".join(config.model_names())
    print(f"herd sim {config.node_name!r} listening on http://{config.host}:{server.port} "
          f"(models: {models})", flush=True)
    await stop.wait()
    await server.stop()
    return 0


def serve(config: SimConfig) -> int:
    """Run until SIGTERM or SIGINT; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # uvloop comes with uvicorn[standard]; plain asyncio works too
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_main(config))
