"""Forwarding to nodes: keep-alive connections per node (services/router/nodeclient.py), and
the little parsing the router does of a response (its final chunk's counts and timings)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import aiohttp
import msgspec

from services.router.context import RouterContext
from services.router.nodeclient import NodeBroken, NodeClient, NodeResponse
from shared.errors import error_body
from shared.models import NodeState

__all__ = [
    "STREAM_TYPES",
    "Upstream",
    "UpstreamFailure",
    "Usage",
    "content_type",
    "error_tail",
    "is_stream",
    "parse_final",
    "proxy_lifecycle",
    "upstream_of",
]

# A response of these types is passed through chunk by chunk; anything else is one body.
STREAM_TYPES = ("application/x-ndjson", "text/event-stream")
TAIL_BYTES = 16 * 1024  # enough for a final chunk; long answers keep only their end
_JSON_HEADERS = {"Content-Type": "application/json"}


class UpstreamFailure(Exception):
    """The node failed before anything reached the client: retry elsewhere."""

    def __init__(self, reason: str, status: int = 0, body: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body


class Upstream:
    """The replica's connections to every node: a lean client for forwarding requests, and an
    aiohttp session for the rest (fan-outs for /api/tags and /api/ps, pulls)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.nodes = NodeClient()

    async def open(
        self, node: NodeState, path: str, payload: bytes, *, connect_timeout: float,
        stale_timeout: float,
    ) -> NodeResponse:
        """POST the payload; returns the response once its headers arrived.

        Raises UpstreamFailure on a refused connection, a timeout, or a 5xx status.
        """
        try:
            response = await self.nodes.post(
                node.ollama_url, path, payload,
                connect_timeout=connect_timeout, read_timeout=stale_timeout,
            )
        except TimeoutError as exc:
            raise UpstreamFailure(f"timeout talking to {node.node_id}") from exc
        except NodeBroken as exc:
            raise UpstreamFailure(f"{node.node_id}: {exc}") from exc
        if response.status >= 500:
            try:
                body = await response.read()
            except (NodeBroken, TimeoutError):
                body = b""
            finally:
                response.release()
            raise UpstreamFailure(
                f"{node.node_id} answered {response.status}", response.status, body)
        return response


@dataclass(slots=True)
class Usage:
    """What the router learns from a response's final chunk."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    load_ms: float = 0.0
    prompt_eval_ms: float = 0.0
    tokens_per_s: float = 0.0


class _OpenAIChoice(msgspec.Struct):
    finish_reason: str | None = None


class _OpenAIUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Final(msgspec.Struct):
    # Ollama's fields, then OpenAI's; unknown fields (the text, the vectors) are skipped
    done_reason: str | None = None
    prompt_eval_count: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    load_duration: int = 0
    prompt_eval_duration: int = 0
    choices: list[_OpenAIChoice] | None = None
    usage: _OpenAIUsage | None = None


_final_decoder = msgspec.json.Decoder(_Final)


def _last_json(tail: bytes, sse: bool) -> bytes:
    """The last JSON object in a stream's tail: NDJSON's last line, or SSE's last data."""
    for raw_line in reversed(tail.split(b"\n")):
        line = raw_line.strip()
        if sse:
            if not line.startswith(b"data:"):
                continue
            line = line[5:].strip()
            if line == b"[DONE]":
                continue
        if line.startswith(b"{"):
            return line
    return b""


def parse_final(data: bytes, *, stream: bool, sse: bool = False) -> Usage:
    """Counts and timings from a whole body, or from a stream's tail; zeros if unreadable."""
    raw = _last_json(data, sse) if stream else data
    usage = Usage()
    if not raw:
        return usage
    try:
        final = _final_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return usage
    usage.prompt_tokens = final.prompt_eval_count
    usage.completion_tokens = final.eval_count
    usage.finish_reason = final.done_reason or ""
    usage.load_ms = final.load_duration / 1e6
    usage.prompt_eval_ms = final.prompt_eval_duration / 1e6
    if final.eval_count and final.eval_duration:
        usage.tokens_per_s = final.eval_count / (final.eval_duration / 1e9)
    if final.usage is not None:
        usage.prompt_tokens = final.usage.prompt_tokens
        usage.completion_tokens = final.usage.completion_tokens
    if final.choices and final.choices[0].finish_reason:
        usage.finish_reason = final.choices[0].finish_reason
    return usage


def error_tail(path: str, message: str, sse: bool) -> bytes:
    """A well-formed last message for a stream that broke after its first byte."""
    body = msgspec.json.encode(error_body(path, 502, message))
    if sse:
        return b"data: " + body + b"\n\n"
    return body + b"\n"


def upstream_of(ctx: RouterContext) -> Upstream:
    return cast(Upstream, ctx.parts["proxy"])


@contextlib.asynccontextmanager
async def proxy_lifecycle(ctx: RouterContext) -> AsyncIterator[None]:
    """One session for the replica's life: keep-alive connections are reused across requests."""
    connector = aiohttp.TCPConnector(
        limit=0,  # the slots bound concurrency per node; the pool must not add a second limit
        keepalive_timeout=60.0,
        ttl_dns_cache=60,
        enable_cleanup_closed=False,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        # nothing asks the node to compress, so bodies pass through as they are
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        timeout=aiohttp.ClientTimeout(total=None),
        # nodes set no cookies worth keeping; the jar's per-request filtering is pure cost
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    upstream = Upstream(session)
    ctx.parts["proxy"] = upstream
    try:
        yield
    finally:
        ctx.parts.pop("proxy", None)
        upstream.nodes.close()
        await session.close()
        # let the connector's transports close before the loop goes away
        await asyncio.sleep(0)


def content_type(response: NodeResponse) -> str:
    return response.headers.get("content-type", "application/json")


def is_stream(ctype: str) -> bool:
    return ctype.startswith(STREAM_TYPES)
