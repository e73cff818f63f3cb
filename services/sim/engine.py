"""The modelled node: loading, memory and LRU eviction, keep_alive, slots, prompt cache, speed."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from services.sim.catalogue import GB, ModelSpec, normalize_name
from services.sim.config import SimConfig
from services.sim.stats import Stats

__all__ = ["Engine", "Lease", "Runner", "SimError"]

GIB = 1024**3


class SimError(Exception):
    """An error the API returns as {"error": message} with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RunnerState(StrEnum):
    LOADING = "loading"
    READY = "ready"


@dataclass
class Slot:
    """One parallel slot of a loaded model, with the tokens its KV cache holds."""

    index: int
    busy: bool = False
    cache: list[str] = field(default_factory=list)  # last prompt, then its reply
    prompt_len: int = 0
    last_used: float = 0.0


@dataclass
class Runner:
    """A model loaded (or loading) with one num_ctx, as Ollama's runner processes are."""

    spec: ModelSpec
    num_ctx: int
    memory: int
    slots: list[Slot]
    state: RunnerState = RunnerState.LOADING
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)
    keep_alive: float = 300.0
    expires_at: float | None = None  # wall clock; None while in use
    timer: asyncio.TimerHandle | None = None
    load_task: asyncio.Task[None] | None = None


@dataclass
class Lease:
    """A slot held by one request, and what getting it cost."""

    runner: Runner
    slot: Slot
    load_duration: float
    queued: float
    cached_tokens: int
    cache_hit: bool


@dataclass
class _Wait:
    loading: bool


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low] holds; a[:high] == b[:high] does not
    while high - low > 1:
        mid = (low + high) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid
    return low


