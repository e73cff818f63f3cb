"""What Herd's routing wins on a heterogeneous fleet, against round-robin, least-connections
and random, replaying the same seeded workload through each in one run.

The fleet: four `herd sim` processes, two large fast nodes, one slower, one small, with
models of 3B, 8B, 14B and 32B that cannot all be loaded everywhere. Simulated time runs
`--speed` times faster than a real fleet (token, prompt and load speeds scaled up, think
times in the workload scaled down), so a full run takes minutes. Each run gets a fresh
router (its own Redis prefix) and the same warm start on every node; synthetic heartbeats
report what each simulator really holds every `--heartbeat` seconds. The baselines are
routing plugins (`plugins/routing/baselines.py`) loaded with FLEET_PLUGINS, with Herd's
scorers disabled.

Run: .venv/bin/python benchmarks/scheduling.py [--seeds 1,2,3] [--rates 4,14]

`--workload bursts` and `--workload surge` run the two workloads about loading ahead
(pins; copies that follow the queue) against the same baselines: benchmarks/warm_workloads.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.warm_workloads import BASELINES, WORKLOADS, pct, run_workload, sim_call  # noqa: E402
from benchmarks.workload import Conversation, WorkloadSpec, generate, summary  # noqa: E402
from shared.redisconn import EmbeddedRedis  # noqa: E402
from tests.helpers import Proc, free_port, herd_bin  # noqa: E402

EXAMPLE = ROOT / "tests" / "data" / "herd-heartbeat-example.json"
MODELS = ("llama3.2:3b", "qwen3:8b", "qwen3:14b", "qwen3:32b")


@dataclass(frozen=True)
class NodeSpec:
    """A simulated machine, at real speed (the benchmark scales it by --speed)."""

    memory_gb: float
    tokens_per_s: float
    prompt_tps: float
    load_seconds_per_gb: float
    num_parallel: int
    warm: tuple[str, ...]  # loaded before each run, the same for every policy


# Two large fast boxes, one slower, one small. Memory: the large ones hold the 32B with a
# small model or two, not all four; the small one can never hold the 32B.
FLEET: dict[str, NodeSpec] = {
    "big-a": NodeSpec(36, 60, 3000, 0.3, 4, ("qwen3:32b", "llama3.2:3b")),
    "big-b": NodeSpec(36, 60, 3000, 0.3, 4, ("qwen3:14b", "qwen3:8b")),
    "slow": NodeSpec(24, 20, 800, 0.8, 2, ("qwen3:8b", "llama3.2:3b")),
    "small": NodeSpec(12, 35, 1500, 0.5, 2, ("llama3.2:3b",)),
}
LOAD_BASE_SECONDS = 1.0
MAX_LOADED = 3  # OLLAMA_MAX_LOADED_MODELS of every node
KEEP_ALIVE_SECONDS = 300.0  # Ollama's default 5 minutes, in real time

POLICIES: dict[str, dict[str, str]] = {"herd": {}, **BASELINES}


def sim_args(name: str, spec: NodeSpec, port: int, speed: float) -> list[str]:
    return [
        herd_bin(), "sim", "--host", "127.0.0.1", "--port", str(port), "--node-name", name,
        "--models", ",".join(MODELS), "--memory-gb", str(spec.memory_gb),
        "--num-parallel", str(spec.num_parallel), "--max-loaded-models", str(MAX_LOADED),
        "--tokens-per-s", str(spec.tokens_per_s * speed),
        "--prompt-tps", str(spec.prompt_tps * speed),
        "--load-seconds-per-gb", str(spec.load_seconds_per_gb / speed),
        "--load-base-seconds", str(LOAD_BASE_SECONDS / speed),
        "--keep-alive", f"{KEEP_ALIVE_SECONDS / speed:g}s", "--keep-bodies", "0",
    ]


# --- heartbeats ----------------------------------------------------------------------------


def heartbeat_payload(node_id: str, url: str, stats: dict[str, Any], parallel: int,
                      sizes: dict[str, float]) -> dict[str, Any]:
    """What a herd-node agent beside this simulator would report: its memory and models."""
    payload: dict[str, Any] = json.loads(EXAMPLE.read_text())
    total = stats["memory_total"] / 1e9
    used = stats["memory_used"] / 1e9
    payload.update(node_id=node_id, ollama_host=url, timestamp=time.time())
    payload["memory"].update(total_gb=round(total, 3), used_gb=round(used, 3),
                             available_gb=round(total - used, 3))
    payload["ollama"].update(
        models_available=list(stats["installed"]), models_available_sizes=sizes,
        models_available_meta={}, num_parallel=parallel, max_loaded_models=MAX_LOADED,
        models_loaded=[{"name": m["name"], "size_gb": m["size"] / 1e9,
                        "context_length": m.get("context_length", 0)} for m in stats["ps"]],
    )
    return payload


class Heartbeats:
    """Posts every node's state to the current router every `interval` seconds."""

    def __init__(self, session: aiohttp.ClientSession, sims: dict[str, str],
                 interval: float) -> None:
        self.session, self.sims, self.interval = session, sims, interval
        self.router = ""
        self.sizes: dict[str, dict[str, float]] = {}
        self.posted = 0

    async def post_all(self) -> None:
        if not self.router:
            return
        for node_id, url in self.sims.items():
            async with self.session.get(f"{url}/sim/stats") as r:
                stats = await r.json()
            if node_id not in self.sizes:
                async with self.session.get(f"{url}/api/tags") as r:
                    tags = (await r.json())["models"]
                self.sizes[node_id] = {m["name"]: m["size"] / 1e9 for m in tags}
            payload = heartbeat_payload(node_id, url, stats, FLEET[node_id].num_parallel,
                                        self.sizes[node_id])
            async with self.session.post(f"{self.router}/heartbeat", json=payload) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"heartbeat refused: {r.status}")
            self.posted += 1

    async def run(self) -> None:
        while True:
            try:
                await self.post_all()
            except (aiohttp.ClientError, OSError) as exc:  # a router between runs
                print(f"  heartbeat failed: {exc}", file=sys.stderr)
            await asyncio.sleep(self.interval)


