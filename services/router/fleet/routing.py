"""The routing engine: transforms, then filters, scores and the policy, over cached inputs.

Plugins are collected once per replica (a lifecycle); the request path calls the returned
objects directly. The inputs scorers read (in-flight work, queue depths, decaying
latencies) are refreshed from Redis in the background, never per request; finished
requests' latencies are folded in process and written with that refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from services.router.fleet.core import Core
from services.router.fleet.registry import Registry
from services.router.fleet.slots import Grant, Place
from shared.background import background
from shared.models import FleetSnapshot, NodeState
from shared.routing import (
    FreeingScorer,
    LatencyStats,
    NodeFilter,
    RouteRequest,
    RoutingInputs,
    Scorer,
    ScoringContext,
    Transform,
)
from shared.scripts import script_source
from shared.settings import Settings

__all__ = [
    "AFFINITY_HIT",
    "AFFINITY_MOVED",
    "AFFINITY_NEW",
    "DEFAULT_POLICY",
    "LATENCY_ALPHA",
    "LatencyBatch",
    "Ranked",
    "RoutingEngine",
    "add_latency",
    "affinity_verdict",
]

log = logging.getLogger("herd.routing")

DEFAULT_POLICY = "plugins.routing.policy"
INPUTS_INTERVAL = 0.5  # seconds between refreshes of in-flight / latency inputs
LATENCY_ALPHA = 0.2  # weight of the newest request in the decaying averages
LATENCY_TTL = 7 * 24 * 3600
MAX_MODELS_PER_NODE = 64  # bounds the refresh for nodes with huge model libraries
AFFINITY_HIT, AFFINITY_MOVED, AFFINITY_NEW = "hit", "moved", "new"  # X-Fleet-Affinity


def affinity_verdict(remembered: str, node_id: str) -> str:
    """X-Fleet-Affinity: the turn went to the conversation's last node, another, or it had
    none (no earlier turn, or no conversation at all)."""
    if not remembered:
        return AFFINITY_NEW
    return AFFINITY_HIT if remembered == node_id else AFFINITY_MOVED


@dataclass(slots=True)
class Ranked:
    """A candidate with its weighted score and the per-scorer breakdown (trace, header)."""

    node: NodeState
    score: float
    breakdown: dict[str, float] = field(default_factory=dict)


class _Fold:
    """n samples of one figure folded for latency.lua: old*decay + add, or first if no old."""

    __slots__ = ("add", "decay", "first")

    def __init__(self) -> None:
        self.decay, self.add, self.first = 1.0, 0.0, 0.0

    def push(self, x: float) -> None:
        keep = 1.0 - LATENCY_ALPHA
        if self.decay >= 1.0:
            self.first, self.add = x, LATENCY_ALPHA * x
        else:
            self.first = keep * self.first + LATENCY_ALPHA * x
            self.add = keep * self.add + LATENCY_ALPHA * x
        self.decay *= keep

    def args(self) -> list[float]:
        return [self.decay, round(self.add, 6), round(self.first, 6)]


class LatencyBatch:
    """Finished requests' latency figures per node:model, not yet in Redis.

    The averages are scoring inputs read every INPUTS_INTERVAL, so they are written with
    that refresh (one EVAL per node:model) instead of one EVAL per request.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], tuple[_Fold, _Fold, _Fold, list[int]]] = {}

    def add(self, node_id: str, model: str, latency_ms: float, ttft_ms: float | None,
            tokens_per_s: float) -> None:
        entry = self.pending.get((node_id, model))
        if entry is None:
            entry = self.pending[(node_id, model)] = (_Fold(), _Fold(), _Fold(), [0])
        lat, ttft, tps, samples = entry
        if latency_ms > 0:
            lat.push(latency_ms)
        if ttft_ms is not None and ttft_ms > 0:
            ttft.push(ttft_ms)
        if tokens_per_s > 0:
            tps.push(tokens_per_s)
        samples[0] += 1

    def write(self, pipe: Pipeline, ctx: Core) -> int:
        """Queue the pending folds on `pipe` and forget them; returns how many pairs."""
        pending, self.pending = self.pending, {}
        for (node_id, model), (lat, ttft, tps, samples) in pending.items():
            # EVAL, not EVALSHA: a pipeline with registered scripts spends a round trip on
            # SCRIPT EXISTS first; Redis caches the compiled script by its hash anyway.
            pipe.eval(
                script_source("latency"), 1, ctx.keys.latency(node_id, model),
                *lat.args(), *ttft.args(), *tps.args(), samples[0], LATENCY_TTL,
            )
        return len(pending)


