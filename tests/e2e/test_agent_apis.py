"""The APIs coding agents speak, through a router over simulated nodes, with the official
anthropic and openai clients: Messages (whole, streamed, tools, thinking, count_tokens),
Responses, audio, errors as each SDK expects them, client keys as agents send them, model
aliases, and nodes whose Ollama is too old for an endpoint."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from services.router.proxy.count_tokens import estimate_tokens
from services.sim.audio_api import TRANSCRIPT
from tests.e2e.proxy_fleet import Fleet, start_fleet
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

KEY = "agents-client-key"
MODEL = "llama3.2:3b"
THINKER = "qwen3:8b"
OLD_ONLY = "smollm:135m"  # only on the node too old for the agent APIs
# node -> (the simulator's Ollama version, what its heartbeat says, its models)
NODES = {
    "new": ("0.40.8", "0.40.8", f"{MODEL},{THINKER}"),
    "spare": ("0.40.8", "0.40.8", THINKER),
    "old": ("0.13.0", "0.13.0", f"{MODEL},{OLD_ONLY}"),
    # reports a source build (taken to serve everything), but its Ollama lacks the paths
    "liar": ("0.13.0", "0.0.0", MODEL),
}
WEATHER_TOOL = {"name": "get_weather", "description": "The weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}}
MSG = [{"role": "user", "content": "hello there"}]


def beat(fleet: Fleet, node_id: str) -> None:
    payload = fleet.heartbeat(node_id)
    payload["ollama"]["version"] = NODES[node_id][1]
    answer = httpx.post(f"{fleet.url}/heartbeat", json=payload, timeout=5)
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("agents")
    nodes = {n: ["--ollama-version", version, "--models", models]
             for n, (version, _, models) in NODES.items()}
    env = {"FLEET_CLIENT_TOKEN": KEY, "FLEET_MAX_BODY_MB": "1"}
    with start_fleet(tmp, redis_url, nodes, env=env) as running:
        # the model loaded on liar makes it the best node for MODEL
        httpx.post(f"{running.sim_url('liar')}/api/generate",
                   json={"model": MODEL, "prompt": "", "keep_alive": -1}, timeout=30)
        for node_id in NODES:
            beat(running, node_id)
        yield running


@pytest.fixture
def claude(fleet: Fleet) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=fleet.url, api_key=KEY, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def oa(fleet: Fleet) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key=KEY, max_retries=0)
    yield client
    client.close()


def last_request(fleet: Fleet, node_id: str, path: str) -> dict[str, Any]:
    found = [b for b in fleet.sim_stats(node_id)["last_requests"] if b["path"] == path]
    assert found, f"{node_id} saw no {path}"
    return dict(found[-1])


def trace(fleet: Fleet, request_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        answer = httpx.get(f"{fleet.url}/dashboard/api/traces", params={"limit": 200},
                           headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()
        return next((t for t in answer["traces"] if t["request_id"] == request_id), None)

    return wait_until(find, timeout=10, message=f"the trace of {request_id}")


def stored_models(fleet: Fleet, request_id: str) -> tuple[str, str] | None:
    """(original_model, model) of a request in the router's latency.db, once recorded."""
    db = fleet.data_dir / "latency.db"
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(db)) as con:
        try:
            row = con.execute("SELECT original_model, model FROM request_traces "
                              "WHERE request_id = ?", (request_id,)).fetchone()
        except sqlite3.OperationalError:  # the table is not made yet
            return None
    return (row[0], row[1]) if row else None


def set_aliases(fleet: Fleet, aliases: dict[str, str]) -> None:
    answer = httpx.post(f"{fleet.url}/dashboard/api/settings",
                        json={"model_aliases": aliases}, timeout=5)
    assert answer.status_code == 200, answer.text


