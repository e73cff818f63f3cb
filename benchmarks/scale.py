"""How the router's costs grow with the fleet: 10, 50 and 200 registered nodes.

One `herd sim` (instant replies) stands behind every node id: synthetic heartbeats register
N nodes that all point at it, each sending a heartbeat every `--interval` seconds (5 s, like
herd-node). For each N, on a fresh router (its own Redis prefix), in one run:
  - the routing decision per request: the engine's ranking, timed in this process with the
    router's own engine over the same N nodes, plus the slot acquisition as the router
    timed it (the `queue_wait_ms` of its traces, no request waiting);
  - a small chat's routed latency at concurrency 1 (p50), direct to the simulator as well;
  - heartbeat ingestion: the router's CPU time over an idle window with only heartbeats;
  - the router's memory (RSS);
  - response times of GET /fleet/status and GET /dashboard/api/health (p50).
Run: .venv/bin/python benchmarks/scale.py [--nodes 10,50,200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import redis as sync_redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.router.fleet.candidates import Candidates  # noqa: E402
from services.router.fleet.heartbeat import parse_heartbeat  # noqa: E402
from services.router.fleet.routing import RoutingEngine  # noqa: E402
from services.router.fleet.slots import SlotManager  # noqa: E402
from shared.keys import Keys  # noqa: E402
from shared.models import FleetSnapshot, decode_trace  # noqa: E402
from shared.plugins import build_plugin_manager  # noqa: E402
from shared.redisconn import EmbeddedRedis, connect  # noqa: E402
from shared.routing import RouteRequest, RoutingInputs, ScoringContext  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.helpers import Proc, free_port, herd_bin  # noqa: E402

MODEL = "llama3.2:3b"
EXAMPLE = ROOT / "tests" / "data" / "herd-heartbeat-example.json"
SIM_FLAGS = ["--tokens-per-s", "0", "--prompt-tps", "0", "--load-base-seconds", "0",
             "--load-seconds-per-gb", "0", "--response-tokens", "8-8", "--num-parallel", "64",
             "--contention", "0", "--models", MODEL, "--keep-alive", "-1",
             "--memory-gb", "512", "--keep-bodies", "0"]
CHAT = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "stream": False}).encode()


def payload(node_id: str, sim: str, base: dict[str, Any]) -> dict[str, Any]:
    """A node holding the model, with 4 slots; every node points at the one simulator."""
    body = json.loads(json.dumps(base))
    body.update(node_id=node_id, ollama_host=sim, timestamp=time.time())
    body["ollama"].update(
        models_available=[MODEL], models_available_sizes={MODEL: 2.0},
        models_available_meta={}, num_parallel=4,
        models_loaded=[{"name": MODEL, "size_gb": 2.0, "context_length": 4096}],
    )
    return body


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class Heartbeats:
    """N nodes, each posting every `interval` seconds, spread evenly over the interval."""

    def __init__(self, session: aiohttp.ClientSession, router: str, sim: str, n: int,
                 interval: float) -> None:
        base = json.loads(EXAMPLE.read_text())
        self.session, self.router, self.interval = session, router, interval
        self.payloads = [payload(f"node-{i:03d}", sim, base) for i in range(n)]
        self.posted = 0

    async def post(self, body: dict[str, Any]) -> None:
        body["timestamp"] = time.time()
        async with self.session.post(f"{self.router}/heartbeat", json=body) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"heartbeat refused: {r.status}")
        self.posted += 1

    async def register_all(self) -> None:
        for body in self.payloads:
            await self.post(body)

    async def run(self) -> None:
        gap = self.interval / len(self.payloads)
        while True:
            for body in self.payloads:
                started = time.perf_counter()
                try:
                    await self.post(body)
                except (aiohttp.ClientError, OSError) as exc:
                    print(f"  heartbeat failed: {exc}", file=sys.stderr)
                await asyncio.sleep(max(0.0, gap - (time.perf_counter() - started)))


async def timed_gets(session: aiohttp.ClientSession, url: str, n: int) -> float:
    """Median response time of GET url, in ms."""
    out: list[float] = []
    for _ in range(n):
        started = time.perf_counter()
        async with session.get(url) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"GET {url}: {r.status}")
        out.append((time.perf_counter() - started) * 1000)
    return statistics.median(out)


async def chat_latency(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        started = time.perf_counter()
        async with session.post(url + "/api/chat", data=CHAT) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"chat through {url}: {r.status}")
        out.append((time.perf_counter() - started) * 1000)
    return out


def rank_time_us(payloads: list[dict[str, Any]], iterations: int, limit: int
                 ) -> tuple[float, list[tuple[str, int]]]:
    """Median µs of one ranking by the router's own engine over these nodes (transforms,
    shortlist, filters, scorers), and how many candidates it hands to the slot acquisition."""
    nodes = [parse_heartbeat(p, "127.0.0.1") for p in payloads]
    snapshot = FleetSnapshot(nodes={n.node_id: n for n in nodes}, taken_at=time.time())
    settings = Settings.load(environ={}, routing_candidates=limit)
    engine = RoutingEngine(build_plugin_manager())
    inputs = RoutingInputs()
    for i, node in enumerate(nodes):  # some work in flight, as on a live fleet
        for _ in range(i % 3):
            inputs.started(node.node_id, MODEL)
    context = ScoringContext(settings=settings, snapshot=snapshot, inputs=inputs)
    samples: list[float] = []
    pairs: list[tuple[str, int]] = []
    for i in range(iterations):
        request = RouteRequest(request_id=f"r{i}", api="ollama", endpoint="chat", model=MODEL,
                               body={"model": MODEL, "messages": [
                                   {"role": "user", "content": f"hi {i}"}]}, raw=CHAT)
        started = time.perf_counter()
        engine.prepare(request, context)
        chosen = Candidates(engine, request, context, (), next(engine.turns))
        samples.append((time.perf_counter() - started) * 1e6)
        pairs = chosen.slots()
    return statistics.median(samples), pairs


async def slot_scripts_us(redis_url: str, prefix: str, pairs: list[tuple[str, int]],
                          iterations: int) -> float:
    """Redis's own time (µs) for one request's acquire and release scripts with these
    candidates: INFO commandstats around a serial series, nothing else running scripts."""
    client = connect(redis_url)
    settings = Settings.load(environ={}, redis_prefix=prefix)
    slots = SlotManager(client, Keys(prefix), lambda: settings)
    try:
        node = await slots.acquire(MODEL, "warm", pairs, 1.0)  # loads the script
        await slots.release(node, MODEL, "warm", ok=True)
        await client.config_resetstat()
        for i in range(iterations):
            node = await slots.acquire(MODEL, f"bench-{i}", pairs, 1.0)
            await slots.release(node, MODEL, f"bench-{i}", ok=True)
        stats = (await client.info("commandstats")).get("cmdstat_evalsha", {})
    finally:
        await client.aclose()
    return float(stats.get("usec", 0)) / max(iterations, 1)


def acquire_times_ms(redis_url: str, prefix: str) -> list[float]:
    """The slot acquisition of each routed request, as the router timed it (its traces)."""
    client = sync_redis.Redis.from_url(redis_url)
    try:
        entries = client.xrange(Keys(prefix).traces(), count=100_000)
    finally:
        client.close()
    traces = [decode_trace(fields) for _, fields in entries]
    return [t.queue_wait_ms for t in traces if t is not None]


async def one_size(n: int, limit: int, args: argparse.Namespace, tmp: Path, redis_url: str,
                   sim: str) -> dict[str, float]:
    prefix = f"herdscale:{uuid.uuid4().hex[:8]}:"
    port = free_port()
    router = Proc([herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--redis-url",
                   redis_url, "--no-mdns", "--no-dashboard", "--data-dir",
                   str(tmp / f"router-{n}-{limit}"), "--log-level", "WARNING"],
                  tmp / f"router-{n}-{limit}.log",
                  env={"FLEET_REDIS_PREFIX": prefix, "FLEET_RECORDER_ENABLED": "false",
                       "FLEET_ROUTING_CANDIDATES": str(limit)})
    url = f"http://127.0.0.1:{port}"
    out: dict[str, float] = {"nodes": n, "limit": limit}
    try:
        await asyncio.to_thread(router.wait_http, f"{url}/healthz", 60)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            beats = Heartbeats(session, url, sim, n, args.interval)
            await beats.register_all()
            task = asyncio.create_task(beats.run())
            try:
                async with session.get(f"{url}/fleet/status") as r:
                    seen = (await r.json())["fleet"]["nodes_servable"]
                if seen != n:
                    raise RuntimeError(f"router sees {seen} servable nodes, not {n}")
                await chat_latency(session, url, min(50, args.requests))  # warm pools, inputs
                routed = await chat_latency(session, url, args.requests)
                direct = await chat_latency(session, sim, args.requests)
                out["routed_p50_ms"] = statistics.median(routed)
                out["direct_p50_ms"] = statistics.median(direct)
                out["added_p50_ms"] = out["routed_p50_ms"] - out["direct_p50_ms"]
                # heartbeats alone: the router's CPU over an idle window
                posted, cpu = beats.posted, cpu_seconds(router.pid)
                await asyncio.sleep(args.idle)
                cpu = cpu_seconds(router.pid) - cpu
                beats_in = max(beats.posted - posted, 1)
                out["idle_cpu_pct"] = 100 * cpu / args.idle
                out["cpu_ms_per_heartbeat"] = 1000 * cpu / beats_in
                out["rss_mb"] = psutil.Process(router.pid).memory_info().rss / 2**20
                out["fleet_status_ms"] = await timed_gets(session, f"{url}/fleet/status", 20)
                out["health_ms"] = await timed_gets(
                    session, f"{url}/dashboard/api/health", 20)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            acquire = acquire_times_ms(redis_url, prefix)
            out["acquire_p50_ms"] = statistics.median(acquire) if acquire else 0.0
            rank_us, pairs = await asyncio.to_thread(
                rank_time_us, beats.payloads, args.rank_iterations, limit)
            out["rank_p50_ms"] = rank_us / 1000
            out["candidates"] = len(pairs)
    finally:
        await asyncio.to_thread(router.stop)
    # with the router stopped, no other script runs
    out["scripts_ms"] = await slot_scripts_us(
        redis_url, prefix, pairs, min(300, 3 * args.requests)) / 1000
    # what grows with the fleet: ranking, and the scripts' work in Redis (the round trip
    # itself does not depend on the fleet's size)
    out["decision_ms"] = out["rank_p50_ms"] + out["scripts_ms"]
    return out


COLUMNS = [
    ("nodes", "nodes", "{:.0f}"), ("limit", "k", "{:.0f}"),
    ("decision_ms", "decision ms", "{:.3f}"),
    ("rank_p50_ms", "rank ms", "{:.3f}"), ("scripts_ms", "scripts ms", "{:.3f}"),
    ("acquire_p50_ms", "acquire ms", "{:.3f}"),
    ("candidates", "cands", "{:.0f}"), ("routed_p50_ms", "routed p50", "{:.2f}"),
    ("added_p50_ms", "added p50", "{:+.2f}"), ("cpu_ms_per_heartbeat", "ms/beat", "{:.2f}"),
    ("idle_cpu_pct", "idle cpu%", "{:.1f}"), ("rss_mb", "rss MB", "{:.0f}"),
    ("fleet_status_ms", "status ms", "{:.1f}"), ("health_ms", "health ms", "{:.1f}"),
]


async def main_async(args: argparse.Namespace) -> int:
    sizes = [int(x) for x in args.nodes.split(",")]
    limits = [int(x) for x in args.candidates.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="herd-scale-"))
    redis = EmbeddedRedis(tmp / "redis")
    redis_url = redis.start()
    sim_port = free_port()
    sim_proc = Proc([herd_bin(), "sim", "--host", "127.0.0.1", "--port", str(sim_port),
                     *SIM_FLAGS], tmp / "sim.log")
    sim = f"http://127.0.0.1:{sim_port}"
    rows: list[dict[str, float]] = []
    try:
        await asyncio.to_thread(sim_proc.wait_http, f"{sim}/api/version")
        for n in sizes:
            for limit in limits:  # side by side: every setting at every size
                row = await one_size(n, limit, args, tmp, redis_url, sim)
                rows.append(row)
                print("  " + "  ".join(f"{label} {fmt.format(row[key])}"
                                       for key, label, fmt in COLUMNS), flush=True)
    finally:
        sim_proc.stop()
        redis.stop()
    print()
    print(" | ".join(label for _, label, _ in COLUMNS))
    for row in rows:
        print(" | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS))
    most = max(sizes)
    ok = True
    for row in rows:
        if row["nodes"] == most:
            print(f"\nrouting decision at {most} nodes, k={row['limit']:.0f}: "
                  f"{row['decision_ms']:.3f} ms (target < 0.5)", end="")
            ok = row["decision_ms"] < 0.5  # the last setting listed is the one judged
    print()
    print(f"machine load {' '.join(f'{x:.1f}' for x in psutil.getloadavg())} on "
          f"{psutil.cpu_count()} CPUs")
    print("targets met" if ok else "targets MISSED")
    if args.json:
        text = json.dumps({"args": vars(args), "rows": rows, "targets_met": ok}, indent=1)
        await asyncio.to_thread(Path(args.json).write_text, text)
    return 0 if ok or not args.strict else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="10,50,200", help="comma list of fleet sizes")
    parser.add_argument("--requests", type=int, default=300, help="chats per latency series")
    parser.add_argument("--interval", type=float, default=5.0,
                        help="seconds between one node's heartbeats")
    parser.add_argument("--idle", type=float, default=10.0,
                        help="seconds of heartbeats alone, for the ingestion CPU")
    parser.add_argument("--rank-iterations", type=int, default=2000)
    parser.add_argument("--candidates", default=f"0,{Settings().routing_candidates}",
                        help="comma list of FLEET_ROUTING_CANDIDATES to compare at each size; "
                             "0 scores every node (the old way); the last one is judged")
    parser.add_argument("--json", default="", help="write the figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
