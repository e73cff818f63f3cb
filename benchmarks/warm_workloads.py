"""Two workloads of benchmarks/scheduling.py about loading ahead (docs/pins.md), each
against the baselines in one run:

- `bursts`: a big model (qwen3:32b) used in bursts with idle gaps longer than the nodes'
  keep_alive. Herd with the model pinned vs Herd without pins (and the baselines): cold
  loads, and TTFT p95 of the first request of each burst.
- `surge`: one model's demand jumps to 3x what one loaded copy serves. Herd with copies
  that follow the queue vs without (and the baselines): TTFT p95 and p99, loads.

Real `herd sim` processes and routers on loopback; synthetic heartbeats every
`--heartbeat` seconds report what each simulator holds (with each copy's expiry, as an
agent does). Each run gets a fresh router (its own Redis prefix) and the same warm start.

Run: .venv/bin/python benchmarks/scheduling.py --workload bursts [--seeds 1,2,3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.redisconn import EmbeddedRedis  # noqa: E402
from tests.helpers import Proc, free_port, herd_bin  # noqa: E402

__all__ = ["WORKLOADS", "run_workload"]

EXAMPLE = ROOT / "tests" / "data" / "herd-heartbeat-example.json"
BIG, MID = "qwen3:32b", "qwen3:8b"
BASELINE = "plugins.routing.baselines:"
BASELINES: dict[str, dict[str, str]] = {
    "round_robin": {"FLEET_PLUGINS": BASELINE + "round_robin",
                    "FLEET_DISABLED_PLUGINS": "plugins.routing.scorers"},
    "least_conn": {"FLEET_PLUGINS": BASELINE + "least_connections",
                   "FLEET_DISABLED_PLUGINS": "plugins.routing.scorers"},
    "random": {"FLEET_PLUGINS": BASELINE + "random_choice",
               "FLEET_DISABLED_PLUGINS": "plugins.routing.scorers"},
}


@dataclass(frozen=True)
class Workload:
    name: str
    nodes: dict[str, dict[str, Any]]  # node -> memory_gb, parallel, warm models
    keep_alive_s: float  # the nodes' keep_alive, real seconds
    load_s_per_gb: float
    tokens_per_s: float
    policies: dict[str, dict[str, str]]  # name -> router environment


WORKLOADS: dict[str, Workload] = {
    "bursts": Workload(
        "bursts",
        {"gpu-a": {"memory_gb": 36, "parallel": 4, "warm": ()},
         "gpu-b": {"memory_gb": 36, "parallel": 4, "warm": ()}},
        keep_alive_s=6.0, load_s_per_gb=0.15, tokens_per_s=200.0,
        policies={"herd+pins": {"FLEET_PINNED_MODELS": f"{BIG}=1"},
                  "herd": {}, **BASELINES},
    ),
    "surge": Workload(
        "surge",
        {"gpu-a": {"memory_gb": 24, "parallel": 2, "warm": (MID,)},
         "gpu-b": {"memory_gb": 24, "parallel": 2, "warm": ()},
         "gpu-c": {"memory_gb": 24, "parallel": 2, "warm": ()}},
        keep_alive_s=300.0, load_s_per_gb=0.4, tokens_per_s=100.0,
        policies={"herd+queue": {"FLEET_QUEUE_COPIES": "true"},
                  "herd": {"FLEET_QUEUE_COPIES": "false"}, **BASELINES},
    ),
}
REPLY_TOKENS = 60  # per request: 0.3 s at 200 tok/s, 0.6 s at 100


@dataclass
class Sent:
    at: float  # seconds since the start
    first_of_burst: bool = False


@dataclass
class Figures:
    policy: str
    seed: int
    requests: int = 0
    failed: int = 0
    ttft_ms: dict[str, float] = field(default_factory=dict)
    first_ttft_ms: dict[str, float] = field(default_factory=dict)  # bursts: each first
    cold_loads: int = 0
    leader_loads: int = 0  # of them, loads the leader sent (pins, queue copies)


def schedule(workload: Workload, seed: int) -> list[Sent]:
    rng = random.Random(seed)
    out: list[Sent] = []
    if workload.name == "bursts":
        # 4 bursts of 6 requests within 0.5 s, each after an idle gap of 1.6 keep_alives
        t = 1.0
        for _ in range(4):
            for i in range(6):
                out.append(Sent(t + (0.0 if i == 0 else rng.uniform(0.05, 0.5)), i == 0))
            t += workload.keep_alive_s * 1.6 + 1.0
        return out
    # surge: 10 s at what one copy serves (2 slots / 0.6 s ~ 3.3 req/s, sent at 3), then
    # 15 s at 3x (9 req/s), Poisson arrivals
    t, rate_one = 0.5, 3.0
    while t < 25.0:
        rate = rate_one if t < 10.0 else 3 * rate_one
        out.append(Sent(t))
        t += rng.expovariate(rate)
    return out


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def sim_args(workload: Workload, name: str, spec: dict[str, Any], port: int) -> list[str]:
    return [herd_bin(), "sim", "--host", "127.0.0.1", "--port", str(port), "--node-name", name,
            "--models", f"{BIG},{MID}", "--memory-gb", str(spec["memory_gb"]),
            "--num-parallel", str(spec["parallel"]), "--max-loaded-models", "3",
            "--tokens-per-s", str(workload.tokens_per_s), "--prompt-tps", "0",
            "--load-seconds-per-gb", str(workload.load_s_per_gb), "--load-base-seconds", "0.3",
            "--keep-alive", f"{workload.keep_alive_s:g}s", "--keep-bodies", "0"]


async def heartbeat(session: aiohttp.ClientSession, router: str, node_id: str, url: str,
                    parallel: int) -> None:
    """What an agent beside the simulator reports: memory, models, each copy's expiry."""
    async with session.get(f"{url}/sim/node") as r:
        machine = await r.json()
    async with session.get(f"{url}/api/tags") as r:
        tags = (await r.json())["models"]
    async with session.get(f"{url}/api/ps") as r:
        ps = (await r.json())["models"]
    payload: dict[str, Any] = json.loads(EXAMPLE.read_text())
    payload.update(node_id=node_id, ollama_host=url, timestamp=time.time())
    payload["memory"].update(machine["memory"])
    payload["ollama"].update(
        models_available=[m["name"] for m in tags], models_available_meta={},
        models_available_sizes={m["name"]: m["size"] / 1e9 for m in tags},
        num_parallel=parallel, max_loaded_models=machine["max_loaded_models"],
        models_loaded=[{"name": m["name"], "size_gb": m["size"] / 1e9,
                        "context_length": m.get("context_length", 0),
                        "expires_at": m.get("expires_at", "")} for m in ps])
    async with session.post(f"{router}/heartbeat", json=payload) as r:
        await r.read()