def test_a_node_that_404s_the_path_is_skipped_for_it(fleet: Fleet) -> None:
    """liar's heartbeat claims a source build; its Ollama answers `404 page not found`.
    First in the module: the first request of the path learns it (the fixture loaded the
    model there, making it the best node)."""
    body = {"model": MODEL, "max_tokens": 50, "messages": MSG}
    auth = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    answers = [httpx.post(f"{fleet.url}/v1/messages", json=body, headers=auth, timeout=30)
               for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.headers["x-fleet-node"] for a in answers} == {"new"}
    # the first learned it (a retry that cost nothing of the budget); the others skip liar
    assert [a.headers["x-fleet-retries"] for a in answers] == ["1", "0", "0"]
    chat = httpx.post(f"{fleet.url}/api/chat", json={**body, "stream": False},
                      headers=auth, timeout=30)
    assert chat.headers["x-fleet-node"] == "liar"  # only that path is skipped there


# --- Anthropic Messages -------------------------------------------------------------------


def test_messages_whole_reach_the_node_unchanged_with_the_anthropic_headers(
        fleet: Fleet, claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model=MODEL, max_tokens=200, messages=MSG, system="Be brief.",
        metadata={"user_id": "u-1"}, extra_body={"top_k": 7},
        extra_headers={"anthropic-beta": "some-feature-2025"})
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-fleet-node"] == "new"  # the only node new enough
    seen = last_request(fleet, "new", "/v1/messages")
    assert seen["body"] == {"model": MODEL, "max_tokens": 200, "messages": MSG,
                            "system": "Be brief.", "metadata": {"user_id": "u-1"},
                            "top_k": 7}
    assert seen["headers"]["anthropic-version"] == raw.http_request.headers["anthropic-version"]
    assert seen["headers"]["anthropic-beta"] == "some-feature-2025"
    recorded = trace(fleet, raw.headers["x-herd-request-id"])
    assert (recorded["prompt_tokens"], recorded["completion_tokens"]) == (
        message.usage.input_tokens, message.usage.output_tokens)
    assert recorded["original_format"] == "anthropic" and recorded["status"] == "completed"
    assert recorded["finish_reason"] == message.stop_reason


