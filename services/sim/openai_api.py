"""Ollama's OpenAI-compatible API: /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from aiohttp import web

from services.sim.engine import Engine, SimError
from services.sim.infer import Generation, Job, int_option
from services.sim.ollama_api import (
    body_of,
    drain,
    embed_vectors,
    engine_of,
    fault_pause,
    json_response,
    model_name,
)
from services.sim.text import TOKEN_JSON, embedding_base64, render_chat

__all__ = ["ROUTES"]

_encode = msgspec.json.encode
_counter = 0


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


def _job(engine: Engine, body: dict[str, Any], prompt: str, slow: float) -> Job:
    spec = engine.model(model_name(body, normalize=False))
    limit = _int_field(body, "max_completion_tokens")
    if limit is None:
        limit = _int_field(body, "max_tokens")
    seed = _int_field(body, "seed")
    stop = body.get("stop") or []
    fmt = body.get("response_format")
    json_format = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
    return Job(spec, prompt, engine.config.default_num_ctx, engine.config.keep_alive,
               limit, [stop] if isinstance(stop, str) else [str(s) for s in stop],
               seed if seed is not None else engine.config.seed, json_format, slow)


def _usage(gen: Generation) -> dict[str, int]:
    prompt, completion = len(gen.prompt_tokens), len(gen.output)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _finish_reason(gen: Generation) -> str:
    return "length" if gen.done_reason == "length" else "stop"


async def _completion(request: web.Request, chat: bool) -> web.StreamResponse:
    engine = engine_of(request)
    body = body_of(request)
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise SimError(400, "[] is too short - 'messages'")
        prompt = render_chat(messages)
    else:
        raw = body.get("prompt", "")
        prompt = raw if isinstance(raw, str) else " ".join(map(str, raw or []))
    job = _job(engine, body, prompt, request.get("slow", 1.0))
    if job.spec.embedding:
        raise SimError(400, f'"{job.spec.name}" does not support generate')
    gen = Generation(engine, job)
    name = job.spec.name
    engine.stats.add(name, "requests")
    engine.stats.add(name, "in_flight")
    ok = False
    try:
        await gen.start()
        if body.get("stream"):
            options = body.get("stream_options") or {}
            usage = isinstance(options, dict) and bool(options.get("include_usage"))
            response = await _stream(request, gen, chat, name, usage)
        else:
            response = await _whole(request, gen, chat, name)
        ok = True
        return response
    finally:
        gen.finish()
        engine.stats.add(name, "in_flight", -1)
        engine.stats.add(name, "served" if ok else "failed")


async def _stream(request: web.Request, gen: Generation, chat: bool, name: str,
                  usage: bool) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    ident = _id("chatcmpl" if chat else "cmpl")
    obj = "chat.completion.chunk" if chat else "text_completion"
    base = {"id": ident, "object": obj, "created": int(time.time()), "model": name,
            "system_fingerprint": "fp_ollama"}
    head = b"data: " + _encode(base)[:-1] + b',"choices":[{"index":0,'
    if chat:
        head += b'"delta":{"role":"assistant","content":'
        tail = b'},"finish_reason":null}]}\n\n'
    else:
        head += b'"text":'
        tail = b',"finish_reason":null}]}\n\n'
    count = 0
    async for token in gen.tokens():
        await fault_pause(request, count)
        piece = TOKEN_JSON.get(token) or _encode(token)
        await response.write(head + piece + tail)
        count += 1
    await fault_pause(request, count, final=True)
    reason = _finish_reason(gen)
    last: dict[str, Any] = {"index": 0, "finish_reason": reason}
    if chat:
        last["delta"] = {"role": "assistant", "content": ""}
    else:
        last["text"] = ""
    out = [b"data: " + _encode({**base, "choices": [last]}) + b"\n\n"]
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
        choice["message"] = {"role": "assistant", "content": text}
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
    vectors, gen = await embed_vectors(request, model_name(body, False), inputs, body)
    name = gen.job.spec.name
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
        raise SimError(404, f"model '{name}' not found")
    return json_response(_model_entry(name))


ROUTES = [
    web.post("/v1/chat/completions", chat_completions),
    web.post("/v1/completions", completions),
    web.post("/v1/embeddings", embeddings),
    web.get("/v1/models", models),
    web.get("/v1/models/{name:.+}", model),
]
