"""Anthropic's Messages API as Ollama serves it: POST /v1/messages, one JSON message or an
SSE stream (message_start ... message_stop) with text, thinking and tool_use blocks.

Ollama reads no structured-output field here (no output_format / JSON schema): a request
that sends one gets ordinary text, as from Ollama.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from aiohttp import web

from services.sim.chat import ChatRequest, plan_chat
from services.sim.engine import SimError
from services.sim.infer import Generation, ToolCall, generation
from services.sim.web import body_of, drain, engine_of, fault_pause, json_response, sse_event

__all__ = ["ROUTES", "anthropic_error"]

_encode = msgspec.json.encode
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 429: "rate_limit_error", 503: "overloaded_error",
          529: "overloaded_error"}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    """Ollama's Anthropic error body, request_id included."""
    return {"type": "error", "error": {"type": _TYPES.get(status, "api_error"),
                                       "message": message},
            "request_id": f"req_{secrets.token_hex(12)}"}


def _text(value: Any) -> str:
    """A string, or the text blocks of a block list joined (system prompts, tool results)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(str(b.get("text", "")) for b in value
                       if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return content
    raise SimError(400, "json: cannot unmarshal content into Go struct field "
                        "MessageParam.messages.content of type []anthropic.ContentBlock")


def _message(raw: Any) -> list[dict[str, Any]]:
    """One Anthropic message as Ollama's chat messages (tool results become tool turns)."""
    if not isinstance(raw, dict):
        raise SimError(400, "messages must be objects")
    role = str(raw.get("role", "")).lower()
    text, thinking = [], ""
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for block in _blocks(raw.get("content")):
        kind = block.get("type")
        if kind == "text":
            text.append(str(block.get("text") or ""))
        elif kind == "image":
            source = block.get("source")
            if not isinstance(source, dict):
                raise SimError(400, "invalid image source")
            if source.get("type") != "base64":
                raise SimError(400, f"invalid image source type: {source.get('type')}. "
                                    "Only base64 images are supported.")
        elif kind in ("tool_use", "server_tool_use"):
            if kind == "tool_use" and not block.get("id"):
                raise SimError(400, "tool_use block missing required 'id' field")
            if kind == "tool_use" and not block.get("name"):
                raise SimError(400, "tool_use block missing required 'name' field")
            calls.append({"id": block.get("id", ""), "function": {
                "name": block.get("name", ""), "arguments": block.get("input") or {}}})
        elif kind in ("tool_result", "web_search_tool_result"):
            results.append({"role": "tool", "content": _text(block.get("content")),
                            "tool_call_id": block.get("tool_use_id", "")})
        elif kind == "thinking":
            thinking = str(block.get("thinking") or "")
    messages = results if role == "user" else []
    if text or calls or thinking:
        message: dict[str, Any] = {"role": role, "content": "".join(text)}
        if calls:
            message["tool_calls"] = calls
        if thinking:
            message["thinking"] = thinking
        messages.append(message)
    return messages if role == "user" else messages + results


def _think(body: dict[str, Any]) -> Any:
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "enabled":
        return True
    if kind == "disabled":
        return False
    config = body.get("output_config")
    effort = str(config.get("effort") or "").strip().lower() if isinstance(config, dict) else ""
    effort = "high" if effort == "xhigh" else effort
    return effort if effort in ("high", "medium", "low", "max") else None


def _estimate(body: dict[str, Any]) -> int:
    """Ollama's input_tokens estimate for message_start: characters / 4."""
    chars = len(_text(body.get("system"))) if isinstance(body.get("system"), str | list) else 0
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        chars += len(str(message.get("role", "")))
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
            continue
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            chars += len(str(block.get("text") or "")) + len(str(block.get("thinking") or ""))
            if block.get("type") in ("tool_use", "tool_result"):
                chars += len(_encode(block))
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            chars += len(str(tool.get("name", ""))) + len(str(tool.get("description", "")))
            chars += len(_encode(tool.get("input_schema"))) if tool.get("input_schema") else 0
    tokens = chars // 4
    return 1 if tokens == 0 and (body.get("messages") or body.get("system")) else tokens


