"""Ollama's OpenAI-compatible API: /v1/chat/completions, /v1/completions, /v1/embeddings and
/v1/models, in the shapes of Ollama's openai middleware (reasoning, tool_calls included)."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
from aiohttp import web

from services.sim.chat import ChatRequest, plan_chat
from services.sim.engine import Engine, SimError
from services.sim.infer import Generation, Job, ToolCall, generation, int_option
from services.sim.ollama_api import embed_vectors
from services.sim.text import TOKEN_JSON, embedding_base64
from services.sim.web import body_of, drain, engine_of, fault_pause, json_response, model_name

__all__ = ["ROUTES", "chat_options", "openai_tool_calls", "think_from_effort"]

_encode = msgspec.json.encode
_counter = 0
_EFFORTS: dict[str, Any] = {"none": False, "minimal": "low", "low": "low", "medium": "medium",
                            "high": "high", "max": "max", "xhigh": "max", "ultra": "max"}


def _id(prefix: str) -> str:
    global _counter
    _counter += 1
    return f"{prefix}-{_counter}"


def _int_field(body: dict[str, Any], name: str) -> int | None:
    """An integer field of the request: Ollama's OpenAI layer binds it into a typed struct,
    so a wrong type is a 400 there (unlike an Ollama option, checked later: a 500)."""
    try:
        return int_option(body, name)
    except SimError as exc:
        raise SimError(400, f"{name} must be an integer") from exc


def think_from_effort(effort: Any) -> Any:
    """Ollama's think value for an OpenAI reasoning effort (None: the model's default)."""
    if effort in (None, ""):
        return None
    if isinstance(effort, str) and effort in _EFFORTS:
        return _EFFORTS[effort]
    raise SimError(400, f"invalid reasoning value: {json.dumps(effort)} (must be "
                        '"minimal", "low", "medium", "high", "xhigh", "ultra", "max", '
                        'or "none")')


def openai_tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id, "index": c.index, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments)}} for c in calls]


def chat_options(body: dict[str, Any]) -> dict[str, Any]:
    """Ollama options from an OpenAI body: num_predict, seed, stop."""
    options: dict[str, Any] = {}
    limit = _int_field(body, "max_completion_tokens")
    if limit is None:
        limit = _int_field(body, "max_tokens")
    if limit is not None:
        options["num_predict"] = limit
    seed = _int_field(body, "seed")
    if seed is not None:
        options["seed"] = seed
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        options["stop"] = [s for s in stop if isinstance(s, str)]
    return options


def _tool_calls_in(calls: Any) -> list[dict[str, Any]]:
    out = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise SimError(400, "invalid tool call arguments")
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            raise SimError(400, "invalid tool call arguments") from None
        out.append({"id": call.get("id", ""), "function": {
            "name": function.get("name", ""), "arguments": arguments}})
    return out


def _messages(raw: list[Any]) -> list[dict[str, Any]]:
    """OpenAI messages as Ollama's: text parts joined, tool call arguments decoded."""
    messages = []
    for message in raw:
        if not isinstance(message, dict):
            raise SimError(400, "invalid message format")
        content = message.get("content")
        calls = message.get("tool_calls")
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        elif content is None and not calls:
            raise SimError(400, "invalid message content type: <nil>")
        elif content is not None and not isinstance(content, str):
            raise SimError(400, f"invalid message content type: {type(content).__name__}")
        out: dict[str, Any] = {"role": str(message.get("role", "user")).lower(),
                               "content": content or ""}
        if calls:
            out["tool_calls"] = _tool_calls_in(calls)
        if message.get("tool_call_id"):
            out["tool_call_id"] = message["tool_call_id"]
        messages.append(out)
    return messages


def _format(body: dict[str, Any]) -> Any:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    kind = str(fmt.get("type", "")).strip().lower()
    if kind == "json_object":
        return "json"
    if kind == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        return fmt["json_schema"].get("schema")
    return None


def _usage(gen: Generation) -> dict[str, int]:
    prompt, completion = len(gen.prompt_tokens), gen.eval_count
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _finish_reason(gen: Generation) -> str:
    if gen.tool_calls and gen.done_reason == "stop":
        return "tool_calls"
    return gen.done_reason


async def _completion(request: web.Request, chat: bool) -> web.StreamResponse:
    engine = engine_of(request)
    body = body_of(request)
    asked = model_name(body, normalize=False)
    if chat:
        raw = body.get("messages")
        if not isinstance(raw, list) or not raw:
            raise SimError(400, "[] is too short - 'messages'")
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else body.get(
            "reasoning_effort")
        job = plan_chat(engine, ChatRequest(
            asked, _messages(raw), tools=body.get("tools") or [], format=_format(body),
            think=think_from_effort(effort), options=chat_options(body)),
            request.get("slow", 1.0))
    else:
        raw_prompt = body.get("prompt", "")
        prompt = raw_prompt if isinstance(raw_prompt, str) else " ".join(map(str, raw_prompt or []))
        job = _completion_job(engine, asked, body, prompt, request.get("slow", 1.0))
    async with generation(engine, job) as gen:
        if body.get("stream"):
            options = body.get("stream_options") or {}
            usage = isinstance(options, dict) and bool(options.get("include_usage"))
            return await _stream(request, gen, chat, asked, usage)
        return await _whole(request, gen, chat, asked)


def _completion_job(engine: Engine, asked: str, body: dict[str, Any], prompt: str,
                    slow: float) -> Job:
    spec = engine.model(asked)
    if spec.embedding:
        raise SimError(400, f'"{asked}" does not support generate')
    options = chat_options(body)
    seed = options.get("seed", engine.config.seed)
    return Job(spec, prompt, engine.config.default_num_ctx, engine.config.keep_alive,
               options.get("num_predict"), options.get("stop", []), seed, slow=slow)


async def _stream(request: web.Request, gen: Generation, chat: bool, name: str,
                  usage: bool) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    ident = _id("chatcmpl" if chat else "cmpl")
    obj = "chat.completion.chunk" if chat else "text_completion"
    base = {"id": ident, "object": obj, "created": int(time.time()), "model": name,
            "system_fingerprint": "fp_ollama"}
    start = b"data: " + _encode(base)[:-1] + b',"choices":[{"index":0,'
    # Like Ollama, the role comes in the first chunk only; the finish reason on its own.
    first = True
    count = 0
    if chat:
        async for token in gen.thinking():
            await fault_pause(request, count)
            role = b'"role":"assistant",' if first else b""
            piece = TOKEN_JSON.get(token) or _encode(token)
            await response.write(start + b'"delta":{' + role + b'"content":"","reasoning":'
                                 + piece + b'},"finish_reason":null}]}\n\n')
            first = False
            count += 1
        head = start + b'"delta":{"content":'
        head_first = start + b'"delta":{"role":"assistant","content":'
        tail = b'},"finish_reason":null}]}\n\n'
    else:
        head = head_first = start + b'"text":'
        tail = b',"finish_reason":null}]}\n\n'
    async for token in gen.tokens():
        await fault_pause(request, count)
        piece = TOKEN_JSON.get(token) or _encode(token)
        await response.write((head_first if first else head) + piece + tail)
        first = False
        count += 1
    await fault_pause(request, count, final=True)
    out = []
    if chat and (gen.tool_calls or first):
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        delta["content"] = ""
        if gen.tool_calls:
            delta["tool_calls"] = openai_tool_calls(gen.tool_calls)
        out.append(b"data: " + _encode({**base, "choices": [
            {"index": 0, "delta": delta, "finish_reason": None}]}) + b"\n\n")
    last: dict[str, Any] = {"index": 0, "finish_reason": _finish_reason(gen)}
    if chat:
        last["delta"] = {}
    else:
        last["text"] = ""
    out.append(b"data: " + _encode({**base, "choices": [last]}) + b"\n\n")
    if usage:
        out.append(b"data: " + _encode({**base, "choices": [], "usage": _usage(gen)}) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    await response.write(b"".join(out))
    await response.write_eof()
    return response


async def _whole(request: web.Request, gen: Generation, chat: bool, name: str) -> web.Response:
    await drain(request, gen)
    text = "".join(gen.output)
    choice: dict[str, Any] = {"index": 0, "finish_reason": _finish_reason(gen)}
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if gen.thought:
            message["reasoning"] = "".join(gen.thought)
        if gen.tool_calls:
            message["tool_calls"] = openai_tool_calls(gen.tool_calls)
        choice["message"] = message
    else:
        choice["text"] = text
    return json_response({
        "id": _id("chatcmpl" if chat else "cmpl"),
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()), "model": name, "system_fingerprint": "fp_ollama",
        "choices": [choice], "usage": _usage(gen),
    })


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _completion(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _completion(request, chat=False)


async def embeddings(request: web.Request) -> web.Response:
    body = body_of(request)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise SimError(400, "invalid input type")
    name = model_name(body, False)
    vectors, gen = await embed_vectors(request, name, inputs, body)
    b64 = body.get("encoding_format") == "base64"
    data = [{"object": "embedding", "index": i,
             "embedding": embedding_base64(v) if b64 else v} for i, v in enumerate(vectors)]
    tokens = len(gen.prompt_tokens)
    return json_response({"object": "list", "data": data, "model": name,
                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _model_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1748779200, "owned_by": "library"}


async def models(request: web.Request) -> web.Response:
    engine = engine_of(request)
    return json_response({"object": "list",
                          "data": [_model_entry(n) for n in engine.installed]})


async def model(request: web.Request) -> web.Response:
    engine = engine_of(request)
    name = model_name({"model": request.match_info["name"]})
    if name not in engine.installed:
        raise SimError(404, f"model '{request.match_info['name']}' not found")
    return json_response(_model_entry(name))


ROUTES = [
    web.post("/v1/chat/completions", chat_completions),
    web.post("/v1/completions", completions),
    web.post("/v1/embeddings", embeddings),
    web.get("/v1/models", models),
    web.get("/v1/models/{name:.+}", model),
]