# --- replaying the workload ----------------------------------------------------------------


@dataclass
class Result:
    conv_id: int
    turn: int
    model: str
    sent: float
    ttft_ms: float = 0.0
    latency_ms: float = 0.0
    tokens: int = 0
    node: str = ""
    error: str = ""


@dataclass
class RunFigures:
    policy: str
    seed: int
    rate: float
    requests: int = 0
    completed: int = 0
    failed: int = 0
    makespan_s: float = 0.0
    req_per_s: float = 0.0
    tokens_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    ttft_ms: dict[str, float] = field(default_factory=dict)
    cold_loads: int = 0
    evictions: int = 0
    cache_hits: int = 0
    cached_tokens: int = 0
    per_node: dict[str, int] = field(default_factory=dict)
    per_model_node: dict[str, dict[str, int]] = field(default_factory=dict)


async def one_turn(session: aiohttp.ClientSession, router: str, conv: Conversation,
                   history: list[dict[str, str]], index: int, t0: float) -> Result:
    turn = conv.turns[index]
    history.append({"role": "user", "content": turn.text})
    body = {"model": conv.model, "messages": history, "stream": True,
            "options": {"num_predict": turn.max_tokens}}
    result = Result(conv.conv_id, index, conv.model, time.perf_counter() - t0)
    started = time.perf_counter()
    reply: list[str] = []
    try:
        async with session.post(f"{router}/api/chat", json=body) as r:
            result.node = r.headers.get("X-Fleet-Node", "")
            if r.status != 200:
                result.error = f"{r.status}: {(await r.read())[:200]!r}"
                return result
            async for line in r.content:
                if not line.strip():
                    continue
                chunk = json.loads(line)
                if "error" in chunk:
                    result.error = str(chunk["error"])[:200]
                    return result
                content = chunk.get("message", {}).get("content", "")
                if content and not result.ttft_ms:
                    result.ttft_ms = (time.perf_counter() - started) * 1000
                reply.append(content)
                if chunk.get("done"):
                    result.tokens = int(chunk.get("eval_count", 0))
        result.latency_ms = (time.perf_counter() - started) * 1000
        if not result.tokens:
            result.error = "no final chunk"
    except (aiohttp.ClientError, OSError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    history.append({"role": "assistant", "content": "".join(reply)})
    return result


async def conversation(session: aiohttp.ClientSession, router: str, conv: Conversation,
                       t0: float, out: list[Result]) -> None:
    await asyncio.sleep(max(0.0, conv.start - (time.perf_counter() - t0)))
    history: list[dict[str, str]] = [{"role": "system", "content": conv.system}]
    for index, turn in enumerate(conv.turns):
        if turn.think:
            await asyncio.sleep(turn.think)
        result = await one_turn(session, router, conv, history, index, t0)
        out.append(result)
        if result.error:
            return  # a chat client would not go on after an error either


async def replay(router: str, conversations: list[Conversation], cap: float
                 ) -> tuple[list[Result], float]:
    """Every conversation through `router`; returns the results and the makespan."""
    out: list[Result] = []
    timeout = aiohttp.ClientTimeout(total=cap)
    # idle connections are dropped before uvicorn's 5 s keep-alive ends, or a reuse can race
    # the server's close (ServerDisconnectedError) between a conversation's turns
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=2.0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(conversation(session, router, c, t0, out))
                 for c in conversations]
        _, pending = await asyncio.wait(tasks, timeout=cap)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        makespan = time.perf_counter() - t0
    return out, makespan


