"""The official ollama and openai clients through a router over three simulated nodes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.e2e.proxy_fleet import Fleet, start_fleet
from tests.helpers import wait_until

MODEL = "llama3.2:3b"
BIG = "qwen3:8b"
EMBED = "nomic-embed-text:latest"
MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("api-fleet")
    nodes: dict[str, list[str]] = {"n0": [], "n1": [], "n2": []}
    with start_fleet(tmp, redis_url, nodes, parallel=2,
                     env={"FLEET_MAX_BODY_MB": "1"}) as running:
        # n1 has llama loaded, n2 has qwen loaded; n0 has nothing loaded
        httpx.post(f"{running.sim_url('n1')}/api/generate",
                   json={"model": MODEL, "prompt": "", "keep_alive": -1}, timeout=30)
        httpx.post(f"{running.sim_url('n2')}/api/generate",
                   json={"model": BIG, "prompt": "", "keep_alive": -1}, timeout=30)
        running.heartbeat_all()
        yield running


@pytest.fixture
def oc(fleet: Fleet) -> ollama.Client:
    return ollama.Client(host=fleet.url)


@pytest.fixture
def oa(fleet: Fleet) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key="unused", max_retries=0)
    yield client
    client.close()


def last_body(fleet: Fleet, node_id: str, path: str) -> dict[str, Any]:
    bodies = [b for b in fleet.sim_stats(node_id)["last_requests"] if b["path"] == path]
    assert bodies, f"{node_id} saw no {path}"
    return dict(bodies[-1]["body"])


# --- the ollama client ------------------------------------------------------------------


def test_ollama_chat_goes_to_the_node_with_the_model_loaded(fleet: Fleet) -> None:
    for _ in range(3):
        r = httpx.post(f"{fleet.url}/api/chat",
                       json={"model": MODEL, "messages": MSG, "stream": False}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["x-fleet-node"] == "n1"
        assert r.headers["x-fleet-retries"] == "0"
        assert r.headers["x-fleet-requested-model"] == MODEL
        assert r.headers["x-fleet-served-model"] == MODEL
        assert float(r.headers["x-fleet-score"]) > 0
        assert r.json()["done"] is True
    r = httpx.post(f"{fleet.url}/api/generate",
                   json={"model": BIG, "prompt": "hi", "stream": False}, timeout=30)
    assert r.headers["x-fleet-node"] == "n2"


def test_ollama_client_chat_generate_streaming_and_not(oc: ollama.Client) -> None:
    reply = oc.chat(model=MODEL, messages=MSG)
    assert reply.message.content and reply.done
    assert reply.eval_count and reply.eval_count > 0
    parts = list(oc.chat(model=MODEL, messages=MSG, stream=True))
    assert len(parts) > 2 and parts[-1].done
    assert "".join(p.message.content or "" for p in parts).strip()
    gen = oc.generate(model=MODEL, prompt="Why is the sky blue?")
    assert gen.response and gen.done
    streamed = list(oc.generate(model=MODEL, prompt="Why?", stream=True))
    assert streamed[-1].done and streamed[-1].eval_count


def test_ollama_client_embed_tags_ps_show(oc: ollama.Client, fleet: Fleet) -> None:
    embedded = oc.embed(model=EMBED, input=["one", "two"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) > 10
    legacy = oc.embeddings(model=EMBED, prompt="one")
    assert len(legacy.embedding) > 10
    names = {m.model for m in oc.list().models}
    assert {MODEL, BIG, EMBED} <= names
    running = oc.ps().models
    assert {m.model for m in running} >= {MODEL, BIG}
    raw_ps = httpx.get(f"{fleet.url}/api/ps").json()["models"]
    assert {(m["name"], m["node_id"]) for m in raw_ps} >= {(MODEL, "n1"), (BIG, "n2")}
    shown = oc.show(MODEL)
    assert shown.details is not None and shown.details.family


def test_ollama_options_reach_the_node(fleet: Fleet) -> None:
    body = {"model": MODEL, "messages": MSG, "stream": False, "format": "json",
            "options": {"top_p": 0.42, "stop": ["\n\n"], "seed": 7, "temperature": 0.1},
            "keep_alive": "7m"}
    r = httpx.post(f"{fleet.url}/api/chat", json=body, timeout=30)
    assert r.status_code == 200
    seen = last_body(fleet, r.headers["x-fleet-node"], "/api/chat")
    assert seen["options"] == body["options"]
    assert seen["format"] == "json" and seen["keep_alive"] == "7m"


def test_form_encoded_body_is_read_as_json(fleet: Fleet) -> None:
    # curl -d sends application/x-www-form-urlencoded; Ollama reads the JSON anyway
    r = httpx.post(f"{fleet.url}/api/generate",
                   content=json.dumps({"model": MODEL, "prompt": "x", "stream": False}),
                   headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["done"] is True


# --- the openai client ------------------------------------------------------------------


def test_openai_chat_streaming_and_not(oa: openai.OpenAI) -> None:
    done = oa.chat.completions.create(model=MODEL, messages=MSG)  # type: ignore[arg-type]
    assert done.choices[0].message.content
    assert done.usage is not None and done.usage.completion_tokens > 0
    chunks = list(oa.chat.completions.create(
        model=MODEL, messages=MSG, stream=True))  # type: ignore[call-overload]
    assert len(chunks) > 2
    assert chunks[-1].choices[0].finish_reason in {"stop", "length"}


def test_openai_completions_embeddings_models(oa: openai.OpenAI) -> None:
    completion = oa.completions.create(model=MODEL, prompt="Once upon", max_tokens=8)
    assert completion.choices[0].text
    vectors = oa.embeddings.create(model=EMBED, input=["a", "b"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) > 10
    ids = {m.id for m in oa.models.list().data}
    assert {MODEL, BIG, EMBED} <= ids
    assert oa.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("missing:1b")


def test_openai_parameters_reach_the_node(oa: openai.OpenAI, fleet: Fleet) -> None:
    raw = oa.chat.completions.with_raw_response.create(
        model=MODEL, messages=MSG, top_p=0.3, stop=["END"], seed=11,  # type: ignore[arg-type]
        response_format={"type": "json_object"}, max_tokens=16,
    )
    node = raw.headers["x-fleet-node"]
    seen = last_body(fleet, node, "/v1/chat/completions")
    assert seen["top_p"] == 0.3 and seen["stop"] == ["END"] and seen["seed"] == 11
    assert seen["response_format"] == {"type": "json_object"}
    assert seen["max_tokens"] == 16


# --- concurrency: the node's slots are never exceeded -------------------------------------


def test_simulators_never_see_more_than_their_slots(fleet: Fleet) -> None:
    for node_id in fleet.sims:
        fleet.sim_reset(node_id)

    def one(i: int) -> int:
        with httpx.stream("POST", f"{fleet.url}/api/generate", json={
            "model": MODEL, "prompt": f"count {i}", "options": {"num_predict": 30},
        }, timeout=60) as r:
            lines = [line for line in r.iter_lines() if line]
            assert json.loads(lines[-1])["done"] is True
            return r.status_code

    with ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(one, range(24)))
    assert codes == [200] * 24
    used = 0
    for node_id in fleet.sims:
        model_stats = fleet.sim_stats(node_id)["models"].get(MODEL)
        if model_stats:
            assert model_stats["max_in_flight"] <= 2, (node_id, model_stats)
            used += model_stats["requests"]
    assert used == 24


# --- context protection -----------------------------------------------------------------


def test_context_protection_strips_a_reloading_num_ctx(fleet: Fleet) -> None:
    loaded_ctx = next(m["context_length"] for m in httpx.get(
        f"{fleet.sim_url('n1')}/api/ps").json()["models"] if m["name"] == MODEL)
    smaller = loaded_ctx // 2
    r = httpx.post(f"{fleet.url}/api/chat", json={
        "model": MODEL, "messages": MSG, "stream": False,
        "options": {"num_ctx": smaller, "top_p": 0.5}}, timeout=30)
    assert r.status_code == 200
    assert r.headers["x-fleet-node"] == "n1"
    seen = last_body(fleet, "n1", "/api/chat")
    assert "num_ctx" not in seen["options"] and seen["options"]["top_p"] == 0.5
    assert fleet.sim_stats("n1")["models"][MODEL]["reloads"] == 0
    wait_until(lambda: f"stripped num_ctx={smaller}" in fleet.log(),
               message="Context protection log line")
    line = next(json.loads(x) for x in fleet.log().splitlines()
                if f"stripped num_ctx={smaller}" in x)
    assert "Context protection" in line["msg"] and line["action"] == "stripped"


def test_context_protection_keeps_a_larger_num_ctx(fleet: Fleet) -> None:
    r = httpx.post(f"{fleet.url}/api/generate", json={
        "model": MODEL, "prompt": "long", "stream": False,
        "options": {"num_ctx": 65536}}, timeout=30)
    assert r.status_code == 200
    seen = last_body(fleet, r.headers["x-fleet-node"], "/api/generate")
    assert seen["options"]["num_ctx"] == 65536
    wait_until(lambda: "kept num_ctx=65536" in fleet.log(), message="kept log line")


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_bad_input_in_the_api_shape(fleet: Fleet, path: str) -> None:
    openai_path = path.startswith("/v1/")

    def message(r: httpx.Response) -> str:
        body = r.json()
        return body["error"]["message"] if openai_path else body["error"]

    cases: list[tuple[bytes, int, str]] = [
        (b'{"model": ', 400, "invalid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"messages": []}', 400, "model is required"),
        (b'{"model": "no-such-model:1b", "messages": []}', 404, "no-such-model:1b"),
        (b'{"model": "' + b"x" * (1024 * 1024 + 10) + b'"}', 413, "MiB"),
    ]
    for raw, status, words in cases:
        r = httpx.post(f"{fleet.url}{path}", content=raw, timeout=30)
        assert r.status_code == status, (raw[:40], r.text[:200])
        assert words in message(r)
        if openai_path:  # an unknown model as Ollama words it
            assert r.json()["error"]["type"] == (
                "not_found_error" if status == 404 else "invalid_request_error")
    r = httpx.get(f"{fleet.url}{path}")
    assert r.status_code == 405 and "not allowed" in message(r)


def test_fallback_models_is_the_only_substitution(fleet: Fleet) -> None:
    r = httpx.post(f"{fleet.url}/api/chat", json={
        "model": "missing:7b", "fallback_models": ["also-missing", MODEL],
        "messages": MSG, "stream": False}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-fleet-requested-model"] == "missing:7b"
    assert r.headers["x-fleet-served-model"] == MODEL
    seen = last_body(fleet, r.headers["x-fleet-node"], "/api/chat")
    assert seen["model"] == MODEL


def test_tags_come_from_the_heartbeat_when_a_node_is_silent(fleet: Fleet, tmp_path: Path) -> None:
    names = {m["name"] for m in httpx.get(f"{fleet.url}/api/tags").json()["models"]}
    assert EMBED in names
    r = httpx.post(f"{fleet.url}/api/show", json={"model": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = httpx.post(f"{fleet.url}/api/show", content=b"{")
    assert r.status_code == 400
