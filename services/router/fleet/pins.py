"""Pins and warm copies: the leader's job that keeps models loaded where the demand is.

Every heartbeat round the leader plans from its snapshot (fleet/pinplan.py) and sends the
load-only requests the plan asks for (Ollama's `/api/generate` with no prompt: it loads
the model, or on a loaded one just sets its keep_alive). Loads run in the background, at
most one per model; the round never waits for one. It writes each pin's state to
`keys.pins()` (read by every replica's `/fleet/pins`), the copies it holds forever to
`keys.pins_held()` (so a new leader can release what no pin needs), the measured cold
load times to `keys.load_times()` (the routers' wait rule), and an event for every load
and every change of a pin's state.

Only the leader acts; its book-keeping of loads in flight is its own (a new leader starts
with none: at worst one model gets two loads once, which Ollama serves as one).

Pins themselves live in the `pinned_models` runtime setting; `save_pin`/`remove_pin`
change one entry with an optimistic transaction (WATCH), so two replicas pinning two
models at once both land.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from redis.exceptions import RedisError, WatchError

from services.router.fleet.core import Core
from services.router.fleet.events import emit
from services.router.fleet.pinplan import Action, Kind, PinStatus, World, plan
from services.router.fleet.reads import ReadParts
from services.router.fleet.registry import Registry
from services.router.fleet.runtime import RuntimeSettings, jsonable
from services.router.fleet.stats import Stats
from services.router.nodes import Nodes
from shared.errors import UpstreamError
from shared.pins import parse_pin
from shared.routing import RoutingInputs
from shared.schemas import PinView

__all__ = ["PinKeeper", "read_pins", "remove_pin", "save_pin"]

log = logging.getLogger("herd.pins")

RETRY_AFTER_FAILURE = 30.0  # seconds before a node that refused a load is asked again
ESTIMATES_EVERY = 2  # rounds between re-reads of the measured load times (the hour's stats)
EDIT_ATTEMPTS = 20
_decode = msgspec.json.Decoder().decode


def _pair(node_id: str, model: str) -> str:
    return f"{node_id}|{model}"


class PinKeeper:
    """The leader's pin and warm-copy reconciler; `job` is its leader job."""

    def __init__(self, core: Core, fleet: Registry, nodes: Nodes,
                 inputs: Callable[[], RoutingInputs], stats: Stats) -> None:
        self._core = core
        self._fleet = fleet
        self._nodes = nodes
        self._inputs = inputs
        self._stats = stats
        self._loading: dict[str, tuple[str, asyncio.Task[None]]] = {}  # model -> node, task
        self._busy: dict[tuple[str, str], asyncio.Task[None]] = {}  # refresh/release
        self._fresh: dict[tuple[str, str], float] = {}
        self._failed: dict[tuple[str, str], float] = {}
        self._held: set[tuple[str, str]] = set()
        self._states: dict[str, tuple[str, str]] = {}
        self._load_ms: dict[tuple[str, str], float] = {}
        self._own_ms: dict[tuple[str, str], float] = {}  # loads this leader sent, timed
        self._round = 0
        self.rounds = 0  # completed rounds (tests wait on it)

    # --- the leader job ------------------------------------------------------------------

    async def job(self, core: Core) -> None:
        """Leader job: a round every heartbeat interval, until leadership ends."""
        self._core = core
        try:
            await self._start()
            while True:
                try:
                    await self.step()
                except (RedisError, OSError) as exc:
                    log.warning("pin round failed", extra={"error": str(exc)})
                await asyncio.sleep(self._core.settings.heartbeat_interval)
        finally:
            tasks = [t for _, t in self._loading.values()] + list(self._busy.values())
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._loading.clear()
            self._busy.clear()

    async def _start(self) -> None:
        core = self._core
        raw = await core.redis.hgetall(core.keys.pins_held())
        self._held = {tuple(k.split("|", 1)) for k in raw if "|" in k}
        states = await core.redis.hgetall(core.keys.pins())
        for model, text in states.items():
            with contextlib.suppress(msgspec.DecodeError, TypeError, KeyError):
                data = _decode(text)
                self._states[model] = (data["state"], data["reason"])
        self._round = 0

    async def step(self) -> list[Action]:
        """One round: plan, start what the plan asks, publish the pins' states."""
        core = self._core
        settings = core.settings
        now = time.time()
        if self._round % ESTIMATES_EVERY == 0:
            await self._read_load_times(now)
        self._round += 1
        snapshot = self._fleet.snapshot()
        inputs = self._inputs()
        self._fresh = {k: at for k, at in self._fresh.items() if now - at < 120.0}
        self._failed = {k: t for k, t in self._failed.items() if t > now}
        world = World(
            snapshot=snapshot, now=now, in_flight=inputs.in_flight, queued=dict(inputs.queued),
            loading={m: node for m, (node, _) in self._loading.items()},
            fresh=self._fresh, held=frozenset(self._held),
            busy_actions=frozenset(self._busy), failed=self._failed,
            latency_ms={k: v.latency_ms for k, v in inputs.latency.items() if v.latency_ms},
            load_ms=self._load_ms,
            slots=lambda node: node.slots(settings.default_num_parallel),
            node_in_flight=inputs.node_in_flight,
        )
        statuses, actions = plan(settings.pinned_models, world, settings.queue_copies)
        for action in actions:
            self._start_action(action)
        await self._publish(statuses)
        self.rounds += 1
        return actions

    # --- carrying the plan out -------------------------------------------------------------

    def _start_action(self, action: Action) -> None:
        task = asyncio.create_task(self._perform(action),
                                   name=f"herd-pin-{action.kind}:{action.model}")
        key = (action.node_id, action.model)
        if action.loads:
            self._loading[action.model] = (action.node_id, task)
        else:
            self._busy[key] = task

        def done(_: asyncio.Task[None]) -> None:
            if action.loads and self._loading.get(action.model, ("", None))[1] is task:
                del self._loading[action.model]
            if self._busy.get(key) is task:
                del self._busy[key]

        task.add_done_callback(done)

    async def _perform(self, action: Action) -> None:
        core = self._core
        node = self._fleet.snapshot().nodes.get(action.node_id)
        if node is None:
            return
        body: dict[str, Any] = {"model": action.model}
        if action.keep_alive is not None:
            body["keep_alive"] = action.keep_alive
        log.info("pin %s: %s on %s", action.kind, action.model, action.node_id,
                 extra={"model": action.model, "node_id": action.node_id,
                        "kind": str(action.kind), "reason": action.reason})
        if action.loads:
            await emit(core.redis, core.keys, "warm_copy", node_id=action.node_id,
                       model=action.model, action=str(action.kind), stage="started",
                       reason=action.reason)
        started = time.monotonic()
        error = ""
        try:
            status, answer = await self._nodes.post_whole(
                node, "/api/generate", msgspec.json.encode(body),
                max(core.settings.stale_timeout, 1.0))
            if status >= 400:
                error = f"{status} {answer[:300].decode(errors='replace')}"
        except UpstreamError as exc:
            error = exc.message
        key = (action.node_id, action.model)
        seconds = round(time.monotonic() - started, 3)
        if error:
            self._failed[key] = time.time() + RETRY_AFTER_FAILURE
            log.warning("pin %s failed: %s on %s", action.kind, action.model, action.node_id,
                        extra={"model": action.model, "node_id": action.node_id,
                               "error": error})
        else:
            await self._note_done(action, key, seconds)
        if action.loads or error:
            await emit(core.redis, core.keys, "warm_copy", node_id=action.node_id,
                       model=action.model, action=str(action.kind),
                       stage="failed" if error else "done", seconds=seconds,
                       reason=action.reason, **({"error": error} if error else {}))

    async def _note_done(self, action: Action, key: tuple[str, str], seconds: float) -> None:
        core = self._core
        if action.kind is Kind.RELEASE:
            self._held.discard(key)
            await core.redis.hdel(core.keys.pins_held(), _pair(*key))
            return
        if action.loads:
            self._fresh[key] = time.time()
            if seconds >= 0.1:  # quicker: it was loaded already, nothing was timed
                self._own_ms[key] = seconds * 1000.0
        if action.keep_alive is not None:
            self._held.add(key)
            await core.redis.hset(core.keys.pins_held(), _pair(*key), str(time.time()))

    async def _publish(self, statuses: list[PinStatus]) -> None:
        core = self._core
        pipe = core.redis.pipeline(transaction=True)
        pipe.delete(core.keys.pins())
        if statuses:
            pipe.hset(core.keys.pins(), mapping={
                s.model: msgspec.json.encode(_view(s)) for s in statuses})
        # copies held for nodes that left the registry are nobody's to release
        gone = [k for k in self._held if k[0] not in self._fleet.snapshot().nodes]
        for key in gone:
            self._held.discard(key)
            pipe.hdel(core.keys.pins_held(), _pair(*key))
        await pipe.execute()
        seen = set()
        for status in statuses:
            seen.add(status.model)
            now = (str(status.state), _reason_kind(status))
            before = self._states.get(status.model)
            if before is not None and (before[0], _reason_kind_text(before[1])) == now:
                continue
            self._states[status.model] = (str(status.state), status.reason)
            await emit(core.redis, core.keys, "pin", model=status.model, state=str(status.state),
                       reason=status.reason, copies=status.copies, loaded_on=status.loaded_on)
        for model in [m for m in self._states if m not in seen]:
            del self._states[model]
            await emit(core.redis, core.keys, "pin", model=model, state="unpinned",
                       reason="unpinned: its copies go back to the nodes' keep_alive")

    async def _read_load_times(self, now: float) -> None:
        """Cold load times measured in the last day (the nodes' load_duration), per
        node:model, for the plan and for every router's wait rule."""
        window = await self._stats.read_window(24, now)
        # the nodes' own load_duration of routed requests wins over the leader's timing of
        # its load-only requests (which adds a round trip)
        load_ms = {**self._own_ms, **{pair: usage.load_ms_sum / usage.cold_loads
                                      for pair, usage in window.node_models().items()
                                      if usage.cold_loads and usage.load_ms_sum > 0}}
        self._load_ms = load_ms
        core = self._core
        pipe = core.redis.pipeline(transaction=True)
        pipe.delete(core.keys.load_times())
        if load_ms:
            pipe.hset(core.keys.load_times(), mapping={
                _pair(*pair): round(ms, 1) for pair, ms in load_ms.items()})
        await pipe.execute()