def _request(body: dict[str, Any]) -> ChatRequest:
    model = body.get("model")
    if not model or not isinstance(model, str):
        raise SimError(400, "model is required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        raise SimError(400, "max_tokens is required and must be positive")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise SimError(400, "messages is required")
    messages: list[dict[str, Any]] = []
    system = _text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for message in raw:
        messages.extend(_message(message))
    # Ollama passes max_tokens on as num_predict; the simulator reads it as the ceiling it
    # is to the client (agents send 32000), not as the length the reply must have.
    options: dict[str, Any] = {}
    stops = body.get("stop_sequences")
    if isinstance(stops, list) and stops:
        options["stop"] = [str(s) for s in stops]
    tools = [{"type": "function", "function": {
        "name": t.get("name", ""), "description": t.get("description", ""),
        "parameters": t.get("input_schema") or {}}}
        for t in body.get("tools") or []
        # the built-in web search runs in Ollama's cloud: not simulated
        if isinstance(t, dict) and not str(t.get("type", "")).startswith("web_search")]
    return ChatRequest(model, messages, tools=tools, think=_think(body), options=options,
                       relax_thinking=True, max_tokens=max_tokens)


async def messages(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    body = body_of(request)
    req = _request(body)
    job = plan_chat(engine, req, request.get("slow", 1.0))
    ident = f"msg_{secrets.token_hex(12)}"
    async with generation(engine, job) as gen:
        if body.get("stream") is True:
            return await _stream(request, gen, req.model, ident, _estimate(body))
        await drain(request, gen)
        return json_response(_whole(gen, req.model, ident))


def _stop_reason(gen: Generation) -> str:
    if gen.tool_calls:
        return "tool_use"
    return {"stop": "end_turn", "length": "max_tokens"}.get(gen.done_reason, "stop_sequence")


def _tool_block(call: ToolCall, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _whole(gen: Generation, model: str, ident: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if gen.thought:
        content.append({"type": "thinking", "thinking": "".join(gen.thought)})
    if gen.output:
        content.append({"type": "text", "text": "".join(gen.output)})
    content.extend(_tool_block(c, c.arguments) for c in gen.tool_calls)
    return {"id": ident, "type": "message", "role": "assistant", "model": model,
            # Go encodes an empty slice it never filled as null
            "content": content or None, "stop_reason": _stop_reason(gen),
            "usage": {"input_tokens": len(gen.prompt_tokens), "output_tokens": gen.eval_count}}


async def _stream(request: web.Request, gen: Generation, model: str, ident: str,
                  estimate: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    await response.write(sse_event("message_start", {"type": "message_start", "message": {
        "id": ident, "type": "message", "role": "assistant", "model": model, "content": [],
        "usage": {"input_tokens": estimate, "output_tokens": 0}}}))
    index = 0
    count = 0
    open_block = False
    async for token in gen.thinking():
        await fault_pause(request, count)
        if not open_block:
            await response.write(_start(index, {"type": "thinking", "thinking": ""}))
            open_block = True
        await response.write(_delta(index, b'{"type":"thinking_delta","thinking":'
                                    + _encode(token) + b"}"))
        count += 1
    text_started = False
    async for token in gen.tokens():
        await fault_pause(request, count)
        if not text_started:
            if open_block:
                await response.write(_stop(index))
                index += 1
            await response.write(_start(index, {"type": "text", "text": ""}))
            open_block = text_started = True
        await response.write(_delta(index, b'{"type":"text_delta","text":' + _encode(token)
                                    + b"}"))
        count += 1
    await fault_pause(request, count, final=True)
    for call in gen.tool_calls:
        if open_block:
            await response.write(_stop(index))
            index += 1
            open_block = False
        await response.write(_start(index, _tool_block(call, {})))
        await response.write(_delta(index, _encode({"type": "input_json_delta",
                                                    "partial_json": _encode(call.arguments)
                                                    .decode()})))
        await response.write(_stop(index))
        index += 1
    if open_block:
        await response.write(_stop(index))
    usage = {"input_tokens": len(gen.prompt_tokens), "output_tokens": gen.eval_count}
    await response.write(sse_event("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": _stop_reason(gen)}, "usage": usage}))
    await response.write(sse_event("message_stop", {"type": "message_stop"}))
    await response.write_eof()
    return response


def _start(index: int, block: dict[str, Any]) -> bytes:
    return sse_event("content_block_start", {"type": "content_block_start", "index": index,
                                             "content_block": block})


def _delta(index: int, delta: bytes) -> bytes:
    return (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
            + str(index).encode() + b',"delta":' + delta + b"}\n\n")


def _stop(index: int) -> bytes:
    return sse_event("content_block_stop", {"type": "content_block_stop", "index": index})


ROUTES = [web.post("/v1/messages", messages)]

