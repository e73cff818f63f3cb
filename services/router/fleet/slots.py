"""Slots per node:model as Redis leases, and the fleet-wide queue of requests waiting for one,
served in weighted fair order between apps.

See docs/queueing.md. In short: `acquire.lua` takes a lease on the first candidate with a
free slot unless another request is ahead of this one in `wait:{model}`, else queues it
there. The queue's order is decided in the script: a request's score is its priority band
(high, normal, low) times 2^44 plus a virtual finish tag, the later of its app's newest tag
and the queue's clock, plus 1 / the app's weight (self-clocked fair queueing). So apps that
wait share freed slots by weight, an app's own requests stay first come, first served in a
band, and `high` goes ahead of every `normal` request. A release PUBLISHes the model on one
channel; each replica, on a message, lets its own waiter nearest the head for that model
retry (the script decides who may go). A ~1 s tick covers slots freed by expiry and keeps
this replica's waiters alive in Redis.

The same script reads and writes the conversation index (`affinity`, `affinity-node`): the
node that took a conversation's last turn moves ahead of candidates scoring less than it
plus the affinity bonus, and the node granted becomes the remembered one, with no round
trip of its own.

Counters per node:model (hash `counters:{node}|{model}`):
- `in_flight`: live leases (taken by acquire, returned by release, leave or the reaper);
- `done` / `failed`: released requests by outcome (reaped zombies count as failed).
`pending` (requests queued fleet-wide whose first-choice node is this one) lives per model
in `wait-pending:{model}`, so every script that drops a waiter is given its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from services.router.fleet.core import Core
from shared.errors import QueueFull
from shared.fastredis import FastPipeline
from shared.keys import Keys
from shared.routing import NO_APP, PRIORITIES
from shared.scripts import Scripts, script_source
from shared.settings import Settings

__all__ = ["Grant", "Place", "SlotManager", "Widen", "parse_counters"]

log = logging.getLogger("herd.slots")

TICK_SECONDS = 1.0  # retry cadence for slots freed by expiry rather than release
WAITER_TTL_SECONDS = 6.0  # a dead replica's waiters block the queue at most this long
RESUBSCRIBE_SECONDS = 1.0
_UNKNOWN_ORDER = float("inf")
MIN_WEIGHT, MAX_WEIGHT = 0.01, 100.0  # keeps virtual tags far below one band (2^44)


# A wider list of candidates and their scores, asked for when none of the first had room.
Widen = Callable[[], tuple[Sequence[tuple[str, int]], Sequence[float]]]


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
    seq: float = 0.0  # its score in wait:{model}: lower is nearer the head
    busy: bool = True  # its acquire script is running: a wake-up now goes to someone else
    event: asyncio.Event = field(default_factory=asyncio.Event)


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
        self._waiters: dict[str, dict[str, _Waiter]] = {}  # model -> request id -> waiter
        self._spare: dict[str, int] = {}  # model -> wake-ups that found every waiter busy
        self._leases: dict[tuple[str, str, str], int] = {}  # (node, model, id) -> holders
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
        # Waiters must not miss a release published just after they queue.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 5.0)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

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
        scores: Sequence[float] = (),
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
        queue_keys = [*keys.queue(model), keys.counters_index(), keys.affinity(),
                      keys.affinity_node()]

        def keys_and_args(
            nodes: Sequence[tuple[str, int]], scored: Sequence[float],
        ) -> tuple[list[str], list[Any]]:
            script_keys, node_args = list(queue_keys), []
            for i, (node_id, capacity) in enumerate(nodes):
                script_keys += [keys.slots(node_id, model), keys.counters(node_id, model)]
                node_args += [node_id, max(int(capacity), 0),
                              round(scored[i], 4) if i < len(scored) else 0]
            return script_keys, node_args

        script_keys, node_args = keys_and_args(candidates, scores)
        lease_ms = int(settings.lease_seconds * 1000)
        weight = min(max(place.weight, MIN_WEIGHT), MAX_WEIGHT)
        fixed_args: list[Any] = [
            request_id, 0, lease_ms, settings.max_queue_depth,
            self._waiter_ttl_ms, model, keys.release_channel(),
            place.app, PRIORITIES.get(place.priority, 1), round(1.0 / weight, 6),
            place.session, round(place.affinity_bonus, 4),
            max(int(place.affinity_ttl * 1000), 1), max(place.affinity_max, 1),
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        # Registered (busy) before the first try: a release heard while the script's reply is
        # on its way is kept as a spare wake-up. Its place in the order comes with that reply.
        waiter = _Waiter(request_id, model, seq=_UNKNOWN_ORDER)
        self._waiters.setdefault(model, {})[request_id] = waiter
        queued = False
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
                if not queued:
                    queued = True
                    waiter.seq = float(result[2])
                    if more is not None:
                        candidates, scores = more()
                        script_keys, node_args = keys_and_args(candidates, scores)
                        continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise QueueFull(
                        f"no slot for {model} became free within {timeout:g} s",
                        retry_after=_retry_after(settings),
                    )
                if self._take_spare(model):
                    continue  # a release came while we were trying: try again at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.event.wait(), remaining)
        finally:
            self._forget(waiter)
            if not done:
                # Timed out, cancelled, or Redis failed mid-call: leave the queue and drop any
                # lease the script may have granted. Shielded so a second cancel cannot skip it.
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
                "leave", script_keys, [request_id, model, keys.release_channel()])
        except RedisError:
            # The waiter's liveness and the lease expire by themselves; the reaper fixes counters.
            log.warning("could not leave the queue", extra={"request_id": request_id})

    def _forget(self, waiter: _Waiter) -> None:
        of_model = self._waiters.get(waiter.model)
        if of_model is not None:
            of_model.pop(waiter.request_id, None)
            if not of_model:
                del self._waiters[waiter.model]
                self._spare.pop(waiter.model, None)

    def waiting(self, model: str | None = None) -> int:
        """How many requests this replica has queued (for `model`, or for all)."""
        if model is not None:
            return len(self._waiters.get(model, ()))
        return sum(len(w) for w in self._waiters.values())

    def _wake_oldest(self, model: str) -> None:
        """Let this replica's idle waiter nearest the head for `model` retry.

        One message is one retry. If every waiter is already retrying, the retry is kept
        as a spare that the next waiter to fail uses at once, so no release is lost while
        scripts are in flight.
        """
        of_model = self._waiters.get(model)
        if not of_model:
            return
        idle = [w for w in of_model.values() if not w.busy and not w.event.is_set()]
        if idle:
            min(idle, key=lambda w: w.seq).event.set()
        else:
            self._spare[model] = min(self._spare.get(model, 0) + 1, len(of_model))

    def _take_spare(self, model: str) -> bool:
        spare = self._spare.get(model, 0)
        if spare <= 0:
            return False
        if spare == 1:
            del self._spare[model]
        else:
            self._spare[model] = spare - 1
        return True

    # --- release
    def add_release(
        self, pipe: Pipeline | FastPipeline, node_id: str, model: str, request_id: str,
        ok: bool,
    ) -> None:
        """Queue the release of a slot on `pipe` (run it with the trace in one round trip)."""
        keys = self._keys
        # EVAL, not EVALSHA: a pipeline with registered scripts would first spend a round
        # trip on SCRIPT EXISTS, and EVAL survives a script-cache flush (Redis restart).
        pipe.eval(
            script_source("release"), 3,
            keys.slots(node_id, model), keys.counters(node_id, model), keys.wait(model),
            request_id, 1 if ok else 0, keys.release_channel(), model,
        )

    async def release(self, node_id: str, model: str, request_id: str, ok: bool) -> bool:
        """Release alone; True if the lease was still held (False: the reaper took it)."""
        keys = self._keys
        result = await self._scripts.run(
            "release",
            [keys.slots(node_id, model), keys.counters(node_id, model), keys.wait(model)],
            [request_id, 1 if ok else 0, keys.release_channel(), model],
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
        channel = self._keys.release_channel()
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self._subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._wake_oldest(str(message["data"]))
            except RedisError as exc:
                log.warning("release channel lost; resubscribing", extra={"error": str(exc)})
                # Something may have been released while we were away.
                for model in list(self._waiters):
                    self._wake_oldest(model)
                await asyncio.sleep(RESUBSCRIBE_SECONDS)
            finally:
                with contextlib.suppress(RedisError, RuntimeError):
                    await pubsub.aclose()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._tick_seconds)
            try:
                await self._refresh_waiters()
            except RedisError as exc:
                log.warning("could not refresh waiters", extra={"error": str(exc)})
            for model in list(self._waiters):
                self._wake_oldest(model)

    async def _refresh_waiters(self) -> None:
        if not self._waiters:
            return
        expiry = _now_ms() + self._waiter_ttl_ms
        async with self._redis.pipeline(transaction=False) as pipe:
            for model, of_model in self._waiters.items():
                members = dict.fromkeys(of_model, expiry)
                if members:
                    pipe.zadd(self._keys.wait_lease(model), members, xx=True)
            await pipe.execute()

    async def _renew_loop(self) -> None:
        while True:
            # A third of the lease: two renewals may fail before a live request looks dead.
            await asyncio.sleep(max(self._settings().lease_seconds / 3, 0.05))
            try:
                await self.renew_now()
            except RedisError as exc:
                log.warning("could not renew leases", extra={"error": str(exc)})


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