def test_messages_streamed_with_thinking_and_usage_from_its_events(
        fleet: Fleet, claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model=THINKER, max_tokens=300, messages=MSG,
                                thinking={"type": "enabled", "budget_tokens": 100}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-herd-request-id"]
    assert text
    assert [b.type for b in final.content][:2] == ["thinking", "text"]
    recorded = trace(fleet, request_id)
    assert recorded["completion_tokens"] == final.usage.output_tokens > 0
    assert recorded["prompt_tokens"] == final.usage.input_tokens > 0
    assert recorded["time_to_first_token_ms"] > 0


def test_messages_tools_whole_and_streamed(claude: anthropic.Anthropic) -> None:
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    message = claude.messages.create(model=MODEL, max_tokens=200, messages=asked,
                                     tools=[WEATHER_TOOL])
    assert message.stop_reason == "tool_use"
    call = next(b for b in message.content if b.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict)
    with claude.messages.stream(model=MODEL, max_tokens=200, messages=asked,
                                tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_message()
    assert any(b.type == "tool_use" and b.name == "get_weather" for b in final.content)


def test_errors_come_in_anthropics_shape_as_the_sdks_exceptions(fleet: Fleet) -> None:
    with (anthropic.Anthropic(base_url=fleet.url, api_key="wrong", max_retries=0) as bad,
          pytest.raises(anthropic.AuthenticationError) as refused):
        bad.messages.create(model=MODEL, max_tokens=10, messages=MSG)
    assert refused.value.body == {"type": "error", "error": {
        "type": "authentication_error", "message": "invalid API key"}}
    with anthropic.Anthropic(base_url=fleet.url, auth_token=KEY, max_retries=0) as good:
        with pytest.raises(anthropic.NotFoundError) as missing:
            good.messages.create(model="no-such:1b", max_tokens=10, messages=MSG)
        assert missing.value.body["error"]["type"] == "not_found_error"
        with pytest.raises(anthropic.BadRequestError):
            good.messages.create(model=MODEL, max_tokens=10, messages="hi")
    no_key = httpx.post(f"{fleet.url}/v1/messages", json={"model": MODEL}, timeout=10)
    assert no_key.status_code == 401 and "x-api-key" in no_key.json()["error"]["message"]
    too_big = httpx.post(f"{fleet.url}/v1/messages", headers={"x-api-key": KEY},
                         content=b'{"model": "' + b"x" * (1024 * 1024 + 10) + b'"}', timeout=10)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["type"] == "request_too_large"


def test_count_tokens_is_answered_by_the_router(fleet: Fleet,
                                                claude: anthropic.Anthropic) -> None:
    body: dict[str, Any] = {"model": MODEL, "system": "You are terse.",
                            "messages": [{"role": "user", "content": "count these words " * 20}],
                            "tools": [WEATHER_TOOL]}
    before = fleet.sim_stats("new")["http_requests"]
    counted = claude.messages.count_tokens(**body)
    assert counted.input_tokens == estimate_tokens(body) > 60
    # no node was asked (the one request more is the stats call itself)
    assert fleet.sim_stats("new")["http_requests"] == before + 1
    # the figure a node's own message_start gives for the same input (Ollama's estimate)
    with claude.messages.stream(max_tokens=10, **body) as stream:
        started = next(e for e in stream if e.type == "message_start")
    assert started.message.usage.input_tokens == counted.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="no-such:1b", messages=MSG)
    with (anthropic.Anthropic(base_url=fleet.url, api_key="wrong", max_retries=0) as bad,
          pytest.raises(anthropic.AuthenticationError)):
        bad.messages.count_tokens(model=MODEL, messages=MSG)


# --- OpenAI Responses and audio -----------------------------------------------------------


def test_responses_whole_and_streamed_with_usage_in_the_trace(
        fleet: Fleet, oa: openai.OpenAI) -> None:
    raw = oa.responses.with_raw_response.create(
        model=MODEL, input="Say hello", instructions="Be brief.", extra_body={"top_k": 3})
    response = raw.parse()
    assert response.output_text and response.usage is not None
    assert raw.headers["x-fleet-node"] == "new"
    assert last_request(fleet, "new", "/v1/responses")["body"] == {
        "model": MODEL, "input": "Say hello", "instructions": "Be brief.", "top_k": 3}
    recorded = trace(fleet, raw.headers["x-herd-request-id"])
    assert (recorded["prompt_tokens"], recorded["completion_tokens"]) == (
        response.usage.input_tokens, response.usage.output_tokens)
    with oa.responses.with_streaming_response.create(model=MODEL, input="Say hello",
                                                     stream=True) as streamed:
        request_id = streamed.headers["x-herd-request-id"]
        events = [json.loads(line[5:]) for line in streamed.iter_lines()
                  if line.startswith("data:")]
    done = next(e for e in events if e["type"] == "response.completed")
    recorded = trace(fleet, request_id)
    assert recorded["completion_tokens"] == done["response"]["usage"]["output_tokens"] > 0
    assert recorded["finish_reason"] == "completed"


def test_responses_tools(oa: openai.OpenAI) -> None:
    tool = {"type": "function", "name": "get_weather", "description": "The weather",
            "parameters": WEATHER_TOOL["input_schema"]}
    response = oa.responses.create(model=MODEL, input="Weather in Oslo?",
                                   tools=[tool])
    assert any(item.type == "function_call" and item.name == "get_weather"
               for item in response.output)


def test_audio_transcription_multipart_and_speech_streamed(fleet: Fleet,
                                                           oa: openai.OpenAI) -> None:
    wav = b"RIFF" + b"\0" * 2000
    text = oa.audio.transcriptions.create(model=MODEL, file=("hello.wav", wav, "audio/wav"))
    assert text.text == TRANSCRIPT
    seen = last_request(fleet, "new", "/v1/audio/transcriptions")["body"]
    assert seen["model"] == MODEL and seen["file"]["bytes"] == len(wav)
    too_big = httpx.post(f"{fleet.url}/v1/audio/transcriptions",
                         headers={"Authorization": f"Bearer {KEY}"},
                         files={"file": ("big.wav", b"\0" * (1024 * 1024 + 10))},
                         data={"model": MODEL}, timeout=10)
    assert too_big.status_code == 413
    no_model = httpx.post(f"{fleet.url}/v1/audio/transcriptions",
                          headers={"Authorization": f"Bearer {KEY}"},
                          files={"file": ("a.wav", wav)}, timeout=10)
    assert no_model.status_code == 400 and "model" in no_model.json()["error"]["message"]
    with oa.audio.speech.with_streaming_response.create(
            model=MODEL, voice="alloy", input="Hello there, how are you today?") as spoken:
        assert spoken.headers["content-type"] == "audio/wav"
        assert "content-length" not in spoken.headers  # streamed, not buffered whole
        chunks = list(spoken.iter_bytes())
    audio = b"".join(chunks)
    assert audio[:4] == b"RIFF" and len(audio) > 44


def test_an_unknown_model_on_v1_is_worded_as_ollama_words_it(oa: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        oa.chat.completions.create(model="no-such:1b", messages=MSG)
    error = missing.value.body
    assert isinstance(error, dict)
    assert (error["type"], error["code"]) == ("not_found_error", None)


# --- versions -----------------------------------------------------------------------------


def test_a_model_only_on_a_too_old_node_gets_the_version_it_needs(
        claude: anthropic.Anthropic, oa: openai.OpenAI) -> None:
    with pytest.raises(anthropic.NotFoundError) as messages:
        claude.messages.create(model=OLD_ONLY, max_tokens=10, messages=MSG)
    assert "Ollama 0.14.0 or later" in messages.value.message
    with pytest.raises(openai.NotFoundError) as responses:
        oa.responses.create(model=OLD_ONLY, input="hi")
    assert "Ollama 0.13.3 or later" in responses.value.message
    with pytest.raises(openai.NotFoundError) as heard:
        oa.audio.transcriptions.create(model=OLD_ONLY, file=("a.wav", b"RIFF0000"))
    assert "Ollama 0.20.0 or later" in heard.value.message
    with pytest.raises(openai.NotFoundError) as spoken:
        oa.audio.speech.create(model=OLD_ONLY, voice="alloy", input="hi")
    assert "Ollama 0.40.8 or later" in spoken.value.message
    assert oa.chat.completions.create(model=OLD_ONLY, messages=MSG)


# --- aliases ------------------------------------------------------------------------------


def test_model_aliases_on_every_api(fleet: Fleet, claude: anthropic.Anthropic,
                                    oa: openai.OpenAI) -> None:
    set_aliases(fleet, {"claude-*": MODEL, "gpt-4o-mini": THINKER, "whisper-1": MODEL})
    try:
        raw = claude.messages.with_raw_response.create(
            model="claude-sonnet-4-5-20250929", max_tokens=50, messages=MSG)
        assert raw.headers["x-fleet-requested-model"] == "claude-sonnet-4-5-20250929"
        assert raw.headers["x-fleet-served-model"] == MODEL
        assert last_request(fleet, "new", "/v1/messages")["body"]["model"] == MODEL
        recorded = trace(fleet, raw.headers["x-herd-request-id"])
        assert (recorded["original_model"], recorded["model"]) == (
            "claude-sonnet-4-5-20250929", MODEL)
        # latency.db keeps both in ollama-herd's columns (the recorder, a leader job)
        assert wait_until(lambda: stored_models(fleet, raw.headers["x-herd-request-id"]),
                          timeout=15, message="the trace in latency.db") == (
            "claude-sonnet-4-5-20250929", MODEL)
        assert claude.messages.count_tokens(model="claude-haiku-4-5", messages=MSG)
        chat = oa.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
        assert chat.headers["x-fleet-served-model"] == THINKER
        text = oa.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF0000"))
        assert text.text == TRANSCRIPT
        seen = last_request(fleet, "new", "/v1/audio/transcriptions")["body"]
        assert seen["model"] == MODEL and seen["file"]["bytes"] == 8
        with pytest.raises(anthropic.NotFoundError):  # not an alias: still unknown
            claude.messages.create(model="gpt-5", max_tokens=10, messages=MSG)
    finally:
        set_aliases(fleet, {})


# --- Herd's features on the new paths -----------------------------------------------------


def test_a_conversations_later_turns_keep_their_node(claude: anthropic.Anthropic) -> None:
    opening = [{"role": "user", "content": "refactor the parser"}]
    first = claude.messages.with_raw_response.create(
        model=THINKER, max_tokens=20, system="You are a coding agent.", messages=opening)
    later = claude.messages.with_raw_response.create(
        model=THINKER, max_tokens=20, system="You are a coding agent.", messages=[
            *opening, {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "now add tests"}],
        extra_headers={"x-herd-priority": "high", "x-herd-tags": "claude-code"})
    assert first.headers["x-fleet-affinity"] == "new"
    assert later.headers["x-fleet-affinity"] == "hit"


def test_a_client_leaving_a_stream_cancels_it_upstream(fleet: Fleet) -> None:
    body = {"model": MODEL, "max_tokens": 4000, "stream": True,
            "messages": [{"role": "user", "content": "write a long story"}]}
    fleet.fault("new", "slow", factor=20.0, delay_s=0)
    try:
        with httpx.stream("POST", f"{fleet.url}/v1/messages", json=body, timeout=30,
                          headers={"x-api-key": KEY}) as streamed:
            request_id = streamed.headers["x-herd-request-id"]
            next(streamed.iter_raw())  # the first event, then the client goes
    finally:
        fleet.fault("new", "none")
    recorded = trace(fleet, request_id)
    assert recorded["status"] == "client_disconnected"


def test_a_key_over_its_tokens_per_minute_gets_each_sdks_rate_limit_error(
        fleet: Fleet) -> None:
    created = httpx.post(f"{fleet.url}/dashboard/api/keys", timeout=5,
                         json={"app": "agent-tpm", "tokens_per_minute": 1})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    with anthropic.Anthropic(base_url=fleet.url, api_key=key, max_retries=0) as claude:
        raw = claude.messages.with_raw_response.create(model=MODEL, max_tokens=20,
                                                       messages=MSG)
        # the first goes through (its tokens are counted when it ends) and tags the app
        assert trace(fleet, raw.headers["x-herd-request-id"])["app"] == "agent-tpm"
        with pytest.raises(anthropic.RateLimitError) as limited:
            claude.messages.create(model=MODEL, max_tokens=20, messages=MSG)
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    assert int(limited.value.response.headers["retry-after"]) >= 1
    with openai.OpenAI(base_url=f"{fleet.url}/v1", api_key=key, max_retries=0) as oa, \
            pytest.raises(openai.RateLimitError):
        oa.responses.create(model=MODEL, input="hi")
    httpx.delete(f"{fleet.url}/dashboard/api/keys/agent-tpm", timeout=5).raise_for_status()


def test_a_failure_before_the_first_byte_is_retried_and_one_after_it_ends_the_stream(
        fleet: Fleet, claude: anthropic.Anthropic) -> None:
    httpx.post(f"{fleet.sim_url('new')}/api/generate",
               json={"model": THINKER, "prompt": "", "keep_alive": -1}, timeout=30)
    beat(fleet, "new")  # loaded there: new is the first choice for THINKER
    fleet.fault("new", "error500", count=1, paths=["/v1/messages"])
    try:
        raw = claude.messages.with_raw_response.create(model=THINKER, max_tokens=20,
                                                       messages=MSG)
    finally:
        fleet.fault("new", "none")
    assert (raw.headers["x-fleet-node"], raw.headers["x-fleet-retries"]) == ("spare", "1")
    assert raw.parse().content
    fleet.fault("new", "die_mid_stream", after_tokens=3, paths=["/v1/messages"])
    try:
        with pytest.raises(anthropic.APIStatusError) as broken, claude.messages.stream(
                model=MODEL, max_tokens=200, messages=MSG) as stream:
            request_id = stream.response.headers["x-herd-request-id"]
            for _ in stream.text_stream:
                pass
    finally:
        fleet.fault("new", "none")
    assert "broke off the stream" in str(broken.value)
    assert trace(fleet, request_id)["status"] == "incomplete"
