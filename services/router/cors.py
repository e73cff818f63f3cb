"""CORS for browser clients: preflights answered, and answers a web page may read.

One ASGI layer in front of the whole router, the inference fast paths included (they skip
Litestar, so its CORS config would miss them). It exists only when FLEET_CORS_ORIGINS is
set: with no origin configured the served app is the very same object, and a request
pays nothing. With origins set, a request pays one scan of its headers for `origin`
(benchmarks/cors.py measures it); browsers send that header, other clients do not.

Only the client APIs are covered: `/` (Ollama's probe), `/api/*`, `/v1/*`. The fleet,
dashboard, settings and key endpoints are for the operator's tools, not web pages.

A preflight from an allowed origin gets 204 with the methods and the request headers
allowed: those the agent SDKs send (`authorization`, `x-api-key`, `anthropic-version`,
`anthropic-beta`, `content-type`, the OpenAI and Anthropic SDKs' `x-stainless-*`) and
Herd's own `x-herd-*`. A preflight from any other origin gets 403 in the API's error
shape. A plain request from an origin not allowed is served without CORS headers: the
browser then keeps the answer from the page (refusing it outright would also refuse the
router's own pages, whose same-origin requests carry an Origin too).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import cast

import msgspec
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)

from shared.errors import error_body

__all__ = ["ALLOWED_HEADERS", "EXPOSED_HEADERS", "Origins", "is_cors_path", "with_cors"]

ALLOWED_HEADERS = frozenset({
    "accept", "authorization", "content-type", "user-agent", "x-requested-with",
    "x-api-key", "anthropic-version", "anthropic-beta", "openai-beta",
    "openai-organization", "openai-project",
})
ALLOWED_PREFIXES = ("x-herd-", "x-stainless-", "anthropic-")
EXPOSED_HEADERS = (
    "X-Fleet-Node, X-Fleet-Retries, X-Fleet-Score, X-Fleet-Requested-Model, "
    "X-Fleet-Served-Model, X-Herd-Request-Id, X-Herd-Nodes, X-Herd-Failed-Nodes, "
    "X-Herd-Unreached-Nodes, X-Herd-Version, Retry-After")
METHODS = b"GET, POST, DELETE, HEAD, OPTIONS"
MAX_AGE = b"600"  # browsers cache a preflight this long (Chromium caps it at 7200 s)


def is_cors_path(path: str) -> bool:
    return path == "/" or path.startswith(("/api/", "/v1/"))


class Origins:
    """The allowed origins: exact ones, `*` for any, or patterns with `*` in them."""

    def __init__(self, patterns: Iterable[str]) -> None:
        cleaned = [p.strip().rstrip("/").lower() for p in patterns if p.strip()]
        self.any = "*" in cleaned
        self.exact = frozenset(p for p in cleaned if "*" not in p)
        wild = [fnmatch.translate(p) for p in cleaned if "*" in p and p != "*"]
        self._wild = re.compile("|".join(wild)) if wild else None

    @property
    def empty(self) -> bool:
        return not self.any and not self.exact and self._wild is None

    def allows(self, origin: str) -> bool:
        if self.any:
            return True
        origin = origin.lower()
        return origin in self.exact or (
            self._wild is not None and self._wild.fullmatch(origin) is not None)


def _allowed_header(name: str) -> bool:
    return name in ALLOWED_HEADERS or name.startswith(ALLOWED_PREFIXES)


def _preflight_headers(origin: bytes, requested: bytes, any_origin: bool) -> list[
        tuple[bytes, bytes]]:
    asked = [h.strip().lower() for h in requested.decode("latin-1").split(",") if h.strip()]
    allowed = ", ".join(h for h in asked if _allowed_header(h)).encode("latin-1")
    return [
        (b"access-control-allow-origin", b"*" if any_origin else origin),
        (b"access-control-allow-methods", METHODS),
        (b"access-control-allow-headers", allowed),
        (b"access-control-max-age", MAX_AGE),
        (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        (b"content-length", b"0"),
    ]


def with_cors(app: ASGIApp, origins: Iterable[str]) -> ASGIApp:
    """`app` behind CORS for `origins`; `app` itself when there are none."""
    allowed = Origins(origins)
    if allowed.empty:
        return app
    exposed = (b"access-control-expose-headers", EXPOSED_HEADERS.encode())

    async def refuse(scope: Scope, send: Send, origin: str) -> None:
        body = msgspec.json.encode(error_body(
            scope["path"], 403, f"origin {origin[:200]!r} is not allowed (FLEET_CORS_ORIGINS)"))
        start: HTTPResponseStartEvent = {
            "type": "http.response.start", "status": 403, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"vary", b"Origin")]}
        await send(start)
        end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body,
                                      "more_body": False}
        await send(end)

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not is_cors_path(scope["path"]):
            await app(scope, receive, send)
            return
        origin = requested_method = requested_headers = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                requested_method = value
            elif name == b"access-control-request-headers":
                requested_headers = value
        if origin is None:
            await app(scope, receive, send)
            return
        text = origin.decode("latin-1")
        ok = allowed.allows(text)
        if scope["method"] == "OPTIONS" and requested_method is not None:
            if not ok:
                await refuse(scope, send, text)
                return
            start: HTTPResponseStartEvent = {
                "type": "http.response.start", "status": 204,
                "headers": _preflight_headers(origin, requested_headers or b"", allowed.any)}
            await send(start)
            end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": b"",
                                          "more_body": False}
            await send(end)
            return
        if not ok:
            await app(scope, receive, send)
            return
        extra = [(b"access-control-allow-origin", b"*" if allowed.any else origin), exposed]
        if not allowed.any:
            extra.append((b"vary", b"Origin"))

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                start = cast(HTTPResponseStartEvent, dict(message))
                start["headers"] = [*message.get("headers", ()), *extra]
                message = start
            await send(message)

        await app(scope, receive, send_with_cors)

    return serve