# --- one run ------------------------------------------------------------------------------


async def warm_start(session: aiohttp.ClientSession, sims: dict[str, str]) -> None:
    """Every node unloaded, then its fixed warm set loaded, then its counters zeroed."""
    for node_id, url in sims.items():
        await sim_call(session, "POST", f"{url}/sim/reset", {"unload": True})
        for model in FLEET[node_id].warm:
            await sim_call(session, "POST", f"{url}/api/generate",
                           {"model": model, "prompt": "", "stream": False})
        await sim_call(session, "POST", f"{url}/sim/reset", {})


def start_router(tmp: Path, redis_url: str, policy: str, tag: str) -> tuple[Proc, str]:
    port = free_port()
    env = {
        "FLEET_REDIS_PREFIX": f"herdbench:{uuid.uuid4().hex[:8]}:",
        "FLEET_HEARTBEAT_TIMEOUT": "600", "FLEET_HEARTBEAT_OFFLINE": "1200",
        "FLEET_MAX_QUEUE_DEPTH": "100000", "FLEET_QUEUE_TIMEOUT": "3600",
        "FLEET_RECORDER_ENABLED": "false",
        **POLICIES[policy],
    }
    proc = Proc([herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--redis-url",
                 redis_url, "--no-mdns", "--no-dashboard", "--data-dir",
                 str(tmp / f"router-{tag}"), "--log-level", "WARNING"],
                tmp / f"router-{tag}.log", env=env)
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(f"{url}/healthz", timeout=60)
    return proc, url


async def run_once(policy: str, seed: int, rate: float, conversations: list[Conversation],
                   sims: dict[str, str], heartbeats: Heartbeats, tmp: Path, redis_url: str,
                   cap: float) -> RunFigures:
    session = heartbeats.session
    await warm_start(session, sims)
    proc, router = await asyncio.to_thread(
        start_router, tmp, redis_url, policy, f"{policy}-{seed}-{rate:g}")
    try:
        heartbeats.router = router
        await heartbeats.post_all()
        async with session.get(f"{router}/fleet/status") as r:
            status = await r.json()
        if status["fleet"]["nodes_servable"] != len(sims):
            raise RuntimeError(f"router sees {status['fleet']} after the heartbeats")
        results, makespan = await replay(router, conversations, cap)
    finally:
        heartbeats.router = ""
        await asyncio.to_thread(proc.stop)
    figures = RunFigures(policy, seed, rate)
    figures.requests = sum(len(c.turns) for c in conversations)
    ok = [r for r in results if not r.error]
    figures.completed, figures.failed = len(ok), figures.requests - len(ok)
    for r in results:
        if r.error and figures.failed <= 3:
            print(f"  {policy}: request failed: {r.error}", file=sys.stderr)
    figures.makespan_s = round(makespan, 3)
    figures.req_per_s = round(len(ok) / makespan, 3)
    figures.tokens_per_s = round(sum(r.tokens for r in ok) / makespan, 1)
    lat, first = [r.latency_ms for r in ok], [r.ttft_ms for r in ok if r.ttft_ms]
    figures.latency_ms = {f"p{p}": round(pct(lat, p), 1) for p in (50, 95, 99)}
    figures.ttft_ms = {f"p{p}": round(pct(first, p), 1) for p in (50, 95, 99)}
    for r in ok:
        figures.per_node[r.node] = figures.per_node.get(r.node, 0) + 1
        by_model = figures.per_model_node.setdefault(r.model, {})
        by_model[r.node] = by_model.get(r.node, 0) + 1
    for url in sims.values():
        total = (await sim_call(session, "GET", f"{url}/sim/stats"))["total"]
        figures.cold_loads += total["loads"] + total["reloads"]
        figures.evictions += total["evictions"]
        figures.cache_hits += total["prompt_cache_hits"]
        figures.cached_tokens += total["cached_prompt_tokens"]
    return figures


