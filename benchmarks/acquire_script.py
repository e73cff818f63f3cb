"""What taking and returning a slot costs in Redis: the scripts of a base revision against
this tree's, called the way the request path calls them.

Cases, each timed alone (one script call per request), alternating base and this tree in
rounds on one embedded Redis so a shared machine's noise falls on both alike:
- acquire, nobody waiting (the hot path), with no conversation and with one;
- release, nobody waiting (the hot path): the base sent EVAL with its small script; this
  tree sends EVALSHA on the lean pipeline (and EVAL only on redis-py's, shown too);
- hand-over, one request waiting: the base's release (it publishes) plus the waiter's
  acquire called again (it takes the slot); this tree's release alone (it grants the slot).
Medians in microseconds as the client sees the timed calls (round trips included), and
what Redis itself spent in scripts per iteration (INFO commandstats: no client or
scheduling noise; for the hand-over this includes its set-up, the same on both sides).

The base must use the layout of 73b5660 (the fair queue with seven queue keys).
Run: .venv/bin/python benchmarks/acquire_script.py --base 73b5660 [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.fastredis import FastRedis  # noqa: E402
from shared.keys import Keys  # noqa: E402
from shared.redisconn import EmbeddedRedis, connect  # noqa: E402
from shared.scripts import script_source  # noqa: E402

MODEL = "llama3.2:3b"
CAP = 1_000_000  # room for every lease: the fast path


def _sha(source: str) -> str:
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


class Base:
    """The base revision's scripts and call layout (73b5660)."""

    def __init__(self, acquire: str, release: str) -> None:
        self.keys = Keys("base:")
        self.acquire_source, self.release = acquire, release
        self.acquire_sha = _sha(acquire)

    def acquire(self, rid: str, now: int, session: str = "", cap: int = CAP) -> list[Any]:
        k = self.keys
        queue = [k.wait(MODEL), k.wait_lease(MODEL), k.wait_first(MODEL),
                 k.wait_pending(MODEL), k.wait_app(MODEL), k.wait_apps(MODEL),
                 k.wait_fair(MODEL)]
        script_keys = [*queue, k.counters_index(), k.affinity(), k.affinity_node(),
                       k.slots("n1", MODEL), k.counters("n1", MODEL)]
        return ["EVALSHA", self.acquire_sha, len(script_keys), *script_keys,
                rid, now, 30000, 200, 6000, MODEL, f"{k.prefix}ch:release", "(none)", 1, 1,
                session, 15, 1_800_000, 100_000, "n1", cap, 80]

    def release_call(self, rid: str, now: int) -> list[Any]:
        k = self.keys
        return ["EVAL", self.release, 3, k.slots("n1", MODEL), k.counters("n1", MODEL),
                k.wait(MODEL), rid, 1, f"{k.prefix}ch:release", MODEL]


class This:
    """This tree's scripts, called as slots.py calls them."""

    def __init__(self) -> None:
        self.keys = Keys("this:")
        self.acquire_sha = _sha(script_source("acquire"))
        self.release_sha = _sha(script_source("release"))

    def acquire(self, rid: str, now: int, session: str = "", cap: int = CAP,
                again: int = 0) -> list[Any]:
        k = self.keys
        script_keys = [*k.queue(MODEL), k.slots("n1", MODEL), k.counters("n1", MODEL)]
        return ["EVALSHA", self.acquire_sha, len(script_keys), *script_keys,
                rid, now, 30000, 200, 6000, MODEL, k.grant_channel("bench"), "(none)", 1, 1,
                session, 15, 1_800_000, 100_000, again, "n1", cap, 80]

    def release_call(self, rid: str, now: int, by_sha: bool = True) -> list[Any]:
        k = self.keys
        script_keys = [*k.queue(MODEL), k.slots("n1", MODEL), k.counters("n1", MODEL)]
        head = ["EVALSHA", self.release_sha] if by_sha else ["EVAL", script_source("release")]
        return [*head, len(script_keys), *script_keys, rid, 1, now, "n1", MODEL]


Case = Callable[[FastRedis, str], Awaitable[float]]  # one timed call -> µs


async def timed(fast: FastRedis, command: list[Any]) -> float:
    t0 = time.perf_counter()
    await fast.execute(*command)
    return (time.perf_counter() - t0) * 1e6


