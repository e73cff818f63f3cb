"""One generation: options parsed, a slot taken, the prompt evaluated, tokens paced.

A reply is thinking (when asked), then either text, a JSON document, or a tool call.
Every part costs generated tokens at the node's speed and counts in eval_count, as at a
real model; `num_predict` bounds them all together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec

from services.sim.catalogue import ModelSpec
from services.sim.engine import Engine, Lease, SimError
from services.sim.text import generate_tokens, parse_keep_alive, pieces, seeded_rng, tokenize

__all__ = ["Generation", "Job", "ToolCall", "generation", "int_option", "job_options"]

_JSON_HEAD = ("{", '"', "answer", '"', ":", ' "')
_JSON_TAIL = ('"', "}")
# How long a model thinks, in tokens, per reasoning effort (true means medium).
_THINK_TOKENS = {"low": (8, 24), "medium": (16, 48), "high": (32, 96), "max": (48, 128)}


@dataclass
class ToolCall:
    """A function call the model makes instead of answering in text."""

    id: str
    name: str
    arguments: dict[str, Any]
    index: int = 0

    def text(self) -> str:
        """The call as the model writes it: what its tokens are counted from."""
        return msgspec.json.encode({"name": self.name, "arguments": self.arguments}).decode()


@dataclass
class Job:
    """What a request asks of the model, normalised from the Ollama, OpenAI or Anthropic shape."""

    spec: ModelSpec
    prompt: str
    num_ctx: int
    keep_alive: float
    num_predict: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    json_format: bool = False
    slow: float = 1.0
    think: str | None = None  # "low", "medium", "high" or "max": think first
    schema: Any = None  # a JSON Schema the reply must validate against
    tool_call: ToolCall | None = None  # reply with this call instead of text
    fixed: str | None = None  # the reply's text, fixed (a transcription)
    structured: Any = None  # the JSON value of a schema reply, drawn when planned
    # A ceiling on a reply of natural length (Anthropic's max_tokens, which agents set
    # high); num_predict, by contrast, is the reply's exact length.
    max_tokens: int | None = None


def int_option(options: Mapping[str, Any], name: str) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        # Ollama's wording and status: api.Options.FromMap fails inside the scheduler, whose
        # errors other than the ones it names are 500s (server/routes.go handleScheduleError).
        raise SimError(500, f'option "{name}" must be of type integer')
    return int(value)


def job_options(engine: Engine, body: Mapping[str, Any]) -> dict[str, Any]:
    """num_ctx, keep_alive, seed and stop from an Ollama request body."""
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise SimError(400, "options must be an object")
    cfg = engine.config
    try:
        keep_alive = parse_keep_alive(body.get("keep_alive"), cfg.keep_alive)
    except ValueError as exc:
        raise SimError(400, str(exc)) from exc
    stop = options.get("stop") or []
    return {
        "num_ctx": int_option(options, "num_ctx") or cfg.default_num_ctx,
        "keep_alive": keep_alive,
        "num_predict": int_option(options, "num_predict"),
        "seed": int_option(options, "seed"),
        "stop": [stop] if isinstance(stop, str) else [str(s) for s in stop],
    }


class Generation:
    """Runs one Job on the engine: after `await start()`, iterate `thinking()` then
    `tokens()`; `tool_calls` is set once `tokens()` ends."""

    def __init__(self, engine: Engine, job: Job) -> None:
        self.engine = engine
        self.job = job
        self.started = time.monotonic()
        self.prompt_tokens: list[str] = []
        self.thought: list[str] = []
        self.output: list[str] = []
        self.tool_calls: list[ToolCall] = []
        self.call_tokens = 0
        self.lease: Lease | None = None
        self.load_duration = 0.0
        self.prompt_eval_duration = 0.0
        self.eval_started = 0.0
        self.eval_duration = 0.0
        self.done_reason = "stop"

    async def start(self) -> None:
        job = self.job
        spec = job.spec
        ctx = min(max(job.num_ctx, 1), spec.context_length)
        tokens = tokenize(job.prompt)
        # Like Ollama, a prompt longer than the context keeps its end.
        self.prompt_tokens = tokens[-ctx:] if len(tokens) > ctx else tokens
        self.lease = await self.engine.acquire(spec, ctx, job.keep_alive, self.prompt_tokens)
        self.load_duration = self.lease.load_duration
        evaluated = max(len(self.prompt_tokens) - self.lease.cached_tokens, 0)
        began = time.monotonic()
        seconds = self.engine.prompt_seconds(evaluated, job.slow)
        if seconds > 0:
            await asyncio.sleep(seconds)
        self.prompt_eval_duration = max(time.monotonic() - began, 1e-6)
        self.engine.stats.add(spec.name, "prompt_tokens", len(self.prompt_tokens))

    @property
    def eval_count(self) -> int:
        return len(self.thought) + len(self.output) + self.call_tokens

    def _limit(self) -> int | None:
        """num_predict as a number of tokens, or None for a reply of natural length."""
        job = self.job
        if job.num_predict is not None and job.num_predict >= 0:
            return job.num_predict
        if job.num_predict == -2:
            return max(self.lease.runner.num_ctx - len(self.prompt_tokens), 0) if self.lease else 0
        return None

    def _natural_length(self) -> int:
        low, high = self.engine.config.response_tokens
        rng = seeded_rng("length", self.job.seed, self.job.spec.name, self.job.prompt)
        return rng.randint(min(low, high), max(low, high))

    def _content(self) -> Iterator[str]:
        job = self.job
        if job.fixed is not None:
            return iter(pieces(job.fixed))
        if job.schema is not None:
            return iter(pieces(msgspec.json.encode(job.structured).decode()))
        words = generate_tokens(seeded_rng("words", job.seed, job.spec.name, job.prompt))
        return _json_words(words) if job.json_format else words

    def _wait(self, next_at: float, count: int) -> tuple[float, float]:
        """When the next token is due, and how long to sleep for it (-1: just yield)."""
        delay = self.engine.token_delay(self.job.slow)
        if delay > 0:
            next_at += delay
            now = time.monotonic()
            if next_at > now:
                return next_at, next_at - now
            if now - next_at > 0.25:
                next_at = now  # fell behind (a stall): do not burst to catch up
            return next_at, 0.0
        return next_at, -1.0 if count % 16 == 15 else 0.0

    async def thinking(self) -> AsyncIterator[str]:
        """The thinking tokens, paced; none unless the request asked the model to think."""
        job = self.job
        if job.think is None:
            return
        low, high = _THINK_TOKENS.get(job.think, _THINK_TOKENS["medium"])
        count = seeded_rng("think", job.seed, job.spec.name, job.prompt).randint(low, high)
        limit = self._limit()
        if limit is None:
            limit = job.max_tokens
        if limit is not None and count >= limit:
            count = limit
            self.done_reason = "length"
        words = generate_tokens(seeded_rng("thought", job.seed, job.spec.name, job.prompt))
        self.eval_started = next_at = time.monotonic()
        for index in range(count):
            next_at, pause = self._wait(next_at, index)
            if pause:
                await asyncio.sleep(max(pause, 0.0))
            word = next(words)
            self.thought.append(word)
            yield word

    async def tokens(self) -> AsyncIterator[str]:
        """The reply, one token at a time, paced at the node's current speed. A tool call
        is generated silently (Ollama's parser holds it back) and lands in tool_calls."""
        job = self.job
        limit = self._limit()
        cap = limit if limit is not None else job.max_tokens
        if cap is not None:
            cap -= len(self.thought)
            if cap <= 0 and job.think is not None:
                self._ended()
                return  # thinking took the whole budget
        if not self.eval_started:
            self.eval_started = time.monotonic()
        if job.tool_call is not None:
            needed = len(tokenize(job.tool_call.text()))
            if cap is None or needed <= cap:
                await self._silent(needed)
                self.tool_calls = [job.tool_call]
                self._ended()
                return
        natural = limit is None
        if not natural:
            budget = cap or 0
        elif job.fixed is not None or job.schema is not None or job.json_format:
            budget = 1_000_000  # the text or the JSON document ends the reply
        else:
            budget = self._natural_length()
        if natural and cap is not None and budget > cap:
            budget, natural = cap, False
        words = self._content()
        engine = self.engine
        next_at = time.monotonic()
        text = ""
        for count, word in enumerate(words):
            if count >= budget:
                self.done_reason = "stop" if natural else "length"
                break
            if job.stop:
                text = (text + word)[-200:]
                if any(s and s in text for s in job.stop):
                    self.done_reason = "stop"
                    break
            delay = engine.token_delay(job.slow)
            if delay > 0:
                next_at += delay
                now = time.monotonic()
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                elif now - next_at > 0.25:
                    next_at = now  # fell behind (a stall): do not burst to catch up
            elif count % 16 == 15:
                await asyncio.sleep(0)  # as fast as possible, but let others run
            self.output.append(word)
            yield word
            if word == "}" and job.json_format:
                self.done_reason = "stop"
                break
        self._ended()

    def _ended(self) -> None:
        self.eval_duration = max(time.monotonic() - self.eval_started, 1e-6)

    async def _silent(self, count: int) -> None:
        next_at = time.monotonic()
        for index in range(count):
            next_at, pause = self._wait(next_at, index)
            if pause:
                await asyncio.sleep(max(pause, 0.0))
            self.call_tokens += 1

    def finish(self) -> None:
        """Release the slot (its cache keeps prompt and reply) and count the outcome."""
        if self.eval_started and not self.eval_duration:
            self.eval_duration = max(time.monotonic() - self.eval_started, 1e-6)
        name = self.job.spec.name
        if self.lease is not None:
            reply = [t for w in self.output for t in tokenize(w)]
            self.engine.release(self.lease, self.job.keep_alive, self.prompt_tokens, reply)
            self.lease = None
            self.engine.stats.add(name, "eval_tokens", self.eval_count)

    def timings(self) -> dict[str, Any]:
        """The counts and durations (ns) of Ollama's final chunk."""
        return {
            "total_duration": int((time.monotonic() - self.started) * 1e9),
            "load_duration": int(self.load_duration * 1e9),
            "prompt_eval_count": len(self.prompt_tokens),
            "prompt_eval_duration": int(self.prompt_eval_duration * 1e9),
            "eval_count": self.eval_count,
            "eval_duration": int(self.eval_duration * 1e9),
        }


@asynccontextmanager
async def generation(engine: Engine, job: Job) -> AsyncIterator[Generation]:
    """A started Generation, counted in /sim/stats as served or failed, its slot released
    however the request ends."""
    gen = Generation(engine, job)
    name = job.spec.name
    stats = engine.stats
    stats.add(name, "requests")
    stats.add(name, "in_flight")
    ok = False
    try:
        await gen.start()
        yield gen
        ok = True
    finally:
        gen.finish()
        stats.add(name, "in_flight", -1)
        stats.add(name, "served" if ok else "failed")


def _json_words(words: Iterator[str]) -> Iterator[str]:
    yield from _JSON_HEAD
    for i, word in enumerate(words):
        if i >= 12 and word == ".":
            yield word
            break
        yield word
    yield from _JSON_TAIL