def _flatten(results: Iterable[list[Any] | None]) -> list[Any]:
    return [item for result in results if result for item in result]


class RoutingEngine:
    """The registered filters, scorers and transforms of one replica, and the policy."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        hook = manager.hook
        self.scorers: list[Scorer] = _flatten(hook.herd_register_scorers())
        self.filters: list[NodeFilter] = _flatten(hook.herd_register_filters())
        self.transforms: list[Transform] = _flatten(hook.herd_register_transforms())
        self._choose = hook.herd_choose_node
        # pluggy stays off the hot path unless a plugin replaced the default policy
        self.custom_policy = any(
            impl.plugin_name != DEFAULT_POLICY for impl in self._choose.get_hookimpls()
        )
        self.inputs = RoutingInputs()
        self.latency = LatencyBatch()
        # moves the starting point of each shortlist on (fleet/candidates.py)
        self.turns = itertools.count()
        self._weight_attrs = [(s, f"weight_{s.name}") for s in self.scorers]
        # scorers rating the in-flight counts, with their gain per request that ended
        self._freeing = [(s, attr) for s, attr in self._weight_attrs
                         if isinstance(s, FreeingScorer)]

    def weight(self, name: str, settings: Settings) -> float:
        """The weight of the scorer called `name` (its `weight_<name>` setting, else its
        own), or 0 if no such scorer is registered."""
        for scorer, attr in self._weight_attrs:
            if scorer.name == name:
                return float(getattr(settings, attr, scorer.weight))
        return 0.0

    def place(self, request: RouteRequest, settings: Settings) -> Place:
        """The request's place in the fair queue and, with fleet affinity, its conversation
        for the slot acquisition to look up and remember (docs/queueing.md, routing.md)."""
        app = request.queue_app
        fleet = settings.session_affinity == "fleet" and bool(request.session_key)
        return Place(
            app=app, priority=request.priority, weight=settings.app_weights.get(app, 1.0),
            session=request.session_key if fleet else "",
            affinity_bonus=self.weight("affinity", settings) if fleet else 0.0,
            affinity_ttl=settings.affinity_ttl_seconds,
            affinity_max=settings.affinity_max_sessions,
        )

    def granted(
        self, request: RouteRequest, settings: Settings, place: Place, grant: Grant,
        ranked: list[Ranked],
    ) -> tuple[Ranked, str]:
        """The candidate the slot was granted on (its score and breakdown with the affinity
        bonus when the acquisition applied it), and the X-Fleet-Affinity verdict."""
        node_id = grant.node_id
        chosen = next((r for r in ranked if r.node.node_id == node_id), ranked[0])
        remembered = grant.remembered
        if settings.session_affinity == "replica":
            remembered = self.inputs.session_node(request.session_key) or ""
        if place.session and remembered == node_id:
            chosen = Ranked(chosen.node, round(chosen.score + place.affinity_bonus, 2),
                            {**chosen.breakdown, "affinity": place.affinity_bonus})
        return chosen, affinity_verdict(remembered, node_id)

    def context(self, settings: Settings, snapshot: FleetSnapshot) -> ScoringContext:
        return ScoringContext(settings=settings, snapshot=snapshot, inputs=self.inputs)

    def prepare(self, request: RouteRequest, context: ScoringContext) -> None:
        """Run every transform, in registration order."""
        if not request.estimated_tokens:
            request.estimated_tokens = len(request.raw) // 4  # ~4 bytes a token
        for transform in self.transforms:
            transform.apply(request, context)

    def freed(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> float:
        """The points `node`'s score gains per request fewer in flight on it for the model
        (see Scorer)."""
        settings = context.settings
        return sum(float(getattr(settings, attr, s.weight)) * s.freed(node, request, context)
                   for s, attr in self._freeing)

    def rank(
        self, request: RouteRequest, context: ScoringContext, exclude: Iterable[str] = (),
        nodes: Iterable[NodeState] | None = None,
    ) -> list[Ranked]:
        """Candidates that pass every filter, best first (the policy's pick leads): among
        `nodes` when given (a shortlist, see fleet/candidates.py), else every node."""
        settings = context.settings
        weights = [(s, float(getattr(settings, attr, s.weight))) for s, attr in
                   self._weight_attrs]
        excluded = context.excluded = frozenset(exclude)
        ranked: list[Ranked] = []
        for node in context.snapshot.nodes.values() if nodes is None else nodes:
            if node.node_id in excluded:
                continue
            if not all(f.allows(node, request, context) for f in self.filters):
                continue
            breakdown: dict[str, float] = {}
            total = 0.0
            for scorer, weight in weights:
                value = weight * scorer.score(node, request, context)
                breakdown[scorer.name] = round(value, 2)
                total += value
            ranked.append(Ranked(node, round(total, 2), breakdown))
        # ties go to the node with less work, then by name, so choices are reproducible
        ranked.sort(key=lambda r: (
            -r.score, context.inputs.node_in_flight(r.node.node_id), r.node.node_id))
        if self.custom_policy and len(ranked) > 1:
            chosen = self._choose(
                request=request, ranked=[(r.node, r.score) for r in ranked], context=context)
            if chosen is not None:
                for i, candidate in enumerate(ranked):
                    if candidate.node.node_id == chosen.node_id:
                        ranked.insert(0, ranked.pop(i))
                        break
        return ranked

    # --- inputs ------------------------------------------------------------------------

    async def refresh_inputs(self, ctx: Core, snapshot: FleetSnapshot) -> None:
        """Read in-flight leases, queue depths and latency averages for the fleet's pairs."""
        keys = ctx.keys
        pairs: list[tuple[str, str]] = []
        for node in snapshot.nodes.values():
            names = dict.fromkeys(m.name for m in node.models_loaded)
            names.update(dict.fromkeys(node.models_available[:MAX_MODELS_PER_NODE]))
            pairs.extend((node.node_id, name) for name in names)
        models = sorted({model for _, model in pairs})
        pipe = ctx.redis.pipeline(transaction=False)
        # this replica's finished requests first, so the read below includes them
        written = self.latency.write(pipe, ctx)
        for node_id, model in pairs:
            pipe.zcard(keys.slots(node_id, model))
            pipe.hgetall(keys.latency(node_id, model))
        for model in models:
            pipe.zcard(keys.wait(model))
        pipe.hgetall(keys.load_times())
        results = (await pipe.execute())[written:]
        self.inputs.load_ms = _load_times(results.pop())
        in_flight: dict[tuple[str, str], int] = {}
        latency: dict[tuple[str, str], LatencyStats] = {}
        for i, pair in enumerate(pairs):
            count, stats = results[2 * i], results[2 * i + 1]
            if count:
                in_flight[pair] = int(count)
            if stats:
                latency[pair] = _stats(stats)
        offset = 2 * len(pairs)
        queued = {m: int(results[offset + i]) for i, m in enumerate(models) if results[offset + i]}
        self.inputs.replace(in_flight, latency, queued)

    @contextlib.asynccontextmanager
    async def running(self, ctx: Core, fleet: Registry) -> AsyncIterator[None]:
        """Keep the scoring inputs fresh; write the last requests' latencies at the end."""
        with contextlib.suppress(RedisError, OSError):
            await self.refresh_inputs(ctx, fleet.snapshot())
        try:
            async with background(self._refresh_loop(ctx, fleet), "herd-routing-inputs"):
                yield
        finally:
            if self.latency.pending:  # the last requests' figures
                pipe = ctx.redis.pipeline(transaction=False)
                self.latency.write(pipe, ctx)
                with contextlib.suppress(RedisError, OSError):
                    await pipe.execute()

    async def _refresh_loop(self, ctx: Core, fleet: Registry) -> None:
        while True:
            try:
                await self.refresh_inputs(ctx, fleet.snapshot())
            except (RedisError, OSError) as exc:
                log.warning("routing inputs not refreshed", extra={"error": str(exc)})
            await asyncio.sleep(INPUTS_INTERVAL)


def _load_times(fields: dict[str, str]) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for pair, value in fields.items():
        node_id, sep, model = pair.partition("|")
        try:
            ms = float(value)
        except ValueError:
            continue
        if sep and ms > 0:
            out[(node_id, model)] = ms
    return out


def _stats(fields: dict[str, str]) -> LatencyStats:
    def num(name: str) -> float:
        try:
            return float(fields.get(name) or 0.0)
        except ValueError:
            return 0.0

    return LatencyStats(
        latency_ms=num("latency_ms"), ttft_ms=num("ttft_ms"),
        tokens_per_s=num("tokens_per_s"), samples=int(num("samples")),
    )


def add_latency(
    pipe: Pipeline, ctx: Core, node_id: str, model: str, *,
    latency_ms: float, ttft_ms: float | None, tokens_per_s: float,
) -> None:
    """Queue the update of the node:model's decaying averages by one request on `pipe`."""
    batch = LatencyBatch()
    batch.add(node_id, model, latency_ms, ttft_ms, tokens_per_s)
    batch.write(pipe, ctx)
