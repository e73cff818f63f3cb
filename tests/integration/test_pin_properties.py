"""Pins as shared state: replicas pinning, unpinning and replacing `pinned_models` at once,
in orders nobody wrote down, against a real Redis (hypothesis).

Each example runs two or three replicas (their own clients and runtime settings, one key
prefix). Rules: a pin or an unpin on one replica, two edits of different models on two
replicas at the same moment (their optimistic transactions race), the whole setting
replaced through the settings API's path, and a replica catching up (its watcher's resync).

E1 no lost edit: what Redis holds is what the edits, applied one after another, give;
   two racing edits of different models both land.
E2 one shape: what Redis holds reads back through `parse_pins` unchanged (normalised:
   tags, sorted nodes, copies within bounds), so every replica and the dashboard read it
   alike.
E3 read your write: the replica that made an edit sees it at once (no wait for the
   watcher), unless another edit came after it.
E4 convergence: a replica that catches up holds exactly what Redis holds.

The reconciling itself (which copy to load) is leader-only and planned purely
(tests/unit/test_pinplan.py); its books (`pins-held`, `pins`, `load-times`) have one
writer, the leader.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from services.router.fleet.core import Core
from services.router.fleet.pins import remove_pin, save_pin
from services.router.fleet.runtime import RuntimeSettings
from shared.keys import Keys
from shared.pins import parse_pin, parse_pins
from shared.redisconn import connect
from shared.settings import Settings

MODELS = ("qwen3:8b", "llama3.2", "big:30b", "tiny:1b")
NODES = ("n0", "n1", "n2")
EXAMPLES = int(os.environ.get("HERD_PIN_EXAMPLES", "40"))
PIN = st.tuples(st.sampled_from(MODELS), st.integers(1, 3),
                st.lists(st.sampled_from(NODES), max_size=3, unique=True))


class PinMachine(RuleBasedStateMachine):
    redis_url = ""
    data_dir = ""

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.ready = False
        self.model: dict[str, dict[str, Any]] = {}
        self.replicas: list[tuple[Core, RuntimeSettings]] = []
        self.last_editor: int | None = None

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    @initialize(count=st.integers(2, 3))
    def setup(self, count: int) -> None:
        prefix = f"herdtest:{uuid.uuid4().hex[:10]}:"
        self.keys = Keys(prefix)
        base = Settings.load(environ={}, redis_url=self.redis_url, redis_prefix=prefix,
                             data_dir=self.data_dir, mdns_enabled=False,
                             dashboard_enabled=False)

        async def start() -> None:
            for _ in range(count):
                core = Core.create(base, connect(self.redis_url))
                self.replicas.append((core, RuntimeSettings(core)))

        self.run(start())
        self.ready = True

    def teardown(self) -> None:
        async def stop() -> None:
            if self.replicas:
                first = self.replicas[0][0]
                await first.redis.delete(self.keys.settings())
            for core, _ in self.replicas:
                await core.redis.aclose()

        try:
            self.run(stop())
        finally:
            self.runner.close()

    @staticmethod
    def _valid(model: str, copies: int, nodes: list[str]) -> bool:
        return not nodes or copies <= len(nodes)

    async def _apply(self, replica: int, edit: tuple[str, int, list[str]] | str) -> None:
        core, runtime = self.replicas[replica % len(self.replicas)]
        if isinstance(edit, str):
            await remove_pin(core, runtime, edit)
        else:
            model, copies, nodes = edit
            await save_pin(core, runtime, model, copies, nodes or None)

    def _expect(self, edit: tuple[str, int, list[str]] | str) -> None:
        if isinstance(edit, str):
            self.model.pop(parse_pin(edit, 1)[0], None)
        else:
            model, copies, nodes = edit
            name, pin = parse_pin(model, {"copies": copies, **({"nodes": nodes} if nodes
                                                                else {})})
            self.model[name] = pin

    @precondition(lambda self: self.ready)
    @rule(replica=st.integers(0, 2), pin=PIN)
    def pin(self, replica: int, pin: tuple[str, int, list[str]]) -> None:
        if not self._valid(*pin):
            return
        self.run(self._apply(replica, pin))
        self._expect(pin)
        self.last_editor = replica % len(self.replicas)

    @precondition(lambda self: self.ready)
    @rule(replica=st.integers(0, 2), model=st.sampled_from(MODELS))
    def unpin(self, replica: int, model: str) -> None:
        self.run(self._apply(replica, model))
        self._expect(model)
        self.last_editor = replica % len(self.replicas)

    @precondition(lambda self: self.ready)
    @rule(first=PIN, second=PIN, unpin_second=st.booleans())
    def race(self, first: tuple[str, int, list[str]], second: tuple[str, int, list[str]],
             unpin_second: bool) -> None:
        """Two replicas edit two different models at the same moment."""
        if first[0] == second[0] or not self._valid(*first) or not self._valid(*second):
            return
        other: tuple[str, int, list[str]] | str = second[0] if unpin_second else second

        async def both() -> None:
            await asyncio.gather(self._apply(0, first), self._apply(1, other))

        self.run(both())
        self._expect(first)
        self._expect(other)
        self.last_editor = None

    @precondition(lambda self: self.ready)
    @rule(replica=st.integers(0, 2), pins=st.lists(PIN, max_size=3))
    def replace_whole(self, replica: int, pins: list[tuple[str, int, list[str]]]) -> None:
        """POST /dashboard/api/settings {"pinned_models": {...}}: the settings API's path."""
        value = {m: {"copies": c, "nodes": n} for m, c, n in pins if self._valid(m, c, n)}
        normalised = parse_pins(value)
        _, runtime = self.replicas[replica % len(self.replicas)]
        self.run(runtime.save({"pinned_models": normalised}))
        self.model = dict(normalised)
        self.last_editor = replica % len(self.replicas)

    @precondition(lambda self: self.ready)
    @rule(replica=st.integers(0, 2))
    def catch_up(self, replica: int) -> None:
        """E4: a replica's watcher resyncs: it then holds exactly what Redis holds."""
        core, runtime = self.replicas[replica % len(self.replicas)]
        runtime.apply(self.run(runtime.load()))
        assert core.settings.pinned_models == self._stored()

    def _stored(self) -> dict[str, Any]:
        core = self.replicas[0][0]
        text = self.run(core.redis.hget(self.keys.settings(), "pinned_models"))
        return {} if text is None else dict(json.loads(text))

    @invariant()
    def no_lost_edit_and_one_shape(self) -> None:
        if not self.ready:
            return
        stored = self._stored()
        assert stored == self.model  # E1
        assert parse_pins(stored) == stored  # E2
        if self.last_editor is not None:  # E3
            core, _ = self.replicas[self.last_editor]
            assert core.settings.pinned_models == self.model


def test_pin_edits_from_any_replica_never_get_lost(redis_url: str, tmp_path: Path) -> None:
    """HERD_PIN_EXAMPLES makes longer runs by hand."""
    PinMachine.redis_url = redis_url
    PinMachine.data_dir = str(tmp_path)
    run_state_machine_as_test(PinMachine, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=25, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