async def beat(session: aiohttp.ClientSession, router: str, sims: dict[str, str],
               workload: Workload, interval: float) -> None:
    while True:
        for node_id, url in sims.items():
            try:
                await heartbeat(session, router, node_id, url,
                                workload.nodes[node_id]["parallel"])
            except (aiohttp.ClientError, OSError) as exc:
                print(f"  heartbeat failed: {exc}", file=sys.stderr)
        await asyncio.sleep(interval)


async def one(session: aiohttp.ClientSession, router: str, model: str,
              sent: Sent, t0: float) -> tuple[Sent, float, str]:
    await asyncio.sleep(max(0.0, sent.at - (time.perf_counter() - t0)))
    body = {"model": model, "prompt": f"burst {sent.at:.3f}", "stream": True,
            "options": {"num_predict": REPLY_TOKENS}}
    started = time.perf_counter()
    ttft = 0.0
    try:
        async with session.post(f"{router}/api/generate", json=body) as r:
            if r.status != 200:
                return sent, 0.0, f"{r.status}"
            async for line in r.content:
                if line.strip() and not ttft:
                    ttft = (time.perf_counter() - started) * 1000
    except (aiohttp.ClientError, OSError) as exc:
        return sent, 0.0, str(exc)
    return sent, ttft, ""


async def sim_call(session: aiohttp.ClientSession, method: str, url: str,
                   body: dict[str, Any] | None = None) -> Any:
    async with session.request(method, url, json=body) as r:
        data = await r.read()
        if r.status != 200:
            raise RuntimeError(f"{method} {url}: {r.status} {data[:200]!r}")
        return json.loads(data) if data.strip() else None


def start_router(tmp: Path, redis_url: str, env: dict[str, str], tag: str,
                 heartbeat_s: float) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc([herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--redis-url",
                 redis_url, "--no-mdns", "--no-dashboard", "--data-dir",
                 str(tmp / f"router-{tag}"), "--log-level", "WARNING"],
                tmp / f"router-{tag}.log",
                env={"FLEET_REDIS_PREFIX": f"herdbench:{uuid.uuid4().hex[:8]}:",
                     "FLEET_HEARTBEAT_TIMEOUT": "600", "FLEET_HEARTBEAT_OFFLINE": "1200",
                     "FLEET_HEARTBEAT_INTERVAL": str(heartbeat_s),
                     "FLEET_MAX_QUEUE_DEPTH": "100000", "FLEET_QUEUE_TIMEOUT": "3600",
                     "FLEET_RECORDER_ENABLED": "false", **env})
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(f"{url}/healthz", timeout=60)
    return proc, url