def _reason_kind(status: PinStatus) -> str:
    return _reason_kind_text(status.reason)


def _reason_kind_text(reason: str) -> str:
    """The part of a reason that names its cause (counts and node lists change often;
    an event per change of cause, not per change of wording)."""
    for cause in ("model missing", "node offline", "no node has room", "loading on"):
        if cause in reason:
            return cause
    return ""


def _view(status: PinStatus) -> PinView:
    return PinView(model=status.model, copies=status.copies, nodes=status.nodes,
                   state=status.state.value, reason=status.reason, loaded_on=status.loaded_on,
                   loading_on=status.loading_on)


# --- reads and edits (any replica) ------------------------------------------------------


async def read_pins(core: ReadParts) -> list[PinView]:
    """Every pin in this replica's settings with the state the leader last wrote."""
    raw = await core.redis.hgetall(core.keys.pins())
    out = []
    for model, pin in sorted(core.settings.pinned_models.items()):
        view = None
        if (text := raw.get(model)) is not None:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                view = msgspec.json.decode(text, type=PinView)
        if view is None or view.copies != pin["copies"] or view.nodes != pin["nodes"]:
            view = PinView(model=model, copies=pin["copies"], nodes=list(pin["nodes"]),
                           state="short",
                           reason="not reconciled yet: the leader acts within a heartbeat")
        out.append(view)
    return out


