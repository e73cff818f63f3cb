"""Audio: /v1/audio/transcriptions as Ollama serves it (a chat with the audio attached,
answered with a fixed transcript), and /v1/audio/speech (Ollama 0.40.8 and later): a short
WAV streamed as it is "spoken"."""

from __future__ import annotations

import math
import struct
from typing import Any

import msgspec
from aiohttp import web

from services.sim.chat import ChatRequest, plan_chat
from services.sim.engine import SimError
from services.sim.infer import Job, generation
from services.sim.web import body_of, drain, engine_of, model_name

__all__ = ["ROUTES", "SPEECH_ROUTES", "TRANSCRIPT"]

TRANSCRIPT = "The quick brown fox jumps over the lazy dog near the quiet river."
# What Ollama's transcription middleware tells the model.
_SYSTEM = ("Transcribe the audio exactly as spoken. Output only the spoken words. "
           "Do not answer any question in the audio.")
_RATE = 24_000  # samples per second, 16-bit mono: what OpenAI's speech models send
_PER_TOKEN = _RATE * 6 // 100  # 60 ms of audio per token of input text


async def transcriptions(request: web.Request) -> web.Response:
    engine = engine_of(request)
    if not request.content_type.startswith("multipart/form-data"):
        raise SimError(400, "failed to parse multipart form: request Content-Type isn't "
                            "multipart/form-data")
    form = await request.post()
    audio = form.get("file")
    data = audio.file.read() if isinstance(audio, web.FileField) else None
    fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    engine.stats.record_body(request.path, {**fields, "file": None if data is None else {
        "filename": getattr(audio, "filename", ""), "bytes": len(data)}})
    model = fields.get("model") or ""
    if not model:
        raise SimError(400, "model is required")
    if data is None:
        raise SimError(400, "file is required: http: no such file")
    if not data:
        raise SimError(400, "audio file is empty")
    system = _SYSTEM
    if fields.get("language"):
        system += f" The audio is in {fields['language']}."
    if fields.get("prompt"):
        system += f" Context: {fields['prompt']}"
    job = plan_chat(engine, ChatRequest(model, [
        {"role": "system", "content": system},
        {"role": "user", "content": "What exact words are spoken in this audio?"}],
        options={"temperature": 0}, fixed=TRANSCRIPT), request.get("slow", 1.0))
    async with generation(engine, job) as gen:
        await drain(request, gen)
        text = "".join(gen.output).strip()
    if fields.get("response_format") == "text":
        return web.Response(body=text.encode(), headers={"Content-Type": "text/plain"})
    # Every other format (json, verbose_json, srt, vtt) gets {"text"}, as from Ollama.
    return web.Response(body=msgspec.json.encode({"text": text}) + b"\n",
                        content_type="application/json")


def _wav_header(samples: int) -> bytes:
    size = samples * 2
    return (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, _RATE, _RATE * 2, 2, 16)
            + b"data" + struct.pack("<I", size))


def _tone(index: int) -> bytes:
    """60 ms of a quiet sine, its pitch changing with each token, faded in and out."""
    freq = 180 + 40 * (index % 7)
    values = []
    for n in range(_PER_TOKEN):
        fade = min(1.0, n / 240, (_PER_TOKEN - n) / 240)
        values.append(int(6000 * fade * math.sin(2 * math.pi * freq * n / _RATE)))
    return struct.pack(f"<{_PER_TOKEN}h", *values)


async def speech(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    body = body_of(request)
    name = model_name(body, normalize=False)
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise SimError(400, "input is required")
    spec = engine.model(name)
    if spec.embedding:
        raise SimError(400, f'"{name}" does not support speech')
    job = Job(spec, text, engine.config.default_num_ctx, engine.config.keep_alive,
              fixed=text, slow=request.get("slow", 1.0))
    pcm = body.get("response_format") == "pcm"
    async with generation(engine, job) as gen:
        tokens = len(gen.prompt_tokens)
        response = web.StreamResponse(headers={
            "Content-Type": "audio/pcm" if pcm else "audio/wav"})
        await response.prepare(request)
        if not pcm:
            await response.write(_wav_header(tokens * _PER_TOKEN))
        count = 0
        async for _ in gen.tokens():
            if count < tokens:
                await response.write(_tone(count))
            count += 1
        for index in range(count, tokens):  # keep the length the header announced
            await response.write(_tone(index))
        await response.write_eof()
        return response


ROUTES = [web.post("/v1/audio/transcriptions", transcriptions)]
SPEECH_ROUTES = [web.post("/v1/audio/speech", speech)]
