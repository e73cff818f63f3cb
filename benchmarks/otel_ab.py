"""What tracing adds to a request, measured as an A/B on the same fleet at the same moments.

overhead.py runs one router per configuration, one after the other; on a shared machine
the p50 of two such runs moves by a few tenths of a millisecond, more than tracing costs.
Here two router replicas share one Redis, one simulator and one OTLP collector (a process
of its own that parses and counts what it gets: tests/otlp.py): replica `off` without
tracing, replica `on` tracing every request, and with `--sampled` a third tracing one
request in ten (parentbased_traceidratio 0.1). Each request of the c=1 series goes to the
simulator directly and then to each replica in turn, in a shuffled order, so every target
sees the same moments of the machine; each round then measures each replica's CPU per
request at c=32, one replica after the other. Figures are medians over `--rounds`.

Run: .venv/bin/python benchmarks/otel_ab.py [--requests 1500] [--rounds 3] [--sampled]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.overhead import (  # noqa: E402
    CHAT,
    cpu_seconds,
    latency,
    register,
    start_collector,
    start_router,
    start_sim,
    throughput,
)
from shared.redisconn import EmbeddedRedis  # noqa: E402
from tests.helpers import Proc  # noqa: E402

PATH = "/api/chat"


async def one(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.post(url + PATH, data=CHAT) as r:
        await r.read()
        assert r.status == 200, r.status
    return (time.perf_counter() - started) * 1000


async def interleaved(targets: dict[str, str], n: int) -> dict[str, float]:
    """The p50 latency of each target, its requests interleaved with the others'."""
    times: dict[str, list[float]] = {name: [] for name in targets}
    order = list(targets)
    async with aiohttp.ClientSession() as session:
        for url in targets.values():
            await latency(session, url, 50)  # warm the pools and the routers' inputs
        for _ in range(n):
            random.shuffle(order)
            for name in order:
                times[name].append(await one(session, targets[name]))
    return {name: statistics.median(values) for name, values in times.items()}


def heartbeats(router: str, sim: str, stop: threading.Event) -> None:
    """The node's agent, as far as the routers can tell: a heartbeat every 5 s."""
    while not stop.wait(5.0):
        register(router, sim, "bench")


async def cpu_per_request(url: str, pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    _, count = await throughput(url, 32, seconds)
    return (cpu_seconds(pid) - before) * 1000 / max(count, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="c=1 requests per target")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="each c=32 run")
    parser.add_argument("--sampled", action="store_true", help="a replica sampling 1 in 10 too")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="herd-otel-ab-"))
    redis = EmbeddedRedis(tmp / "redis.db")
    redis_url = redis.start()
    procs: list[Proc] = []
    beat: threading.Thread | None = None
    try:
        collector, collector_url = start_collector(tmp)
        procs.append(collector)
        sim, sim_url = start_sim(tmp)
        procs.append(sim)
        configs: dict[str, dict[str, str]] = {
            "off": {}, "on": {"OTEL_EXPORTER_OTLP_ENDPOINT": collector_url}}
        if args.sampled:
            configs["sampled"] = {**configs["on"], "OTEL_TRACES_SAMPLER": "traceidratio",
                                  "OTEL_TRACES_SAMPLER_ARG": "0.1"}
        routers: dict[str, tuple[str, Proc]] = {}
        for name, env in configs.items():
            router, url = start_router(tmp, redis_url, env, name)
            procs.append(router)
            routers[name] = (url, router)
        sim.wait_http(f"{sim_url}/api/version")
        for url, router in routers.values():
            router.wait_http(f"{url}/healthz")
        # one fleet: every replica sees the node; heartbeats keep it online for the run
        register(routers["off"][0], sim_url, "bench")
        beating = threading.Event()
        beat = threading.Thread(target=heartbeats, daemon=True,
                                args=(routers["off"][0], sim_url, beating))
        beat.start()
        targets = {"direct": sim_url, **{name: url for name, (url, _) in routers.items()}}
        rounds: list[dict[str, float]] = []
        for round_ in range(args.rounds):
            p50 = asyncio.run(interleaved(targets, args.requests))
            figures = {f"{name} added p50": p50[name] - p50["direct"] for name in routers}
            for name, (url, router) in routers.items():
                figures[f"{name} CPU ms/req"] = asyncio.run(
                    cpu_per_request(url, router.pid, args.seconds))
            rounds.append(figures)
            print(f"round {round_ + 1}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in figures.items()), flush=True)
    finally:
        if beat is not None:
            beating.set()
            beat.join()
        for proc in reversed(procs):
            proc.stop()
        redis.stop()
    print(f"otel collector    {collector.output().strip()}")
    print(f"\nmedians of {args.rounds} rounds, {args.requests} interleaved requests per target")
    for key in rounds[0]:
        print(f"{key:<22} {statistics.median(r[key] for r in rounds):>8.3f} ms")
    for name in routers:
        if name != "off":
            deltas = [r[f"{name} added p50"] - r["off added p50"] for r in rounds]
            print(f"{name} - off, p50       {statistics.median(deltas):>+8.3f} ms "
                  f"(rounds: {', '.join(f'{d:+.3f}' for d in deltas)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