async def _edit(core: Core, runtime: RuntimeSettings,
                change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Read pinned_models, change it, write it back unless someone wrote meanwhile (then
    again), announce it and apply it here. Returns the new value."""
    key = core.keys.settings()
    for _ in range(EDIT_ATTEMPTS):
        async with core.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                text = await pipe.hget(key, "pinned_models")
                current = core.settings.pinned_models if text is None else _decode(text)
                if not isinstance(current, dict):
                    current = {}
                updated = change({k: dict(v) for k, v in current.items()})
                pipe.multi()
                pipe.hset(key, "pinned_models", msgspec.json.encode(jsonable(updated)))
                pipe.publish(core.keys.settings_channel(), "pinned_models")
                await pipe.execute()
            except WatchError:
                continue
        runtime.apply({"pinned_models": updated})
        return updated
    raise RedisError("pinned_models kept changing under this edit; try again")


async def save_pin(core: Core, runtime: RuntimeSettings, model: str, copies: Any = None,
                   nodes: Any = None) -> dict[str, Any]:
    """Pin `model` (PinError for a bad one); returns its normalised entry."""
    spec: dict[str, Any] = {}
    if copies is not None:
        spec["copies"] = copies
    if nodes is not None:
        spec["nodes"] = nodes
    name, pin = parse_pin(model, spec)

    def change(pins: dict[str, Any]) -> dict[str, Any]:
        pins[name] = pin
        return dict(sorted(pins.items()))

    await _edit(core, runtime, change)
    return {"model": name, **pin}


async def remove_pin(core: Core, runtime: RuntimeSettings, model: str) -> bool:
    """Unpin `model`; False if it was not pinned."""
    name, _ = parse_pin(model, 1)
    found = False

    def change(pins: dict[str, Any]) -> dict[str, Any]:
        nonlocal found
        found = pins.pop(name, None) is not None
        return pins

    await _edit(core, runtime, change)
    return found
