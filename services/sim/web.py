"""What every API handler of the simulator shares: the parsed body, JSON answers, faults."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from services.sim.catalogue import normalize_name
from services.sim.engine import Engine, SimError
from services.sim.faults import FaultMode
from services.sim.infer import Generation

__all__ = ["body_of", "drain", "engine_of", "fault_pause", "json_response", "model_name",
           "sse_event"]

_encode = msgspec.json.encode


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(body), status=status, content_type="application/json")


def sse_event(event: str, data: Any) -> bytes:
    """One server-sent event with an `event:` line, as Anthropic's and OpenAI's
    Responses streams have them."""
    return b"event: " + event.encode() + b"\ndata: " + _encode(data) + b"\n\n"


def engine_of(request: web.Request) -> Engine:
    engine: Engine = request.app["engine"]
    return engine


def body_of(request: web.Request) -> dict[str, Any]:
    body: dict[str, Any] = request.get("body") or {}
    return body


def model_name(body: dict[str, Any], normalize: bool = True) -> str:
    name = body.get("model") or body.get("name")
    if not name or not isinstance(name, str):
        raise SimError(400, "model is required")
    return normalize_name(name) if normalize else name


async def fault_pause(request: web.Request, count: int, final: bool = False) -> None:
    """die_mid_stream / hang once `count` tokens went out (raises to cut the connection).

    `final` is the check before the last chunk: a reply shorter than `after_tokens` is
    cut there, so the fault always strikes before a complete answer.
    """
    fault = request.get("fault")
    if fault is None:
        return
    after = request.app["faults"].params["after_tokens"]
    if count != after and not (final and count < after):
        return
    if fault is FaultMode.HANG:
        await request.app["faults"].until_changed()
    if fault in (FaultMode.HANG, FaultMode.DIE_MID_STREAM):
        raise ConnectionAbortedError("simulated fault")


async def drain(request: web.Request, gen: Generation) -> None:
    """Run a non-streamed generation to its end, with the faults a stream would meet."""
    count = 0
    async for _ in gen.thinking():
        await fault_pause(request, count)
        count += 1
    async for _ in gen.tokens():
        await fault_pause(request, count)
        count += 1
    await fault_pause(request, count, final=True)
