"""Slots per node:model as Redis leases, and the fleet-wide queue of requests waiting for one,
served in weighted fair order between apps; Redis decides who gets every freed slot.

See docs/queueing.md. In short: `acquire.lua` takes a lease on the first candidate with a
free slot when nobody waits for the model, else gives the request its place in
`wait:{model}` and stores its candidates (`wait-nodes`). The queue's order is decided in the
script: a request's score is its priority band (high, normal, low) times 2^44 plus a
virtual finish tag, the later of its app's newest tag and the queue's clock, plus 1 / the
app's weight (self-clocked fair queueing). So apps that wait share freed slots by weight,
an app's own requests stay first come, first served in a band, and `high` goes ahead of
every `normal` request.

Who gets a freed slot is decided in the script that frees it, never in Python: release.lua,
reap.lua and leave.lua (a lease returned) *settle* the node (shared/lua/_queue.lua): its
free slots go to the live waiters whose candidates include it, in the queue's order, each
granted its lease and removed from the queue in the same script. acquire.lua settles every
candidate of a request that queues, so a slot that is free as it arrives goes to the first
waiter that can use it (maybe an older one). Invariant: after every script, no node has a
free slot while a live waiter that lists it waits. A waiter that cannot use a node never
holds back one that can (no head-of-line blocking), and ties in the order cannot stall it.

The script PUBLISHes each grant on the grant channel of the waiter's replica; this replica
completes that claim from the message, with no round trip of its own, and extends the lease
in the background (a script holds a slot granted to another replica's waiter only as long as
that waiter would look alive, so a dead replica's waiters cannot keep slots for a whole
lease). A lost message is found by the ~1 s tick: it refreshes the waiters' liveness and
asks, for each, whether it still waits (ZMSCORE); one that does not calls acquire again,
which finds its lease. After a resubscription every waiter calls acquire again once.

The same scripts read and write the conversation index (`affinity`, `affinity-node`): the
node that took a conversation's last turn moves ahead of candidates scoring less than it
plus the affinity bonus, and the node granted becomes the remembered one.

Counters per node:model (hash `counters:{node}|{model}`):
- `in_flight`: live leases (taken by acquire or a settle, returned by release, leave or the
  reaper);
- `done` / `failed`: released requests by outcome (reaped zombies count as failed).
`pending` (requests queued fleet-wide whose first-choice node is this one) lives per model
in `wait-pending:{model}`, so every script that drops a waiter is given its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from services.router.fleet.core import Core
from shared.errors import QueueFull
from shared.fastredis import FastPipeline
from shared.keys import Keys
from shared.routing import NO_APP, PRIORITIES
from shared.scripts import Scripts, script_sha, script_source
from shared.settings import Settings

__all__ = ["Grant", "Place", "Scored", "SlotManager", "Widen", "parse_counters"]

log = logging.getLogger("herd.slots")

TICK_SECONDS = 1.0  # finds grants whose message was lost; refreshes waiters' liveness
WAITER_TTL_SECONDS = 6.0  # a dead replica's waiters are dropped after at most this long
RESUBSCRIBE_SECONDS = 1.0
MIN_WEIGHT, MAX_WEIGHT = 0.01, 100.0  # keeps virtual tags far below one band (2^44)


class Scored(NamedTuple):
    """A candidate's score, and what the replica's view assumed of its load when scoring:
    `busy` requests in flight on it for the model, each costing it `freed` points. The view
    is up to half a second old; the acquisition corrects the score of the conversation's
    last node to its live leases before giving it the affinity bonus."""

    score: float
    busy: int = 0
    freed: float = 0.0


# A wider list of candidates and their scores, asked for when none of the first had room.
Widen = Callable[[], tuple[Sequence[tuple[str, int]], Sequence[float | Scored]]]


@dataclass(frozen=True, slots=True)
class Place:
    """Where a request stands in the fair queue, and the conversation it continues."""

    app: str = NO_APP
    priority: str = "normal"  # a key of PRIORITIES
    weight: float = 1.0  # the app's share of freed slots relative to other waiting apps
    session: str = ""  # conversation key; "" for none
    affinity_bonus: float = 0.0  # score added to the conversation's last node
    affinity_ttl: float = 1800.0  # seconds a conversation is remembered after its last turn
    affinity_max: int = 100_000  # conversations remembered fleet-wide


@dataclass(frozen=True, slots=True)
class Grant:
    """A slot taken: the node, and the node that took the conversation's last turn ('')."""

    node_id: str
    remembered: str = ""


