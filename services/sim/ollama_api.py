"""Ollama's native API: chat, generate, embeddings, pull, delete, show, copy."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from aiohttp import web

from services.sim.catalogue import GB, normalize_name
from services.sim.engine import Engine, SimError
from services.sim.faults import FaultMode
from services.sim.infer import Generation, Job, job_options
from services.sim.listing import iso_now, show_body
from services.sim.text import TOKEN_JSON, embedding, render_chat, token_ids

__all__ = ["ROUTES", "body_of", "embed_vectors", "engine_of", "fault_pause", "json_response",
           "model_name"]

_encode = msgspec.json.encode


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(body), status=status, content_type="application/json")


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
    async for _ in gen.tokens():
        await fault_pause(request, count)
        count += 1
    await fault_pause(request, count, final=True)


async def _generate_like(request: web.Request, chat: bool) -> web.StreamResponse:
    engine = engine_of(request)
    body = body_of(request)
    spec = engine.model(model_name(body, normalize=False))
    name = spec.name
    opts = job_options(engine, body)
    if chat:
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise SimError(400, "messages must be a list")
        empty = not messages
        prompt = render_chat(messages)
    else:
        text = body.get("prompt") or ""
        empty = not text
        prompt = str(text) if body.get("raw") else render_chat(
            [{"role": "user", "content": text}], body.get("system"))
    if spec.embedding:
        raise SimError(400, f'"{name}" does not support {"chat" if chat else "generate"}')
    stream = body.get("stream", True) is not False
    fmt = body.get("format")
    job = Job(spec, prompt, opts["num_ctx"], opts["keep_alive"], opts["num_predict"],
              opts["stop"], opts["seed"] if opts["seed"] is not None else engine.config.seed,
              json_format=bool(fmt), slow=request.get("slow", 1.0))
    if empty:
        return await _load_only(request, job, chat)
    gen = Generation(engine, job)
    stats = engine.stats
    stats.add(name, "requests")
    stats.add(name, "in_flight")
    ok = False
    try:
        await gen.start()
        if stream:
            response = await _stream(request, gen, chat, name)
        else:
            response = await _whole(request, gen, chat, name)
        ok = True
        return response
    finally:
        gen.finish()
        stats.add(name, "in_flight", -1)
        stats.add(name, "served" if ok else "failed")


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
    mid = b'","message":{"role":"assistant","content":' if chat else b'","response":'
    tail = b'},"done":false}\n' if chat else b',"done":false}\n'
    count = 0
    async for token in gen.tokens():
        await fault_pause(request, count)
        piece = TOKEN_JSON.get(token) or _encode(token)
        await response.write(b"".join((head, iso_now().encode(), mid, piece, tail)))
        count += 1
    await fault_pause(request, count, final=True)
    await response.write(_encode(_final(gen, chat, name)) + b"\n")
    await response.write_eof()
    return response


async def _whole(request: web.Request, gen: Generation, chat: bool, name: str) -> web.Response:
    await drain(request, gen)
    body = _final(gen, chat, name)
    text = "".join(gen.output)
    if chat:
        body["message"]["content"] = text
    else:
        body["response"] = text
    return json_response(body)


async def _load_only(request: web.Request, job: Job, chat: bool) -> web.Response:
    """A request without prompt loads the model (or unloads it with keep_alive 0)."""
    engine = engine_of(request)
    name = job.spec.name
    body: dict[str, Any] = {"model": name, "created_at": iso_now()}
    if chat:
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    if job.keep_alive == 0:
        engine.unload(name)
        body.update(done=True, done_reason="unload")
        return json_response(body)
    gen = Generation(engine, Job(job.spec, "", job.num_ctx, job.keep_alive))
    try:
        await gen.start()
    finally:
        gen.finish()
    body.update(done=True, done_reason="load")
    return json_response(body)


async def chat(request: web.Request) -> web.StreamResponse:
    return await _generate_like(request, chat=True)


async def generate(request: web.Request) -> web.StreamResponse:
    return await _generate_like(request, chat=False)


async def embed_vectors(request: web.Request, name: str, inputs: list[str],
                        body: dict[str, Any]) -> tuple[list[list[float]], Generation]:
    """Vectors for inputs, after the model is loaded and the inputs 'evaluated'."""
    engine = engine_of(request)
    spec = engine.model(name)
    name = spec.name
    opts = job_options(engine, body)
    gen = Generation(engine, Job(spec, "\n".join(inputs), opts["num_ctx"], opts["keep_alive"],
                                 slow=request.get("slow", 1.0)))
    engine.stats.add(name, "requests")
    engine.stats.add(name, "in_flight")
    ok = False
    try:
        await gen.start()
        dims = body.get("dimensions")
        dim = spec.embedding_length
        if isinstance(dims, int) and 0 < dims < dim:
            dim = dims
        vectors = [embedding(name, text, dim, engine.config.seed) for text in inputs]
        ok = True
        return vectors, gen
    finally:
        gen.finish()
        engine.stats.add(name, "in_flight", -1)
        engine.stats.add(name, "served" if ok else "failed")


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


async def pull(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    body = body_of(request)
    name = model_name(body)
    installed = name in engine.installed
    spec = engine.installed.get(name) or engine.install(name)
    if not installed:
        engine.installed.pop(name)  # not usable until the pull completes
    total = spec.size
    seconds = 0.0 if installed else total / GB * engine.config.pull_seconds_per_gb
    digest = "sha256:" + spec.digest
    stream = body.get("stream", True) is not False
    response: web.StreamResponse | None = None
    if stream:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)

    async def emit(line: dict[str, Any]) -> None:
        if response is not None:
            await response.write(_encode(line) + b"\n")

    await emit({"status": "pulling manifest"})
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        done = total if seconds <= 0 else min(total, int(total * elapsed / seconds))
        await emit({"status": f"pulling {spec.digest[:12]}", "digest": digest,
                    "total": total, "completed": done})
        if done >= total:
            break
        await asyncio.sleep(min(0.1, max(seconds - elapsed, 0.001)))
    for status in ("verifying sha256 digest", "writing manifest"):
        await emit({"status": status})
    engine.installed[name] = spec
    if response is None:
        return json_response({"status": "success"})
    await emit({"status": "success"})
    await response.write_eof()
    return response


async def delete(request: web.Request) -> web.Response:
    engine = engine_of(request)
    name = model_name(body_of(request))
    if name not in engine.installed:
        raise SimError(404, f"model '{name}' not found")
    engine.remove(name)
    return web.Response(status=200)


async def copy(request: web.Request) -> web.Response:
    engine = engine_of(request)
    body = body_of(request)
    source = normalize_name(str(body.get("source") or ""))
    destination = normalize_name(str(body.get("destination") or ""))
    spec = engine.installed.get(source)
    if spec is None:
        raise SimError(404, f"model '{source}' not found")
    from dataclasses import replace

    engine.installed[destination] = replace(spec, name=destination)
    return web.Response(status=200)


async def show(request: web.Request) -> web.Response:
    engine = engine_of(request)
    name = model_name(body_of(request))
    spec = engine.installed.get(name)
    if spec is None:
        raise SimError(404, f"model '{name}' not found")
    return json_response(show_body(spec))


ROUTES = [
    web.post("/api/chat", chat),
    web.post("/api/generate", generate),
    web.post("/api/embed", embed),
    web.post("/api/embeddings", embeddings),
    web.post("/api/pull", pull),
    web.delete("/api/delete", delete),
    web.post("/api/copy", copy),
    web.post("/api/show", show),
]