# --- the whole benchmark -------------------------------------------------------------------


def spec_for(seed: int, rate: float, args: argparse.Namespace) -> WorkloadSpec:
    # think times are real seconds of a user, compressed like the fleet's time
    return WorkloadSpec(seed=seed, duration=args.duration, rate=rate,
                        think=(5.0 / args.speed, 20.0 / args.speed),
                        burst_every=args.duration / 3, burst_seconds=args.duration / 12)


def median_of(runs: list[RunFigures], get: Any) -> float:
    return float(statistics.median(get(r) for r in runs)) if runs else 0.0


def row(policy: str, runs: list[RunFigures]) -> str:
    """One policy's medians over its seeds, as a table line."""
    def m(get: Any) -> float:
        return median_of(runs, get)

    lat = [m(lambda r, p=p: r.latency_ms[p]) for p in ("p50", "p95", "p99")]
    ttft = [m(lambda r, p=p: r.ttft_ms[p]) for p in ("p50", "p95", "p99")]
    return (f"{policy:<12} {m(lambda r: r.req_per_s):6.2f} {m(lambda r: r.tokens_per_s):7.0f}"
            f" {lat[0]:8.0f} {lat[1]:7.0f} {lat[2]:7.0f} {ttft[0]:9.0f} {ttft[1]:7.0f}"
            f" {ttft[2]:7.0f} {m(lambda r: r.cold_loads):6.0f} {m(lambda r: r.cache_hits):5.0f}"
            f" {m(lambda r: r.failed):5.0f}")


def report(runs: list[RunFigures], rates: list[float]) -> bool:
    """Print the tables and the verdict; True when every target holds at every rate."""
    ok_all = True
    for rate in rates:
        at = [r for r in runs if r.rate == rate]
        seeds = sorted({r.seed for r in at})
        print(f"\n== {rate:g} conversations/s (seeds {','.join(map(str, seeds))}; medians) ==")
        print(f"{'policy':<12} {'req/s':>6} {'tok/s':>7} {'lat p50':>8} {'p95':>7} {'p99':>7}"
              f" {'ttft p50':>9} {'p95':>7} {'p99':>7} {'loads':>6} {'hits':>5} {'fail':>5}")
        for policy in POLICIES:
            mine = [r for r in at if r.policy == policy]
            if not mine:
                continue
            print(row(policy, mine))
        herd = {r.seed: r for r in at if r.policy == "herd"}
        for policy in POLICIES:
            if policy == "herd":
                continue
            base = {r.seed: r for r in at if r.policy == policy}
            common = sorted(set(herd) & set(base))
            if not common:
                continue
            p99 = statistics.median(herd[s].latency_ms["p99"] / max(base[s].latency_ms["p99"], 1e-9)
                                    for s in common)
            loads = statistics.median(herd[s].cold_loads - base[s].cold_loads for s in common)
            tput = statistics.median(herd[s].tokens_per_s / max(base[s].tokens_per_s, 1e-9)
                                     for s in common)
            # throughput within 2% counts as equal: the machine is shared and noisy
            ok = p99 <= 0.7 and loads < 0 and tput >= 0.98
            ok_all &= ok
            print(f"herd vs {policy:<11} p99 ratio {p99:.2f} (target <= 0.70)  cold loads "
                  f"{loads:+.0f}  throughput ratio {tput:.2f}  {'ok' if ok else 'MISSED'}")
    return ok_all


