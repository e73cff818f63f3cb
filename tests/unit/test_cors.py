"""CORS for browser clients: which origins match, what a preflight answers, and that a
router with no origins configured serves the very same app."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from services.router.cors import Origins, is_cors_path, with_cors

pytestmark = pytest.mark.unit


def test_origins_match_exactly_by_pattern_or_any() -> None:
    origins = Origins(["https://chat.example.com/", "http://localhost:*", "https://*.corp.lan"])
    assert origins.allows("https://chat.example.com")
    assert origins.allows("HTTPS://Chat.Example.com")  # hosts are case-insensitive
    assert origins.allows("http://localhost:3000")
    assert origins.allows("https://ui.corp.lan")
    for other in ("https://chat.example.com.evil.net", "http://chat.example.com",
                  "https://localhost:3000", "https://corp.lan", "null", ""):
        assert not origins.allows(other), other
    assert Origins(["*"]).allows("https://anything.example")
    assert Origins([" ", ""]).empty


def test_the_client_apis_are_covered_and_the_operators_are_not() -> None:
    assert all(is_cors_path(p) for p in ("/", "/api/chat", "/api/blobs/sha256:x", "/v1/messages"))
    assert not any(is_cors_path(p) for p in ("/fleet/status", "/dashboard/api/pull",
                                             "/settings", "/healthz", "/apix", "/v1"))


async def _plain_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _call(app: Any, method: str, path: str,
          headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    found = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], found, b"".join(m.get("body", b"") for m in sent[1:])


def test_no_origins_means_no_layer_at_all() -> None:
    assert with_cors(_plain_app, ()) is _plain_app
    assert with_cors(_plain_app, ("",)) is _plain_app


def test_a_preflight_names_only_the_headers_allowed() -> None:
    app = with_cors(_plain_app, ["https://ui.example"])
    status, headers, body = _call(app, "OPTIONS", "/v1/messages", {
        "Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-Api-Key, anthropic-version, X-Herd-Node, "
                                          "anthropic-beta, x-evil"})
    assert (status, body) == (204, b"")
    assert headers["access-control-allow-origin"] == "https://ui.example"
    assert headers["access-control-allow-headers"] == \
        "x-api-key, anthropic-version, x-herd-node, anthropic-beta"
    assert "DELETE" in headers["access-control-allow-methods"]
    assert "Origin" in headers["vary"]


def test_a_refused_preflight_is_an_error_in_the_apis_shape() -> None:
    app = with_cors(_plain_app, ["https://ui.example"])
    preflight = {"Origin": "https://other.example", "Access-Control-Request-Method": "POST"}
    status, _, body = _call(app, "OPTIONS", "/api/chat", preflight)
    assert status == 403
    assert json.loads(body) == {
        "error": "origin 'https://other.example' is not allowed (FLEET_CORS_ORIGINS)"}
    status, _, body = _call(app, "OPTIONS", "/v1/responses", preflight)
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


def test_answers_carry_cors_headers_only_for_allowed_origins_on_client_paths() -> None:
    app = with_cors(_plain_app, ["*"])
    _, allowed, body = _call(app, "POST", "/api/chat", {"Origin": "https://a.example"})
    assert body == b"ok"
    assert allowed["access-control-allow-origin"] == "*"
    assert "X-Herd-Version" in allowed["access-control-expose-headers"]
    _, without, _ = _call(app, "POST", "/api/chat", {})
    assert without == {"content-type": "text/plain"}
    _, operator, _ = _call(app, "GET", "/fleet/status", {"Origin": "https://a.example"})
    assert "access-control-allow-origin" not in operator
    strict = with_cors(_plain_app, ["https://a.example"])
    _, foreign, body = _call(strict, "POST", "/api/chat", {"Origin": "https://b.example"})
    assert body == b"ok" and "access-control-allow-origin" not in foreign
