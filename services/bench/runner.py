"""Runs a benchmark: a bounded burst of /api/generate requests through a router, measured.

Used by `herd bench` (services/bench/cli.py) and by the router for a run started from the
dashboard (services/router/fleet/benchmarks.py), so both measure the same way. It speaks
Ollama's API, so it works against a router in front of real Ollama nodes or simulators,
or against one Ollama directly (then no node is named).

TTFT is measured by the client when streaming (the first chunk with text). Without
streaming the client cannot see the first token: TTFT is then the latency less the
node's own generation time (`eval_duration`), i.e. queueing, routing, loading and prompt
evaluation.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from services.bench.results import (
    BenchRun,
    Sample,
    figures,
    mean_generation_speed,
)

__all__ = ["MAX_SENT", "BenchConfig", "Runner", "make_prompt"]

# A run with a duration stops at this many requests too: every load loop is bounded.
MAX_SENT = 1_000_000
WORDS = ("herd", "llama", "fleet", "node", "model", "token", "prompt", "answer", "slot",
         "queue", "stream", "router", "memory", "cache", "latency", "graze")


@dataclass(frozen=True)
class BenchConfig:
    """What to run. Exactly one of `requests` and `duration_s` bounds it."""

    router_url: str
    models: tuple[str, ...]
    requests: int | None = 20
    duration_s: float | None = None
    concurrency: int = 4
    prompt_tokens: int = 32
    max_tokens: int = 64
    stream: bool = False
    prompt: str | None = None  # a fixed prompt instead of one of prompt_tokens words
    client_token: str = ""
    source: str = "cli"
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.models or any(not m.strip() for m in self.models):
            raise ValueError("give at least one model, none of them empty")
        if (self.requests is None) == (self.duration_s is None):
            raise ValueError("give either a number of requests or a duration, not both")
        if self.requests is not None and not 1 <= self.requests <= MAX_SENT:
            raise ValueError(f"requests must be from 1 to {MAX_SENT}")
        if self.duration_s is not None and not 0 < self.duration_s <= 86_400:
            raise ValueError("duration must be from 0 to 86400 seconds")
        if self.concurrency < 1 or self.prompt_tokens < 1 or self.max_tokens < 1:
            raise ValueError("concurrency, prompt tokens and max tokens must be at least 1")


def make_prompt(tokens: int, index: int) -> str:
    """About `tokens` tokens of words; `index` first, so no two requests share a prompt."""
    words = [WORDS[(index + i) % len(WORDS)] for i in range(max(tokens - 2, 1))]
    return f"{index}: " + " ".join(words)


class Runner:
    """One run: `execute()` sends the requests; `run` shows progress while it does."""

    def __init__(self, config: BenchConfig, *, replica_id: str = "",
                 on_sample: Callable[[Sample], None] | None = None) -> None:
        self.config = config
        self.samples: list[Sample] = []
        self.on_sample = on_sample
        self.run = BenchRun(
            run_id=uuid.uuid4().hex[:12], source=config.source, model=config.models[0],
            models=list(config.models), requests=config.requests or 0,
            duration_limit_s=config.duration_s, concurrency=config.concurrency,
            prompt_tokens=config.prompt_tokens, max_tokens=config.max_tokens,
            stream=config.stream, started_at=time.time(), replica_id=replica_id,
        )
        self._sent = 0
        self._started = time.monotonic()

    def progress(self) -> float:
        """0..100: the share of requests answered, or of the duration elapsed."""
        if self.config.duration_s is not None:
            share = (time.monotonic() - self._started) / self.config.duration_s
        else:
            share = (self.run.done + self.run.failed) / max(self.run.requests, 1)
        return round(100.0 * min(max(share, 0.0), 1.0), 1)

    def _next_index(self, deadline: float | None) -> int | None:
        if self._sent >= (self.config.requests or MAX_SENT):
            return None
        if deadline is not None and time.monotonic() >= deadline:
            return None
        self._sent += 1
        return self._sent - 1

    def _record(self, sample: Sample) -> None:
        self.samples.append(sample)
        if sample.ok:
            self.run.done += 1
            self.run.by_node[sample.node] = self.run.by_node.get(sample.node, 0) + 1
        else:
            self.run.failed += 1
        self.run.progress_pct = self.progress()
        self.run.updated_at = time.time()
        if self.on_sample is not None:
            self.on_sample(sample)

    async def execute(self) -> BenchRun:
        """Send every request, then fill in the figures. Never raises for a failed request:
        a run whose requests all failed ends with status "failed"."""
        config = self.config
        self._started = time.monotonic()
        self.run.started_at = time.time()
        deadline = None if config.duration_s is None else self._started + config.duration_s
        url = config.router_url.rstrip("/") + "/api/generate"
        headers = {"Content-Type": "application/json", "X-Herd-Tags": "benchmark"}
        if config.client_token:
            headers["Authorization"] = f"Bearer {config.client_token}"
        connector = aiohttp.TCPConnector(limit=config.concurrency)
        timeout = aiohttp.ClientTimeout(total=config.timeout_s)

        async def worker(session: aiohttp.ClientSession) -> None:
            while (index := self._next_index(deadline)) is not None:
                model = config.models[index % len(config.models)]
                prompt = config.prompt or make_prompt(config.prompt_tokens, index)
                payload = msgspec.json.encode({
                    "model": model, "prompt": prompt, "stream": config.stream,
                    "options": {"num_predict": config.max_tokens},
                })
                self._record(await _one(session, url, model, payload, stream=config.stream))

        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                             headers=headers) as session:
                await asyncio.gather(*(worker(session) for _ in range(config.concurrency)))
            self.run.status = "completed" if self.run.done else "failed"
            if not self.run.done and self.samples:
                self.run.error = self.samples[-1].error
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # kept in the run
            self.run.status, self.run.error = "failed", f"{type(exc).__name__}: {exc}"
        self._finish(time.monotonic() - self._started)
        return self.run

    def _finish(self, wall_s: float) -> None:
        run, samples = self.run, self.samples
        whole = figures(samples, wall_s)
        run.requests = run.requests or len(samples)
        run.finished_at = time.time()
        run.updated_at = run.finished_at
        run.duration_s = round(wall_s, 3)
        run.progress_pct = 100.0
        run.requests_per_s = whole.requests_per_s
        run.tokens_per_s = whole.tokens_per_s
        run.tokens_per_s_avg = mean_generation_speed(samples)
        run.latency_ms = whole.latency_ms
        run.ttft_ms = whole.ttft_ms
        run.cold_loads = whole.cold_loads
        for model in run.models:
            run.per_model[model] = figures([s for s in samples if s.model == model], wall_s)
        for node in sorted({s.node for s in samples}):
            run.per_node[node or "(none)"] = figures([s for s in samples if s.node == node],
                                                     wall_s)


def _fail(model: str, node: str, started: float, error: str) -> Sample:
    return Sample(model=model, node=node, ok=False,
                  latency_ms=(time.perf_counter() - started) * 1000, error=error[:300])


def _sample(model: str, node: str, started: float, final: dict[str, Any],
            ttft_ms: float | None) -> Sample:
    latency = (time.perf_counter() - started) * 1000
    eval_ms = float(final.get("eval_duration") or 0) / 1e6
    if ttft_ms is None and eval_ms:
        ttft_ms = max(latency - eval_ms, 0.0)
    return Sample(
        model=model, node=node, ok=True, latency_ms=latency, ttft_ms=ttft_ms,
        prompt_tokens=int(final.get("prompt_eval_count") or 0),
        completion_tokens=int(final.get("eval_count") or 0),
        eval_ms=eval_ms, load_ms=float(final.get("load_duration") or 0) / 1e6,
    )


async def _one(session: aiohttp.ClientSession, url: str, model: str, payload: bytes, *,
               stream: bool) -> Sample:
    started = time.perf_counter()
    node = ""
    try:
        async with session.post(url, data=payload) as response:
            node = response.headers.get("X-Fleet-Node", "")
            if response.status != 200:
                text = (await response.read()).decode(errors="replace")
                return _fail(model, node, started, f"HTTP {response.status}: {text}")
            if not stream:
                body = msgspec.json.decode(await response.read())
                if not isinstance(body, dict) or "error" in body:
                    return _fail(model, node, started, f"error: {body}")
                return _sample(model, node, started, body, None)
            ttft: float | None = None
            final: dict[str, Any] | None = None
            async for line in response.content:
                if not line.strip():
                    continue
                chunk = msgspec.json.decode(line)
                if not isinstance(chunk, dict) or "error" in chunk:
                    return _fail(model, node, started, f"error: {chunk}")
                if ttft is None and (chunk.get("response") or chunk.get("done")):
                    ttft = (time.perf_counter() - started) * 1000
                if chunk.get("done"):
                    final = chunk
            if final is None:
                return _fail(model, node, started, "the stream ended without a final chunk")
            return _sample(model, node, started, final, ttft)
    except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError, ValueError) as exc:
        return _fail(model, node, started, f"{type(exc).__name__}: {exc}")
