"""`herd sim` speaks what agents send: the official anthropic, openai and ollama clients
against one simulator, with tools, thinking and structured output, streamed and not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import ollama
import openai
import pytest
from pydantic import BaseModel, Field

from services.sim.text import tokenize
from tests.simproc import SimProc, sim_stats, start_sim

pytestmark = pytest.mark.e2e

MODEL = "llama3.2:3b"  # tools, no thinking
THINKER = "qwen3:8b"  # tools and thinking
WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "minLength": 2},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "unit"], "additionalProperties": False}
OLLAMA_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city", "parameters": WEATHER}}]


class City(BaseModel):
    name: str
    population: int = Field(ge=0)
    districts: list[str]
    mayor: str | None


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    proc = start_sim(tmp_path_factory.mktemp("sim-agents"), "agents", tokens_per_s=0,
                     models="llama3.2:3b,qwen3:8b,gemma3:4b,nomic-embed-text")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def claude(sim: SimProc) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def oai(sim: SimProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def client(sim: SimProc) -> ollama.Client:
    return ollama.Client(host=sim.url)


# --- Anthropic Messages ------------------------------------------------------------------

def test_messages_create_counts_tokens_like_the_node(claude: anthropic.Anthropic,
                                                     sim: SimProc) -> None:
    reply = claude.messages.create(model=MODEL, max_tokens=12, system="Be brief.",
                                   messages=[{"role": "user", "content": "hello"}])
    assert reply.type == "message" and reply.role == "assistant" and reply.model == MODEL
    assert [b.type for b in reply.content] == ["text"]
    assert reply.stop_reason == "max_tokens"
    assert reply.usage.output_tokens == 12 == len(tokenize(reply.content[0].text))
    assert reply.usage.input_tokens > 5
    last = sim_stats(sim.url)["last_requests"][-1]
    assert last["path"] == "/v1/messages" and last["body"]["system"] == "Be brief."


def test_messages_stream_has_anthropics_events(claude: anthropic.Anthropic,
                                               sim: SimProc) -> None:
    with httpx.stream("POST", sim.url + "/v1/messages", json={
            "model": MODEL, "max_tokens": 5, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"] == "text/event-stream"
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert events == ["message_start", "content_block_start", *["content_block_delta"] * 5,
                      "content_block_stop", "message_delta", "message_stop"]
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert data[0]["message"]["usage"]["input_tokens"] > 0  # Ollama's estimate
    assert data[-2]["delta"]["stop_reason"] == "max_tokens"
    assert data[-2]["usage"]["output_tokens"] == 5
    with claude.messages.stream(model=MODEL, max_tokens=40,
                                messages=[{"role": "user", "content": "story"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text
    assert final.usage.output_tokens == len(tokenize(text))


def test_messages_thinking_blocks_come_first(claude: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {"model": THINKER, "max_tokens": 400,
                              "thinking": {"type": "enabled", "budget_tokens": 1024},
                              "messages": [{"role": "user", "content": "why?"}]}
    reply = claude.messages.create(**kwargs)
    assert [b.type for b in reply.content] == ["thinking", "text"]
    assert reply.content[0].thinking and reply.stop_reason == "end_turn"
    with claude.messages.stream(**kwargs) as stream:
        kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert kinds[0] == "thinking_delta" and kinds[-1] == "text_delta"
    assert final.content[0].thinking == reply.content[0].thinking  # same seed, same thought
    # A model that cannot think just answers on this path (Ollama relaxes it for agents).
    plain = claude.messages.create(**{**kwargs, "model": MODEL})
    assert [b.type for b in plain.content] == ["text"]


def test_messages_tool_loop_runs_to_an_answer(claude: anthropic.Anthropic) -> None:
    tools: Any = [{"name": "get_weather", "description": "weather", "input_schema": WEATHER}]
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    reply = claude.messages.create(model=MODEL, max_tokens=300, tools=tools, messages=messages)
    assert reply.stop_reason == "tool_use"
    use = reply.content[-1]
    assert use.type == "tool_use" and use.name == "get_weather" and use.id.startswith("call_")
    jsonschema.validate(use.input, WEATHER)
    again = claude.messages.create(model=MODEL, max_tokens=300, tools=tools, messages=messages)
    assert again.content[-1].input == use.input  # deterministic
    with claude.messages.stream(model=MODEL, max_tokens=300, tools=tools,
                                messages=messages) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        streamed = stream.get_final_message()
    assert deltas == ["input_json_delta"] and streamed.content[-1].input == use.input
    messages += [{"role": "assistant", "content": reply.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                               "content": "21 degrees"}]}]
    answer = claude.messages.create(model=MODEL, max_tokens=30, tools=tools, messages=messages)
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in answer.content] == ["text"]


def test_messages_errors_are_anthropics(claude: anthropic.Anthropic, sim: SimProc) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="nope", max_tokens=5,
                               messages=[{"role": "user", "content": "a"}])
    body = missing.value.response.json()
    assert body["type"] == "error" and body["request_id"].startswith("req_")
    assert body["error"] == {"type": "not_found_error", "message": "model 'nope' not found"}
    bad = httpx.post(sim.url + "/v1/messages", json={"model": MODEL, "messages": [
        {"role": "user", "content": "a"}]})
    assert bad.status_code == 400 and bad.json()["error"] == {
        "type": "invalid_request_error", "message": "max_tokens is required and must be positive"}
    with pytest.raises(anthropic.BadRequestError, match="does not support tools"):
        claude.messages.create(model="gemma3:4b", max_tokens=5, tools=[
            {"name": "t", "input_schema": {"type": "object"}}],
            messages=[{"role": "user", "content": "a"}])


# --- OpenAI Responses -----------------------------------------------------------------------

def test_responses_create_and_stream(oai: openai.OpenAI) -> None:
    reply = oai.responses.create(model=MODEL, input="hello", instructions="Be brief.",
                                 max_output_tokens=9)
    assert reply.status == "completed" and reply.model == MODEL
    assert reply.instructions == "Be brief." and reply.store is False
    assert reply.usage is not None and reply.usage.output_tokens == 9
    assert len(tokenize(reply.output_text)) == 9
    events = list(oai.responses.create(model=MODEL, input="hello", instructions="Be brief.",
                                       max_output_tokens=9, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and kinds.count("response.output_text.delta") == 9
    assert [e.sequence_number for e in events] == list(range(len(events)))
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.output_text == reply.output_text
    assert completed.usage is not None and completed.usage.input_tokens == reply.usage.input_tokens
    items = oai.responses.create(model=MODEL, max_output_tokens=4, input=[
        {"role": "user", "content": "first"},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "second"}]}])
    single = oai.responses.create(model=MODEL, input="first", max_output_tokens=4)
    assert items.usage is not None and single.usage is not None
    assert items.usage.input_tokens > single.usage.input_tokens + 4  # every item was read


def test_responses_reasoning_and_function_calls(oai: openai.OpenAI) -> None:
    thought = oai.responses.create(model=THINKER, input="why", reasoning={"effort": "low"})
    assert [o.type for o in thought.output] == ["reasoning", "message"]
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": WEATHER,
                   "strict": True, "description": "weather"}]
    call = oai.responses.create(model=MODEL, input="Weather in Rome?", tools=tools)
    item = call.output[-1]
    assert item.type == "function_call" and item.name == "get_weather"
    jsonschema.validate(json.loads(item.arguments), WEATHER)
    streamed = [e.type for e in oai.responses.create(model=MODEL, input="Weather in Rome?",
                                                     tools=tools, stream=True)]
    assert "response.function_call_arguments.done" in streamed
    answer = oai.responses.create(model=MODEL, tools=tools, max_output_tokens=10, input=[
        {"role": "user", "content": "Weather in Rome?"},
        {"type": "function_call", "call_id": item.call_id, "name": item.name,
         "arguments": item.arguments},
        {"type": "function_call_output", "call_id": item.call_id, "output": "sunny"}])
    assert answer.output[-1].type == "message" and answer.output_text


def test_responses_structured_output(oai: openai.OpenAI) -> None:
    parsed = oai.responses.parse(model=MODEL, input="a city", text_format=City)
    assert isinstance(parsed.output_parsed, City)
    schema = City.model_json_schema()
    text = {"format": {"type": "json_schema", "name": "city", "schema": schema}}
    streamed = "".join(e.delta for e in oai.responses.create(  # type: ignore[union-attr]
        model=MODEL, input="a city", text=text, stream=True)  # type: ignore[arg-type]
        if e.type == "response.output_text.delta")
    jsonschema.validate(json.loads(streamed), schema)


def test_responses_errors(oai: openai.OpenAI, sim: SimProc) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="nope", input="a")
    bad = httpx.post(sim.url + "/v1/responses", json={"model": MODEL, "input": [{"x": 1}]})
    assert bad.status_code == 400 and bad.json()["error"]["message"] == (
        "input[0]: input item missing required 'type' field")
    effort = httpx.post(sim.url + "/v1/responses", json={
        "model": MODEL, "input": "a", "reasoning": {"effort": "high"}})
    assert effort.status_code == 400
    assert effort.json()["error"]["message"] == '"llama3.2:3b" does not support thinking'


# --- OpenAI chat ----------------------------------------------------------------------------

def test_chat_tools_reasoning_and_structured_output(oai: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": "get_weather",
                                                    "parameters": WEATHER}}]
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    reply = oai.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)  # type: ignore[union-attr]
    chunks = list(oai.chat.completions.create(model=MODEL, messages=messages, tools=tools,
                                              stream=True))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    streamed = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    assert streamed[0][0].function.arguments == call.function.arguments  # type: ignore[union-attr,index]
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "cold"}]
    answer = oai.chat.completions.create(model=MODEL, messages=messages, tools=tools,
                                         max_tokens=8)
    assert answer.choices[0].finish_reason == "length" and answer.choices[0].message.content
    parsed = oai.chat.completions.parse(model=MODEL, response_format=City,
                                        messages=[{"role": "user", "content": "a city"}])
    assert isinstance(parsed.choices[0].message.parsed, City)
    plain = oai.chat.completions.create(model=MODEL, response_format={"type": "json_object"},
                                        messages=[{"role": "user", "content": "json"}],
                                        stream=True)
    assert isinstance(json.loads("".join(c.choices[0].delta.content or "" for c in plain
                                         if c.choices)), dict)
    raw = oai.chat.completions.with_raw_response.create(
        model=THINKER, messages=[{"role": "user", "content": "think"}],
        reasoning_effort="low", max_tokens=200)
    message = json.loads(raw.text)["choices"][0]["message"]
    assert message["reasoning"] and message["content"]
    usage = json.loads(raw.text)["usage"]
    assert usage["completion_tokens"] == len(tokenize(message["reasoning"])) + len(
        tokenize(message["content"]))


def test_chat_stream_reasoning_chunks_come_first(sim: SimProc) -> None:
    with httpx.stream("POST", sim.url + "/v1/chat/completions", json={
            "model": THINKER, "stream": True, "reasoning_effort": "low", "max_tokens": 60,
            "messages": [{"role": "user", "content": "a"}]}) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant" and deltas[0]["reasoning"]
    assert all("role" not in d for d in deltas[1:])
    assert deltas[-1] == {} and chunks[-1]["choices"][0]["finish_reason"] == "length"
    bad = httpx.post(sim.url + "/v1/chat/completions", json={
        "model": THINKER, "reasoning_effort": "huge", "messages": [{"role": "user",
                                                                     "content": "a"}]})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith(
        'invalid reasoning value: "huge"')


# --- Ollama chat ----------------------------------------------------------------------------

def test_ollama_chat_tools_think_and_format(client: ollama.Client) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Lima?"}]
    reply = client.chat(model=MODEL, messages=messages, tools=OLLAMA_TOOLS)
    calls = reply.message.tool_calls
    assert calls and calls[0].function.name == "get_weather" and reply.message.content == ""
    jsonschema.validate(dict(calls[0].function.arguments), WEATHER)
    assert reply.eval_count and reply.eval_count > 5  # the call's tokens are generated
    chunks = list(client.chat(model=MODEL, messages=messages, tools=OLLAMA_TOOLS, stream=True))
    assert [c.message.tool_calls is not None for c in chunks] == [True, False]
    messages += [reply.message, {"role": "tool", "tool_name": "get_weather",
                                 "content": "warm"}]
    answer = client.chat(model=MODEL, messages=messages, tools=OLLAMA_TOOLS,
                         options={"num_predict": 6})
    assert not answer.message.tool_calls and len(tokenize(answer.message.content)) == 6
    schema = City.model_json_schema()
    shaped = client.chat(model=MODEL, messages=[{"role": "user", "content": "city"}],
                         format=schema)
    City.model_validate_json(shaped.message.content)
    streamed = "".join(c.message.content for c in client.chat(
        model=MODEL, messages=[{"role": "user", "content": "city"}], format=schema,
        stream=True))
    assert streamed == shaped.message.content
    thought = client.chat(model=THINKER, messages=[{"role": "user", "content": "hm"}],
                          think=True, options={"num_predict": 300})
    assert thought.message.thinking and thought.message.content
    assert thought.eval_count == len(tokenize(thought.message.thinking)) + len(
        tokenize(thought.message.content))
    parts = list(client.chat(model=THINKER, messages=[{"role": "user", "content": "hm"}],
                             think="high", stream=True, options={"num_predict": 20}))
    assert parts[0].message.thinking and parts[-1].done_reason == "length"
    generated = client.generate(model=THINKER, prompt="hm", think=True,
                                options={"num_predict": 300})
    assert generated.thinking and generated.response


def test_ollama_errors_for_thinking_tools_and_format(client: ollama.Client,
                                                     sim: SimProc) -> None:
    with pytest.raises(ollama.ResponseError) as no_think:
        client.chat(model=MODEL, messages=[{"role": "user", "content": "a"}], think=True)
    assert no_think.value.status_code == 400
    assert no_think.value.error == '"llama3.2:3b" does not support thinking'
    with pytest.raises(ollama.ResponseError) as no_tools:
        client.chat(model="gemma3:4b", messages=[{"role": "user", "content": "a"}],
                    tools=OLLAMA_TOOLS)
    assert no_tools.value.error == "registry.ollama.ai/library/gemma3:4b does not support tools"
    bad = httpx.post(sim.url + "/api/chat", json={
        "model": MODEL, "format": "xml", "stream": False,
        "messages": [{"role": "user", "content": "a"}]})
    assert bad.status_code == 500 and bad.json() == {
        "error": 'invalid format: "\\"xml\\""; expected "json" or a valid JSON Schema object'}