async def main_async(args: argparse.Namespace) -> int:
    seeds = [int(s) for s in args.seeds.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    policies = [p for p in args.policies.split(",") if p]
    unknown = set(policies) - set(POLICIES)
    if unknown:
        raise SystemExit(f"unknown policies: {sorted(unknown)}")
    tmp = Path(tempfile.mkdtemp(prefix="herd-sched-"))
    redis = EmbeddedRedis(tmp / "redis")
    redis_url = redis.start()
    procs: list[Proc] = []
    runs: list[RunFigures] = []
    try:
        sims: dict[str, str] = {}
        for name, spec in FLEET.items():
            port = free_port()
            procs.append(Proc(sim_args(name, spec, port, args.speed), tmp / f"sim-{name}.log"))
            sims[name] = f"http://127.0.0.1:{port}"
        for proc, url in zip(procs, sims.values(), strict=True):
            await asyncio.to_thread(proc.wait_http, f"{url}/api/version")
        async with aiohttp.ClientSession() as session:
            heartbeats = Heartbeats(session, sims, args.heartbeat)
            beat = asyncio.create_task(heartbeats.run())
            try:
                for rate in rates:
                    for i, seed in enumerate(seeds):
                        conversations = generate(spec_for(seed, rate, args))
                        info = summary(conversations)
                        print(f"seed {seed}, {rate:g} conv/s: {info['conversations']:.0f} "
                              f"conversations, {info['requests']:.0f} requests, "
                              f"{info['reply_tokens'] / args.duration:.0f} reply tokens/s "
                              "offered", flush=True)
                        # rotate the order so a noisy neighbour does not always hit one policy
                        order = policies[i % len(policies):] + policies[:i % len(policies)]
                        for policy in order:
                            figures = await run_once(policy, seed, rate, conversations, sims,
                                                     heartbeats, tmp, redis_url, args.cap)
                            runs.append(figures)
                            print(f"  {policy:<12} p99 {figures.latency_ms['p99']:7.0f} ms  "
                                  f"tok/s {figures.tokens_per_s:6.0f}  loads "
                                  f"{figures.cold_loads:3d}  hits {figures.cache_hits:4d}  "
                                  f"failed {figures.failed}  nodes {figures.per_node}",
                                  flush=True)
            finally:
                beat.cancel()
                await asyncio.gather(beat, return_exceptions=True)
    finally:
        for proc in reversed(procs):
            proc.stop()
        redis.stop()
    ok = report(runs, rates)
    print(f"\nspeed x{args.speed:g}; machine load "
          f"{' '.join(f'{x:.1f}' for x in psutil.getloadavg())} on {psutil.cpu_count()} CPUs")
    print("targets met" if ok else "targets MISSED")
    if args.json:
        text = json.dumps({"args": vars(args), "runs": [asdict(r) for r in runs],
                           "targets_met": ok}, indent=1)
        await asyncio.to_thread(Path(args.json).write_text, text)
    return 0 if ok or not args.strict else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3", help="comma list of workload seeds")
    parser.add_argument("--rates", default="4,14",
                        help="conversations per second outside bursts, one run per rate")
    parser.add_argument("--duration", type=float, default=15.0,
                        help="seconds during which conversations start")
    parser.add_argument("--speed", type=float, default=5.0,
                        help="simulated time runs this many times faster than real")
    parser.add_argument("--heartbeat", type=float, default=1.0,
                        help="seconds between synthetic heartbeats")
    parser.add_argument("--cap", type=float, default=180.0,
                        help="hard limit on one run, in seconds")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--json", default="", help="write every run's figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--workload", default="mixed", choices=("mixed", *WORKLOADS),
                        help="mixed: the heterogeneous fleet above; bursts: a big model used "
                             "in bursts past keep_alive (pins on vs off); surge: one model's "
                             "demand jumping to 3x a copy (queue copies on vs off)")
    args = parser.parse_args()
    if args.workload != "mixed":
        asyncio.run(run_workload(args))
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
