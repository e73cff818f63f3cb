"""How long /dashboard/api/health takes with 100 nodes and a day of stats (target < 50 ms).

Fills a private key prefix with 24 hourly buckets as the request path would write them
(100 nodes x 3 models, tags, cold loads, errors), 100 node heartbeats, counters and waiters,
then times `compute_health` cold (first call reads every bucket) and warm (sealed hours
cached, as in a running replica), and the HTTP round trip through the app.

    .venv/bin/python benchmarks/health_speed.py [--redis-url URL] [--calls 50]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from services.router.app import create_app
from services.router.context import RouterContext
from services.router.fleet.health import compute_health
from services.router.fleet.stats import add_request
from shared.keys import Keys
from shared.models import Trace, TraceStatus
from shared.redisconn import EmbeddedRedis, connect
from shared.settings import Settings

NODES = 100
MODELS = ("llama3.2:3b", "qwen3:8b", "nomic-embed-text:latest", "gemma3:12b", "phi4:14b")
TRACES_PER_HOUR = 300  # distinct field combinations matter, not volume: ~every pair per hour


def heartbeat(index: int) -> dict[str, Any]:
    models = [MODELS[(index + k) % len(MODELS)] for k in range(3)]
    return {
        "node_id": f"gpu-{index:03d}",
        "ollama_host": f"http://10.0.{index // 250}.{index % 250}:11434",
        "cpu": {"cores_physical": 16, "utilization_pct": random.uniform(5, 95)},
        "memory": {"total_gb": 64.0, "used_gb": 40.0, "available_gb": 24.0,
                   "pressure": "normal"},
        "ollama": {"models_loaded": [{"name": models[0], "size_gb": 5.0}],
                   "models_available": models},
    }


def fake_trace(rng: random.Random) -> Trace:
    node = rng.randrange(NODES)
    model = MODELS[(node + rng.randrange(3)) % len(MODELS)]
    status = rng.choices(list(TraceStatus), weights=[90, 3, 3, 1, 2, 1])[0]
    return Trace(
        request_id=uuid.uuid4().hex, model=model, original_model=model,
        node_id=f"gpu-{node:03d}", status=status, latency_ms=rng.lognormvariate(7, 1),
        time_to_first_token_ms=rng.uniform(20, 900), prompt_tokens=rng.randrange(2000),
        completion_tokens=rng.randrange(800), retry_count=int(status is TraceStatus.RETRIED),
        load_duration_ms=rng.choice([0.0] * 20 + [3000.0]),
        tags=rng.choice([[], ["crm"], ["bot", "eval"], ["agent"]]),
        queue_wait_ms=rng.choice([0.0, 0.0, 150.0]),
    )


async def fill(ctx: RouterContext) -> None:
    rng = random.Random(7)
    now = time.time()
    for hours_ago in range(24):
        pipe = ctx.redis.pipeline(transaction=False)
        for _ in range(TRACES_PER_HOUR):
            add_request(pipe, ctx, fake_trace(rng), now - hours_ago * 3600)
        await pipe.execute()
    pipe = ctx.redis.pipeline(transaction=False)
    for index in range(NODES):
        for model in MODELS[:2]:
            node = f"gpu-{index:03d}"
            pipe.sadd(ctx.keys.counters_index(), f"{node}|{model}")
            pipe.hset(ctx.keys.counters(node, model), mapping={
                "pending": 0, "in_flight": rng.randrange(4), "done": 100, "failed": 1})
    pipe.zadd(ctx.keys.wait("qwen3:8b"), {f"w{i}": i for i in range(50)})
    await pipe.execute()


async def run(redis_url: str, calls: int) -> None:
    prefix = f"herdbench:{uuid.uuid4().hex[:8]}:"
    settings = Settings.load(environ={}, redis_url=redis_url, redis_prefix=prefix,
                             mdns_enabled=False, dashboard_enabled=False,
                             data_dir=tempfile.mkdtemp())
    redis = connect(redis_url)
    try:
        loader = RouterContext.create(settings, redis)
        await fill(loader)
        fields = await redis.hlen(loader.keys.stats(int(time.time() // 3600)))
        async with AsyncTestClient(create_app(settings, redis_url)) as client:
            for index in range(NODES):
                await client.post("/heartbeat", json=heartbeat(index))
            app_ctx: RouterContext = client.app.state.herd
            assert len(app_ctx.fleet.snapshot().nodes) == NODES
            timings = []
            for _ in range(calls):
                started = time.perf_counter()
                response = await client.get("/dashboard/api/health")
                timings.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            body = response.json()
        # the same work on this loop, without HTTP: cold (no cache) then warm
        ctx = RouterContext.create(settings, redis)
        started = time.perf_counter()
        await compute_health(ctx)
        cold = (time.perf_counter() - started) * 1000
        warm = []
        cpu_started = time.process_time()
        for _ in range(calls):
            started = time.perf_counter()
            await compute_health(ctx)
            warm.append((time.perf_counter() - started) * 1000)
        cpu_ms = (time.process_time() - cpu_started) * 1000 / calls
        print(f"{NODES} nodes, 24 h of stats ({fields} fields in the current hour's bucket), "
              f"{len(body['recommendations'])} findings")
        print(f"compute_health cold (no cached hours): {cold:.1f} ms")
        print(f"compute_health warm: median {statistics.median(warm):.1f} ms, "
              f"max {max(warm):.1f} ms, {cpu_ms:.1f} ms CPU per call of this process "
              "(Redis's share excluded)")
        print(f"GET /dashboard/api/health through the app: median "
              f"{statistics.median(timings):.1f} ms, p95 "
              f"{sorted(timings)[int(0.95 * (len(timings) - 1))]:.1f} ms")
    finally:
        batch = [k async for k in redis.scan_iter(match=Keys(prefix).match(), count=1000)]
        for start in range(0, len(batch), 500):
            await redis.delete(*batch[start:start + 500])
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    if args.redis_url:
        asyncio.run(run(args.redis_url, args.calls))
        return
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as url:
        asyncio.run(run(url, args.calls))


if __name__ == "__main__":
    main()
