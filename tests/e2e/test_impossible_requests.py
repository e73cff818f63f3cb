"""One client's impossible request fails alone, as with a real Ollama: the node's own
reason reaches the client, no node is blamed, and the fleet keeps serving everything else.

llama_index's Ollama client asks for a model's whole context (num_ctx 131072): with two
slots that needs ~30 GiB, and the simulated nodes have 24 GB, so each refuses with
Ollama's 500 "model requires more system memory (...) than is available (...)".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.e2e.proxy_fleet import Fleet, start_fleet

MODEL = "llama3.2:3b"
OTHER = "qwen3:8b"
EMBED = "nomic-embed-text:latest"
WHOLE_CONTEXT = 131072


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("impossible")
    with start_fleet(tmp, redis_url, {"a": [], "b": []}, parallel=2) as running:
        for node_id in running.sims:  # loaded at the default context on both nodes
            httpx.post(f"{running.sim_url(node_id)}/api/generate",
                       json={"model": MODEL, "prompt": "", "keep_alive": -1}, timeout=30)
        running.heartbeat_all()
        yield running


def marker() -> str:
    return f"probe-{uuid.uuid4().hex[:12]}"


def seen_by_nodes(fleet: Fleet, text: str) -> list[str]:
    """The nodes whose Ollama received a request whose body contains `text`."""
    return [node_id for node_id in fleet.sims for entry in
            fleet.sim_stats(node_id)["last_requests"] if text in json.dumps(entry["body"])]


def nodes(fleet: Fleet) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{fleet.url}/fleet/status", timeout=5).json()
    return {n["node_id"]: n for n in answer["nodes"]}


def test_five_impossible_requests_leave_the_fleet_serving_everything(fleet: Fleet) -> None:
    client = ollama.Client(host=fleet.url)
    answers: list[tuple[int, str]] = []
    probes = [marker() for _ in range(5)]
    for probe in probes:
        with pytest.raises(ollama.ResponseError) as info:
            client.chat(model=MODEL, messages=[{"role": "user", "content": probe}],
                        options={"num_ctx": WHOLE_CONTEXT})
        answers.append((info.value.status_code, info.value.error))
    # The first reaches a node and gets its own reason, as the client's error (a 400: the
    # client must not retry it); the refusal is not tried on the other node (no more room).
    status, reason = answers[0]
    assert status == 400, answers
    assert reason.startswith("model requires more system memory ("), answers
    assert len(seen_by_nodes(fleet, probes[0])) == 1
    # Then Herd knows: a 400 at once that names the model, num_ctx, need and largest node.
    for status, reason in answers[1:]:
        assert status == 400, answers
        for part in (MODEL, f"num_ctx {WHOLE_CONTEXT}", "needs at least", "GB", "largest"):
            assert part in reason, reason
    assert all(seen_by_nodes(fleet, probe) == [] for probe in probes[1:])

    # No node was blamed, and nothing else is turned away.
    for node_id, node in nodes(fleet).items():
        assert (node["status"], node["router_failures"]) == ("online", 0), node_id
    normal = client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                         options={"num_ctx": 4096})
    assert normal.done
    assert client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}]).done
    assert client.chat(model=OTHER, messages=[{"role": "user", "content": "hi"}]).done
    assert len(client.embed(model=EMBED, input=["a", "b"]).embeddings) == 2
    oa = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key="unused", max_retries=0)
    try:
        assert oa.embeddings.create(model=EMBED, input="x").data
        reply = oa.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}])  # type: ignore[list-item]
        assert reply.choices[0].message.content
    finally:
        oa.close()
    for node_id, node in nodes(fleet).items():
        assert (node["status"], node["router_failures"]) == ("online", 0), node_id

    # The log says it will load where it fits only while no node is known to be too small.
    log = fleet.log()
    kept = [json.loads(line)["msg"] for line in log.splitlines()
            if f"kept num_ctx={WHOLE_CONTEXT}" in line]
    assert len(kept) == 5, kept
    assert sum("it will load where it fits" in line for line in kept) <= 1, kept
    assert all("no node can hold it" in line for line in kept[1:]), kept
    # The client's error is in its trace as rejected, not as a node's failure.
    traces = httpx.get(f"{fleet.url}/dashboard/api/traces", params={"limit": 50},
                       timeout=5).json()["traces"]
    impossible = [t for t in traces if t["status"] == "rejected" and t["model"] == MODEL]
    assert len(impossible) >= 5
    assert all(t["excluded_nodes"] == [] for t in impossible)


def test_an_option_of_the_wrong_type_is_the_nodes_answer_and_not_retried(
    fleet: Fleet,
) -> None:
    probe = marker()
    body = {"model": MODEL, "messages": [{"role": "user", "content": probe}],
            "stream": False, "options": {"num_ctx": "big"}}
    direct = httpx.post(f"{fleet.sim_url('a')}/api/chat", json=body, timeout=30)
    assert direct.status_code == 500  # what Ollama itself answers
    probe = marker()
    body["messages"] = [{"role": "user", "content": probe}]
    through = httpx.post(f"{fleet.url}/api/chat", json=body, timeout=30)
    # the node's own words, as the client's error: never a 500 from Herd for bad input
    assert (through.status_code, through.json()) == (400, direct.json())
    assert through.json() == {"error": 'option "num_ctx" must be of type integer'}
    assert len(seen_by_nodes(fleet, probe)) == 1
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=fleet.url).generate(model=MODEL, prompt="x",
                                               options={"num_ctx": "big"})
    assert info.value.status_code == 400 and "must be of type integer" in info.value.error
    for node_id, node in nodes(fleet).items():
        assert (node["status"], node["router_failures"]) == ("online", 0), node_id


@pytest.mark.parametrize("bad", [{"options": "not an object"}, {"keep_alive": "soon"}])
def test_a_400_from_the_node_comes_back_unchanged_and_is_not_retried(
    fleet: Fleet, bad: dict[str, object],
) -> None:
    body = {"model": MODEL, "prompt": marker(), "stream": False, **bad}
    direct = httpx.post(f"{fleet.sim_url('b')}/api/generate", json=body, timeout=30)
    assert direct.status_code == 400
    body["prompt"] = probe = marker()
    through = httpx.post(f"{fleet.url}/api/generate", json=body, timeout=30)
    assert through.status_code == 400
    assert through.content == direct.content
    assert through.headers["x-fleet-retries"] == "0"
    assert len(seen_by_nodes(fleet, probe)) == 1
    for node_id, node in nodes(fleet).items():
        assert (node["status"], node["router_failures"]) == ("online", 0), node_id


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    """Two 24 GB nodes with the model loaded, and a 64 GB one without it."""
    tmp = tmp_path_factory.mktemp("impossible-mixed")
    nodes = {"a": [], "b": [], "big": ["--memory-gb", "64"]}
    with start_fleet(tmp, redis_url, nodes, parallel=2) as running:
        for node_id in ("a", "b"):
            httpx.post(f"{running.sim_url(node_id)}/api/generate",
                       json={"model": MODEL, "prompt": "", "keep_alive": -1}, timeout=30)
            running.heartbeat(node_id)
        payload = running.heartbeat("big")
        payload["memory"].update(total_gb=64.0, used_gb=0.0, available_gb=64.0)
        assert httpx.post(f"{running.url}/heartbeat", json=payload).status_code == 200
        # Left to themselves the memory and context scorers send a large context to "big" at
        # once; without them the nodes tie and "a" goes first, so the refusal is met.
        answer = httpx.post(f"{running.url}/dashboard/api/settings",
                            json={"weight_memory": 0, "weight_context": 0})
        assert answer.status_code == 200, answer.text
        yield running


def test_a_memory_refusal_moves_to_a_node_with_room_and_then_goes_there_first(
    mixed: Fleet,
) -> None:
    client = httpx.Client(base_url=mixed.url, timeout=60)
    body = {"model": MODEL, "prompt": "long", "stream": False,
            "options": {"num_ctx": WHOLE_CONTEXT, "num_predict": 4}}
    first = client.post("/api/generate", json=body)
    assert first.status_code == 200, first.text
    # "a" refused; "b", as small, was skipped; "big" had the room
    assert (first.headers["x-fleet-node"], first.headers["x-fleet-retries"]) == ("big", "1")
    second = client.post("/api/generate", json=body)
    assert (second.headers["x-fleet-node"], second.headers["x-fleet-retries"]) == ("big", "0")
    client.close()
    for node_id, node in nodes(mixed).items():
        assert (node["status"], node["router_failures"]) == ("online", 0), node_id