def cases(base: Base, this: This) -> dict[str, tuple[Case, Case]]:
    """name -> (base case, this tree's case); each returns the µs of its timed calls."""

    def acquire_fast(rev: Any, session: bool) -> Case:
        async def run(fast: FastRedis, rid: str) -> float:
            s = f"chat-{hash(rid) % 50}" if session else ""
            took = await timed(fast, rev.acquire(rid, int(time.time() * 1000), s))
            await fast.execute("ZREM", rev.keys.slots("n1", MODEL), rid)
            return took
        return run

    def release_fast(rev: Any, **how: Any) -> Case:
        async def run(fast: FastRedis, rid: str) -> float:
            now = int(time.time() * 1000)
            await fast.execute("ZADD", rev.keys.slots("n1", MODEL), now + 30000, rid)
            return await timed(fast, rev.release_call(rid, now, **how))
        return run

    def hand_over_base(fast: FastRedis, rid: str) -> Any:
        async def run() -> float:
            now = int(time.time() * 1000)
            await fast.execute(*base.acquire(rid + "h", now, cap=1))  # holds the slot
            await fast.execute(*base.acquire(rid + "w", now, cap=1))  # waits
            took = await timed(fast, base.release_call(rid + "h", now))
            took += await timed(fast, base.acquire(rid + "w", now, cap=1))
            await fast.execute(*base.release_call(rid + "w", now))
            return took
        return run()

    def hand_over_this(fast: FastRedis, rid: str) -> Any:
        async def run() -> float:
            now = int(time.time() * 1000)
            await fast.execute(*this.acquire(rid + "h", now, cap=1))
            await fast.execute(*this.acquire(rid + "w", now, cap=1))
            took = await timed(fast, this.release_call(rid + "h", now))  # grants "w"
            await fast.execute(*this.release_call(rid + "w", now))
            return took
        return run()

    return {
        "acquire, nobody waiting": (acquire_fast(base, False), acquire_fast(this, False)),
        "acquire, with a conversation": (acquire_fast(base, True), acquire_fast(this, True)),
        "release, nobody waiting": (release_fast(base), release_fast(this)),
        "release as EVAL (redis-py pipeline)": (release_fast(base),
                                                release_fast(this, by_sha=False)),
        "hand-over to one waiter": (hand_over_base, hand_over_this),
    }


async def series(fast: FastRedis, redis: Any, case: Case, calls: int, tag: str
                 ) -> tuple[float, float]:
    """Median client µs of the timed calls per iteration, and Redis's own µs in scripts per
    iteration (EVAL + EVALSHA; a hand-over's untimed set-up, two acquires and a release,
    counts alike on both sides)."""
    await redis.config_resetstat()
    times = [await case(fast, f"{tag}{i}") for i in range(calls)]
    stats = await redis.info("commandstats")
    spent = sum(float(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in ("eval", "evalsha"))
    return statistics.median(times), spent / calls


async def measure(url: str, base: Base, calls: int, rounds: int
                  ) -> dict[str, dict[str, tuple[float, float]]]:
    redis = connect(url)
    fast = FastRedis(url)
    await redis.script_load(script_source("acquire"))
    await redis.script_load(script_source("release"))
    await redis.eval("return 1", 0)  # warm
    await redis.script_load(base.acquire_source)
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for name, (base_case, this_case) in cases(base, This()).items():
        runs: dict[str, list[tuple[float, float]]] = {"base": [], "this": []}
        for r in range(rounds):
            order = [("base", base_case), ("this", this_case)]
            for label, case in order if r % 2 == 0 else order[::-1]:
                runs[label].append(await series(fast, redis, case, calls, f"{label}{r}-"))
        results[name] = {label: (statistics.median(v[0] for v in values),
                                 statistics.median(v[1] for v in values))
                         for label, values in runs.items()}
    await fast.close()
    await redis.aclose()
    return results


def base_sources(revision: str) -> dict[str, str]:
    """The base's acquire.lua and release.lua, with their includes pasted in."""
    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{path}"],
                              capture_output=True, text=True, check=True).stdout
    queue = show("shared/lua/_queue.lua")
    return {name: show(f"shared/lua/{name}.lua").replace("--@include _queue", queue)
            for name in ("acquire", "release")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision of the base scripts")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sources = base_sources(args.base)
    base = Base(sources["acquire"], sources["release"])
    tmp = Path(tempfile.mkdtemp(prefix="herd-bench-acquire-"))
    server = EmbeddedRedis(tmp / "redis")
    url = server.start()
    try:
        results = asyncio.run(measure(url, base, args.calls, args.rounds))
    finally:
        server.stop()
    print(f"slot scripts, medians of {args.rounds} rounds x {args.calls} calls "
          f"(µs; base {args.base})")
    print(f"{'':<38} {'client base':>11} {'this':>8} {'Redis base':>11} {'this':>8}")
    for name, by in results.items():
        (cb, sb), (ct, st) = by["base"], by["this"]
        print(f"{name:<38} {cb:11.1f} {ct:8.1f} {sb:11.1f} {st:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
