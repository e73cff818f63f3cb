"""Several replicas, several apps: conversation affinity and the fair queue, measured.

Two scenarios, each measured side by side in one run on simulators (`herd sim`) and real
router processes over an embedded Redis:

1. Through two replicas. Multi-turn chats (seeded) on a four-node fleet, sent through a
   round-robin front: the client alternates replicas per request, as a front proxy does.
   Three configurations with the same processes (the runtime setting `session_affinity`
   switches between them): one replica alone; two replicas remembering conversations each
   in its own memory (`replica`); two replicas sharing the index in Redis (`fleet`). Figures:
   TTFT of later turns (p50, p95), the simulators' prompt-cache hit rate and the prompt
   tokens they evaluated, X-Fleet-Affinity hits, and requests/s. Target: two replicas with
   the shared index do as well as one.
2. A light app beside a heavy one. One node with 2 slots; app `heavy` keeps 24 requests
   waiting, app `light` sends one request at a time. The light app's latency p95: alone,
   beside heavy with both in one app (first come, first served: what the queue did before
   fair scheduling), and beside heavy as apps of their own (fair). Target: fair within 3x
   of alone.

Run: .venv/bin/python benchmarks/replicas_and_apps.py [--chats 16] [--turns 5] [--light 30]
(tests/e2e/test_replicas_and_apps_benchmark.py runs it tiny.)
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.redisconn import EmbeddedRedis  # noqa: E402
from tests.helpers import Proc, free_port, herd_bin  # noqa: E402

MODEL = "llama3.2:3b"
EXAMPLE = ROOT / "tests" / "data" / "herd-heartbeat-example.json"
WORDS = ["fleet", "node", "model", "prompt", "cache", "token", "turn", "reply", "plan", "route",
         "queue", "slot", "app", "light", "heavy", "trip", "city", "river", "bridge", "market",
         "garden", "harbour", "museum", "station"]
DEADLINE_SECONDS = 300.0  # every load loop below is bounded by this, whatever its count


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class Cluster:
    """Simulators and routers sharing one embedded Redis, on loopback."""

    tmp: Path
    procs: list[Proc] = field(default_factory=list)
    sims: dict[str, tuple[str, int]] = field(default_factory=dict)  # node -> url, parallel
    routers: list[str] = field(default_factory=list)

    def sim(self, node_id: str, parallel: int, flags: list[str]) -> None:
        port = free_port()
        proc = Proc([herd_bin(), "sim", "--host", "127.0.0.1", "--port", str(port),
                     "--node-name", node_id, "--num-parallel", str(parallel),
                     "--models", MODEL, "--keep-alive", "-1", *flags],
                    self.tmp / f"sim-{node_id}.log")
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        proc.wait_http(f"{url}/api/version")
        self.sims[node_id] = (url, parallel)

    def router(self, redis_url: str, prefix: str) -> str:
        port = free_port()
        n = len(self.routers)
        proc = Proc([herd_bin(), "--host", "127.0.0.1", "--port", str(port),
                     "--redis-url", redis_url, "--no-mdns", "--no-dashboard",
                     "--data-dir", str(self.tmp / f"data-{prefix.strip(':')}-{n}"),
                     "--log-level", "WARNING"],
                    self.tmp / f"router-{prefix.strip(':')}-{n}.log",
                    env={"FLEET_REDIS_PREFIX": prefix, "FLEET_HEARTBEAT_TIMEOUT": "3600",
                         "FLEET_HEARTBEAT_OFFLINE": "7200", "FLEET_RECORDER_ENABLED": "false"})
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        proc.wait_http(f"{url}/healthz")
        self.routers.append(url)
        return url

    def register(self, router: str) -> None:
        """Load the model on every simulator, then post one heartbeat per node."""
        for node_id, (url, parallel) in self.sims.items():
            httpx.post(f"{url}/api/generate", json={"model": MODEL, "prompt": ""}, timeout=60)
            ps = httpx.get(f"{url}/api/ps", timeout=5).json()["models"]
            payload = json.loads(EXAMPLE.read_text())
            payload.update(node_id=node_id, ollama_host=url)
            payload["ollama"].update(
                models_available=[MODEL], models_available_sizes={MODEL: 2.0},
                num_parallel=parallel,
                models_loaded=[{"name": m["name"], "size_gb": 2.0,
                                "context_length": m.get("context_length", 4096)} for m in ps])
            assert httpx.post(f"{router}/heartbeat", json=payload, timeout=5).status_code == 200

    def sim_totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for url, _ in self.sims.values():
            total = httpx.get(f"{url}/sim/stats", timeout=5).json()["total"]
            for name in ("prompt_cache_hits", "prompt_cache_misses", "prompt_tokens",
                         "cached_prompt_tokens"):
                out[name] = out.get(name, 0) + int(total.get(name, 0))
        return out

    def sim_reset(self) -> None:
        for url, _ in self.sims.values():
            httpx.post(f"{url}/sim/reset", json={}, timeout=5)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@contextmanager
def cluster() -> Iterator[tuple[Cluster, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="herd-bench-fair-"))
    redis = EmbeddedRedis(tmp / "redis")
    redis_url = redis.start()
    made = Cluster(tmp)
    try:
        yield made, redis_url
    finally:
        made.stop()
        redis.stop()


def wait_for_nodes(router: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while len(httpx.get(f"{router}/fleet/status", timeout=5).json()["nodes"]) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{router} never saw the {count} nodes")
        time.sleep(0.05)


def set_setting(router: str, **values: Any) -> None:
    answer = httpx.post(f"{router}/dashboard/api/settings", json=values, timeout=5)
    assert answer.status_code == 200, answer.text
    time.sleep(1.2)  # every replica follows a change within a second


# --- 1. conversations through two replicas -------------------------------------------------


def user_message(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


async def chat_run(
    fronts: list[str], chats: int, turns: int, concurrency: int, seed: int, words: int,
) -> dict[str, Any]:
    """`chats` conversations of `turns` turns, `concurrency` at once, each request to the
    next replica in turn (the round-robin front)."""
    rng = random.Random(seed)
    openings = [user_message(rng, words) for _ in range(chats)]
    follow = [[user_message(rng, words) for _ in range(turns)] for _ in range(chats)]
    counter = 0
    later_ttft: list[float] = []
    verdicts: list[str] = []
    done = 0
    deadline = time.monotonic() + DEADLINE_SECONDS
    gate = asyncio.Semaphore(concurrency)

    async def one_chat(session: aiohttp.ClientSession, c: int) -> None:
        nonlocal counter, done
        messages: list[dict[str, str]] = [{"role": "user", "content": openings[c]}]
        async with gate:
            for turn in range(turns):
                if time.monotonic() > deadline:
                    return
                front = fronts[counter % len(fronts)]
                counter += 1
                t0 = time.perf_counter()
                first = None
                parts: list[str] = []
                async with session.post(f"{front}/api/chat", json={
                        "model": MODEL, "messages": messages, "stream": True}) as r:
                    assert r.status == 200, await r.text()
                    verdict = r.headers.get("x-fleet-affinity", "")
                    async for line in r.content:
                        if first is None:
                            first = (time.perf_counter() - t0) * 1000
                        if line.strip():
                            parts.append(json.loads(line).get("message", {}).get("content", ""))
                done += 1
                if turn > 0:
                    later_ttft.append(first or 0.0)
                    verdicts.append(verdict)
                messages += [{"role": "assistant", "content": "".join(parts)},
                             {"role": "user", "content": follow[c][turn]}]

    start = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(one_chat(session, c) for c in range(chats)))
    elapsed = time.perf_counter() - start
    return {
        "ttft_p50": statistics.median(later_ttft) if later_ttft else 0.0,
        "ttft_p95": pct(later_ttft, 95),
        "hits": verdicts.count("hit") / max(len(verdicts), 1),
        "rps": done / elapsed,
        "requests": done,
    }


def conversations(
    chats: int, turns: int, concurrency: int, words: int, nodes: int,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with cluster() as (made, redis_url):
        # Prompt evaluation dominates a later turn that misses the cache (the history is
        # re-read); generation is short and steady.
        flags = ["--prompt-tps", "3000", "--tokens-per-s", "150", "--response-tokens", "20-40",
                 "--contention", "0.1", "--load-base-seconds", "0", "--load-seconds-per-gb", "0"]
        for i in range(nodes):
            made.sim(f"n{i}", 4, flags)
        one = made.router(redis_url, "herd:")
        two = made.router(redis_url, "herd:")
        made.register(one)
        wait_for_nodes(two, nodes)
        configs = [("one replica", [one], "fleet"),
                   ("two replicas, per-replica memory", [one, two], "replica"),
                   ("two replicas, shared index", [one, two], "fleet")]
        for seed, (label, fronts, mode) in enumerate(configs):
            set_setting(one, session_affinity=mode)
            made.sim_reset()
            result = asyncio.run(chat_run(fronts, chats, turns, concurrency, seed, words))
            sims = made.sim_totals()
            asked = sims["prompt_cache_hits"] + sims["prompt_cache_misses"]
            result.update(
                label=label,
                cache_hit_rate=sims["prompt_cache_hits"] / max(asked, 1),
                evaluated_prompt_tokens=sims["prompt_tokens"] - sims["cached_prompt_tokens"],
            )
            rows.append(result)
    return rows


# --- 2. a light app beside a heavy one -----------------------------------------------------


async def light_beside_heavy(
    router: str, light_requests: int, heavy_waiting: int, light_tag: str | None,
) -> list[float]:
    """The light app's latencies (ms), one request at a time, while `heavy_waiting` + 2
    heavy workers keep the node's 2 slots busy and `heavy_waiting` requests queued."""
    body = {"model": MODEL, "prompt": "hello", "stream": False}
    stop = asyncio.Event()
    deadline = time.monotonic() + DEADLINE_SECONDS

    async def heavy(session: aiohttp.ClientSession) -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            async with session.post(f"{router}/api/generate", json=body,
                                    headers={"X-Herd-Tags": "heavy"}) as r:
                await r.read()

    async def waiting(session: aiohttp.ClientSession) -> int:
        async with session.get(f"{router}/fleet/queue") as r:
            return int((await r.json())["waiting_total"])

    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        workers = [asyncio.create_task(heavy(session)) for _ in range(heavy_waiting + 2)
                   ] if heavy_waiting else []
        while workers and await waiting(session) < heavy_waiting:
            if time.monotonic() > deadline:
                raise SystemExit("the heavy app never filled the queue")
            await asyncio.sleep(0.05)
        headers = {"X-Herd-Tags": light_tag} if light_tag else {"X-Herd-Tags": "heavy"}
        for _ in range(light_requests):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            async with session.post(f"{router}/api/generate", json=body,
                                    headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status
            latencies.append((time.perf_counter() - t0) * 1000)
        stop.set()
        await asyncio.gather(*workers)
    return latencies


def apps(light_requests: int, heavy_waiting: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with cluster() as (made, redis_url):
        made.sim("solo", 2, ["--prompt-tps", "0", "--tokens-per-s", "100",
                             "--response-tokens", "20-20", "--contention", "0",
                             "--load-base-seconds", "0", "--load-seconds-per-gb", "0"])
        router = made.router(redis_url, "herd:")
        made.register(router)
        for label, waiting, tag in (("light alone", 0, "light"),
                                    ("beside heavy, one app (FIFO)", heavy_waiting, None),
                                    ("beside heavy, fair", heavy_waiting, "light")):
            lat = asyncio.run(light_beside_heavy(router, light_requests, waiting, tag))
            rows.append({"label": label, "p50": statistics.median(lat), "p95": pct(lat, 95)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=16)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8, help="chats at once")
    parser.add_argument("--words", type=int, default=300, help="words per user message")
    parser.add_argument("--light", type=int, default=30, help="light app's requests")
    parser.add_argument("--heavy-waiting", type=int, default=24)
    args = parser.parse_args(argv)

    print(f"1. {args.chats} chats x {args.turns} turns, {args.concurrency} at once, "
          f"{args.nodes} nodes, round-robin front")
    chats = conversations(args.chats, args.turns, args.concurrency, args.words, args.nodes)
    print(f"{'':<34}{'TTFT p50':>10}{'TTFT p95':>10}{'hit':>7}{'cache':>7}"
          f"{'evaluated':>11}{'req/s':>7}")
    for row in chats:
        print(f"{row['label']:<34}{row['ttft_p50']:>8.0f}ms{row['ttft_p95']:>8.0f}ms"
              f"{row['hits']:>6.0%}{row['cache_hit_rate']:>7.0%}"
              f"{row['evaluated_prompt_tokens']:>11}{row['rps']:>7.2f}")
    one, replica, shared = chats
    base = max(one["ttft_p95"], 1e-9)
    print(f"later-turn TTFT p95 against one replica: shared index x{shared['ttft_p95'] / base:.2f}"
          f", per-replica memory x{replica['ttft_p95'] / base:.2f}")

    print(f"\n2. light app (one at a time, {args.light} requests) beside heavy "
          f"({args.heavy_waiting} waiting), one node with 2 slots")
    rows = apps(args.light, args.heavy_waiting)
    alone = rows[0]["p95"]
    for row in rows:
        print(f"{row['label']:<34} p50 {row['p50']:>7.0f} ms  p95 {row['p95']:>7.0f} ms"
              f"  x{row['p95'] / max(alone, 1e-9):.1f} of alone")
    fair = rows[2]["p95"] / max(alone, 1e-9)
    ok = fair <= 3.0 and shared["ttft_p95"] <= 1.25 * one["ttft_p95"]  # "as well as one"
    print("targets met" if ok else "targets MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
