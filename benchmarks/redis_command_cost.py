"""CPU per Redis command on the request path's lean connection, against redis-py's client.

Starts an embedded Redis (unix socket, as `herd` does), or uses `--redis-url`, and runs, on
one event loop (uvloop), the request path's two calls: an EVALSHA of a small script, and a
two-command pipeline (EVAL + XADD), one at a time and 32 at once. Reports this process's CPU
time per command (user + system, less noisy than wall time on a shared machine), median of
`--rounds`. With a `redis+cluster://` URL the lean connection is FastCluster, and the same
calls also go over a plain lean connection straight to the primary of the keys' slot: the
difference is what routing by slot costs. With `--base REV`, also the request's end
pipeline as it releases a slot (nobody waiting) with that revision's release.lua (EVAL,
3 keys) and with this tree's (EVALSHA, 14 keys), each with its trace's XADD.
Run: .venv/bin/python benchmarks/redis_command_cost.py [--commands 5000] [--rounds 5]
     [--redis-url redis+cluster://127.0.0.1:7000/] [--base 73b5660]
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
from urllib.parse import quote

import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.fastcluster import FastCluster, fast_redis  # noqa: E402
from shared.fastredis import FastRedis  # noqa: E402
from shared.keys import Keys  # noqa: E402
from shared.redisconn import EmbeddedRedis, connect  # noqa: E402
from shared.redisurl import parse_redis_url  # noqa: E402
from shared.scripts import script_sha, script_source  # noqa: E402

SCRIPT = "return redis.call('INCR', KEYS[1])"
Call = Callable[[], Awaitable[object]]


async def cpu_per_call(call: Callable[[], Awaitable[object]], n: int, concurrency: int) -> float:
    """Microseconds of this process's CPU per call."""
    per_worker = n // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) / (per_worker * concurrency) * 1e6


def lean_calls(fast: FastRedis, sha: str) -> tuple[Call, Call]:
    # One hash tag: on a cluster both keys are in one slot, as Herd's are.
    async def fast_eval() -> object:
        return await fast.execute("EVALSHA", sha, 1, "{bench}:k")

    async def fast_pipe() -> object:
        pipe = fast.pipeline()
        pipe.eval(SCRIPT, 1, "{bench}:k")
        pipe.xadd("{bench}:s", {"f": "v"}, maxlen=1000)
        return await pipe.execute()

    return fast_eval, fast_pipe


def release_cases(
    fast: FastRedis, base_release: str,
) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
    """The end pipeline's release of a lease nobody waits for, base and this tree."""
    keys, model = Keys("{bench}:"), "llama3.2:3b"
    slots = keys.slots("n1", model)
    this_keys = [*keys.queue(model), slots, keys.counters("n1", model)]
    count = 0

    async def base_end() -> object:
        nonlocal count
        count += 1
        pipe = fast.pipeline()
        pipe.eval(base_release, 3, slots, keys.counters("n1", model), keys.wait(model),
                  f"r{count}", 1, keys.prefix + "ch:release", model)
        pipe.xadd("{bench}:s", {"f": "v"}, maxlen=1000)
        return await pipe.execute()

    async def this_end() -> object:
        nonlocal count
        count += 1
        pipe = fast.pipeline()
        pipe.evalsha(script_sha("release"), script_source("release"), len(this_keys),
                     *this_keys, f"r{count}", 1, int(time.time() * 1000), "n1", model)
        pipe.xadd("{bench}:s", {"f": "v"}, maxlen=1000)
        return await pipe.execute()

    return [("end pipeline, base", base_end), ("end pipeline, this", this_end)]


async def run(url: str, commands: int, rounds: int, base_release: str = "") -> None:
    fast = fast_redis(url, key_prefix="bench:")
    slow = connect(url, key_prefix="bench:")
    sha = await fast.execute("SCRIPT", "LOAD", SCRIPT)
    fast_eval, fast_pipe = lean_calls(fast, sha)

    async def slow_eval() -> object:
        return await slow.evalsha(sha, 1, "{bench}:k")  # type: ignore[no-untyped-call]

    cases = [("lean EVALSHA", fast_eval), ("lean pipeline (2)", fast_pipe),
             ("redis-py EVALSHA", slow_eval)]
    direct: FastRedis | None = None
    if isinstance(fast, FastCluster):
        await fast_eval()
        assert fast.master is not None
        host, port = fast.master
        target = parse_redis_url(url)
        auth = f":{quote(target.password)}@" if target.password else ""
        direct = FastRedis(f"{'rediss' if target.tls else 'redis'}://{auth}{host}:{port}/0")
        direct_eval, direct_pipe = lean_calls(direct, sha)
        cases += [("plain lean EVALSHA", direct_eval), ("plain lean pipeline", direct_pipe)]
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
    if direct is not None:
        await direct.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url", default="",
                        help="A Redis to use (a cluster too) instead of an embedded one.")
    parser.add_argument("--base", default="", help="git revision for the release pipeline")
    args = parser.parse_args()
    base_release = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{args.base}:shared/lua/release.lua"],
        capture_output=True, text=True, check=True).stdout if args.base else ""
    if args.redis_url:
        uvloop.run(run(args.redis_url, args.commands, args.rounds, base_release))
        return
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as url:
        uvloop.run(run(url, args.commands, args.rounds, base_release))


if __name__ == "__main__":
    main()
