"""`herd sim` speaks Ollama's and OpenAI's APIs: the official clients and raw shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import ollama
import openai
import pytest

from services.sim.text import tokenize
from tests.simproc import SimProc, sim_reset, sim_stats, start_sim

MODEL = "llama3.2:3b"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    proc = start_sim(tmp_path_factory.mktemp("sim-api"), "api",
                     models="llama3.2:3b,qwen3:8b,nomic-embed-text", tokens_per_s=0,
                     seed=7)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(sim: SimProc) -> ollama.Client:
    return ollama.Client(host=sim.url)


@pytest.fixture(scope="module")
def oai(sim: SimProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url + "/v1", api_key="unused")


def test_root_version_and_head(sim: SimProc) -> None:
    assert httpx.get(sim.url + "/").text == "Ollama is running"
    assert httpx.head(sim.url + "/").status_code == 200
    assert httpx.get(sim.url + "/api/version").json()["version"].count(".") == 2


def test_tags_and_show(client: ollama.Client) -> None:
    models = {m.model: m for m in client.list().models}
    assert set(models) == {"llama3.2:3b", "qwen3:8b", "nomic-embed-text:latest"}
    assert models["llama3.2:3b"].size == 2_019_393_189
    assert models["llama3.2:3b"].details.family == "llama"
    shown = client.show("llama3.2:3b")
    assert shown.modelinfo["llama.context_length"] == 131072
    assert "completion" in shown.capabilities
    with pytest.raises(ollama.ResponseError) as info:
        client.show("nope")
    assert info.value.status_code == 404


def test_chat_streams_and_ps_shows_the_loaded_model(client: ollama.Client) -> None:
    chunks = list(client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                              stream=True, options={"num_predict": 12}))
    final = chunks[-1]
    assert final.done and final.done_reason == "length"
    assert all(not c.done for c in chunks[:-1]) and len(chunks) == 13
    text = "".join(c.message.content for c in chunks)
    assert final.eval_count == 12 == len(tokenize(text))
    for name in ("total_duration", "load_duration", "prompt_eval_count",
                 "prompt_eval_duration", "eval_duration"):
        assert getattr(final, name) is not None, name
    assert final.prompt_eval_count and final.prompt_eval_count > 3
    loaded = client.ps().models
    assert [m.model for m in loaded] == [MODEL]
    assert loaded[0].size_vram == loaded[0].size > 2_019_393_189
    assert loaded[0].expires_at is not None and loaded[0].details.family == "llama"
    raw = httpx.get(client._client.base_url.join("/api/ps")).json()["models"][0]
    assert raw["context_length"] == 4096


def test_chat_without_stream_is_deterministic(client: ollama.Client) -> None:
    def ask(seed: int | None = None) -> ollama.ChatResponse:
        options: dict[str, int] = {"num_predict": 20}
        if seed is not None:
            options["seed"] = seed
        return client.chat(model=MODEL, messages=[{"role": "user", "content": "why?"}],
                           options=options)

    first, second = ask(), ask()
    assert first.message.content == second.message.content
    assert first.eval_count == 20 == len(tokenize(first.message.content))
    assert ask(seed=99).message.content != first.message.content


def test_generate_stream_and_not(client: ollama.Client) -> None:
    whole = client.generate(model=MODEL, prompt="tell me", options={"num_predict": 8})
    assert whole.done and whole.eval_count == 8 and whole.context
    streamed = "".join(c.response for c in client.generate(
        model=MODEL, prompt="tell me", stream=True, options={"num_predict": 8}))
    assert streamed == whole.response


def test_load_and_unload_requests(sim: SimProc, client: ollama.Client) -> None:
    loaded = client.generate(model="qwen3:8b", prompt="")
    assert loaded.done_reason == "load"
    assert "qwen3:8b" in {m.model for m in client.ps().models}
    unloaded = client.generate(model="qwen3:8b", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert "qwen3:8b" not in {m.model for m in client.ps().models}


def test_embeddings_have_the_model_dimension(client: ollama.Client) -> None:
    result = client.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 768
    assert result.embeddings[0] != result.embeddings[1]
    legacy = client.embeddings(model="nomic-embed-text", prompt="a")
    assert list(legacy.embedding) == list(result.embeddings[0])


def test_pull_adds_and_delete_removes(client: ollama.Client) -> None:
    progress = list(client.pull("tinyllama:1.1b", stream=True))
    assert progress[0].status == "pulling manifest"
    assert progress[-1].status == "success"
    assert any(p.total and p.completed == p.total for p in progress)
    assert "tinyllama:1.1b" in {m.model for m in client.list().models}
    assert client.pull("tinyllama:1.1b").status == "success"
    assert client.delete("tinyllama:1.1b").status == "success"
    assert "tinyllama:1.1b" not in {m.model for m in client.list().models}
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="tinyllama:1.1b", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 404


def test_errors_have_ollamas_shapes(sim: SimProc) -> None:
    missing = httpx.post(sim.url + "/api/chat", json={"model": "x", "messages": []})
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'x' not found"}
    bad = httpx.post(sim.url + "/api/generate", content=b"{not json")
    assert bad.status_code == 400 and "error" in bad.json()
    oai_missing = httpx.post(sim.url + "/v1/chat/completions",
                             json={"model": "x", "messages": [{"role": "user", "content": "a"}]})
    assert oai_missing.status_code == 404
    assert oai_missing.json() == {"error": {
        "message": "model 'x' not found", "type": "not_found_error",
        "param": None, "code": None}}
    assert httpx.request("DELETE", sim.url + "/api/delete",
                         json={"model": "x"}).status_code == 404


def test_body_is_json_whatever_the_content_type(sim: SimProc) -> None:
    body = json.dumps({"model": MODEL, "prompt": "x", "stream": False,
                       "options": {"num_predict": 2}})
    response = httpx.post(sim.url + "/api/generate", content=body,
                          headers={"Content-Type": "text/plain"})
    assert response.status_code == 200 and response.json()["eval_count"] == 2


def test_openai_chat_stream_and_not(oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hello"}]
    reply = oai.chat.completions.create(model=MODEL, messages=messages,
                                        max_tokens=9)
    assert reply.usage is not None and reply.usage.completion_tokens == 9
    assert reply.choices[0].finish_reason == "length"
    content = reply.choices[0].message.content or ""
    assert len(tokenize(content)) == 9
    chunks = list(oai.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=9, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    plain = list(oai.chat.completions.create(model=MODEL, messages=messages,
                                             max_tokens=3, stream=True))
    assert all(c.usage is None for c in plain)


def test_openai_sse_ends_with_done(sim: SimProc) -> None:
    with httpx.stream("POST", sim.url + "/v1/chat/completions", json={
            "model": MODEL, "stream": True, "max_tokens": 3,
            "messages": [{"role": "user", "content": "a"}]}) as response:
        events = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]"
    assert len(events) == 3 + 2


def test_openai_completions_embeddings_models(oai: openai.OpenAI) -> None:
    completion = oai.completions.create(model=MODEL, prompt="once", max_tokens=4)
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    assert completion.choices[0].text
    streamed = "".join(c.choices[0].text for c in oai.completions.create(
        model=MODEL, prompt="once", max_tokens=4, stream=True) if c.choices)
    assert streamed == completion.choices[0].text
    vectors = oai.embeddings.create(model="nomic-embed-text", input=["a", "b"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 768
    floats = oai.embeddings.create(model="nomic-embed-text", input="a",
                                   encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors.data[0].embedding, abs=1e-6)
    ids = {m.id for m in oai.models.list()}
    assert {"llama3.2:3b", "qwen3:8b", "nomic-embed-text:latest"} <= ids
    assert oai.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "a"}])


def test_stats_keep_the_request_bodies_unchanged(sim: SimProc, oai: openai.OpenAI) -> None:
    sim_reset(sim.url)
    oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "params"}], max_tokens=2,
        top_p=0.3, stop=["END"], seed=42, response_format={"type": "json_object"})
    stats = sim_stats(sim.url)
    last = stats["last_requests"][-1]
    assert last["path"] == "/v1/chat/completions"
    body = last["body"]
    assert body["top_p"] == 0.3 and body["stop"] == ["END"] and body["seed"] == 42
    assert body["response_format"] == {"type": "json_object"}
    assert stats["total"]["served"] == 1 and stats["models"][MODEL]["requests"] == 1


def test_json_format_replies_parse(client: ollama.Client) -> None:
    reply = client.chat(model=MODEL, messages=[{"role": "user", "content": "json"}],
                        format="json")
    assert isinstance(json.loads(reply.message.content), dict)
