"""The live stream (/dashboard/events): snapshots on changes, and the events as they come."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.proxy_fleet import Fleet, start_fleet

MODEL = "llama3.2:3b"
NODES = {"live-a": ["--models", MODEL], "live-b": ["--models", MODEL]}

Message = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    with start_fleet(tmp_path_factory.mktemp("live-events"), redis_url, NODES) as running:
        yield running


def messages(response: httpx.Response) -> Iterator[Message]:
    kind = ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            yield kind, json.loads(line[5:])


def until(stream: Iterator[Message], wanted: Callable[[Message], bool],
          limit: int = 50) -> tuple[Message, list[Message]]:
    """The first message `wanted` accepts, and the ones before it (at most `limit`)."""
    skipped: list[Message] = []
    for message in stream:
        if wanted(message):
            return message, skipped
        skipped.append(message)
        assert len(skipped) < limit, skipped
    raise AssertionError(f"stream ended after {skipped}")


def test_events_arrive_as_they_happen_and_a_new_client_gets_the_latest(fleet: Fleet) -> None:
    url = f"{fleet.url}/dashboard/events"
    with httpx.stream("GET", url, timeout=10) as response:
        stream = messages(response)
        first = next(stream)
        assert first[0] == "fleet" and first[1]["reason"] == "initial"

        # A node joins: its status event, and a snapshot at once that shows it.
        payload = fleet.heartbeat("live-a")
        payload["node_id"] = "live-visitor"
        assert httpx.post(f"{fleet.url}/heartbeat", json=payload).status_code == 200
        event, _ = until(stream, lambda m: m[0] == "event" and m[1]["kind"] == "node_status"
                         and m[1]["node_id"] == "live-visitor")
        assert event[1]["new"] == "online"
        snapshot, _ = until(stream, lambda m: m[0] == "fleet" and any(
            n["node_id"] == "live-visitor" for n in m[1]["nodes"]))
        assert snapshot[1]["reason"] in {"node_status", "periodic"}
        goodbye = httpx.post(f"{fleet.url}/heartbeat",
                             json={"node_id": "live-visitor", "draining": True})
        assert goodbye.status_code == 200

        # A model loads on live-a: the next heartbeat brings a snapshot without waiting.
        load = httpx.post(f"{fleet.url}/api/generate", json={"model": MODEL, "prompt": ""},
                          headers={"X-Herd-Node": "live-a"}, timeout=30)
        assert load.status_code == 200, load.text
        fleet.heartbeat("live-a")
        loaded, skipped = until(stream, lambda m: m[0] == "fleet"
                                and m[1]["reason"] == "models_loaded")
        node_a = next(n for n in loaded[1]["nodes"] if n["node_id"] == "live-a")
        assert [m["name"] for m in node_a["models_loaded"]] == [MODEL]
        # ... and the feed's entry for it, written when the heartbeat was taken (it may come
        # just before the snapshot or just after it)
        def is_load(m: Message) -> bool:
            return m[0] == "event" and m[1]["kind"] == "model_loaded"

        entry = next((m[1] for m in skipped if is_load(m)), None) or until(stream, is_load)[0][1]
        assert (entry["node_id"], entry["model"]) == ("live-a", MODEL)
        assert entry["context_length"] > 0

        # live-a holds the model, so it is chosen first; it fails once and live-b answers.
        fleet.fault("live-a", "error500", count=1, paths=["/api/generate"])
        answer = httpx.post(f"{fleet.url}/api/generate", timeout=30,
                            json={"model": MODEL, "prompt": "hi", "stream": False})
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-fleet-retries"] == "1"
        retry, _ = until(stream, lambda m: m[0] == "event" and m[1]["kind"] == "retry")
        assert (retry[1]["node_id"], retry[1]["model"]) == ("live-a", MODEL)

    # A dashboard that connects now starts with the latest events, oldest first.
    with httpx.stream("GET", url, timeout=10) as response:
        stream = messages(response)
        assert next(stream)[0] == "fleet"
        backlog = [m for _, m in until(stream, lambda m: m[0] == "fleet")[1]]
    kinds = [(e["kind"], e.get("node_id")) for e in backlog]
    assert ("node_status", "live-visitor") in kinds and ("retry", "live-a") in kinds
    assert kinds.index(("node_status", "live-visitor")) < kinds.index(("retry", "live-a"))
    assert [e["ts"] for e in backlog] == sorted(e["ts"] for e in backlog)
