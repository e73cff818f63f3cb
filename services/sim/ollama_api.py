"""Ollama's native inference API: /api/chat, /api/generate, /api/embed, /api/embeddings."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from services.sim.catalogue import ModelSpec
from services.sim.chat import (
    ChatRequest,
    parse_format,
    plan_chat,
    structured_value,
    think_level,
)
from services.sim.engine import SimError
from services.sim.infer import Generation, Job, ToolCall, generation, job_options
from services.sim.listing import iso_now
from services.sim.text import TOKEN_JSON, embedding, render_chat, token_ids
from services.sim.web import body_of, drain, engine_of, fault_pause, json_response, model_name

__all__ = ["ROUTES", "embed_vectors", "ollama_tool_calls"]

_encode = msgspec.json.encode


def ollama_tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id, "function": {"index": c.index, "name": c.name,
                                      "arguments": c.arguments}} for c in calls]


async def chat(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    body = body_of(request)
    asked = model_name(body, normalize=False)
    spec = engine.model(asked)
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise SimError(400, "messages must be a list")
    if not messages:
        return await _load_only(request, spec, asked, chat=True)
    job = plan_chat(engine, ChatRequest(
        asked, messages, tools=body.get("tools") or [], format=body.get("format"),
        think=body.get("think"), options=body.get("options") or {},
        keep_alive=body.get("keep_alive")), request.get("slow", 1.0))
    return await _respond(request, job, asked, chat=True)


async def generate(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    body = body_of(request)
    asked = model_name(body, normalize=False)
    spec = engine.model(asked)
    text = body.get("prompt") or ""
    if not text:
        return await _load_only(request, spec, asked, chat=False)
    if spec.embedding:
        raise SimError(400, f'"{asked}" does not support generate')
    opts = job_options(engine, body)
    think = think_level(body.get("think"), spec, asked)
    json_format, schema = parse_format(body.get("format"))
    prompt = str(text) if body.get("raw") else render_chat(
        [{"role": "user", "content": text}], body.get("system") or spec.system)
    seed = opts["seed"] if opts["seed"] is not None else engine.config.seed
    job = Job(spec, prompt, opts["num_ctx"], opts["keep_alive"], opts["num_predict"],
              opts["stop"], seed, json_format=json_format, slow=request.get("slow", 1.0),
              think=think, schema=schema)
    if schema is not None:
        job.structured = structured_value(schema, seed, spec.name, prompt)
    return await _respond(request, job, asked, chat=False)


async def _respond(request: web.Request, job: Job, asked: str, chat: bool) -> web.StreamResponse:
    stream = body_of(request).get("stream", True) is not False
    async with generation(engine_of(request), job) as gen:
        if stream:
            return await _stream(request, gen, chat, asked)
        return await _whole(request, gen, chat, asked)


def _final(gen: Generation, chat: bool, name: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": name, "created_at": iso_now()}
    if chat:
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    body["done"] = True
    body["done_reason"] = gen.done_reason
    if not chat:
        body["context"] = token_ids(gen.prompt_tokens + gen.output)
    body.update(gen.timings())
    return body


async def _stream(request: web.Request, gen: Generation, chat: bool,
                  name: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    head = b'{"model":' + _encode(name) + b',"created_at":"'
    tail = b'},"done":false}\n' if chat else b',"done":false}\n'
    count = 0
    if gen.job.think is not None:
        mid = (b'","message":{"role":"assistant","content":"","thinking":' if chat
               else b'","response":"","thinking":')
        async for token in gen.thinking():
            await fault_pause(request, count)
            piece = TOKEN_JSON.get(token) or _encode(token)
            await response.write(b"".join((head, iso_now().encode(), mid, piece, tail)))
            count += 1
    mid = b'","message":{"role":"assistant","content":' if chat else b'","response":'
    async for token in gen.tokens():
        await fault_pause(request, count)
        piece = TOKEN_JSON.get(token) or _encode(token)
        await response.write(b"".join((head, iso_now().encode(), mid, piece, tail)))
        count += 1
    if gen.tool_calls and chat:
        await response.write(_encode({
            "model": name, "created_at": iso_now(),
            "message": {"role": "assistant", "content": "",
                        "tool_calls": ollama_tool_calls(gen.tool_calls)},
            "done": False}) + b"\n")
    await fault_pause(request, count, final=True)
    await response.write(_encode(_final(gen, chat, name)) + b"\n")
    await response.write_eof()
    return response


async def _whole(request: web.Request, gen: Generation, chat: bool, name: str) -> web.Response:
    await drain(request, gen)
    body = _final(gen, chat, name)
    text = "".join(gen.output)
    thinking = "".join(gen.thought)
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if gen.tool_calls:
            message["tool_calls"] = ollama_tool_calls(gen.tool_calls)
        body["message"] = message
    else:
        body["response"] = text
        if thinking:
            body["thinking"] = thinking
    return json_response(body)


async def _load_only(request: web.Request, spec: ModelSpec, asked: str,
                     chat: bool) -> web.Response:
    """A request without prompt loads the model (or unloads it with keep_alive 0)."""
    engine = engine_of(request)
    opts = job_options(engine, body_of(request))
    body: dict[str, Any] = {"model": asked, "created_at": iso_now()}
    if chat:
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    if opts["keep_alive"] == 0:
        engine.unload(spec.name)
        body.update(done=True, done_reason="unload")
        return json_response(body)
    if spec.embedding:
        raise SimError(400, f'"{asked}" does not support {"chat" if chat else "generate"}')
    gen = Generation(engine, Job(spec, "", opts["num_ctx"], opts["keep_alive"]))
    try:
        await gen.start()
    finally:
        gen.finish()
    body.update(done=True, done_reason="load")
    return json_response(body)


async def embed_vectors(request: web.Request, name: str, inputs: list[str],
                        body: dict[str, Any]) -> tuple[list[list[float]], Generation]:
    """Vectors for inputs, after the model is loaded and the inputs 'evaluated'."""
    engine = engine_of(request)
    spec = engine.model(name)
    opts = job_options(engine, body)
    job = Job(spec, "\n".join(inputs), opts["num_ctx"], opts["keep_alive"],
              slow=request.get("slow", 1.0))
    async with generation(engine, job) as gen:
        dims = body.get("dimensions")
        dim = spec.embedding_length
        if isinstance(dims, int) and 0 < dims < dim:
            dim = dims
        vectors = [embedding(spec.name, text, dim, engine.config.seed) for text in inputs]
        return vectors, gen


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise SimError(400, "input must be a string or a list of strings")


async def embed(request: web.Request) -> web.Response:
    body = body_of(request)
    inputs = _inputs(body.get("input", ""))
    vectors, gen = await embed_vectors(request, model_name(body, False), inputs, body)
    t = gen.timings()
    return json_response({
        "model": gen.job.spec.name, "embeddings": vectors, "total_duration": t["total_duration"],
        "load_duration": t["load_duration"], "prompt_eval_count": t["prompt_eval_count"]})


async def embeddings(request: web.Request) -> web.Response:
    body = body_of(request)
    prompt = str(body.get("prompt") or "")
    vectors, _ = await embed_vectors(request, model_name(body, False), [prompt], body)
    return json_response({"embedding": vectors[0]})


ROUTES = [
    web.post("/api/chat", chat),
    web.post("/api/generate", generate),
    web.post("/api/embed", embed),
    web.post("/api/embeddings", embeddings),
]