@dataclass(eq=False)
class _Waiter:
    request_id: str
    model: str
    busy: bool = True  # its acquire script is running: it learns where it stands from that
    grant: Grant | None = None  # set from a grant message
    event: asyncio.Event = field(default_factory=asyncio.Event)  # a grant, or: call again


def parse_counters(raw: dict[str, str]) -> dict[str, int]:
    """A counters hash as ints, every field present (missing ones are 0)."""
    return {
        name: int(raw.get(name, 0) or 0) for name in ("pending", "in_flight", "done", "failed")
    }


class SlotManager:
    """This replica's side of the fleet-wide slots and queue."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: Callable[[], Settings],
        *,
        waiter_ttl: float = WAITER_TTL_SECONDS,
        tick: float = TICK_SECONDS,
        scripts: Scripts | None = None,
    ) -> None:
        self._waiter_ttl_ms = int(waiter_ttl * 1000)
        self._tick_seconds = tick
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._scripts = scripts or Scripts(redis)
        # Each manager its own channel: a grant is parsed only by the replica it concerns.
        self._channel = keys.grant_channel(uuid.uuid4().hex[:16])
        self._waiters: dict[str, _Waiter] = {}  # request id -> waiter
        self._leases: dict[tuple[str, str, str], int] = {}  # (node, model, id) -> holders
        self._fresh: list[tuple[str, str, str]] = []  # granted by message: leases to extend
        self._confirming: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    @classmethod
    def for_context(cls, ctx: Core) -> SlotManager:
        return cls(ctx.redis, ctx.keys, lambda: ctx.settings, scripts=ctx.scripts)

    # --- lifecycle
    async def start(self) -> None:
        # Loaded up front: otherwise a burst of first requests all meet NOSCRIPT at once.
        for name in ("acquire", "release", "leave"):
            await self._redis.script_load(script_source(name))
        self._tasks = [
            asyncio.create_task(self._listen(), name="slots-listen"),
            asyncio.create_task(self._tick(), name="slots-tick"),
            asyncio.create_task(self._renew_loop(), name="slots-renew"),
        ]
        # A grant published before we listen would wait for the tick to be found.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 5.0)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        if self._confirming is not None:
            tasks.append(self._confirming)
            self._confirming = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- acquire
    async def acquire(
        self,
        model: str,
        request_id: str,
        candidates: Sequence[tuple[str, int]],
        timeout: float,  # noqa: ASYNC109 - the queue wait only, not the whole request
        more: Widen | None = None,
    ) -> str:
        """`claim` with no app, priority or conversation; returns the node id."""
        return (await self.claim(model, request_id, candidates, timeout, more=more)).node_id

    async def claim(
        self,
        model: str,
        request_id: str,
        candidates: Sequence[tuple[str, int]],
        timeout: float,  # noqa: ASYNC109 - the queue wait only, not the whole request
        *,
        place: Place = Place(),
        scores: Sequence[float | Scored] = (),
        more: Widen | None = None,
    ) -> Grant:
        """Take a slot on the first candidate (node id, capacity) with room, in the order
        given (`scores`, best first, decide where the conversation's last node moves),
        waiting in the fleet-wide queue for `model` when none has.

        `more`, if given, is called once when no candidate had room on the first try: its
        wider list (candidates and scores) is tried at once, and the request waits with it
        (a shortlist first, the whole fleet only when the shortlist is full).

        Raises QueueFull when the queue is at `max_queue_depth` or `timeout` passes.
        """
        if not candidates:
            raise ValueError("acquire needs at least one candidate")
        settings = self._settings()
        keys = self._keys
        queue_keys = keys.queue(model)

        def keys_and_args(
            nodes: Sequence[tuple[str, int]], scored: Sequence[float | Scored],
        ) -> tuple[list[str], list[Any]]:
            script_keys, node_args = list(queue_keys), []
            for i, (node_id, capacity) in enumerate(nodes):
                script_keys += [keys.slots(node_id, model), keys.counters(node_id, model)]
                given = scored[i] if i < len(scored) else 0.0
                score = given if isinstance(given, Scored) else Scored(given)
                node_args += [node_id, max(int(capacity), 0), round(score.score, 4),
                              max(score.busy, 0), round(score.freed, 4)]
            return script_keys, node_args

        script_keys, node_args = keys_and_args(candidates, scores)
        lease_ms = int(settings.lease_seconds * 1000)
        weight = min(max(place.weight, MIN_WEIGHT), MAX_WEIGHT)
        fixed_args: list[Any] = [
            request_id, 0, lease_ms, settings.max_queue_depth,
            self._waiter_ttl_ms, model, self._channel,
            place.app, PRIORITIES.get(place.priority, 1), round(1.0 / weight, 6),
            place.session, round(place.affinity_bonus, 4),
            max(int(place.affinity_ttl * 1000), 1), max(place.affinity_max, 1), 0,
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        # Registered before the first call: a grant may be published before its reply comes.
        waiter = _Waiter(request_id, model)
        self._waiters[request_id] = waiter
        widened = more is None
        done = False
        try:
            while True:
                waiter.event.clear()
                waiter.busy = True
                fixed_args[1] = _now_ms()
                result = await self._scripts.run(
                    "acquire", script_keys, [*fixed_args, *node_args]
                )
                waiter.busy = False
                fixed_args[14] = 1  # from now on it may hold a slot granted meanwhile
                status = int(result[0])
                if status == 1:
                    done = True
                    return Grant(str(result[1]), str(result[2]))
                if status == -1:
                    done = True  # nothing was queued
                    raise QueueFull(
                        f"too many requests waiting for {model} "
                        f"({settings.max_queue_depth}); try again shortly",
                        retry_after=_retry_after(settings),
                    )
                if not widened:
                    assert more is not None
                    widened = True
                    candidates, scores = _widen(candidates, scores, more())
                    script_keys, node_args = keys_and_args(candidates, scores)
                    continue
                # Queued: wait for a grant, or for a reason to call again.
                while waiter.grant is None and not waiter.event.is_set():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise QueueFull(
                            f"no slot for {model} became free within {timeout:g} s",
                            retry_after=_retry_after(settings),
                        )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiter.event.wait(), remaining)
                if waiter.grant is not None:
                    done = True
                    return waiter.grant
        finally:
            if self._waiters.get(request_id) is waiter:
                del self._waiters[request_id]
            if not done:
                # Timed out, cancelled, or Redis failed mid-call: leave the queue and return
                # any slot granted meanwhile (it goes on to the next waiter). Shielded so a
                # second cancel cannot skip it.
                await _shielded(self._leave(model, request_id, candidates))

    async def _leave(
        self, model: str, request_id: str, candidates: Sequence[tuple[str, int]]
    ) -> None:
        keys = self._keys
        script_keys = keys.queue(model)
        for node_id, _ in candidates:
            script_keys += [keys.slots(node_id, model), keys.counters(node_id, model)]
        try:
            await self._scripts.run(
                "leave", script_keys,
                [request_id, _now_ms(), model, *(node_id for node_id, _ in candidates)])
        except RedisError:
            # The waiter's liveness and the lease expire by themselves; the reaper fixes counters.
            log.warning("could not leave the queue", extra={"request_id": request_id})

    def waiting(self, model: str | None = None) -> int:
        """How many requests this replica has queued (for `model`, or for all)."""
        if model is None:
            return len(self._waiters)
        return sum(1 for w in self._waiters.values() if w.model == model)

    def _granted(self, data: str) -> None:
        """A grant message: complete that claim, if it is this replica's and still waits."""
        try:
            request_id, node_id, remembered = json.loads(data)
        except (ValueError, TypeError):
            log.warning("unreadable grant message", extra={"data": data[:200]})
            return
        waiter = self._waiters.get(str(request_id))
        if waiter is None or waiter.grant is not None:
            return  # it left (its leave returns the slot) or already knows
        waiter.grant = Grant(str(node_id), str(remembered))
        waiter.event.set()
        self._fresh.append((str(node_id), waiter.model, waiter.request_id))
        if self._confirming is None or self._confirming.done():
            self._confirming = asyncio.create_task(self._confirm(), name="slots-confirm")

    async def _confirm(self) -> None:
        """Make the leases granted by message full leases, in one pipeline per batch."""
        while self._fresh:
            leases, self._fresh = self._fresh, []
            expiry = _now_ms() + int(self._settings().lease_seconds * 1000)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for node_id, model, request_id in leases:
                        # XX: a request already finished (released) is not revived.
                        pipe.zadd(self._keys.slots(node_id, model), {request_id: expiry},
                                  xx=True)
                    await pipe.execute()
            except RedisError as exc:
                # The lease lasts a few seconds more; `renewing` extends it like any other.
                log.warning("could not extend granted leases", extra={"error": str(exc)})

    # --- release
    def add_release(
        self, pipe: Pipeline | FastPipeline, node_id: str, model: str, request_id: str,
        ok: bool,
    ) -> None:
        """Queue the release of a slot on `pipe` (run it with the trace in one round trip)."""
        keys = self._keys
        args = [*keys.queue(model), keys.slots(node_id, model), keys.counters(node_id, model),
                request_id, 1 if ok else 0, _now_ms(), node_id, model]
        numkeys = len(args) - 5
        if isinstance(pipe, FastPipeline):
            # By SHA: the script (with the queue's shared part) is ~9 KB, sent and hashed on
            # every EVAL; the lean pipeline runs it as EVAL only if Redis lost it.
            pipe.evalsha(script_sha("release"), script_source("release"), numkeys, *args)
        else:
            # EVAL, not EVALSHA: redis-py's pipeline with registered scripts would first
            # spend a round trip on SCRIPT EXISTS, and EVAL survives a script-cache flush.
            pipe.eval(script_source("release"), numkeys, *args)

    async def release(self, node_id: str, model: str, request_id: str, ok: bool) -> bool:
        """Release alone; True if the lease was still held (False: the reaper took it)."""
        keys = self._keys
        result = await self._scripts.run(
            "release",
            [*keys.queue(model), keys.slots(node_id, model), keys.counters(node_id, model)],
            [request_id, 1 if ok else 0, _now_ms(), node_id, model],
        )
        return bool(result)

    # --- renewal
    @contextlib.asynccontextmanager
    async def renewing(self, node_id: str, model: str, request_id: str) -> AsyncIterator[None]:
        """Keep the lease alive while the body runs (one pipeline renews every lease)."""
        lease = (node_id, model, request_id)
        self._leases[lease] = self._leases.get(lease, 0) + 1
        try:
            yield
        finally:
            left = self._leases.get(lease, 1) - 1
            if left > 0:
                self._leases[lease] = left
            else:
                self._leases.pop(lease, None)

    async def renew_now(self) -> int:
        """Renew every lease held under `renewing`; returns how many were still held."""
        if not self._leases:
            return 0
        expiry = _now_ms() + int(self._settings().lease_seconds * 1000)
        leases = list(self._leases)
        async with self._redis.pipeline(transaction=False) as pipe:
            for node_id, model, request_id in leases:
                # XX: never resurrect a lease the reaper already returned (counted as failed).
                pipe.zadd(self._keys.slots(node_id, model), {request_id: expiry}, xx=True, ch=True)
            results = await pipe.execute()
        lost = [lease for lease, changed in zip(leases, results, strict=True) if not changed]
        for node_id, model, request_id in lost:
            log.warning(
                "slot lease lost while the request runs",
                extra={"node_id": node_id, "model": model, "request_id": request_id},
            )
        return len(leases) - len(lost)

    # --- background tasks
    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                async for message in pubsub.listen():
                    kind = message.get("type")
                    if kind == "message":
                        self._granted(str(message["data"]))
                    elif kind == "subscribe":
                        # Subscribed, or subscribed again after redis-py reconnected by
                        # itself: a grant may have been published meanwhile, so every
                        # waiter asks once (none wait on the first subscription).
                        self._subscribed.set()
                        self._call_all_again()
            except RedisError as exc:
                log.warning("grant channel lost; resubscribing", extra={"error": str(exc)})
                self._call_all_again()
                await asyncio.sleep(RESUBSCRIBE_SECONDS)
            finally:
                with contextlib.suppress(RedisError, RuntimeError):
                    await pubsub.aclose()

    def _call_all_again(self) -> None:
        for waiter in self._waiters.values():
            if waiter.grant is None:
                waiter.event.set()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._tick_seconds)
            try:
                await self.check_waiters()
            except RedisError as exc:
                log.warning("could not refresh waiters", extra={"error": str(exc)})

    async def check_waiters(self) -> int:
        """Refresh this replica's waiters' liveness, and have each one that no longer waits
        in Redis call acquire again (its grant message was lost, or it was dropped as dead
        while this replica stalled). One pipeline; returns how many were asked to call again.
        """
        if not self._waiters:
            return 0
        by_model: dict[str, list[_Waiter]] = {}
        for waiter in self._waiters.values():
            by_model.setdefault(waiter.model, []).append(waiter)
        expiry = _now_ms() + self._waiter_ttl_ms
        async with self._redis.pipeline(transaction=False) as pipe:
            for model, group in by_model.items():
                ids = [w.request_id for w in group]
                # XX: a waiter the queue dropped is not revived here; its acquire decides.
                pipe.zadd(self._keys.wait_lease(model), dict.fromkeys(ids, expiry), xx=True)
                pipe.zmscore(self._keys.wait(model), ids)
            replies = await pipe.execute()
        asked = 0
        for group, scores in zip(by_model.values(), replies[1::2], strict=True):
            for waiter, score in zip(group, scores, strict=True):
                # A busy waiter learns where it stands from its own script's reply.
                if score is None and not waiter.busy and waiter.grant is None:
                    waiter.event.set()
                    asked += 1
        return asked

    async def _renew_loop(self) -> None:
        while True:
            # A third of the lease: two renewals may fail before a live request looks dead.
            await asyncio.sleep(max(self._settings().lease_seconds / 3, 0.05))
            try:
                await self.renew_now()
            except RedisError as exc:
                log.warning("could not renew leases", extra={"error": str(exc)})


def _widen(
    candidates: Sequence[tuple[str, int]], scores: Sequence[float | Scored],
    wider: tuple[Sequence[tuple[str, int]], Sequence[float | Scored]],
) -> tuple[list[tuple[str, int]], list[float | Scored]]:
    """The wider list, then any first candidate it lacks: a slot granted on one of those
    is still found (acquire) and returned (leave)."""
    nodes, scored = list(wider[0]), list(wider[1])
    scored += [0.0] * (len(nodes) - len(scored))
    seen = {node_id for node_id, _ in nodes}
    for i, (node_id, capacity) in enumerate(candidates):
        if node_id not in seen:
            nodes.append((node_id, capacity))
            scored.append(scores[i] if i < len(scores) else 0.0)
    return nodes, scored


def _now_ms() -> int:
    return int(time.time() * 1000)


def _retry_after(settings: Settings) -> int:
    return max(1, min(30, int(settings.lease_seconds // 6) or 1))


async def _shielded(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        # Cancelled again while cleaning up: the cleanup goes on in its task; finish it first.
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise
