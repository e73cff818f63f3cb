"""Stats buckets and the usage APIs: traces, usage, apps, trends, models, benchmarks, metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from services.router.app import create_app
from services.router.context import RouterContext
from services.router.fleet import traces
from services.router.fleet.stats import add_request, current_hour, record
from shared.models import Trace, TraceStatus
from shared.settings import Settings
from tests.helpers import make_trace as trace


@pytest.fixture
async def client(settings: Settings, redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    admin = settings.replace(admin_token="adm1n")
    async with AsyncTestClient(create_app(admin, redis_url)) as test_client:
        test_client.headers["Authorization"] = "Bearer adm1n"  # not loopback: changes need it
        yield test_client


async def beat(client: AsyncTestClient[Any], node_id: str) -> None:
    """Register a node with one loaded model; wait until the replica's snapshot shows it."""
    payload = {"node_id": node_id, "ollama": {
        "models_loaded": [{"name": "llama3.2:3b"}], "models_available": ["llama3.2:3b"]}}
    assert (await client.post("/heartbeat", json=payload)).status_code == 200
    deadline = time.monotonic() + 3
    while True:
        nodes = {n["node_id"] for n in (await client.get("/fleet/status")).json()["nodes"]}
        if node_id in nodes or time.monotonic() > deadline:
            assert node_id in nodes
            return
        await asyncio.sleep(0.02)


async def store(ctx: RouterContext, item: Trace, now: float | None = None) -> None:
    """What the request path does at the end of a request: trace + stats in one pipeline."""
    pipe = ctx.redis.pipeline(transaction=False)
    traces.add_trace(pipe, ctx, item)
    add_request(pipe, ctx, item, now)
    await pipe.execute()


async def test_buckets_sum_over_hours_and_expire(ctx: RouterContext) -> None:
    now = time.time()
    for hours_ago in (0, 1, 5):
        await store(ctx, trace("n1", "m:1", latency_ms=100.0 * (hours_ago + 1)),
                    now - hours_ago * 3600)
    await store(ctx, trace("", "typo:x", status=TraceStatus.REJECTED), now)
    window = await ctx.stats.read_window(24, now)
    assert window.node("n1").requests == 3
    assert window.models()["m:1"].completion_tokens == 33
    assert window.node("").rejected == 1
    assert "typo:x" not in window.models()  # a rejected name adds no per-model fields
    assert window.last(2).node("n1").requests == 2
    ttl = await ctx.redis.ttl(ctx.keys.stats(current_hour(now)))
    assert 0 < ttl <= ctx.settings.stats_retention_days * 86400
    # sealed hours are cached; the current hour is read again each time
    await store(ctx, trace("n1", "m:1"), now)
    assert (await ctx.stats.read_window(24, now)).node("n1").requests == 4


async def test_latency_percentiles_from_the_histogram(ctx: RouterContext) -> None:
    for latency in [80.0] * 90 + [4000.0] * 10:
        await store(ctx, trace("n1", "m:1", latency_ms=latency))
    usage = (await ctx.stats.read_window(1)).fleet()
    assert usage.percentile(50) <= 100
    assert 2500 <= usage.percentile(95) <= 5000
    assert usage.avg_latency_ms == pytest.approx(472.0)


async def test_usage_apps_trends_models(client: AsyncTestClient[Any], ctx: RouterContext) -> None:
    await beat(client, "n1")
    for i in range(6):
        await store(ctx, trace("n1", "llama3.2:3b", tags=["crm"] if i % 2 else ["bot", "crm"]))
    await store(ctx, trace("n1", "qwen3:8b", status=TraceStatus.FAILED, tags=["bot"],
                           load_duration_ms=1500.0))
    usage = (await client.get("/dashboard/api/usage?hours=2")).json()
    assert usage["window_hours"] == 2
    assert usage["fleet"]["requests"] == 7
    assert usage["fleet"]["errors"] == 1
    assert usage["models"]["llama3.2:3b"]["completion_tokens"] == 66
    assert usage["nodes"]["n1"]["cold_loads"] == 1
    assert usage["models"]["llama3.2:3b"]["p50_latency_ms"] > 0
    apps = (await client.get("/dashboard/api/apps")).json()["apps"]
    assert (apps["crm"]["requests"], apps["bot"]["requests"], apps["bot"]["errors"]) == (6, 4, 1)
    trends = (await client.get("/dashboard/api/trends?hours=3&model=qwen3:8b")).json()
    assert [h["requests"] for h in trends["hours"]] == [0, 0, 1]
    assert trends["hours"][-1]["hour"] == current_hour() * 3600
    models = {m["model"]: m for m in (await client.get("/dashboard/api/models")).json()["models"]}
    assert models["llama3.2:3b"]["loaded_on"] == ["n1"]
    assert models["llama3.2:3b"]["requests_by_node"] == {"n1": 6}
    assert models["qwen3:8b"]["avg_load_ms"] == 1500.0


