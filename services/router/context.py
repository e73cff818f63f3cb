"""What one router replica holds while it runs: the core, and its fleet-state parts, typed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Self

import pluggy
from redis.asyncio import Redis

from services.recorder.recorder import Recorder
from services.router.fleet.core import Core
from services.router.fleet.dispatch import Dispatcher
from services.router.fleet.ends import RequestEnds
from services.router.fleet.keys import ClientKeys
from services.router.fleet.leader import Leader, LeaderJob
from services.router.fleet.pins import PinKeeper
from services.router.fleet.reaper import reaper_job, retention_job
from services.router.fleet.registry import Fleet
from services.router.fleet.routing import RoutingEngine
from services.router.fleet.runtime import RuntimeSettings
from services.router.fleet.slots import SlotManager
from services.router.fleet.stats import Stats
from services.router.nodes import Nodes
from shared.fastredis import FastRedis
from shared.health import HealthCheck
from shared.plugins import build_plugin_manager
from shared.settings import Settings

__all__ = ["RouterContext"]


@dataclass
class RouterContext(Core):
    """Shared by every handler of one replica. Every part is built by `create`, before the
    app starts; the app's lifespan then runs each part's background work (app.py)."""

    plugins: pluggy.PluginManager = field(init=False)
    runtime: RuntimeSettings = field(init=False)
    client_keys: ClientKeys = field(init=False)
    fleet: Fleet = field(init=False)
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
    # auto_pull: one pull per model at a time on this replica, shared by its waiters.
    auto_pulls: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # Benchmark runs started on this replica, cancelled when it stops.
    benchmark_tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def create(cls, settings: Settings, redis: Redis, fast: FastRedis | None = None) -> Self:
        ctx = super().create(settings, redis, fast)
        ctx.plugins = build_plugin_manager(settings.disabled_plugins, settings.plugins)
        ctx.runtime = RuntimeSettings(ctx)
        ctx.client_keys = ClientKeys(ctx, ctx.runtime)
        ctx.fleet = Fleet(ctx)
        ctx.fleet.rebuild.on_wiped(ctx.runtime.write_back)
        ctx.slots = SlotManager.for_context(ctx)
        ctx.ends = RequestEnds(ctx, ctx.slots)
        ctx.routing = RoutingEngine(ctx.plugins)
        ctx.stats = Stats(ctx)
        ctx.nodes = Nodes()
        ctx.dispatcher = Dispatcher(ctx, fleet=ctx.fleet, slots=ctx.slots, ends=ctx.ends,
                                    routing=ctx.routing, stats=ctx.stats,
                                    client_keys=ctx.client_keys)
        ctx.pins = PinKeeper(ctx, ctx.fleet, ctx.nodes, lambda: ctx.routing.inputs, ctx.stats)
        ctx.leader = Leader(ctx, [*leader_jobs(settings), ctx.pins.job])
        ctx.health_checks = [
            check for batch in ctx.plugins.hook.herd_register_health_checks() for check in batch]
        return ctx


def leader_jobs(settings: Settings) -> list[LeaderJob]:
    """The fleet-wide jobs: the zombie reaper, retention, and the recorder when enabled."""
    jobs: list[LeaderJob] = [reaper_job, retention_job]
    if settings.recorder_enabled:
        jobs.append(record_traces)
    return jobs


async def record_traces(core: Core) -> None:
    """Leader job: record into <data dir>/latency.db for as long as this replica leads."""
    recorder = Recorder(
        core.redis, core.keys, core.settings.data_path / "latency.db", core.replica_id,
        retention_days=core.settings.trace_retention_days,
    )
    await recorder.run()
