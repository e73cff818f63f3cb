"""The fleet-wide queue as a state machine: replicas, apps, arrivals, completions,
cancellations and crashes in orders nobody wrote down, against a real Redis (hypothesis).

Each example runs two or three `SlotManager` replicas (their own clients and subscriptions)
in one event loop, over three nodes of one or two slots for one model. Rules: arrivals from
random apps (random weights), priorities and candidate lists (one to three nodes, in random
preference order; some start from a shortlist and widen to every node), completions
(release), cancellations of waiting claims (task.cancel), lease expiries (a holder whose
replica crashed: its lease scored in the past, no release, then a reaper pass), replica
deaths (stopped without leaving; its waiters' liveness in the past), new replicas, and bare
reaper passes. Request ids are drawn too, so ties in the fair order fall either way.

The replicas' timers run at 60 s, so no timer can hide a lost wake-up. After every step
the loop runs until nothing changes (scripts finished, messages delivered), then:

I1 capacity and books: no node holds more leases than its capacity; each node's `in_flight`
   counter equals its leases; a request holds at most one lease; every claim that returned
   holds its lease and every lease belongs to a claim that returned (a cancelled or timed
   out claim leaves nothing); every waiting claim of a live replica is queued.
I2 no stall: no node has a free slot while a live waiter (queued, its liveness not lapsed)
   whose candidates include the node waits. Allowed GRACE seconds to become true: one
   wake-up round takes milliseconds, the grace only absorbs a loaded machine.
I3 fairness (self-clocked fair queueing): over any run of steps during which apps a and b
   both have requests waiting, and every request that waited since the queue was last
   empty was in band normal, could use every node, and was served or still waits (no
   cancellation, no dead replica's waiter, no shortlist: each would leave a gap or a jump
   in the tags), the slots a and b got satisfy |S_a/w_a - S_b/w_b| <= 1/w_a + 1/w_b + SLACK.
   Why: slots go in tag order, and a waiting app's tags are 1/w apart starting within 1/w
   of the clock, so each side is within one request of the virtual time that passed. SLACK
   (1e-4) covers only the script's rounding of 1/w to six decimals (under 5e-7 per request,
   a few hundred requests at most). Every step frees at most one slot, so a step's grants
   all happen while both were waiting. `QueueMachine` draws a third of its examples
   "plain" (every arrival normal and able to use every node); `PlainQueueMachine` draws
   only those, with crowds of arrivals, for long windows.
I4 liveness (at teardown): when every holder finishes (and a dead replica's leases expire),
   every live waiter is served within a few seconds.

Before the queue's grants moved into Redis this found the tie stall (two waiters with equal
tags on one replica: it woke the one Redis did not order first) and head-of-line blocking (a
head pinned to a full node). HERD_QUEUE_EXAMPLES (default 60; the plain machine runs half)
and HERD_QUEUE_STEPS (30) make long runs by hand; `-s` prints what the examples exercised.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as sync_redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from services.router.fleet.reaper import reap_once
from services.router.fleet.slots import Grant, Place, Scored, SlotManager
from shared.errors import QueueFull
from shared.keys import Keys
from shared.redisconn import connect
from shared.settings import Settings

MODEL = "llama3.2:3b"
NODES = ("n0", "n1", "n2")
APPS = ("a", "b", "c")
WEIGHTS = (1.0, 0.5, 2.0, 0.25, 3.0)
BANDS = ("normal", "normal", "normal", "high", "low")
GRACE = 1.0  # seconds an invariant may take to hold after a step (see I2)
SLACK = 1e-4
TICK = 60.0  # the replicas' timers: far beyond any example, so none hides a lost wake-up
EXAMPLES = int(os.environ.get("HERD_QUEUE_EXAMPLES", "60"))
# replica, app, candidates in preference order, priority, shortlist (0: widens), id label
ARRIVAL = st.tuples(
    st.integers(0, 2), st.sampled_from(APPS),
    st.lists(st.sampled_from(NODES), min_size=1, max_size=3, unique=True),
    st.sampled_from(BANDS), st.integers(0, 3), st.integers(0, 255))
STEPS = int(os.environ.get("HERD_QUEUE_STEPS", "30"))
STATS: Counter[str] = Counter()  # what the examples exercised, printed with -s
PLAIN_ONLY = os.environ.get("HERD_QUEUE_PLAIN") == "1"  # every arrival may use every node


@dataclass(eq=False)
class Replica:
    redis: Redis
    slots: SlotManager
    alive: bool = True


@dataclass(eq=False)
class Claim:
    rid: str
    replica: Replica
    app: str
    band: str
    nodes: frozenset[str]  # every node it may wait for (after widening)
    task: asyncio.Task[Grant]
    state: str = "waiting"  # waiting | holding | released | lost | cancelled | full
    node: str = ""
    epoch_clean: bool = True  # normal, every node, no shortlist


@dataclass
class Pair:
    served: dict[str, int] = field(default_factory=dict)


class QueueMachine(RuleBasedStateMachine):
    redis_url = ""
    data_dir = ""
    plain_only = PLAIN_ONLY  # every example plain (see I3)

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.ready = False
        self.replicas: list[Replica] = []
        self.claims: dict[str, Claim] = {}
        self.count = 0
        self.pairs: dict[tuple[str, str], dict[str, int]] = {}
        self.clean = True  # no waiter left unserved since the queue was last empty
        self.settled_backlog: dict[str, int] = {}

    # --- plumbing
    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    async def _start_replica(self) -> Replica:
        client = connect(self.redis_url)
        slots = SlotManager(client, self.keys, lambda: self.settings, tick=TICK,
                            waiter_ttl=120.0)
        await slots.start()
        return Replica(client, slots)

    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive]

    def in_state(self, state: str, *, alive_only: bool = False) -> list[Claim]:
        return sorted((c for c in self.claims.values() if c.state == state
                       and (c.replica.alive or not alive_only)), key=lambda c: c.rid)

    @initialize(replicas=st.integers(2, 3),
                caps=st.tuples(*(st.integers(1, 2) for _ in NODES)),
                weights=st.tuples(*(st.sampled_from(WEIGHTS) for _ in APPS)),
                plain=st.integers(0, 2))
    def setup(self, replicas: int, caps: tuple[int, ...], weights: tuple[float, ...],
              plain: int) -> None:
        self.caps = dict(zip(NODES, caps, strict=True))
        self.weights = dict(zip(APPS, weights, strict=True))
        self.plain = plain == 0
        self.keys = Keys(f"herdtest:{uuid.uuid4().hex[:10]}:")
        self.settings = Settings.load(
            environ={}, redis_url=self.redis_url, redis_prefix=self.keys.prefix,
            data_dir=self.data_dir, mdns_enabled=False, dashboard_enabled=False,
            max_queue_depth=12, queue_timeout=120.0,
        )

        async def start() -> None:
            self.redis = connect(self.redis_url)
            self.replicas = [await self._start_replica() for _ in range(replicas)]

        self.run(start())
        self.ready = True

    # --- rules
    @precondition(lambda self: self.ready)
    @rule(burst=st.lists(ARRIVAL, min_size=1, max_size=3))
    def arrive(self, burst: list[tuple[int, str, list[str], str, int, int]]) -> None:
        """One to three requests arrive at once (their scripts race)."""
        for replica, app, nodes, band, shortlist, label in burst:
            self._arrive(replica, app, nodes, band, shortlist, label)
        self.step()

    def _arrive(self, replica: int, app: str, nodes: list[str], band: str, shortlist: int,
                label: int) -> None:
        if self.plain or self.plain_only:
            nodes, band, shortlist = list(NODES), "normal", 1
        alive = self.alive()
        owner = alive[replica % len(alive)]
        self.count += 1
        # The label comes first, so the order of ids (Redis's order of equal scores) is drawn.
        rid = f"{label:02x}-{self.count}"
        more = None
        reach = frozenset(nodes)
        if shortlist == 0:
            reach = frozenset(NODES)
            wider = [*nodes, *(n for n in NODES if n not in nodes)]

            def more() -> tuple[list[tuple[str, int]], list[float]]:
                return [(n, self.caps[n]) for n in wider], []

        candidates = [(n, self.caps[n]) for n in nodes]
        # Half the requests are turns of a few conversations, scored by a view that may
        # count some of their node's leases still running (the acquisition corrects the
        # remembered node's score to its live leases): the order of candidates may change,
        # never the invariants.
        session = f"chat-{label % 4}" if label % 2 else ""
        scores = [Scored(50.0 - 10 * i, busy=label % 3, freed=20.0) for i in range(len(nodes))]
        place = Place(app=app, priority=band, weight=self.weights[app], session=session,
                      affinity_bonus=15.0 if session else 0.0)
        task = self.runner.get_loop().create_task(owner.slots.claim(
            MODEL, rid, candidates, 120.0, place=place, scores=scores, more=more))
        clean = band == "normal" and reach == frozenset(NODES) and more is None
        self.claims[rid] = Claim(rid, owner, app, band, reach, task, epoch_clean=clean)

    # Preconditions never read what the scripts decided (which claims hold or wait): that
    # depends on how concurrent scripts interleave, and hypothesis must draw the same rules
    # when it replays an example. A rule with nothing to act on does nothing.
    @precondition(lambda self: self.ready)
    @rule(picks=st.lists(st.integers(0, 1000), min_size=1, max_size=3), ok=st.booleans())
    def complete(self, picks: list[int], ok: bool) -> None:
        """One to three holders finish, one after another (each a step of its own)."""
        for pick in picks:
            holders = self.in_state("holding", alive_only=True)
            if not holders:
                return
            claim = holders[pick % len(holders)]
            held = self.run(claim.replica.slots.release(claim.node, MODEL, claim.rid, ok))
            assert held, f"{claim.rid} had lost its lease on {claim.node}"
            claim.state = "released"
            self.step()

    @precondition(lambda self: self.ready)
    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick: int) -> None:
        waiting = self.in_state("waiting", alive_only=True)
        if not waiting:
            return
        claim = waiting[pick % len(waiting)]
        claim.task.cancel()
        self.step()

    @precondition(lambda self: self.ready)
    @rule(pick=st.integers(0, 1000))
    def lease_expires(self, pick: int) -> None:
        """A holder's replica crashed mid-request: no renewal, no release; the reaper runs."""
        holders = self.in_state("holding")
        if not holders:
            return
        claim = holders[pick % len(holders)]

        async def expire() -> None:
            slots = self.keys.slots(claim.node, MODEL)
            assert await self.redis.zadd(slots, {claim.rid: _now_ms() - 1000}, xx=True,
                                         ch=True) == 1
            reaped = await reap_once(self.redis, self.keys)
            assert claim.rid in reaped.leases.get((claim.node, MODEL), [])

        self.run(expire())
        claim.state = "lost"
        self.step()

    @precondition(lambda self: self.ready and len(self.alive()) > 1)
    @rule(pick=st.integers(0, 2))
    def replica_dies(self, pick: int) -> None:
        """A replica stops without leaving; its waiters' liveness lapses."""
        alive = self.alive()
        dead = alive[pick % len(alive)]
        mine = [c for c in self.in_state("waiting") if c.replica is dead]

        async def die() -> None:
            await dead.slots.stop()
            if mine:
                await self.redis.zadd(self.keys.wait_lease(MODEL),
                                      {c.rid: 1 for c in mine}, xx=True)

        self.run(die())
        dead.alive = False
        for claim in mine:
            claim.state = "orphan"
        if mine:
            self.clean = False
        self.step()

    @precondition(lambda self: self.ready and len(self.replicas) < 5)
    @rule()
    def replica_starts(self) -> None:
        self.replicas.append(self.run(self._start_replica()))
        self.step()

    @precondition(lambda self: self.ready)
    @rule()
    def reaper_pass(self) -> None:
        self.run(reap_once(self.redis, self.keys))
        self.step()

    # --- after each step
    def step(self) -> None:
        backlog_before = self.settled_backlog  # as the last step left it: queued requests
        was_clean = self.clean
        started = time.monotonic()
        self.run(self.settle())
        served: list[Claim] = []
        self.run(self.eventually(self.check_books, served))
        self.run(self.eventually(self.check_no_stall, served))
        took = int((time.monotonic() - started) * 1000)
        STATS["slowest step to settle and pass, ms"] = max(
            STATS["slowest step to settle and pass, ms"], took)
        self.queue_empty = not self.run(self.redis.zcard(self.keys.wait(MODEL)))
        self.check_fairness(was_clean, backlog_before, served)
        self.settled_backlog = self.backlog()

    async def settle(self) -> None:
        """Let the loop run until Redis and the claims stop changing (at least three
        polls a few ms apart): scripts finished, messages delivered."""
        last: Any = None
        stable = 0
        for _ in range(300):
            await asyncio.sleep(0.002)
            mark = (tuple(c.task.done() for c in self.claims.values()),
                    await self.snapshot())
            stable = stable + 1 if mark == last else 0
            last = mark
            if stable >= 2:
                return

    async def snapshot(self) -> tuple[Any, ...]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrange(self.keys.wait(MODEL), 0, -1, withscores=True)
            pipe.zrange(self.keys.wait_lease(MODEL), 0, -1, withscores=True)
            for node in NODES:
                pipe.zrange(self.keys.slots(node, MODEL), 0, -1, withscores=True)
            for node in NODES:
                pipe.hget(self.keys.counters(node, MODEL), "in_flight")
            got = await pipe.execute()
        return tuple(tuple(x) if isinstance(x, list) else x for x in got)

    def collect(self) -> list[Claim]:
        """Move finished claims to their state; returns the ones served in this step."""
        served = []
        for claim in self.claims.values():
            if claim.state not in ("waiting", "orphan") or not claim.task.done():
                continue
            if claim.task.cancelled():
                claim.state = "cancelled"  # it left the queue unserved: tags have a gap
                self.clean = False
                continue
            exc = claim.task.exception()
            if isinstance(exc, QueueFull):
                claim.state = "full"
                continue
            assert exc is None, f"{claim.rid} failed: {exc!r}"
            grant = claim.task.result()
            assert grant.node_id in claim.nodes, f"{claim.rid} got {grant.node_id}"
            assert claim.state == "waiting", f"dead replica's {claim.rid} was served"
            claim.state, claim.node = "holding", grant.node_id
            served.append(claim)
        depth = sum(1 for c in self.claims.values() if c.state == "waiting")
        if depth >= 3:
            STATS["steps with 3+ requests waiting"] += 1
        STATS["slots granted"] += len(served)
        for claim in self.claims.values():
            if not claim.epoch_clean and claim.state == "waiting":
                self.clean = False
        return served

    async def eventually(self, check: Any, served: list[Claim] | None = None) -> None:
        """Run `check` until it passes or GRACE runs out, taking in the claims that finish
        meanwhile (the served ones are added to `served`)."""
        deadline = time.monotonic() + GRACE
        while True:
            got = self.collect()
            if served is not None:
                served += got
            try:
                await check()
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                STATS[f"{check.__name__} passed only after a retry"] += 1
            await asyncio.sleep(0.01)

    async def check_books(self) -> None:
        snap = await self.snapshot()
        queued = {m for m, _ in snap[0]}
        leases = {node: {m for m, _ in snap[2 + i]} for i, node in enumerate(NODES)}
        in_flight = snap[2 + len(NODES):]
        holders: dict[str, set[str]] = {node: set() for node in NODES}
        for claim in self.claims.values():
            if claim.state == "holding":
                holders[claim.node].add(claim.rid)
            if claim.state == "waiting":
                assert claim.rid in queued, f"waiting {claim.rid} is not queued"
        for i, node in enumerate(NODES):
            assert len(leases[node]) <= self.caps[node], f"{node} over capacity: {leases}"
            assert int(in_flight[i] or 0) == len(leases[node]), f"{node} in_flight drifted"
            assert leases[node] == holders[node], (
                f"{node}: leases {sorted(leases[node])} but holders {sorted(holders[node])}")
        every = [rid for held in leases.values() for rid in held]
        assert len(every) == len(set(every)), f"a request holds two leases: {leases}"

    async def check_no_stall(self) -> None:
        snap = await self.snapshot()
        now = _now_ms()
        live = {m for m, score in snap[1] if score > now}
        waiting = [m for m, _ in snap[0] if m in live]
        for i, node in enumerate(NODES):
            held = len(snap[2 + i])
            if held >= self.caps[node]:
                continue
            fits = [w for w in waiting if node in self.claims[w].nodes]
            assert not fits, (
                f"{node} has {self.caps[node] - held} free slot(s) while {fits} wait for it "
                f"(queue: {snap[0]})")

    def backlog(self) -> dict[str, int]:
        """Apps with live waiting claims, and how many."""
        counts: dict[str, int] = {}
        for claim in self.in_state("waiting", alive_only=True):
            counts[claim.app] = counts.get(claim.app, 0) + 1
        return counts

    def check_fairness(self, was_clean: bool, before: dict[str, int],
                       served: list[Claim]) -> None:
        after = self.backlog()
        if self.queue_empty:
            self.clean = True  # the fair state starts afresh (wait-fair is deleted)
        if not (was_clean and self.clean):
            STATS["steps after a waiter left unserved"] += 1
            self.pairs.clear()
            return
        got: dict[str, int] = {}
        for claim in served:
            got[claim.app] = got.get(claim.app, 0) + 1
        for a in APPS:
            for b in APPS:
                if a >= b:
                    continue
                if not (before.get(a) and before.get(b)):
                    self.pairs.pop((a, b), None)
                    continue
                window = self.pairs.setdefault((a, b), {a: 0, b: 0})
                window[a] += got.get(a, 0)
                window[b] += got.get(b, 0)
                wa, wb = self.weights[a], self.weights[b]
                gap = abs(window[a] / wa - window[b] / wb)
                STATS[f"fairness window {min(window[a] + window[b], 4)}"] += 1
                if window[a] + window[b] >= 4:
                    STATS["fairness checked over 4+ slots served to two waiting apps"] += 1
                assert gap <= 1 / wa + 1 / wb + SLACK, (
                    f"unfair: {a} (weight {wa}) got {window[a]}, {b} (weight {wb}) got "
                    f"{window[b]} while both waited")
                if not (after.get(a) and after.get(b)):
                    self.pairs.pop((a, b), None)

    # --- teardown: I4, then clean up
    def teardown(self) -> None:
        try:
            if self.ready:
                self.run(self.drain())
        finally:
            self.run(self.close())
            self.runner.close()

    async def drain(self) -> None:
        """Finish every holder (expire a dead replica's leases) until nobody live waits."""
        deadline = time.monotonic() + 10.0
        while True:
            await self.settle()
            await self.eventually(self.check_books)
            waiting = self.in_state("waiting", alive_only=True)
            holders = self.in_state("holding")
            if not waiting:
                return
            assert time.monotonic() < deadline, (
                f"{[c.rid for c in waiting]} still wait with every slot finished "
                f"(holders {[c.rid for c in holders]})")
            if not holders:
                await self.eventually(self.check_no_stall)
                await asyncio.sleep(0.01)
                continue
            for claim in holders:
                if claim.replica.alive:
                    await claim.replica.slots.release(claim.node, MODEL, claim.rid, True)
                else:
                    await self.redis.zadd(self.keys.slots(claim.node, MODEL),
                                          {claim.rid: 1}, xx=True)
                    await reap_once(self.redis, self.keys)
                claim.state = "released"

    async def close(self) -> None:
        for claim in self.claims.values():
            claim.task.cancel()
        for claim in self.claims.values():
            with contextlib.suppress(BaseException):
                await claim.task
        for replica in self.replicas:
            if replica.alive:
                await replica.slots.stop()
            await replica.redis.aclose()
        if hasattr(self, "redis"):
            await self.redis.aclose()
        if hasattr(self, "keys"):
            client = sync_redis.Redis.from_url(self.redis_url)
            try:
                batch = list(client.scan_iter(match=self.keys.match(), count=500))
                if batch:
                    client.delete(*batch)
            finally:
                client.close()


