"""What one router replica holds while it runs: the core, and its fleet-state parts, typed."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

import msgspec
import pluggy
from redis.asyncio import Redis

from services.recorder.child import Job
from services.recorder.recorder import Recorder
from services.router.fleet.benchmarks import BenchmarkRuns
from services.router.fleet.client_keys import ClientKeys
from services.router.fleet.core import Core
from services.router.fleet.dispatch import Dispatcher
from services.router.fleet.ends import RequestEnds
from services.router.fleet.leader import Leader, LeaderJob
from services.router.fleet.pins import PinKeeper
from services.router.fleet.pulls import Pulls
from services.router.fleet.reaper import reaper_job, retention_job
from services.router.fleet.registry import Registry
from services.router.fleet.routing import RoutingEngine
from services.router.fleet.runtime import RuntimeSettings
from services.router.fleet.slots import SlotManager
from services.router.fleet.stats import Stats
from services.router.nodes import Nodes
from shared.children import die_with_parent
from shared.fastredis import FastRedis
from shared.health import HealthCheck
from shared.plugins import build_plugin_manager
from shared.settings import Settings

if TYPE_CHECKING:
    from services.router.telemetry import Tracing

__all__ = ["RouterContext"]

RECORDER_STOP_S = 5.0  # a recorder child's last batch commits within this, or it is killed


@dataclass
class RouterContext(Core):
    """Shared by every handler of one replica. Every part is built by `create`, before the
    app starts; the app's lifespan then runs each part's background work (app.py)."""

    plugins: pluggy.PluginManager = field(init=False)
    runtime: RuntimeSettings = field(init=False)
    client_keys: ClientKeys = field(init=False)
    fleet: Registry = field(init=False)
    slots: SlotManager = field(init=False)
    ends: RequestEnds = field(init=False)
    routing: RoutingEngine = field(init=False)
    stats: Stats = field(init=False)
    nodes: Nodes = field(init=False)
    dispatcher: Dispatcher = field(init=False)
    leader: Leader = field(init=False)
    pins: PinKeeper = field(init=False)  # its job runs on the leader only
    # Checks from every plugin, asked once per replica (hooks register, handlers call).
    health_checks: list[HealthCheck] = field(init=False)
    pulls: Pulls = field(init=False)
    benchmarks: BenchmarkRuns = field(init=False)
    # OpenTelemetry's tracer while the app runs, None when tracing is off (telemetry/).
    tracing: Tracing | None = None

    @classmethod
    def create(cls, settings: Settings, redis: Redis, fast: FastRedis | None = None) -> Self:
        ctx = super().create(settings, redis, fast)
        ctx.plugins = build_plugin_manager(settings.disabled_plugins, settings.plugins)
        ctx.runtime = RuntimeSettings(ctx)
        ctx.client_keys = ClientKeys(ctx, ctx.runtime)
        ctx.fleet = Registry(ctx)
        ctx.fleet.rebuild.on_wiped(ctx.runtime.write_back)
        ctx.slots = SlotManager.for_context(ctx)
        ctx.ends = RequestEnds(ctx, ctx.slots)
        ctx.routing = RoutingEngine(ctx.plugins)
        ctx.stats = Stats(ctx)
        ctx.nodes = Nodes()
        ctx.dispatcher = Dispatcher(ctx, fleet=ctx.fleet, slots=ctx.slots, ends=ctx.ends,
                                    routing=ctx.routing, stats=ctx.stats,
                                    client_keys=ctx.client_keys)
        ctx.pulls = Pulls(ctx, ctx.fleet, ctx.nodes)
        ctx.benchmarks = BenchmarkRuns()
        ctx.pins = PinKeeper(ctx, ctx.fleet, ctx.nodes, lambda: ctx.routing.inputs, ctx.stats)
        ctx.leader = Leader(ctx, [*leader_jobs(settings), ctx.pins.job])
        ctx.health_checks = [
            check for batch in ctx.plugins.hook.herd_register_health_checks() for check in batch]
        return ctx

    @property
    def benchmark_tasks(self) -> set[asyncio.Task[None]]:
        """The benchmark runs running on this replica (`benchmarks.tasks`)."""
        return self.benchmarks.tasks


def leader_jobs(settings: Settings) -> list[LeaderJob]:
    """The fleet-wide jobs: the zombie reaper, retention, and the recorder when enabled."""
    jobs: list[LeaderJob] = [reaper_job, retention_job]
    if settings.recorder_enabled:
        jobs.append(record_traces)
    return jobs


async def record_traces(core: Core) -> None:
    """Leader job: record into <data dir>/latency.db for as long as this replica leads.

    In a child process (services/recorder/child.py) when the replica knows its Redis URL,
    so the SQLite batches take no CPU from serving; in process otherwise.
    """
    settings = core.settings
    if not core.redis_url:
        await Recorder(core.redis, core.keys, settings.data_path / "latency.db",
                       core.replica_id, retention_days=settings.trace_retention_days).run()
        return
    job = Job(redis_url=core.redis_url, key_prefix=settings.redis_prefix,
              redis_timeout=settings.redis_timeout, data_dir=str(settings.data_path),
              consumer=core.replica_id, retention_days=settings.trace_retention_days,
              log_level=settings.log_level)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.recorder.child", stdin=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent)
    try:
        assert child.stdin is not None
        child.stdin.write(msgspec.json.encode(job) + b"\n")
        await child.stdin.drain()
        child.stdin.close()
        code = await child.wait()
        raise RuntimeError(f"the recorder process exited with {code}")  # the leader restarts it
    finally:
        if child.returncode is None:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), RECORDER_STOP_S)
            except TimeoutError:
                child.kill()
                await child.wait()
