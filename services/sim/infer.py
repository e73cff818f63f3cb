"""One generation: options parsed, a slot taken, the prompt evaluated, tokens paced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.sim.catalogue import ModelSpec
from services.sim.engine import Engine, Lease, SimError
from services.sim.text import generate_tokens, parse_keep_alive, seeded_rng, tokenize

__all__ = ["Generation", "Job", "int_option", "job_options"]

_JSON_HEAD = ("{", '"', "answer", '"', ":", ' "')
_JSON_TAIL = ('"', "}")


@dataclass
class Job:
    """What a request asks of the model, normalised from the Ollama or OpenAI shape."""

    spec: ModelSpec
    prompt: str
    num_ctx: int
    keep_alive: float
    num_predict: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    json_format: bool = False
    slow: float = 1.0


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
    """Runs one Job on the engine; iterate `tokens()` after `await start()`."""

    def __init__(self, engine: Engine, job: Job) -> None:
        self.engine = engine
        self.job = job
        self.started = time.monotonic()
        self.prompt_tokens: list[str] = []
        self.output: list[str] = []
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

    def _budget(self) -> int:
        job = self.job
        if job.num_predict is not None and job.num_predict >= 0:
            return job.num_predict
        if job.num_predict == -2:
            return max(self.lease.runner.num_ctx - len(self.prompt_tokens), 0) if self.lease else 0
        if job.json_format:
            return 1_000_000  # the JSON object ends the reply
        low, high = self.engine.config.response_tokens
        rng = seeded_rng("length", job.seed, job.spec.name, job.prompt)
        return rng.randint(min(low, high), max(low, high))

    def _words(self) -> Iterator[str]:
        rng = seeded_rng("words", self.job.seed, self.job.spec.name, self.job.prompt)
        words = generate_tokens(rng)
        if not self.job.json_format:
            return words
        return _json_words(words)

    async def tokens(self) -> AsyncIterator[str]:
        """The reply, one token at a time, paced at the node's current speed."""
        job = self.job
        budget = self._budget()
        natural = budget if job.num_predict is None or job.num_predict < 0 else None
        words = self._words()
        engine = self.engine
        self.eval_started = next_at = time.monotonic()
        text = ""
        for count, word in enumerate(words):
            if count >= budget:
                self.done_reason = "stop" if natural is not None else "length"
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
        self.eval_duration = max(time.monotonic() - self.eval_started, 1e-6)

    def finish(self) -> None:
        """Release the slot (its cache keeps prompt and reply) and count the outcome."""
        if self.eval_started and not self.eval_duration:
            self.eval_duration = max(time.monotonic() - self.eval_started, 1e-6)
        name = self.job.spec.name
        if self.lease is not None:
            reply = [t for w in self.output for t in tokenize(w)]
            self.engine.release(self.lease, self.job.keep_alive, self.prompt_tokens, reply)
            self.lease = None
            self.engine.stats.add(name, "eval_tokens", len(self.output))

    def timings(self) -> dict[str, Any]:
        """The counts and durations (ns) of Ollama's final chunk."""
        return {
            "total_duration": int((time.monotonic() - self.started) * 1e9),
            "load_duration": int(self.load_duration * 1e9),
            "prompt_eval_count": len(self.prompt_tokens),
            "prompt_eval_duration": int(self.prompt_eval_duration * 1e9),
            "eval_count": len(self.output),
            "eval_duration": int(self.eval_duration * 1e9),
        }


def _json_words(words: Iterator[str]) -> Iterator[str]:
    yield from _JSON_HEAD
    for i, word in enumerate(words):
        if i >= 12 and word == ".":
            yield word
            break
        yield word
    yield from _JSON_TAIL
