"""CPU per Redis command on the request path's lean connection, against redis-py's client.

Starts an embedded Redis (unix socket, as `herd` does) and runs, on one event loop (uvloop),
the request path's two calls: an EVALSHA of a small script, and a two-command pipeline
(EVAL + XADD), one at a time and 32 at once. Reports this process's CPU time per command
(user + system, less noisy than wall time on a shared machine), median of `--rounds`.
With `--base REV`, also the request's end pipeline as it releases a slot (nobody waiting)
with that revision's release.lua (EVAL, 3 keys) and with this tree's (EVALSHA, 14 keys),
each with its trace's XADD.
Run: .venv/bin/python benchmarks/redis_command_cost.py [--commands 5000] [--rounds 5]
     [--base 73b5660]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.fastredis import FastRedis  # noqa: E402
from shared.keys import Keys  # noqa: E402
from shared.redisconn import EmbeddedRedis, connect  # noqa: E402
from shared.scripts import script_sha, script_source  # noqa: E402

SCRIPT = "return redis.call('INCR', KEYS[1])"


async def cpu_per_call(call: Callable[[], Awaitable[object]], n: int, concurrency: int) -> float:
    """Microseconds of this process's CPU per call."""
    per_worker = n // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) / (per_worker * concurrency) * 1e6


def release_cases(
    fast: FastRedis, base_release: str,
) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
    """The end pipeline's release of a lease nobody waits for, base and this tree."""
    keys, model, slots = Keys("bench:"), "llama3.2:3b", Keys("bench:").slots("n1", "llama3.2:3b")
    this_keys = [*keys.queue(model), slots, keys.counters("n1", model)]
    count = 0

    async def base_end() -> object:
        nonlocal count
        count += 1
        pipe = fast.pipeline()
        pipe.eval(base_release, 3, slots, keys.counters("n1", model), keys.wait(model),
                  f"r{count}", 1, keys.prefix + "ch:release", model)
        pipe.xadd("bench:s", {"f": "v"}, maxlen=1000)
        return await pipe.execute()

    async def this_end() -> object:
        nonlocal count
        count += 1
        pipe = fast.pipeline()
        pipe.evalsha(script_sha("release"), script_source("release"), len(this_keys),
                     *this_keys, f"r{count}", 1, int(time.time() * 1000), "n1", model)
        pipe.xadd("bench:s", {"f": "v"}, maxlen=1000)
        return await pipe.execute()

    return [("end pipeline, base", base_end), ("end pipeline, this", this_end)]


async def run(url: str, commands: int, rounds: int, base_release: str = "") -> None:
    fast = FastRedis(url)
    slow = connect(url)
    sha = await fast.execute("SCRIPT", "LOAD", SCRIPT)

    async def fast_eval() -> object:
        return await fast.execute("EVALSHA", sha, 1, "bench:k")

    async def fast_pipe() -> object:
        pipe = fast.pipeline()
        pipe.eval(SCRIPT, 1, "bench:k")
        pipe.xadd("bench:s", {"f": "v"}, maxlen=1000)
        return await pipe.execute()

    async def slow_eval() -> object:
        return await slow.evalsha(sha, 1, "bench:k")  # type: ignore[no-untyped-call]

    cases = [("lean EVALSHA", fast_eval), ("lean pipeline (2)", fast_pipe),
             ("redis-py EVALSHA", slow_eval)]
    if base_release:
        cases += release_cases(fast, base_release)
    for name, call in cases:
        for concurrency in (1, 32):
            await cpu_per_call(call, commands // 5, concurrency)  # warm up
            samples = [await cpu_per_call(call, commands, concurrency) for _ in range(rounds)]
            print(f"{name:20s} c={concurrency:<3d} {statistics.median(samples):7.1f} µs CPU "
                  f"per call (rounds: {', '.join(f'{s:.1f}' for s in samples)})")
    await fast.close()
    await slow.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base", default="", help="git revision for the release pipeline")
    args = parser.parse_args()
    base_release = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{args.base}:shared/lua/release.lua"],
        capture_output=True, text=True, check=True).stdout if args.base else ""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as url:
        uvloop.run(run(url, args.commands, args.rounds, base_release))


if __name__ == "__main__":
    main()
