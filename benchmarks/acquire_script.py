"""What one slot acquisition costs in Redis: acquire.lua of a base revision against this one.

The request path makes one acquire call per request; this times that call alone (a free
slot, nobody waiting: the fast path), alternating the two scripts in rounds on one embedded
Redis so a shared machine's noise falls on both alike. This tree's script runs twice: with
no conversation, and with one (it then also reads and writes the conversation index).
Medians in microseconds per call, client round trip included.

Run: .venv/bin/python benchmarks/acquire_script.py --base bce8ccf [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.keys import Keys  # noqa: E402
from shared.redisconn import EmbeddedRedis, connect  # noqa: E402
from shared.scripts import script_source  # noqa: E402

MODEL = "llama3.2:3b"


def old_call(keys: Keys, request_id: str, now: int) -> tuple[list[str], list[Any]]:
    """The KEYS and ARGV of acquire.lua before the fair queue (one candidate)."""
    prefix = keys.prefix
    return ([keys.wait(MODEL), keys.wait_lease(MODEL), keys.wait_first(MODEL),
             f"{prefix}wait-seq", keys.counters_index(), keys.slots("n1", MODEL),
             keys.counters("n1", MODEL)],
            [request_id, now, 30000, 200, 6000, f"{prefix}counters:", MODEL,
             keys.release_channel(), 1, "n1", 1_000_000])


def new_call(keys: Keys, request_id: str, now: int, session: str) -> tuple[list[str], list[Any]]:
    return ([*keys.queue(MODEL), keys.counters_index(), keys.affinity(), keys.affinity_node(),
             keys.slots("n1", MODEL), keys.counters("n1", MODEL)],
            [request_id, now, 30000, 200, 6000, MODEL, keys.release_channel(), "(none)", 1, 1,
             session, 15, 1_800_000, 100_000, "n1", 1_000_000, 80])


async def series(
    redis: Any, sha: str, build: Any, calls: int, tag: str,
) -> tuple[float, float]:
    """Median µs of `calls` acquire calls as the client sees them, and the µs per call Redis
    itself spent running the script (INFO commandstats: no client or scheduling noise).
    Each lease is released at once, so the slot stays free."""
    times: list[float] = []
    await redis.config_resetstat()
    for i in range(calls):
        request_id = f"{tag}{i}"
        keys, args = build(request_id, int(time.time() * 1000))
        t0 = time.perf_counter()
        await redis.evalsha(sha, len(keys), *keys, *args)
        times.append((time.perf_counter() - t0) * 1e6)
        await redis.zrem(keys[-2], request_id)
    stats = await redis.info("commandstats")
    server = float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0))
    return statistics.median(times), server


async def measure(url: str, base_source: str, calls: int, rounds: int) -> dict[str, float]:
    redis = connect(url)
    keys = Keys("bench:")
    old_sha = await redis.script_load(base_source)
    new_sha = await redis.script_load(script_source("acquire"))
    runs: dict[str, list[tuple[float, float]]] = {
        "base": [], "this": [], "this, with a conversation": []}
    plans: list[tuple[str, str, Any]] = [
        ("base", old_sha, lambda i, now: old_call(keys, i, now)),
        ("this", new_sha, lambda i, now: new_call(keys, i, now, "")),
        ("this, with a conversation", new_sha,
         lambda i, now: new_call(keys, i, now, f"chat-{hash(i) % 50}")),
    ]
    for r in range(rounds):
        # each round starts with another series, so none always runs first or last
        for name, sha, build in plans[r % 3:] + plans[:r % 3]:
            runs[name].append(await series(redis, sha, build, calls, f"{name[:6]}{r}-"))
    await redis.aclose()
    return {name: (statistics.median(v[0] for v in values),
                   statistics.median(v[1] for v in values)) for name, values in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision of the base acquire.lua")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    base_source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{args.base}:shared/lua/acquire.lua"],
        capture_output=True, text=True, check=True).stdout
    tmp = Path(tempfile.mkdtemp(prefix="herd-bench-acquire-"))
    server = EmbeddedRedis(tmp / "redis")
    url = server.start()
    try:
        medians = asyncio.run(measure(url, base_source, args.calls, args.rounds))
    finally:
        server.stop()
    client0, server0 = medians["base"]
    print(f"acquire.lua, medians of {args.rounds} rounds x {args.calls} calls (µs per call)")
    print(f"{'':<28} {'client':>8} {'':>9} {'in Redis':>9}")
    for name, (client, server) in medians.items():
        print(f"{name:<28} {client:8.1f} ({client - client0:+6.1f}) {server:8.1f} "
              f"({server - server0:+.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
