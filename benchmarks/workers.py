"""Requests/s through one router port against its number of worker processes (`--workers`).

Starts an embedded Redis and one simulator (`--tokens-per-s 0`, 64 slots), then for each
N a router with `--workers N`, registers the simulator, and measures small non-streaming
/api/chat requests/s at a fixed concurrency, with the CPU all of the router's processes
spent per request (so the figure per core does not depend on how many cores were free).
The simulator is measured directly in the same run for reference.
Run: .venv/bin/python benchmarks/workers.py [--workers 1,2,4] [--seconds 4] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from overhead import SIM_FLAGS, register, throughput  # noqa: E402

from shared.redisconn import EmbeddedRedis  # noqa: E402
from tests.helpers import Proc, free_port, herd_bin, wait_until  # noqa: E402


def router_cpu_s(pid: int) -> float:
    """CPU seconds of the router and every worker it started."""
    total = 0.0
    top = psutil.Process(pid)
    for proc in (top, *top.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def wait_workers(url: str, count: int) -> None:
    """Until `count` distinct replicas have answered /healthz (each worker is up)."""
    seen: set[str] = set()

    def all_up() -> bool:
        with httpx.Client(timeout=2) as client:
            seen.add(client.get(f"{url}/healthz").json()["replica"])
        return len(seen) >= count

    wait_until(all_up, timeout=120, interval=0.01, message=f"{count} workers")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="comma list of N to measure")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each run")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="herd-workers-"))
    redis = EmbeddedRedis(tmp / "redis")
    redis_url = redis.start()
    procs: list[Proc] = []
    rows: list[tuple[str, float, float]] = []
    try:
        sim_port = free_port()
        sim = Proc([herd_bin(), "sim", "--host", "127.0.0.1", "--port", str(sim_port),
                    *SIM_FLAGS], tmp / "sim.log")
        procs.append(sim)
        sim_url = f"http://127.0.0.1:{sim_port}"
        sim.wait_http(f"{sim_url}/api/version")
        direct, _ = asyncio.run(throughput(sim_url, args.concurrency, args.seconds))
        rows.append(("simulator direct", direct, 0.0))
        for n in counts:
            port = free_port()
            router = Proc([herd_bin(), "--host", "127.0.0.1", "--port", str(port),
                           "--workers", str(n), "--redis-url", redis_url, "--no-mdns",
                           "--no-dashboard", "--data-dir", str(tmp / f"data-{n}"),
                           "--log-level", "WARNING"], tmp / f"router-{n}.log",
                          env={"FLEET_HEARTBEAT_TIMEOUT": "3600",
                               "FLEET_HEARTBEAT_OFFLINE": "7200",
                               "FLEET_REDIS_PREFIX": f"herd-w{n}:"})
            try:
                url = f"http://127.0.0.1:{port}"
                router.wait_http(f"{url}/healthz", timeout=120)
                wait_workers(url, n)
                register(url, sim_url, "bench")
                asyncio.run(throughput(url, args.concurrency, 1.0))  # warm every worker
                cpu = router_cpu_s(router.pid)
                rps, count = asyncio.run(throughput(url, args.concurrency, args.seconds))
                cpu_ms = (router_cpu_s(router.pid) - cpu) * 1000 / max(count, 1)
                rows.append((f"router, {n} worker{'s' if n > 1 else ''}", rps, cpu_ms))
            finally:
                router.stop(timeout=30)
    finally:
        for proc in reversed(procs):
            proc.stop()
        redis.stop()
    base = next((rps for name, rps, _ in rows if name.startswith("router")), 1.0)
    print(f"c={args.concurrency}, {args.seconds:.0f} s each, one machine runs the client, the "
          f"simulator, Redis and the router")
    print(f"{'':<22}{'req/s':>8}{'vs 1 worker':>13}{'router CPU/req':>16}{'req/s per core':>16}")
    for name, rps, cpu_ms in rows:
        per_core = f"{1000 / cpu_ms:>16.0f}" if cpu_ms else f"{'':>16}"
        relative = f"{rps / base:>13.2f}" if cpu_ms else f"{'':>13}"
        cpu_text = f"{cpu_ms:>13.2f} ms" if cpu_ms else f"{'':>16}"
        print(f"{name:<22}{rps:>8.0f}{relative}{cpu_text}{per_core}")
    print(f"machine load {' '.join(f'{x:.1f}' for x in psutil.getloadavg())} "
          f"on {psutil.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