async def test_traces_newest_first_with_filters(
    client: AsyncTestClient[Any], ctx: RouterContext,
) -> None:
    for i in range(5):
        await store(ctx, trace("a" if i % 2 else "b", "llama3.2:3b", request_id=f"r{i}",
                               tags=["x"] if i == 3 else []))
    await store(ctx, trace("b", "qwen3:8b", request_id="bad", status=TraceStatus.FAILED))
    data = (await client.get("/dashboard/api/traces?limit=3")).json()
    assert [t["request_id"] for t in data["traces"]] == ["bad", "r4", "r3"]
    by_node = (await client.get("/dashboard/api/traces?node=a")).json()["traces"]
    assert [t["request_id"] for t in by_node] == ["r3", "r1"]
    failed = (await client.get("/dashboard/api/traces?status=failed")).json()["traces"]
    assert [t["request_id"] for t in failed] == ["bad"]
    tagged = (await client.get("/dashboard/api/traces?tag=x")).json()["traces"]
    assert [t["request_id"] for t in tagged] == ["r3"]
    model = (await client.get("/dashboard/api/traces?model=qwen3:8b")).json()["traces"]
    assert [t["request_id"] for t in model] == ["bad"]


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/dashboard/api/traces?limit=abc", "limit"),
        ("/dashboard/api/traces?limit=0", "limit"),
        ("/dashboard/api/traces?status=great", "status"),
        ("/dashboard/api/usage?hours=-1", "hours"),
        ("/dashboard/api/trends?hours=100000", "hours"),
    ],
)
async def test_bad_query_is_a_400(client: AsyncTestClient[Any], path: str, named: str) -> None:
    response = await client.get(path)
    assert response.status_code == 400
    assert named in response.json()["error"]


async def test_metrics_in_prometheus_format(
    client: AsyncTestClient[Any], ctx: RouterContext,
) -> None:
    await beat(client, "prom-node")
    await ctx.redis.zadd(ctx.keys.wait("llama3.2:3b"), {"w1": 1, "w2": 2})
    await record(ctx, trace("prom-node", "llama3.2:3b", retry_count=1, latency_ms=1200.0))
    await record(ctx, trace("prom-node", "llama3.2:3b", status=TraceStatus.FAILED))
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    labels = 'model="llama3.2:3b",node="prom-node"'
    assert f'herd_requests_total{{{labels},status="completed"}}' in text
    assert f"herd_errors_total{{{labels}}}" in text
    assert f"herd_retries_total{{{labels}}} 1.0" in text
    assert f'herd_request_latency_seconds_bucket{{le="2.5",{labels}}}' in text
    assert f"herd_time_to_first_token_seconds_count{{{labels}}}" in text
    assert 'herd_queue_waiting{model="llama3.2:3b"} 2.0' in text
    assert 'herd_node_status{node="prom-node",status="online"} 1.0' in text


async def test_benchmarks_list_and_validation(
    client: AsyncTestClient[Any], ctx: RouterContext,
) -> None:
    old = {"run_id": "old", "status": "completed", "model": "m:1", "requests": 2,
           "concurrency": 1, "max_tokens": 8, "done": 2}
    await ctx.redis.lpush(ctx.keys.benchmarks(), json.dumps(old))
    await ctx.redis.lpush(ctx.keys.benchmarks(), '{"run_id": "torn"}')  # not a run: skipped
    data = (await client.get("/dashboard/api/benchmarks")).json()
    assert data["active"] == []
    assert [run["run_id"] for run in data["runs"]] == ["old"]
    assert {k: data["runs"][0][k] for k in old} == old
    bad = await client.post("/dashboard/api/benchmarks", json={"model": "m", "requests": 10_000})
    assert bad.status_code == 400
    assert "requests" in bad.json()["error"]


async def test_a_finished_run_is_stored_and_a_bad_one_refused(
    client: AsyncTestClient[Any],
) -> None:
    url = "/dashboard/api/benchmarks/runs"
    for body, reason in (
        ({"status": "completed"}, "run_id"),
        ({"run_id": "r1", "status": "completed"}, "model"),
        ({"run_id": "r1", "model": "m:1", "status": "running"}, "status"),
        ({"run_id": "r1", "model": "m:1", "status": "completed", "done": "many"}, "done"),
    ):
        refused = await client.post(url, json=body)
        assert refused.status_code == 400, refused.text
        assert reason in refused.json()["error"]
    not_json = await client.post(url, content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and "error" in not_json.json()
    run = {"run_id": "r2", "status": "completed", "source": "cli", "model": "m:1",
           "models": ["m:1"],
           "done": 3, "per_node": {"n1": {"requests": 3, "cold_loads": 1}}}
    assert (await client.post(url, json=run)).status_code == 201
    listed = (await client.get("/dashboard/api/benchmarks")).json()["runs"]
    assert listed[0]["run_id"] == "r2" and listed[0]["per_node"]["n1"]["cold_loads"] == 1
    assert listed[0]["latency_ms"] == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