async def run_once(workload: Workload, policy: str, seed: int, sims: dict[str, str],
                   tmp: Path, redis_url: str, args: argparse.Namespace) -> Figures:
    model = BIG if workload.name == "bursts" else MID
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=args.cap)) as session:
        for node_id, url in sims.items():
            await sim_call(session, "POST", f"{url}/sim/reset", {"unload": True})
            for warm in workload.nodes[node_id]["warm"]:
                await sim_call(session, "POST", f"{url}/api/generate",
                               {"model": warm, "prompt": "", "stream": False})
            await sim_call(session, "POST", f"{url}/sim/reset", {})
        proc, router = await asyncio.to_thread(
            start_router, tmp, redis_url, workload.policies[policy],
            f"{workload.name}-{policy}-{seed}", args.heartbeat)
        beats = asyncio.create_task(beat(session, router, sims, workload, args.heartbeat))
        try:
            await asyncio.sleep(args.heartbeat * 3)  # every node seen by the router
            await settled(session, router)
            plan = schedule(workload, seed)
            t0 = time.perf_counter()
            results = await asyncio.wait_for(
                asyncio.gather(*(one(session, router, model, s, t0) for s in plan)), args.cap)
        finally:
            beats.cancel()
            await asyncio.gather(beats, return_exceptions=True)
            await asyncio.to_thread(proc.stop)
        figures = Figures(policy, seed, requests=len(results))
        ok = [(s, ttft) for s, ttft, error in results if not error and ttft]
        figures.failed = len(results) - len(ok)
        figures.ttft_ms = {f"p{p}": round(pct([t for _, t in ok], p), 1) for p in (50, 95, 99)}
        firsts = [t for s, t in ok if s.first_of_burst]
        if firsts:
            figures.first_ttft_ms = {f"p{p}": round(pct(firsts, p), 1) for p in (50, 95)}
        for url in sims.values():
            total = (await sim_call(session, "GET", f"{url}/sim/stats"))["total"]
            figures.cold_loads += total["loads"] + total["reloads"]
    return figures


async def settled(session: aiohttp.ClientSession, router: str, within: float = 60.0) -> None:
    """Until every pin is kept (a pinned model is loaded ahead: that is the point), bounded."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with session.get(f"{router}/fleet/pins") as r:
            pins = (await r.json())["pins"]
        if all(p["state"] == "satisfied" for p in pins):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"pins not kept within {within:g} s: {pins}")


def _median(runs: list[Figures], get: Any) -> float:
    return float(statistics.median(get(r) for r in runs)) if runs else 0.0


def report(workload: Workload, runs: list[Figures]) -> None:
    seeds = sorted({r.seed for r in runs})
    print(f"\n== {workload.name} (seeds {','.join(map(str, seeds))}; medians) ==")
    print(f"{'policy':<12} {'ttft p50':>9} {'p95':>7} {'p99':>7} {'first p50':>10} "
          f"{'first p95':>10} {'loads':>6} {'fail':>5}")
    for policy in workload.policies:
        mine = [r for r in runs if r.policy == policy]
        if not mine:
            continue
        print(f"{policy:<12} {_median(mine, lambda r: r.ttft_ms['p50']):9.0f} "
              f"{_median(mine, lambda r: r.ttft_ms['p95']):7.0f} "
              f"{_median(mine, lambda r: r.ttft_ms['p99']):7.0f} "
              f"{_median(mine, lambda r: r.first_ttft_ms.get('p50', 0.0)):10.0f} "
              f"{_median(mine, lambda r: r.first_ttft_ms.get('p95', 0.0)):10.0f} "
              f"{_median(mine, lambda r: r.cold_loads):6.0f} "
              f"{_median(mine, lambda r: r.failed):5.0f}")


async def run_workload(args: argparse.Namespace) -> list[Figures]:
    workload = WORKLOADS[args.workload]
    seeds = [int(s) for s in args.seeds.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix=f"herd-{workload.name}-"))
    redis = EmbeddedRedis(tmp / "redis")
    redis_url = redis.start()
    procs: list[Proc] = []
    runs: list[Figures] = []
    try:
        sims: dict[str, str] = {}
        for name, spec in workload.nodes.items():
            port = free_port()
            procs.append(Proc(sim_args(workload, name, spec, port), tmp / f"sim-{name}.log"))
            sims[name] = f"http://127.0.0.1:{port}"
        for proc, url in zip(procs, sims.values(), strict=True):
            await asyncio.to_thread(proc.wait_http, f"{url}/api/version")
        policies = list(workload.policies)
        for i, seed in enumerate(seeds):
            order = policies[i % len(policies):] + policies[:i % len(policies)]
            for policy in order:
                figures = await run_once(workload, policy, seed, sims, tmp, redis_url, args)
                runs.append(figures)
                print(f"  seed {seed} {policy:<12} ttft p95 {figures.ttft_ms['p95']:7.0f} ms"
                      f"  first-of-burst p95 {figures.first_ttft_ms.get('p95', 0):7.0f} ms"
                      f"  loads {figures.cold_loads:3d}  failed {figures.failed}", flush=True)
    finally:
        for proc in reversed(procs):
            proc.stop()
        redis.stop()
    report(workload, runs)
    print(f"\nmachine load {' '.join(f'{x:.1f}' for x in psutil.getloadavg())} on "
          f"{psutil.cpu_count()} CPUs")
    return runs
