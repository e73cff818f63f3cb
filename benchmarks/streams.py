"""What the router costs per streamed token: 128 concurrent streams paced like GPUs.

One `herd sim` generates at `--tokens-per-s` (50) per stream with no slowdown from
contention and 128 slots; one router has it registered. In one run, alternating rounds of
direct to the simulator and through the router, 128 clients each stream replies of
`--reply-tokens` back to back for `--seconds`. Reported: aggregate tokens/s received by the
clients each way (medians over rounds), their ratio (target >= 0.95), and the router's CPU
time per 1,000 chunks it relayed.
Run: .venv/bin/python benchmarks/streams.py [--streams 128] [--seconds 10] [--rounds 3]
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


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def stream_once(session: aiohttp.ClientSession, url: str, body: bytes) -> int:
    """One streamed chat; returns the tokens received (NDJSON lines before the final one)."""
    lines = 0
    async with session.post(url + "/api/chat", data=body) as r:
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {(await r.read())[:200]!r}")
        async for data in r.content.iter_any():
            lines += data.count(b"\n")
    return max(lines - 1, 0)


async def phase(url: str, streams: int, seconds: float, reply_tokens: int) -> tuple[float, int]:
    """`streams` clients streaming back to back until `seconds` pass; tokens/s and tokens."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=seconds + 120)
    total = 0

    async def client(i: int) -> None:
        nonlocal total
        n = 0
        while time.perf_counter() < deadline:
            body = json.dumps({
                "model": MODEL, "stream": True, "options": {"num_predict": reply_tokens},
                "messages": [{"role": "user", "content": f"stream {i} turn {n}"}],
            }).encode()
            got = await stream_once(session, url, body)  # not `total += await`: it
            total += got  # would read `total` before the await and lose the others' tokens
            n += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(client(i) for i in range(streams)))
        elapsed = time.perf_counter() - started
    return total / elapsed, total


def register(router: str, sim: str, slots: int) -> None:
    payload = json.loads(EXAMPLE.read_text())
    payload.update(node_id="streams", ollama_host=sim)
    httpx.post(f"{sim}/api/generate", json={"model": MODEL, "prompt": ""}, timeout=30)
    payload["ollama"].update(
        models_available=[MODEL], models_available_sizes={MODEL: 2.0}, num_parallel=slots,
        models_loaded=[{"name": MODEL, "size_gb": 2.0, "context_length": 4096}],
    )
    answer = httpx.post(f"{router}/heartbeat", json=payload, timeout=10)
    if answer.status_code != 200:
        raise RuntimeError(f"heartbeat refused: {answer.status_code} {answer.text[:200]}")


async def measure(args: argparse.Namespace, sim: str, router: str, router_pid: int
                  ) -> dict[str, float]:
    direct: list[float] = []
    routed: list[float] = []
    cpu_per_k: list[float] = []
    for i in range(args.rounds):
        tps, _ = await phase(sim, args.streams, args.seconds, args.reply_tokens)
        direct.append(tps)
        cpu = cpu_seconds(router_pid)
        tps, tokens = await phase(router, args.streams, args.seconds, args.reply_tokens)
        cpu = cpu_seconds(router_pid) - cpu
        routed.append(tps)
        # every token is one chunk; the final chunk of each reply is a few more
        cpu_per_k.append(1000 * cpu * 1000 / max(tokens, 1))
        print(f"  round {i + 1}: direct {direct[-1]:.0f} tokens/s | router {routed[-1]:.0f} "
              f"tokens/s | ratio {routed[-1] / direct[-1]:.3f} | router CPU "
              f"{cpu_per_k[-1]:.1f} ms per 1,000 chunks", flush=True)
    return {
        "direct_tps": statistics.median(direct), "routed_tps": statistics.median(routed),
        "ratio": statistics.median(r / d for r, d in zip(routed, direct, strict=True)),
        "router_cpu_ms_per_1000_chunks": statistics.median(cpu_per_k),
        "offered_tps": args.streams * args.tokens_per_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=128)
    parser.add_argument("--tokens-per-s", type=float, default=50.0, help="per stream")
    parser.add_argument("--reply-tokens", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3, help="direct/router pairs")
    parser.add_argument("--json", default="", help="write the figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="herd-streams-"))
    redis = EmbeddedRedis(tmp / "redis")
    redis_url = redis.start()
    procs: list[Proc] = []
    try:
        sim_port, port = free_port(), free_port()
        procs.append(Proc([
            herd_bin(), "sim", "--host", "127.0.0.1", "--port", str(sim_port),
            "--tokens-per-s", str(args.tokens_per_s), "--prompt-tps", "0",
            "--load-base-seconds", "0", "--load-seconds-per-gb", "0", "--contention", "0",
            "--num-parallel", str(args.streams), "--models", MODEL, "--keep-alive", "-1",
            "--memory-gb", "512", "--keep-bodies", "0"], tmp / "sim.log"))
        router = Proc([herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--redis-url",
                       redis_url, "--no-mdns", "--no-dashboard", "--data-dir",
                       str(tmp / "data"), "--log-level", "WARNING"], tmp / "router.log",
                      env={"FLEET_HEARTBEAT_TIMEOUT": "3600", "FLEET_HEARTBEAT_OFFLINE": "7200"})
        procs.append(router)
        sim, routed = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
        procs[0].wait_http(f"{sim}/api/version")
        router.wait_http(f"{routed}/healthz", timeout=60)
        register(routed, sim, args.streams)
        r = asyncio.run(measure(args, sim, routed, router.pid))
    finally:
        for proc in reversed(procs):
            proc.stop()
        redis.stop()
    ok = r["ratio"] >= 0.95
    print(f"\n{args.streams} streams at {args.tokens_per_s:g} tokens/s "
          f"({r['offered_tps']:.0f} offered), medians of {args.rounds} rounds:")
    print(f"direct {r['direct_tps']:.0f} tokens/s | router {r['routed_tps']:.0f} tokens/s | "
          f"ratio {r['ratio']:.3f} (target >= 0.95)")
    print(f"router CPU {r['router_cpu_ms_per_1000_chunks']:.1f} ms per 1,000 chunks relayed")
    print(f"machine load {' '.join(f'{x:.1f}' for x in psutil.getloadavg())} on "
          f"{psutil.cpu_count()} CPUs")
    print("targets met" if ok else "targets MISSED")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **r, "targets_met": ok},
                                              indent=1))
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
