"""What the router adds to a request: direct to a simulator vs through one router.

Starts an embedded Redis, simulators (`--tokens-per-s 0`) and one router, registers the
simulators by heartbeat, then measures in one run:
  1. latency of a small non-streaming /api/chat at concurrency 1 (p50, p99),
  2. time to first byte of a streaming /api/chat (p50, p99),
  3. requests/s at concurrency 32.
With `--key plain` every request carries a client key without limits (checked from the
replica's memory), with `--key limited` a key with limits too high to reach (one Lua call
per request to count it): the cost of access control on the request path.
With `--otel on` the router traces every request (OTEL_EXPORTER_OTLP_ENDPOINT) to an OTLP/HTTP
receiver in a process of its own (tests/otlp.py), which parses and counts the spans it gets
(and keeps nothing, as cheap as a collector can be on the same two cores); with
`--otel sampled` it records one request in ten (OTEL_TRACES_SAMPLER=traceidratio, 0.1).
With `--api messages` the same is measured on Anthropic's /v1/messages (SSE streams, its
usage read from message_start and message_delta) instead of /api/chat.
Run: .venv/bin/python benchmarks/overhead.py [--requests 1000] [--seconds 4] [--key limited]
     [--otel on] [--api messages]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.redisconn import EmbeddedRedis  # noqa: E402
from tests.helpers import Proc, free_port, herd_bin  # noqa: E402

MODEL = "llama3.2:3b"
EXAMPLE = ROOT / "tests" / "data" / "herd-heartbeat-example.json"
SIM_FLAGS = ["--tokens-per-s", "0", "--prompt-tps", "0", "--load-base-seconds", "0",
             "--load-seconds-per-gb", "0", "--response-tokens", "8-8", "--num-parallel", "64",
             "--contention", "0", "--models", MODEL, "--keep-alive", "-1",
             "--memory-gb", "512"]
CHAT = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "stream": False}).encode()
STREAM = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                     "stream": True}).encode()
# --api messages: Anthropic's Messages API (the simulator serves it as Ollama 0.14+ does)
MESSAGES = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
APIS = {"chat": ("/api/chat", CHAT, STREAM),
        "messages": ("/v1/messages", json.dumps({**MESSAGES, "stream": False}).encode(),
                     json.dumps({**MESSAGES, "stream": True}).encode())}
PATH = "/api/chat"  # set from --api in main()


# Sent with every request (to the simulator too, which ignores it): the client key, if any.
HEADERS: dict[str, str] = {}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def latency(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        async with session.post(url + PATH, data=CHAT) as r:
            await r.read()
            assert r.status == 200, r.status
        out.append((time.perf_counter() - t) * 1000)
    return out


async def ttft(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        async with session.post(url + PATH, data=STREAM) as r:
            await r.content.readline()
            out.append((time.perf_counter() - t) * 1000)
            await r.read()
    return out


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def throughput(url: str, concurrency: int, seconds: float) -> tuple[float, int]:
    connector = aiohttp.TCPConnector(limit=0)
    done = 0
    errors: dict[int, str] = {}
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.post(url + PATH, data=CHAT) as r:
                    body = await r.read()
                    if r.status == 200:
                        done += 1
                    else:
                        errors[r.status] = body[:200].decode(errors="replace")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    for status, sample in errors.items():
        print(f"  {url}: errors with status {status}, e.g. {sample}")
    return done / elapsed, done


def register(router: str, sim: str, node_id: str) -> None:
    payload = json.loads(EXAMPLE.read_text())
    payload.update(node_id=node_id, ollama_host=sim)
    httpx.post(f"{sim}/api/generate", json={"model": MODEL, "prompt": ""}, timeout=30)
    ps = httpx.get(f"{sim}/api/ps").json()["models"]
    payload["ollama"].update(
        models_available=[MODEL], models_available_sizes={MODEL: 2.0}, num_parallel=64,
        models_loaded=[{"name": m["name"], "size_gb": 2.0,
                        "context_length": m.get("context_length", 4096)} for m in ps],
    )
    assert httpx.post(f"{router}/heartbeat", json=payload).status_code == 200


async def measure(
    direct: str, routed: str, n: int, seconds: float, router_pid: int,
    profile: str | None = None,
) -> dict[str, float]:
    results: dict[str, float] = {}
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        for name, url in (("direct", direct), ("router", routed)):
            await latency(session, url, 50)  # warm the pools and the router's inputs
            lat = await latency(session, url, n)
            first = await ttft(session, url, max(100, n // 4))
            results[f"{name}_p50"] = statistics.median(lat)
            results[f"{name}_p99"] = pct(lat, 99)
            results[f"{name}_ttft_p50"] = statistics.median(first)
            results[f"{name}_ttft_p99"] = pct(first, 99)
    results["direct_rps32"], _ = await throughput(direct, 32, seconds)
    spy = None
    if profile:  # py-spy on the router while it runs at c=32
        spy = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(router_pid),
            "--output", profile, "--format", _profile_format(profile),
            "--duration", str(int(seconds) + 1), "--rate", "200")
    cpu = cpu_seconds(router_pid)
    results["router_rps32"], count = await throughput(routed, 32, seconds)
    # CPU the router process spent per proxied request: less noisy than wall time on a
    # shared machine (includes its background jobs: recorder, fleet watcher)
    results["router_cpu_ms"] = (cpu_seconds(router_pid) - cpu) * 1000 / max(count, 1)
    if spy is not None:
        await spy.wait()
    return results


def start_collector(tmp: Path) -> tuple[Proc, str]:
    """The OTLP/HTTP collector, a process of its own that parses and counts (tests/otlp.py),
    and its URL."""
    port = free_port()
    proc = Proc([sys.executable, "-m", "tests.otlp", "--port", str(port)], tmp / "otlp.log",
                env={"PYTHONPATH": str(ROOT)})
    return proc, f"http://127.0.0.1:{port}"


def start_sim(tmp: Path) -> tuple[Proc, str]:
    """A simulator as fast as it goes (SIM_FLAGS), and its URL."""
    port = free_port()
    proc = Proc([herd_bin(), "sim", "--host", "127.0.0.1", "--port", str(port), *SIM_FLAGS],
                tmp / "sim.log")
    return proc, f"http://127.0.0.1:{port}"


def start_router(tmp: Path, redis_url: str, env: dict[str, str],
                 name: str = "") -> tuple[Proc, str]:
    """A router replica on `redis_url` (`name` tells several apart), and its URL."""
    port = free_port()
    suffix = f"-{name}" if name else ""
    proc = Proc([herd_bin(), "--host", "127.0.0.1", "--port", str(port),
                 "--redis-url", redis_url, "--no-mdns", "--no-dashboard",
                 "--data-dir", str(tmp / f"data{suffix}"), "--log-level", "WARNING"],
                tmp / f"router{suffix}.log", env=env)
    return proc, f"http://127.0.0.1:{port}"


def _profile_format(path: str) -> str:
    """speedscope for .json, collapsed stacks for .txt, else a flame graph (.svg)."""
    return {".json": "speedscope", ".txt": "raw"}.get(Path(path).suffix, "flamegraph")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per c=1 series")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each c=32 run")
    parser.add_argument("--profile", default="",
                        help="write a py-spy profile of the router at c=32 here (.svg/.json/.txt)")
    parser.add_argument("--key", choices=("none", "plain", "limited"), default="none",
                        help="send a client key: none, one without limits, or one with limits")
    parser.add_argument("--otel", choices=("off", "on", "sampled"), default="off",
                        help="trace every request (on) or one in ten (sampled) to an OTLP "
                             "receiver")
    parser.add_argument("--api", choices=tuple(APIS), default="chat",
                        help="the API measured: Ollama's /api/chat or Anthropic's /v1/messages")
    args = parser.parse_args()
    global PATH, CHAT, STREAM
    PATH, CHAT, STREAM = APIS[args.api]
    router_env = {"FLEET_HEARTBEAT_TIMEOUT": "3600", "FLEET_HEARTBEAT_OFFLINE": "7200"}
    tmp = Path(tempfile.mkdtemp(prefix="herd-bench-"))
    # No append-only file: the benchmark measures what the router adds, on the same Redis
    # for every version it compares (herd's own embedded Redis keeps one).
    redis = EmbeddedRedis(tmp / "redis", persist=False)
    redis_url = redis.start()
    procs: list[Proc] = []
    receiver = None
    try:
        if args.otel == "sampled":
            router_env.update(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0.1")
        if args.otel != "off":  # the collector: a process of its own, as it would be
            receiver, router_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = start_collector(tmp)
            procs.append(receiver)
        sim, sim_url = start_sim(tmp)
        procs.append(sim)
        # one heartbeat registers the simulator for the whole run
        router, router_url = start_router(tmp, redis_url, router_env)
        procs.append(router)
        sim.wait_http(f"{sim_url}/api/version")
        router.wait_http(f"{router_url}/healthz")
        register(router_url, sim_url, "bench")
        if args.key != "none":
            limits = 10**9 if args.key == "limited" else 0
            made = httpx.post(f"{router_url}/dashboard/api/keys", json={
                "app": "bench", "requests_per_minute": limits, "tokens_per_minute": limits})
            assert made.status_code == 201, made.text
            HEADERS["Authorization"] = f"Bearer {made.json()['key']}"
        r = asyncio.run(measure(sim_url, router_url, args.requests, args.seconds, router.pid,
                                args.profile or None))
    finally:
        for proc in reversed(procs):
            proc.stop()
        redis.stop()
        if receiver is not None:
            print(f"otel              {receiver.output().strip()}")
    added_p50 = r["router_p50"] - r["direct_p50"]
    added_p99 = r["router_p99"] - r["direct_p99"]
    added_ttft = r["router_ttft_p50"] - r["direct_ttft_p50"]
    ratio = r["router_rps32"] / r["direct_rps32"]
    print(f"c=1 {PATH:<14}direct p50 {r['direct_p50']:.2f} ms  p99 {r['direct_p99']:.2f} ms"
          f" | router p50 {r['router_p50']:.2f} ms  p99 {r['router_p99']:.2f} ms")
    print(f"added latency     p50 {added_p50:+.2f} ms (target <= 1.00)  p99 {added_p99:+.2f} ms")
    print(f"stream TTFT p50   direct {r['direct_ttft_p50']:.2f} ms | router "
          f"{r['router_ttft_p50']:.2f} ms | added {added_ttft:+.2f} ms (target <= 1.00)")
    print(f"c=32 req/s        direct {r['direct_rps32']:.0f} | router {r['router_rps32']:.0f}"
          f" | ratio {ratio:.2f} (target >= 0.50)")
    print(f"router CPU        {r['router_cpu_ms']:.2f} ms per proxied request at c=32")
    print(f"machine load      {' '.join(f'{x:.1f}' for x in psutil.getloadavg())} "
          f"on {psutil.cpu_count()} CPUs")
    ok = added_p50 <= 1.0 and added_ttft <= 1.0 and ratio >= 0.5
    print("targets met" if ok else "targets MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
