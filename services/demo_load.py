"""`herd demo`'s background load: a mixed, tagged workload, sent with the demo's credential,
that says on the console when it starts failing and why."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from typing import Any, TextIO

import httpx

__all__ = ["PROMPTS", "WORKLOAD", "Load", "LoadWatch", "choose", "failure_reason"]

# (weight, kind, model, tag): the mix of the background load. Small models dominate, as on
# most real fleets; the tags fill the Apps page.
WORKLOAD = (
    (5, "chat", "llama3.2:3b", "chatbot"),
    (2, "chat", "llama3.1:8b", "support-agent"),
    (2, "generate", "qwen3:8b", "summarizer"),
    (1, "chat", "qwen3:14b", "code-review"),
    (1, "generate", "llama3.2:1b", "autocomplete"),
    (2, "embed", "nomic-embed-text", "rag-search"),
    # coding agents, in their own APIs: Claude Code (Anthropic's), Codex (OpenAI's Responses)
    (1, "messages", "qwen3:14b", "claude-code"),
    (1, "responses", "qwen3:8b", "codex"),
)
PROMPTS = (
    "Explain load balancing for LLM inference in two sentences.",
    "Summarise the plot of Hamlet.",
    "Write a haiku about a herd of GPUs.",
    "What is a KV cache, briefly?",
    "List three uses of embeddings.",
    "Why do cold model loads hurt latency?",
)
ERROR_BYTES = 2048  # of a failed answer, read for its reason


def choose(rng: random.Random) -> tuple[str, str, str]:
    """The next request's kind, model and tag, drawn by the workload's weights."""
    weights = [w for w, *_ in WORKLOAD]
    _w, kind, model, tag = rng.choices(WORKLOAD, weights=weights)[0]
    return kind, model, tag


def failure_reason(status: int, body: bytes) -> str:
    """A failed answer in a few words: its status and its error message, in either shape."""
    message = ""
    with contextlib.suppress(ValueError):
        answer = json.loads(body)
        error = answer.get("error") if isinstance(answer, dict) else None
        message = str(error.get("message", "")) if isinstance(error, dict) else str(error or "")
    if not message:
        message = body.decode(errors="replace").strip()
    return f"HTTP {status}: {message[:200]}" if message else f"HTTP {status}"


class LoadWatch:
    """Says on the console, while the demo runs, when its load starts failing and why, and
    when it recovers; at most one line every `quiet_s`, so a flapping load cannot flood it."""

    def __init__(self, out: TextIO | None = None, quiet_s: float = 10.0) -> None:
        self.out = out
        self.quiet_s = quiet_s
        self.failing = False
        self.told = False  # the current failing spell was announced
        self.spell = 0  # failures in the current spell
        self.last_line = -float("inf")

    def _say(self, text: str) -> None:
        print(f"herd demo: {text}", file=self.out or sys.stderr, flush=True)
        self.last_line = time.monotonic()

    def failed(self, reason: str) -> None:
        self.spell += 1
        if self.failing:
            return
        self.failing = True
        self.told = time.monotonic() - self.last_line >= self.quiet_s
        if self.told:
            self._say(f"background requests are failing: {reason}")

    def succeeded(self) -> None:
        if not self.failing:
            return
        if self.told:
            failed = "1 failed" if self.spell == 1 else f"{self.spell} failed"
            self._say(f"background requests succeed again ({failed} meanwhile)")
        self.failing, self.told, self.spell = False, False, 0


class Load:
    """Poisson arrivals at about `rate` a second, at most `max_in_flight` at once, each
    carrying `token` (the router's admin token) as its credential."""

    def __init__(self, router_url: str, *, token: str = "", rate: float = 2.0,
                 max_in_flight: int = 4, watch: LoadWatch | None = None) -> None:
        self.router_url = router_url
        self.token = token
        self.rate = rate
        self.max_in_flight = max_in_flight
        self.watch = watch or LoadWatch()
        self.sent = 0
        self.failed = 0

    def _failed(self, reason: str) -> None:
        self.failed += 1
        self.watch.failed(reason)

    async def one_request(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        kind, model, tag = choose(rng)
        prompt = rng.choice(PROMPTS)
        headers = {"X-Herd-Tags": tag}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        options = {"num_predict": rng.randint(16, 64)}
        body: dict[str, Any]
        if kind == "embed":
            path, body = "/api/embed", {"model": model, "input": prompt}
        elif kind == "generate":
            path = "/api/generate"
            body = {"model": model, "prompt": prompt, "stream": False, "options": options}
        elif kind == "messages":
            path = "/v1/messages"
            body = {"model": model, "max_tokens": options["num_predict"],
                    "messages": [{"role": "user", "content": prompt}],
                    "stream": rng.random() < 0.5}
        elif kind == "responses":
            path = "/v1/responses"
            body = {"model": model, "input": prompt,
                    "max_output_tokens": options["num_predict"], "stream": rng.random() < 0.5}
        else:
            path = "/api/chat"
            body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                    "stream": rng.random() < 0.5, "options": options}
        self.sent += 1
        try:
            async with client.stream("POST", self.router_url + path, json=body,
                                     headers=headers) as response:
                failed = response.status_code >= 400
                error = b""
                async for chunk in response.aiter_bytes():
                    if failed and len(error) < ERROR_BYTES:
                        error += chunk
        except httpx.HTTPError as exc:
            self._failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return
        if failed:
            self._failed(failure_reason(response.status_code, error))
        else:
            self.watch.succeeded()

    async def drive(self, client: httpx.AsyncClient, stopping: asyncio.Event) -> None:
        """Send requests until `stopping` is set, then cancel those still running."""
        rng = random.Random(7)
        running: set[asyncio.Task[None]] = set()
        while not stopping.is_set():
            if len(running) < self.max_in_flight:
                task = asyncio.create_task(self.one_request(client, rng))
                running.add(task)
                task.add_done_callback(running.discard)
            # Poisson arrivals at about `rate` per second: bursts and lulls, as real traffic.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), rng.expovariate(self.rate))
        for task in list(running):
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
