"""Benchmark runs: stored for the dashboard, and runs started from it inside this router.

A run started from the dashboard uses the same runner as `herd bench`
(services/bench/runner.py), sending its requests to this router's own port; `herd bench`
runs it in its own process and stores the finished run through
`POST /dashboard/api/benchmarks/runs`. Both end in `store_run`.

Progress lives in `keys.benchmarks_active()` (any replica can show it); a finished run is
pushed onto `keys.benchmarks()`, which keeps the newest MAX_RUNS. One dashboard run at a
time: a start claims `keys.benchmark_lock()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

import msgspec
from redis.asyncio import Redis

from services.bench.results import BenchRun
from services.bench.runner import BenchConfig, Runner
from services.router.fleet.registry import Registry
from shared.errors import BadRequest, NoNodeAvailable
from shared.keys import Keys
from shared.models import normalize_model, valid_model_name
from shared.schemas import BenchmarkList
from shared.settings import Settings

__all__ = ["BenchmarkParts", "BenchmarkRuns", "list_runs", "start_run", "store_run"]

log = logging.getLogger("herd.benchmark")

MAX_RUNS = 50
MAX_REQUESTS = 200
MAX_CONCURRENCY = 16
MAX_TOKENS = 512
MAX_PROMPT_TOKENS = 8192
STALE_AFTER_S = 60.0  # an active run not updated for this long belonged to a dead replica
PROGRESS_EVERY_S = 0.5

_run_decoder = msgspec.json.Decoder(BenchRun)


class BenchmarkRuns:
    """The benchmark runs started on this replica, cancelled when it stops."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        """Cancel the running ones (their entries then go stale)."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class BenchmarkParts(Protocol):
    """What benchmark runs use of a replica's context."""

    settings: Settings
    redis: Redis
    keys: Keys
    replica_id: str
    fleet: Registry
    benchmarks: BenchmarkRuns


def _own_url(ctx: BenchmarkParts) -> str:
    host = ctx.settings.host
    host = "127.0.0.1" if host in {"0.0.0.0", "", "::"} else host
    return f"http://{'[' + host + ']' if ':' in host else host}:{ctx.settings.port}"


def _bounded(body: dict[str, Any], name: str, default: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise BadRequest(f"{name} must be an integer from 1 to {high}")
    return value


async def _save_progress(ctx: BenchmarkParts, run: BenchRun) -> None:
    run.updated_at = time.time()
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.hset(ctx.keys.benchmarks_active(), run.run_id, msgspec.json.encode(run))
    pipe.pexpire(ctx.keys.benchmark_lock(), int(STALE_AFTER_S * 1000))
    await pipe.execute()


async def store_run(ctx: BenchmarkParts, run: BenchRun, *, release_lock: bool = False) -> None:
    """Keep a finished run where the dashboard lists it (and end its progress entry)."""
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.lpush(ctx.keys.benchmarks(), msgspec.json.encode(run))
    pipe.ltrim(ctx.keys.benchmarks(), 0, MAX_RUNS - 1)
    pipe.hdel(ctx.keys.benchmarks_active(), run.run_id)
    if release_lock:
        pipe.delete(ctx.keys.benchmark_lock())
    await pipe.execute()


async def _execute(ctx: BenchmarkParts, runner: Runner) -> None:
    async def report() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            await _save_progress(ctx, runner.run)

    reporter = asyncio.create_task(report())
    try:
        await runner.execute()
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    if runner.run.status == "failed":
        log.warning("benchmark run failed", extra={"run_id": runner.run.run_id,
                                                   "error": runner.run.error})
    await store_run(ctx, runner.run, release_lock=True)


def _pick_model(ctx: BenchmarkParts) -> str:
    snapshot = ctx.fleet.snapshot()
    loaded = [m.name for n in snapshot.nodes.values() if n.servable for m in n.models_loaded]
    servable = [m for n in snapshot.nodes.values() if n.servable for m in n.models_available]
    candidates = loaded or servable
    if not candidates:
        raise NoNodeAvailable("no servable node has a model to benchmark")
    return max(set(candidates), key=candidates.count)


def _config(ctx: BenchmarkParts, body: dict[str, Any]) -> BenchConfig:
    model = body.get("model")
    if model is None:
        model = _pick_model(ctx)
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model must be a non-empty string")
    if not valid_model_name(model.strip()):
        raise BadRequest("model is not a valid model name")
    prompt = body.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise BadRequest("prompt must be a non-empty string")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false")
    return BenchConfig(
        router_url=_own_url(ctx),
        models=(normalize_model(model),),
        requests=_bounded(body, "requests", 20, MAX_REQUESTS),
        concurrency=_bounded(body, "concurrency", 4, MAX_CONCURRENCY),
        max_tokens=_bounded(body, "max_tokens", 32, MAX_TOKENS),
        prompt_tokens=_bounded(body, "prompt_tokens", 32, MAX_PROMPT_TOKENS),
        stream=stream,
        prompt=prompt,
        # Once client keys exist, the run needs a credential like any client: the admin
        # token (or the shared client token) is one.
        client_token=ctx.settings.admin_token or ctx.settings.client_token,
        source="dashboard",
    )


async def start_run(ctx: BenchmarkParts, body: dict[str, Any]) -> BenchRun:
    """Validate, register the run as active, and start it in the background. The returned
    run is the live one: its fields change as the run goes."""
    runner = Runner(_config(ctx, body), replica_id=ctx.replica_id)
    run = runner.run
    # Fields first, so a bad one is named even while another run goes on.
    active = await _active(ctx)
    if active:
        raise BadRequest(f"benchmark {active[0].run_id} is still running")
    # The check above reads; this claims. Two starts racing on two replicas: one wins.
    claimed = await ctx.redis.set(ctx.keys.benchmark_lock(), run.run_id, nx=True,
                                  px=int(STALE_AFTER_S * 1000))
    if not claimed:
        raise BadRequest("another benchmark is starting or running")
    await _save_progress(ctx, run)
    ctx.benchmarks.add(
        asyncio.create_task(_execute(ctx, runner), name=f"herd-bench-{run.run_id}"))
    return run


async def _active(ctx: BenchmarkParts) -> list[BenchRun]:
    raw = await ctx.redis.hgetall(ctx.keys.benchmarks_active())
    runs, stale = [], []
    for run_id, text in raw.items():
        run = _decode_run(text)
        if run is None or time.time() - run.updated_at > STALE_AFTER_S:
            stale.append(run_id)
        else:
            runs.append(run)
    if stale:
        await ctx.redis.hdel(ctx.keys.benchmarks_active(), *stale)
    return runs


def _decode_run(text: str | bytes) -> BenchRun | None:
    """A stored run; None for an entry that is not one (written by a foreign version)."""
    try:
        return _run_decoder.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


async def list_runs(ctx: BenchmarkParts, limit: int = MAX_RUNS) -> BenchmarkList:
    """Active runs and stored ones, newest first (older runs lack the newer fields)."""
    stored = await ctx.redis.lrange(ctx.keys.benchmarks(), 0, limit - 1)
    runs = [run for run in map(_decode_run, stored) if run is not None]
    return BenchmarkList(active=await _active(ctx), runs=runs)
