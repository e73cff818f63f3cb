"""Model management as the `ollama` CLI drives it: pull, push, create (from a model or from
uploaded blobs), blobs, copy, delete and show, with Ollama's progress lines and errors."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import replace
from typing import Any

import msgspec
from aiohttp import web

from services.sim.catalogue import GB, ModelSpec, normalize_name, spec_for
from services.sim.engine import Engine, SimError
from services.sim.listing import show_body
from services.sim.web import body_of, engine_of, json_response, model_name

__all__ = ["ROUTES"]

_encode = msgspec.json.encode
_DIGEST_RE = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")
_MODELS_DIR = "/root/.ollama/models"
_CONFIG_SIZE = 487  # the small JSON config layer every model has


class Progress:
    """Ollama's progress answer: NDJSON lines while streaming (the default), else only
    the last line. An error before the first line is an HTTP error; after it, an
    {"error": ...} line, as Ollama's streamResponse sends it."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.stream = body_of(request).get("stream", True) is not False
        self.response: web.StreamResponse | None = None
        self.last: dict[str, Any] = {}

    async def emit(self, line: dict[str, Any]) -> None:
        self.last = line
        if not self.stream:
            return
        if self.response is None:
            self.response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await self.response.prepare(self.request)
        await self.response.write(_encode(line) + b"\n")

    async def fail(self, message: str, status: int = 500) -> web.StreamResponse:
        if self.response is None:
            raise SimError(status, message)
        await self.response.write(_encode({"error": message}) + b"\n")
        await self.response.write_eof()
        return self.response

    async def done(self) -> web.StreamResponse:
        if self.response is None:
            return json_response(self.last)
        await self.response.write_eof()
        return self.response

    async def transfer(self, status: str, digest: str, total: int, seconds: float) -> None:
        """total/completed lines for one layer, spread over `seconds`."""
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            done = total if seconds <= 0 else min(total, int(total * elapsed / seconds))
            await self.emit({"status": status, "digest": digest, "total": total,
                             "completed": done})
            if done >= total:
                return
            await asyncio.sleep(min(0.1, max(seconds - elapsed, 0.001)))


def _layers(spec: ModelSpec) -> list[tuple[str, int]]:
    """(digest, size) of the model's weights and its config, as a manifest lists them."""
    weights = "sha256:" + hashlib.sha256(f"weights {spec.name}".encode()).hexdigest()
    config = "sha256:" + hashlib.sha256(f"config {spec.name}".encode()).hexdigest()
    return [(weights, spec.size), (config, _CONFIG_SIZE)]


def _manifest_path(name: str) -> str:
    base, _, tag = name.rpartition(":")
    parts = base.split("/")
    if len(parts) == 1:
        parts = ["registry.ollama.ai", "library", *parts]
    elif len(parts) == 2:
        parts = ["registry.ollama.ai", *parts]
    return "/".join([_MODELS_DIR, "manifests", *parts, tag])


def _seconds(engine: Engine, size: int) -> float:
    return size / GB * engine.config.pull_seconds_per_gb


