"""The cached fleet snapshot when a full refresh and a heartbeat interleave.

`Registry.refresh()` is a read (one round trip) followed by an install; these tests run a
heartbeat between the two halves explicitly, which is exactly where a concurrent
heartbeat lands when the timing is unlucky.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.router.fleet.core import Core
from services.router.fleet.registry import Registry
from shared.keys import Keys
from shared.settings import Settings

EXAMPLE = Path(__file__).parent.parent / "data" / "herd-heartbeat-example.json"
SOURCE = "127.0.0.1"


def beat(node_id: str = "capnode", models: list[str] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(EXAMPLE.read_text())
    payload["node_id"] = node_id
    if models is not None:
        payload["ollama"]["models_available"] = models
    return payload


@pytest.fixture
def fleet(settings: Settings, redis: Redis) -> Registry:
    return Registry(Core.create(settings, redis))


async def test_a_heartbeat_during_a_refresh_is_not_undone(fleet: Registry) -> None:
    await fleet.refresh()
    reading = await fleet.read()  # the refresh has read Redis: no node yet
    assert reading.nodes == {}
    await fleet.ingest_heartbeat(beat(), SOURCE)  # a first heartbeat lands meanwhile
    assert "capnode" in fleet.snapshot().nodes
    snapshot = fleet.install(reading)  # the refresh ends with what it read
    assert "capnode" in snapshot.nodes, "the node vanished behind an older read"
    assert fleet.snapshot() is snapshot


async def test_a_newer_heartbeat_is_not_replaced_by_an_older_read(fleet: Registry) -> None:
    await fleet.ingest_heartbeat(beat(models=["llama3.2:3b"]), SOURCE)
    reading = await fleet.read()
    assert reading.nodes["capnode"].models_available == ("llama3.2:3b",)
    await fleet.ingest_heartbeat(beat(models=["llama3.2:3b", "qwen3:8b"]), SOURCE)
    fleet.install(reading)
    assert fleet.snapshot().nodes["capnode"].models_available == ("llama3.2:3b", "qwen3:8b")
    # the next read began after that heartbeat, so it applies in full
    await fleet.refresh()
    assert fleet.snapshot().nodes["capnode"].models_available == ("llama3.2:3b", "qwen3:8b")


async def test_reads_still_bring_what_other_replicas_wrote(
    fleet: Registry, settings: Settings, redis: Redis,
) -> None:
    other = Registry(Core.create(settings, redis))
    await fleet.ingest_heartbeat(beat("mine"), SOURCE)
    reading = await fleet.read()
    await other.ingest_heartbeat(beat("theirs"), SOURCE)  # after the read: not in it
    assert set(fleet.install(reading).nodes) == {"mine"}
    await other.ingest_heartbeat(beat("mine", models=["qwen3:8b"]), SOURCE)
    snapshot = await fleet.refresh()
    assert set(snapshot.nodes) == {"mine", "theirs"}
    assert snapshot.nodes["mine"].models_available == ("qwen3:8b",)


async def test_expired_nodes_are_forgotten_but_live_ones_stay(
    fleet: Registry, redis: Redis, keys: Keys,
) -> None:
    await fleet.ingest_heartbeat(beat(), SOURCE)
    await redis.sadd(keys.nodes(), "ghost")  # an id whose hash expired
    snapshot = await fleet.refresh()
    assert set(snapshot.nodes) == {"capnode"}
    assert await redis.smembers(keys.nodes()) == {"capnode"}


async def test_note_model_corrects_the_record_until_the_next_heartbeat(
    fleet: Registry, settings: Settings, redis: Redis,
) -> None:
    other = Registry(Core.create(settings, redis))
    await fleet.ingest_heartbeat(beat(models=["llama3.2:3b", "qwen3:8b"]), SOURCE)
    assert await fleet.note_model("capnode", "qwen3:8b", None)
    assert not fleet.snapshot().nodes["capnode"].has_model("qwen3:8b")
    assert await fleet.note_model("capnode", "tiny:1b", 0.7)
    node = (await other.refresh(sweep=False)).nodes["capnode"]  # in Redis, for every replica
    assert node.models_available == ("llama3.2:3b", "tiny:1b")
    assert node.model_size_gb("tiny:1b") == 0.7
    assert not await fleet.note_model("nobody", "tiny:1b", 0.7)
    await fleet.ingest_heartbeat(beat(models=["llama3.2:3b"]), SOURCE)
    assert fleet.snapshot().nodes["capnode"].models_available == ("llama3.2:3b",)