class Engine:
    """Schedules requests onto models the way an Ollama server does, in one event loop."""

    def __init__(self, config: SimConfig, stats: Stats) -> None:
        self.config = config
        self.stats = stats
        self.installed: dict[str, ModelSpec] = {spec.name: spec for spec in config.models}
        # Uploaded blobs by digest: their size and first bytes (enough to tell a GGUF file).
        self.blobs: dict[str, tuple[int, bytes]] = {}
        self.runners: dict[str, Runner] = {}
        self.active = 0  # slots in use on the whole node
        self._queues: dict[str, deque[object]] = {}
        self._changed: asyncio.Event | None = None

    # --- the catalogue of installed models ---------------------------------------------

    def model(self, name: str) -> ModelSpec:
        """The installed model `name` (tag optional), or Ollama's 404."""
        spec = self.installed.get(normalize_name(name))
        if spec is None:
            raise SimError(404, f"model '{name}' not found")
        return spec

    def remove(self, name: str) -> None:
        self.installed.pop(name)
        runner = self.runners.get(name)
        if runner is not None and runner.in_use == 0 and runner.state is RunnerState.READY:
            self._unload(runner, "expirations")

    @property
    def memory_total(self) -> int:
        return int(self.config.memory_gb * GB)

    @property
    def memory_used(self) -> int:
        return sum(r.memory for r in self.runners.values())

    # --- scheduling -----------------------------------------------------------------------

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_change(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    async def acquire(self, spec: ModelSpec, num_ctx: int, keep_alive: float,
                      prompt: list[str]) -> Lease:
        """Wait for this request's turn, load the model if needed, and take a slot."""
        name = spec.name
        ticket = object()
        queue = self._queues.setdefault(name, deque())
        queue.append(ticket)
        self.stats.add(name, "queued")
        start = time.monotonic()
        load_duration = 0.0
        try:
            while True:
                step = self._step(spec, num_ctx, ticket, prompt, keep_alive)
                if isinstance(step, Lease):
                    step.load_duration = load_duration
                    step.queued = time.monotonic() - start - load_duration
                    return step
                began = time.monotonic()
                if isinstance(step, Runner):
                    await self._load(step)
                else:
                    await self._wait_change()
                if isinstance(step, Runner) or step.loading:
                    load_duration += time.monotonic() - began
        finally:
            queue.remove(ticket)
            if not queue:
                self._queues.pop(name, None)
            self.stats.add(name, "queued", -1)
            self._notify()

    def _step(self, spec: ModelSpec, num_ctx: int, ticket: object, prompt: list[str],
              keep_alive: float) -> Lease | Runner | _Wait:
        """One scheduling decision for the request holding `ticket` (no awaits inside)."""
        runner = self.runners.get(spec.name)
        if runner is not None and runner.state is RunnerState.LOADING:
            return _Wait(loading=True)
        if self._queues[spec.name][0] is not ticket:
            return _Wait(loading=False)  # first come, first served, as Ollama's queue
        if runner is not None and runner.num_ctx != num_ctx:
            if runner.in_use:
                return _Wait(loading=False)  # the runner drains, then reloads
            self._unload(runner, "reloads")
            runner = None
        if runner is None:
            return self._make_room_and_load(spec, num_ctx, keep_alive)
        return self._take_slot(runner, prompt, keep_alive) or _Wait(loading=False)

    def _make_room_and_load(self, spec: ModelSpec, num_ctx: int,
                            keep_alive: float) -> Runner | _Wait:
        need = spec.memory_bytes(num_ctx, self.config.num_parallel)
        if need > self.memory_total:
            raise SimError(500, f"model requires more system memory ({need / GIB:.1f} GiB) "
                                f"than is available ({self.memory_total / GIB:.1f} GiB)")
        while (self.memory_used + need > self.memory_total
               or len(self.runners) >= max(self.config.max_loaded_models, 1)):
            # A model with requests queued for it is not idle: evicting it before they run
            # lets two models evict each other for ever (a real Ollama serves them first).
            idle = [r for r in self.runners.values()
                    if r.in_use == 0 and r.state is RunnerState.READY
                    and not self._queues.get(r.spec.name)]
            if not idle:
                return _Wait(loading=False)
            self._unload(min(idle, key=lambda r: r.last_used), "evictions")
        slots = [Slot(i) for i in range(max(self.config.num_parallel, 1))]
        runner = Runner(spec, num_ctx, need, slots, keep_alive=keep_alive)
        self.runners[spec.name] = runner
        return runner

    async def _load(self, runner: Runner) -> None:
        if runner.load_task is None:
            # A task of its own: a client that gives up does not abort the load.
            runner.load_task = asyncio.get_running_loop().create_task(self._do_load(runner))
        await asyncio.shield(runner.load_task)

    async def _do_load(self, runner: Runner) -> None:
        seconds = self.config.load_base_seconds + (
            runner.spec.size / GB * self.config.load_seconds_per_gb)
        try:
            await asyncio.sleep(max(seconds, 0.0))
        finally:
            runner.state = RunnerState.READY
            runner.last_used = time.monotonic()
            self.stats.add(runner.spec.name, "loads")
            self._schedule_expiry(runner)
            self._notify()

    def _take_slot(self, runner: Runner, prompt: list[str], keep_alive: float) -> Lease | None:
        free = [s for s in runner.slots if not s.busy]
        if not free:
            return None
        best: Slot | None = None
        best_common = 0
        for slot in free:
            common = _common_prefix(slot.cache, prompt)
            # A hit: the prompt extends the slot's last prompt (a conversation going on,
            # or the same question again); a shared template header alone is not one.
            if slot.prompt_len and common >= slot.prompt_len and common > best_common:
                best, best_common = slot, common
        hit = best is not None
        slot = best if best is not None else min(free, key=lambda s: s.last_used)
        # At least one token is evaluated, even for a prompt entirely in the cache.
        cached = min(best_common, max(len(prompt) - 1, 0))
        slot.busy = True
        runner.in_use += 1
        runner.keep_alive = keep_alive
        runner.expires_at = None
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        self.active += 1
        name = runner.spec.name
        self.stats.add(name, "running")
        self.stats.add(name, "prompt_cache_hits" if hit else "prompt_cache_misses")
        self.stats.add(name, "cached_prompt_tokens", cached)
        return Lease(runner, slot, 0.0, 0.0, cached, hit)

    def release(self, lease: Lease, keep_alive: float, prompt: list[str],
                reply: list[str]) -> None:
        """Give the slot back; its KV cache now holds the prompt and the reply."""
        runner, slot = lease.runner, lease.slot
        slot.busy = False
        slot.cache = prompt + reply
        slot.prompt_len = len(prompt)
        slot.last_used = runner.last_used = time.monotonic()
        runner.in_use -= 1
        runner.keep_alive = keep_alive
        self.active -= 1
        self.stats.add(runner.spec.name, "running", -1)
        if runner.in_use == 0:
            self._schedule_expiry(runner)
        self._notify()

    # --- unloading ------------------------------------------------------------------------

    def _schedule_expiry(self, runner: Runner) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        if runner.keep_alive < 0:
            runner.expires_at = None
            return
        runner.expires_at = time.time() + runner.keep_alive
        if runner.keep_alive == 0:
            self._expire(runner)
            return
        loop = asyncio.get_running_loop()
        runner.timer = loop.call_later(runner.keep_alive, self._expire, runner)

    def _expire(self, runner: Runner) -> None:
        runner.timer = None
        # Requests queued for the model keep it: keep_alive counts from the last one.
        if self.runners.get(runner.spec.name) is runner and runner.in_use == 0 and (
                runner.state is RunnerState.READY and not self._queues.get(runner.spec.name)):
            self._unload(runner, "expirations")
            self._notify()

    def _unload(self, runner: Runner, reason: str) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
        self.runners.pop(runner.spec.name, None)
        self.stats.add(runner.spec.name, reason)

    def unload(self, name: str) -> bool:
        """Unload now if idle (a request with keep_alive 0); False if it was not loaded."""
        runner = self.runners.get(name)
        if runner is None:
            return False
        if runner.in_use == 0 and runner.state is RunnerState.READY:
            self._unload(runner, "expirations")
            self._notify()
        else:
            runner.keep_alive = 0
        return True

    def unload_all(self) -> None:
        for runner in list(self.runners.values()):
            if runner.in_use == 0 and runner.state is RunnerState.READY:
                self._unload(runner, "expirations")
        self._notify()

    # --- speed ----------------------------------------------------------------------------

    def slowdown(self) -> float:
        """How much slower each request runs because others share the node's GPU."""
        return 1.0 + self.config.contention * max(self.active - 1, 0)

    def token_delay(self, factor: float = 1.0) -> float:
        tps = self.config.tokens_per_s
        return 0.0 if tps <= 0 else self.slowdown() * factor / tps

    def prompt_seconds(self, tokens: int, factor: float = 1.0) -> float:
        tps = self.config.prompt_tps
        return 0.0 if tps <= 0 else tokens * self.slowdown() * factor / tps