async def pull(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    name = model_name(body_of(request))
    progress = Progress(request)
    await _pull_into(engine, progress, name)
    await progress.emit({"status": "success"})
    return await progress.done()


async def _pull_into(engine: Engine, progress: Progress, name: str) -> ModelSpec:
    """Download `name` (any name exists in the simulated registry) and install it."""
    installed = engine.installed.get(name)
    spec = installed or spec_for(name)
    seconds = 0.0 if installed else _seconds(engine, spec.size)
    await progress.emit({"status": "pulling manifest"})
    await progress.transfer(f"pulling {spec.digest[:12]}", "sha256:" + spec.digest, spec.size,
                            seconds)
    for status in ("verifying sha256 digest", "writing manifest"):
        await progress.emit({"status": status})
    engine.installed[name] = spec
    return spec


async def push(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    name = model_name(body_of(request))
    progress = Progress(request)
    await progress.emit({"status": "retrieving manifest"})
    spec = engine.installed.get(name)
    if spec is None:
        await progress.emit({"status": "couldn't retrieve manifest"})
        return await progress.fail(f"open {_manifest_path(name)}: no such file or directory")
    for digest, size in _layers(spec):
        await progress.transfer(f"pushing {digest[7:19]}", digest, size,
                                _seconds(engine, size))
    await progress.emit({"status": "pushing manifest"})
    await progress.emit({"status": "success"})
    return await progress.done()


def _check_files(files: Any, what: str = "files") -> dict[str, str]:
    if files is None:
        return {}
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise SimError(400, f"{what} must map file names to digests")
    for path, digest in files.items():
        if path.startswith("/") or ".." in path.split("/") or not path:
            raise SimError(400, "file path must be relative")
        if not digest:
            raise SimError(400, "invalid digest format")
    return files


def _file_type(engine: Engine, files: dict[str, str]) -> str:
    for path, digest in files.items():
        if path.endswith(".safetensors"):
            return "safetensors"
        if path.endswith(".gguf"):
            return "gguf"
        blob = engine.blobs.get(digest.replace("-", ":", 1))
        if blob is not None and blob[1].startswith(b"GGUF"):
            return "gguf"
    return ""


async def create(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    body = body_of(request)
    raw = body.get("model") or body.get("name")
    if not raw or not isinstance(raw, str):
        raise SimError(400, "invalid model name")
    name = normalize_name(raw)
    files = _check_files(body.get("files"))
    _check_files(body.get("adapters"), "adapters")
    source = body.get("from")
    progress = Progress(request)
    if source:
        base_name = normalize_name(str(source))
        base = engine.installed.get(base_name) or await _pull_into(engine, progress, base_name)
        layers = _layers(base)
        spec = replace(base, name=name)
    elif files:
        kind = _file_type(engine, files)
        if not kind:
            return await progress.fail("unknown type", 400)
        if kind == "safetensors":
            await progress.emit({"status": "converting model"})
        layers = []
        for path in sorted(files):
            digest = files[path]
            if kind == "gguf":
                await progress.emit({"status": "parsing GGUF"})
            blob = engine.blobs.get(digest.replace("-", ":", 1))  # both spellings name it
            if blob is None:
                where = f"{_MODELS_DIR}/blobs/{digest.replace(':', '-')}"
                return await progress.fail(f"open {where}: no such file or directory")
            if kind == "gguf" and not blob[1].startswith(b"GGUF"):
                return await progress.fail("supplied file was not in GGUF format", 400)
            layers.append((digest, blob[0]))
        spec = replace(spec_for(name), size=sum(size for _, size in layers))
    else:
        return await progress.fail("neither 'from' or 'files' was specified", 400)
    for digest, _ in layers:
        await progress.emit({"status": f"using existing layer {digest}"})
    extra = {k: body[k] for k in ("system", "template", "parameters", "messages", "license")
             if body.get(k)}
    for key, value in extra.items():
        layer = hashlib.sha256(_encode({key: value})).hexdigest()
        await progress.emit({"status": f"creating new layer sha256:{layer}"})
    system = body.get("system")
    manifest = hashlib.sha256(_encode([name, layers, extra])).hexdigest()
    spec = replace(spec, manifest=manifest,
                   system=system if isinstance(system, str) and system else spec.system)
    await progress.emit({"status": "writing manifest"})
    engine.installed[name] = spec
    await progress.emit({"status": "success"})
    return await progress.done()


def _blob_digest(request: web.Request) -> str:
    digest = request.match_info["digest"]
    if not _DIGEST_RE.match(digest):
        raise SimError(400, "invalid digest format")
    return digest


async def head_blob(request: web.Request) -> web.Response:
    digest = _blob_digest(request)
    if digest.replace("-", ":", 1) not in engine_of(request).blobs:
        raise SimError(404, f'blob "{digest}" not found')
    return web.Response(status=200)


async def post_blob(request: web.Request) -> web.Response:
    """Store an upload if its bytes hash to the digest in the path (201; 200 if known)."""
    engine = engine_of(request)
    digest = _blob_digest(request)
    if digest.replace("-", ":", 1) in engine.blobs:
        return web.Response(status=200)
    hasher = hashlib.sha256()
    size = 0
    head = b""
    async for chunk in request.content.iter_chunked(1 << 16):
        hasher.update(chunk)
        size += len(chunk)
        if len(head) < 8:
            head = (head + chunk)[:8]
    got = "sha256:" + hasher.hexdigest()
    if got != digest:  # a "sha256-" path never matches, as at Ollama
        raise SimError(400, f'digest mismatch, expected "{digest}", got "{got}"')
    engine.blobs[digest] = (size, head)
    return web.Response(status=201)


async def delete(request: web.Request) -> web.Response:
    engine = engine_of(request)
    body = body_of(request)
    raw = body.get("model") or body.get("name")
    if not raw or not isinstance(raw, str):
        raise SimError(400, f'name "{raw or ""}" is invalid')
    name = normalize_name(raw)
    if name not in engine.installed:
        raise SimError(404, f"model '{raw}' not found")
    engine.remove(name)
    return web.Response(status=200)


async def copy(request: web.Request) -> web.Response:
    engine = engine_of(request)
    body = body_of(request)
    source, destination = body.get("source"), body.get("destination")
    if not source or not isinstance(source, str):
        raise SimError(400, f'source "{source or ""}" is invalid')
    if not destination or not isinstance(destination, str):
        raise SimError(400, f'destination "{destination or ""}" is invalid')
    spec = engine.installed.get(normalize_name(source))
    if spec is None:
        raise SimError(404, f'model "{source}" not found')
    target = normalize_name(destination)
    # A copy is a second name for the same manifest: same digest, same blobs.
    engine.installed[target] = replace(spec, name=target, manifest=spec.digest)
    return web.Response(status=200)


async def show(request: web.Request) -> web.Response:
    engine = engine_of(request)
    body = body_of(request)
    raw = model_name(body, normalize=False)
    spec = engine.installed.get(normalize_name(raw))
    if spec is None:
        raise SimError(404, f"model '{raw}' not found")
    return json_response(show_body(spec))


ROUTES = [
    web.post("/api/pull", pull),
    web.post("/api/push", push),
    web.post("/api/create", create),
    web.head("/api/blobs/{digest}", head_blob),
    web.post("/api/blobs/{digest}", post_blob),
    web.delete("/api/delete", delete),
    web.post("/api/copy", copy),
    web.post("/api/show", show),
]
