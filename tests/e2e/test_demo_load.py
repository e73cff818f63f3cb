"""Every kind of request in `herd demo`'s background load, sent through a real router to a
simulated node: each is served, on the path of its API (the coding agents' too)."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.demo_load import WORKLOAD, Load, LoadWatch
from tests.e2e.proxy_fleet import start_fleet

pytestmark = pytest.mark.e2e

PATHS = {"chat": "/api/chat", "generate": "/api/generate", "embed": "/api/embed",
         "messages": "/v1/messages", "responses": "/v1/responses"}


class Drawn(random.Random):
    """Draws the given workload entry where the load draws one; everything else at random."""

    def __init__(self, entry: tuple[int, str, str, str], seed: int) -> None:
        super().__init__(seed)
        self.entry = entry

    def choices(self, population: Sequence[Any], *args: Any, **kwargs: Any) -> list[Any]:
        return [self.entry] if population is WORKLOAD else super().choices(
            population, *args, **kwargs)


def test_every_kind_of_the_demo_load_is_served(tmp_path: Path, redis_url: str) -> None:
    models = ",".join(sorted({model for _w, _k, model, _t in WORKLOAD}))
    with start_fleet(tmp_path, redis_url, {"n0": ["--models", models,
                                                  "--memory-gb", "256"]}) as fleet:
        out = io.StringIO()
        load = Load(fleet.url, watch=LoadWatch(out))

        async def send_each() -> None:
            async with httpx.AsyncClient(timeout=60) as client:
                for entry in WORKLOAD:
                    for seed in (1, 2):  # streamed or not, as the seed draws
                        await load.one_request(client, Drawn(entry, seed))

        asyncio.run(send_each())
        assert load.sent == 2 * len(WORKLOAD)
        assert load.failed == 0, out.getvalue()
        seen = {(r["path"], r["body"].get("model")) for r in
                fleet.sim_stats("n0")["last_requests"]}
        for _weight, kind, model, _tag in WORKLOAD:
            assert any(path == PATHS[kind] and str(asked).startswith(model)
                       for path, asked in seen), (kind, model, seen)
