"""How many streamed tokens/s one `herd sim` process serves, pinned to one core.

Starts `herd sim` on a free loopback port, pinned to CPU 0 (the load generator runs on the
other core), then streams /api/chat (NDJSON) and /v1/chat/completions (SSE) from many
concurrent clients for a bounded time, and prints tokens/s received and the simulator's
CPU use. Two scenarios:

- paced: many streams at a realistic per-request speed (--tokens-per-s 50), the way a
  benchmark fleet runs it; the target is >= 2,000 tokens/s in total;
- flat out: --tokens-per-s 0, the simulator's ceiling.

Usage: .venv/bin/python benchmarks/sim_throughput.py [--seconds 5] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sim(port: int, tokens_per_s: float) -> subprocess.Popen[bytes]:
    args = [str(BIN / "python"), "-m", "services.sim", "--port", str(port),
            "--models", "llama3.2:3b", "--tokens-per-s", str(tokens_per_s),
            "--num-parallel", "256", "--load-seconds-per-gb", "0", "--load-base-seconds", "0",
            "--prompt-tps", "0", "--contention", "0", "--response-tokens", "200-200",
            "--keep-bodies", "10", "--memory-gb", "1000"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(proc.pid, {0})
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    return proc


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(url + "/api/version") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("herd sim did not start")


async def one_stream(session: aiohttp.ClientSession, url: str, openai: bool, n: int) -> int:
    """Stream one reply; return how many content tokens arrived.

    Counts line ends in the raw bytes rather than parsing each chunk, so that the load
    generator (one core, Python) is not what limits the measurement.
    """
    body = {"model": "llama3.2:3b", "stream": True,
            "messages": [{"role": "user", "content": f"question number {n}"}]}
    path = "/v1/chat/completions" if openai else "/api/chat"
    separator = b"\n\n" if openai else b"\n"
    events = 0
    last = b""
    async with session.post(url + path, json=body) as resp:
        assert resp.status == 200, resp.status
        async for chunk in resp.content.iter_any():
            events += chunk.count(separator)
            # "\n\n" can straddle two chunks.
            if openai and last.endswith(b"\n") and not last.endswith(b"\n\n") and (
                    chunk.startswith(b"\n")):
                events += 1
            last = chunk
    if openai:
        assert last.endswith(b"data: [DONE]\n\n"), last[-80:]
        return events - 2  # the final chunk (finish_reason) and [DONE]
    assert b'"done":true' in last, last[-200:]
    return events - 1  # the final chunk with the counts


async def load(url: str, seconds: float, concurrency: int, openai: bool) -> tuple[int, float]:
    deadline = time.monotonic() + seconds
    total = 0
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(i: int) -> None:
        nonlocal total
        n = 0
        while time.monotonic() < deadline:
            received = await one_stream(session, url, openai, i * 100_000 + n)
            total += received  # not `total += await ...`: that reads total before awaiting
            n += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return total, time.monotonic() - started


async def sim_tokens(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url + "/sim/stats") as resp:
        stats = await resp.json()
        return int(stats["total"]["eval_tokens"])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def scenario(name: str, tokens_per_s: float, seconds: float, concurrency: int) -> None:
    port = free_port()
    proc = start_sim(port, tokens_per_s)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url)
        await load(url, 0.5, 4, False)  # warm up: the model is loaded
        for openai in (False, True):
            stats0 = await sim_tokens(url)
            cpu0 = cpu_seconds(proc.pid)
            tokens, elapsed = await load(url, seconds, concurrency, openai)
            cpu = (cpu_seconds(proc.pid) - cpu0) / elapsed
            served = await sim_tokens(url) - stats0
            assert served == tokens, f"the sim counted {served} tokens, the clients {tokens}"
            api = "openai SSE " if openai else "ollama NDJSON"
            per_token = cpu * elapsed / max(tokens, 1) * 1e6
            print(f"{name:9} {api}: {tokens / elapsed:9,.0f} tokens/s  "
                  f"({concurrency} streams; sim CPU {cpu:.0%} of one core, "
                  f"{per_token:.0f} us/token -> ceiling ~{1e6 / per_token:,.0f} tokens/s)")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--paced-tps", type=float, default=50.0)
    args = parser.parse_args()
    asyncio.run(scenario("paced", args.paced_tps, args.seconds, args.concurrency))
    asyncio.run(scenario("flat out", 0, args.seconds, 32))


if __name__ == "__main__":
    main()
