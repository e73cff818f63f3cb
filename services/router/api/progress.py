"""A node's progress answer (pull, push, create) passed to the client as it arrives.

Ollama streams these as NDJSON lines ending in `{"status": "success"}`, or answers one
JSON object with `"stream": false`; a failure after the first line is a last line with
`error`. The bytes pass through unbuffered; only the last line is looked at, to learn
whether the node finished (then `done` runs before the answer ends, so the fleet's view
has changed by the time the client reads the end).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from litestar import MediaType, Response
from litestar.response import Stream

from services.router.nodes import NodeProgress, ProgressBroken

__all__ = ["relay_progress", "succeeded"]

_decode = msgspec.json.Decoder().decode
TAIL = 1024  # bytes kept to read the last line: Ollama's last line is short


def succeeded(tail: bytes) -> bool:
    """Whether the last line of a progress answer is Ollama's `{"status": "success"}`."""
    lines = [line for line in tail.split(b"\n") if line.strip()]
    if not lines:
        return False
    try:
        last = _decode(lines[-1])
    except msgspec.DecodeError:
        return False
    return isinstance(last, dict) and last.get("status") == "success" and not last.get("error")


def _error_line(what: str, node_id: str, exc: ProgressBroken) -> bytes:
    return msgspec.json.encode({"error": f"{what} on {node_id} failed: {exc.detail}"})


async def relay_progress(
    upstream: NodeProgress, node_id: str, what: str, *, stream: bool,
    done: Callable[[], Awaitable[None]] | None = None,
) -> Response[Any]:
    """The node's answer for the client, X-Fleet-Node naming the node; `done` runs once
    the node reported success."""
    headers = {"X-Fleet-Node": node_id}
    ctype = upstream.headers.get("content-type", MediaType.JSON)
    if upstream.status >= 400 or not stream:
        try:
            content = await upstream.read()
        except ProgressBroken as exc:
            upstream.close()
            return Response(_error_line(what, node_id, exc), status_code=502, headers=headers,
                            media_type=MediaType.JSON)
        upstream.release()
        if done is not None and upstream.status < 300 and succeeded(content[-TAIL:]):
            await done()
        return Response(content, status_code=upstream.status, headers=headers,
                        media_type=ctype)

    async def relay() -> AsyncIterator[bytes]:
        tail = b""
        try:
            while chunk := await upstream.readany():
                tail = (tail + chunk)[-TAIL:]
                yield chunk
        except ProgressBroken as exc:
            yield _error_line(what, node_id, exc) + b"\n"
            return
        finally:
            upstream.close()
        if done is not None and succeeded(tail):
            await done()

    return Stream(relay(), headers=headers, media_type="application/x-ndjson")
