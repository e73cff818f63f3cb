"""`herd demo`'s plan: unlike nodes, a mixed workload, a banner with snippets, a time limit."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from services.demo import NODES, WORKLOAD, Demo, _choose, banner
from services.sim.catalogue import normalize_name, spec_for


def test_three_unlike_nodes_whose_models_fit_them() -> None:
    assert len(NODES) == 3
    assert len({n.memory_gb for n in NODES}) == 3
    assert len({n.models for n in NODES}) == 3
    for node in NODES:
        for model in node.models:
            assert spec_for(model).size / 1e9 < node.memory_gb, (node.name, model)


def test_every_workload_model_is_on_some_node() -> None:
    offered = {normalize_name(m) for n in NODES for m in n.models}
    for _weight, kind, model, tag in WORKLOAD:
        assert normalize_name(model) in offered, model
        assert kind in {"chat", "generate", "embed"} and tag
    rng = random.Random(1)
    drawn = {_choose(rng)[1] for _ in range(300)}
    assert drawn == {m for *_rest, m, _tag in WORKLOAD}


def test_banner_has_urls_and_both_snippets() -> None:
    text = banner("http://127.0.0.1:11435", 8501, load=True)
    assert "http://localhost:8501" in text
    assert "curl -s http://127.0.0.1:11435/api/chat" in text
    assert 'OpenAI(base_url="http://127.0.0.1:11435/v1"' in text
    assert "Ctrl-C" in text


def test_duration_ends_the_watch(tmp_path: Path) -> None:
    demo = Demo(port=1, dashboard_port=2, data_dir=tmp_path, load=False, duration=0.2)

    async def watch() -> bool:
        await asyncio.wait_for(demo.watch(), 5)
        return demo.stopping.is_set()

    assert asyncio.run(watch())
    assert demo.failure == ""