def _now_ms() -> int:
    return int(time.time() * 1000)


class PlainQueueMachine(QueueMachine):
    """Every arrival normal and able to use every node, and no waiter leaves unserved (no
    cancellation, no replica death: the general machine has those): long fair-share
    windows (I3)."""

    plain_only = True

    # Plain methods in place of the rules: hypothesis does not draw them here.
    def cancel(self, pick: int) -> None:
        raise AssertionError("not a rule of the plain machine")

    def replica_dies(self, pick: int) -> None:
        raise AssertionError("not a rule of the plain machine")

    @precondition(lambda self: self.ready)
    @rule(burst=st.lists(ARRIVAL, min_size=4, max_size=8))
    def crowd(self, burst: list[tuple[int, str, list[str], str, int, int]]) -> None:
        """Many arrive at once: long backlogs, long windows to measure shares over."""
        self.arrive(burst)


def run_machine(machine: type[QueueMachine], redis_url: str, tmp_path: Path,
                examples: int) -> None:
    machine.redis_url = redis_url
    machine.data_dir = str(tmp_path)
    STATS.clear()
    run_state_machine_as_test(machine, settings=settings(
        max_examples=examples, stateful_step_count=STEPS, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
    print(machine.__name__, dict(STATS))


def test_the_queue_never_stalls(redis_url: str, tmp_path: Path) -> None:
    """HERD_QUEUE_EXAMPLES and HERD_QUEUE_STEPS make longer runs by hand."""
    run_machine(QueueMachine, redis_url, tmp_path, EXAMPLES)


def test_waiting_apps_share_by_weight(redis_url: str, tmp_path: Path) -> None:
    run_machine(PlainQueueMachine, redis_url, tmp_path, max(EXAMPLES // 2, 1))
