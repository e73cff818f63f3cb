"""Benchmark runs: a bounded burst of requests through this router, started from the dashboard.

Progress lives in `keys.benchmarks_active()` (any replica can show it); a finished run is
pushed onto `keys.benchmarks()`, which keeps the newest MAX_RUNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import time
import uuid
from typing import Any

import httpx
import msgspec

from services.router.context import RouterContext
from shared.errors import BadRequest, NoNodeAvailable
from shared.models import normalize_model, valid_model_name

__all__ = ["list_runs", "start_run", "stop_runs"]

log = logging.getLogger("herd.benchmark")

MAX_RUNS = 50
MAX_REQUESTS = 200
MAX_CONCURRENCY = 16
MAX_TOKENS = 512
STALE_AFTER_S = 60.0  # an active run not updated for this long belonged to a dead replica
PROGRESS_EVERY_S = 0.5
REQUEST_TIMEOUT_S = 300.0


def _own_url(ctx: RouterContext) -> str:
    host = ctx.settings.host
    host = "127.0.0.1" if host in {"0.0.0.0", "", "::"} else host
    return f"http://{'[' + host + ']' if ':' in host else host}:{ctx.settings.port}"


def _bounded(body: dict[str, Any], name: str, default: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise BadRequest(f"{name} must be an integer from 1 to {high}")
    return value


async def _save(ctx: RouterContext, run: dict[str, Any]) -> None:
    run["updated_at"] = time.time()
    run["progress_pct"] = round(100.0 * (run["done"] + run["failed"]) / run["requests"], 1)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.hset(ctx.keys.benchmarks_active(), run["run_id"], json.dumps(run))
    pipe.pexpire(ctx.keys.benchmark_lock(), int(STALE_AFTER_S * 1000))
    await pipe.execute()


async def _one(client: httpx.AsyncClient, url: str, payload: bytes, run: dict[str, Any],
               *, headers: dict[str, str], latencies: list[float], speeds: list[float]) -> None:
    started = time.perf_counter()
    try:
        response = await client.post(url, content=payload, headers=headers)
    except httpx.HTTPError:
        run["failed"] += 1
        return
    body = response.content
    node = response.headers.get("X-Fleet-Node", "")
    if response.status_code != 200:
        run["failed"] += 1
        return
    latencies.append((time.perf_counter() - started) * 1000)
    run["done"] += 1
    run["by_node"][node] = run["by_node"].get(node, 0) + 1
    with contextlib.suppress(msgspec.DecodeError, TypeError, ZeroDivisionError):
        final = msgspec.json.decode(body)
        if final.get("eval_duration"):
            speeds.append(final["eval_count"] / (final["eval_duration"] / 1e9))


async def _execute(ctx: RouterContext, run: dict[str, Any], prompt: str) -> None:
    latencies: list[float] = []
    speeds: list[float] = []
    payload = msgspec.json.encode({
        "model": run["model"], "prompt": prompt, "stream": False,
        "options": {"num_predict": run["max_tokens"]},
    })
    url = _own_url(ctx) + "/api/generate"
    headers = {"Content-Type": "application/json", "X-Herd-Tags": "benchmark"}
    # Once client keys exist, the run needs a credential like any client: the admin token
    # (or the shared client token) is one.
    token = ctx.settings.admin_token or ctx.settings.client_token
    if token:
        headers["Authorization"] = f"Bearer {token}"
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(run["requests"]):
        queue.put_nowait(index)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            await _one(client, url, payload, run, headers=headers, latencies=latencies,
                       speeds=speeds)

    async def report() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            await _save(ctx, run)

    reporter = asyncio.create_task(report())
    try:
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
            await asyncio.gather(*(worker(client) for _ in range(run["concurrency"])))
        run["status"] = "completed" if run["done"] else "failed"
    except Exception as exc:  # the run is reported as failed instead of vanishing
        log.exception("benchmark run failed", extra={"run_id": run["run_id"]})
        run["status"], run["error"] = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    ordered = sorted(latencies)
    finished = time.time()
    run.update(
        finished_at=finished,
        duration_s=round(finished - run["started_at"], 3),
        requests_per_s=round(run["done"] / max(finished - run["started_at"], 1e-9), 2),
        latency_ms={
            "p50": round(statistics.median(ordered), 1) if ordered else 0.0,
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 1) if ordered else 0.0,
            "max": round(ordered[-1], 1) if ordered else 0.0,
        },
        tokens_per_s_avg=round(statistics.fmean(speeds), 1) if speeds else 0.0,
    )
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.lpush(ctx.keys.benchmarks(), json.dumps(run))
    pipe.ltrim(ctx.keys.benchmarks(), 0, MAX_RUNS - 1)
    pipe.hdel(ctx.keys.benchmarks_active(), run["run_id"])
    pipe.delete(ctx.keys.benchmark_lock())
    await pipe.execute()


async def start_run(ctx: RouterContext, body: dict[str, Any]) -> dict[str, Any]:
    """Validate, register the run as active, and start it in the background."""
    snapshot = ctx.fleet.snapshot()
    model = body.get("model")
    if model is None:
        loaded = [m.name for n in snapshot.nodes.values() if n.servable for m in n.models_loaded]
        servable_models = [m for n in snapshot.nodes.values() if n.servable
                           for m in n.models_available]
        candidates = loaded or servable_models
        if not candidates:
            raise NoNodeAvailable("no servable node has a model to benchmark")
        model = max(set(candidates), key=candidates.count)
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model must be a non-empty string")
    if not valid_model_name(model.strip()):
        raise BadRequest("model is not a valid model name")
    prompt = body.get("prompt", "Write one sentence about herding llamas.")
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    run: dict[str, Any] = {
        "run_id": uuid.uuid4().hex[:12],
        "status": "running",
        "model": normalize_model(model),
        "requests": _bounded(body, "requests", 20, MAX_REQUESTS),
        "concurrency": _bounded(body, "concurrency", 4, MAX_CONCURRENCY),
        "max_tokens": _bounded(body, "max_tokens", 32, MAX_TOKENS),
        "done": 0,
        "failed": 0,
        "by_node": {},
        "started_at": time.time(),
        "replica_id": ctx.replica_id,
    }
    # Fields first, so a bad one is named even while another run goes on.
    active = await _active(ctx)
    if active:
        raise BadRequest(f"benchmark {active[0]['run_id']} is still running")
    # The check above reads; this claims. Two starts racing on two replicas: one wins.
    claimed = await ctx.redis.set(ctx.keys.benchmark_lock(), run["run_id"], nx=True,
                                  px=int(STALE_AFTER_S * 1000))
    if not claimed:
        raise BadRequest("another benchmark is starting or running")
    await _save(ctx, run)
    tasks = ctx.benchmark_tasks
    task = asyncio.create_task(_execute(ctx, run, prompt), name=f"herd-bench-{run['run_id']}")
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return run


async def _active(ctx: RouterContext) -> list[dict[str, Any]]:
    raw = await ctx.redis.hgetall(ctx.keys.benchmarks_active())
    runs, stale = [], []
    for run_id, text in raw.items():
        with contextlib.suppress(ValueError):
            run = json.loads(text)
            if time.time() - float(run.get("updated_at", 0)) > STALE_AFTER_S:
                stale.append(run_id)
            else:
                runs.append(run)
    if stale:
        await ctx.redis.hdel(ctx.keys.benchmarks_active(), *stale)
    return runs


async def list_runs(ctx: RouterContext, limit: int = MAX_RUNS) -> dict[str, Any]:
    stored = await ctx.redis.lrange(ctx.keys.benchmarks(), 0, limit - 1)
    runs = []
    for text in stored:
        with contextlib.suppress(ValueError):
            runs.append(json.loads(text))
    return {"active": await _active(ctx), "runs": runs}


async def stop_runs(ctx: RouterContext) -> None:
    """Cancel this replica's running benchmarks (their entries then go stale)."""
    tasks = list(ctx.benchmark_tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
