"""What the router reads of the agent APIs without a server: token counts in each API's
answer, multipart forms, model aliases, which nodes serve a path, and the error when none
does."""

from __future__ import annotations

import msgspec
import pytest

from services.router.nodes import PathMissing
from services.router.proxy.aliases import apply_alias, resolve_alias
from services.router.proxy.apis import DIALECTS, credential, forward_headers
from services.router.proxy.counts import read_usage
from services.router.proxy.forward import error_tail
from services.router.proxy.plan import RetryPlan, unserved_path
from services.router.proxy.request import form_fields, parse_request, replace_form_field
from shared.errors import BadRequest, EndpointUnserved
from shared.models import FleetSnapshot, NodeState
from shared.routing import RouteRequest, RoutingInputs, ScoringContext, node_serves
from shared.settings import Settings, SettingsError, coerce

pytestmark = pytest.mark.unit

M = "llama3.2:3b"
MESSAGES, RESPONSES = DIALECTS["/v1/messages"], DIALECTS["/v1/responses"]


def sse(*events: tuple[str, dict[str, object]]) -> bytes:
    return b"".join(b"event: %s\ndata: %s\n\n" % (name.encode(), msgspec.json.encode(data))
                    for name, data in events)


def test_anthropic_counts_from_message_start_and_message_delta() -> None:
    start = sse(("message_start", {"type": "message_start", "message": {
        "usage": {"input_tokens": 321, "output_tokens": 0}}}))
    tail = sse(("content_block_delta", {"type": "content_block_delta", "delta": {
        "type": "text_delta", "text": 'say "input_tokens": 5'}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 42}}),
        ("message_stop", {"type": "message_stop"}))
    usage = read_usage(MESSAGES, tail, stream=True, sse=True, first=start)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.finish_reason) == (
        321, 42, "end_turn")
    # Ollama repeats the input count in message_delta: the final figure wins
    tail2 = tail.replace(b'"output_tokens":42', b'"input_tokens":300,"output_tokens":42')
    assert read_usage(MESSAGES, tail2, stream=True, sse=True, first=start).prompt_tokens == 300
    whole = msgspec.json.encode({"type": "message", "stop_reason": "tool_use", "usage": {
        "input_tokens": 9, "output_tokens": 4}})
    usage = read_usage(MESSAGES, whole, stream=False, sse=False)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.finish_reason) == (
        9, 4, "tool_use")


def test_responses_counts_from_a_completed_event_longer_than_the_tail() -> None:
    completed = sse(("response.completed", {"type": "response.completed", "response": {
        "instructions": "x" * 40_000, "output": [{"type": "message", "content": "y" * 9000}],
        "usage": {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": 77, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": 1277}}}))
    tail = completed[-16 * 1024:]  # what the stream keeps: the event's start is cut off
    usage = read_usage(RESPONSES, tail, stream=True, sse=True)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.finish_reason) == (
        1200, 77, "completed")
    whole = msgspec.json.encode({"object": "response", "usage": {
        "input_tokens": 5, "output_tokens": 6, "output_tokens_details": {}}})
    assert read_usage(RESPONSES, whole, stream=False, sse=False).completion_tokens == 6


def test_a_broken_anthropic_stream_ends_with_an_error_event() -> None:
    tail = error_tail("/v1/messages", "n1 broke off the stream", sse=True)
    assert tail.startswith(b"event: error\ndata: ")
    assert msgspec.json.decode(tail.split(b"data: ", 1)[1]) == {
        "type": "error", "error": {"type": "api_error", "message": "n1 broke off the stream"}}
    assert error_tail("/v1/responses", "x", sse=True).startswith(b"data: ")


FORM = (b"--B0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
        b"Content-Type: audio/wav\r\n\r\nRIFF--B0und\r\n\r\n"
        b"--B0undary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
        b"--B0undary\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\nen\r\n"
        b"--B0undary--\r\n")
FORM_HEADERS = {"content-type": "multipart/form-data; boundary=B0undary"}


def test_a_form_gives_its_text_fields_and_an_alias_changes_only_the_model_bytes() -> None:
    assert form_fields(FORM, FORM_HEADERS) == {"model": "whisper-1", "language": "en"}
    with pytest.raises(BadRequest, match="multipart/form-data"):
        form_fields(FORM, {"content-type": "application/json"})
    changed = replace_form_field(FORM, FORM_HEADERS, "model", "whisper-1", "gemma3:4b")
    assert changed == FORM.replace(b"\r\n\r\nwhisper-1\r\n", b"\r\n\r\ngemma3:4b\r\n")
    request = parse_request(FORM, "/v1/audio/transcriptions", FORM_HEADERS, "127.0.0.1")
    assert (request.model, request.api, request.path) == (
        "whisper-1:latest", "openai", "/v1/audio/transcriptions")
    assert apply_alias(request, {"whisper-*": "gemma3:4b"}) == "whisper-1"
    assert request.payload() == changed and request.model == "gemma3:4b"
    assert form_fields(request.payload(), FORM_HEADERS)["model"] == "gemma3:4b"
    # the form's own content type (its boundary) reaches the node
    ctype, extra = forward_headers(DIALECTS["/v1/audio/transcriptions"], FORM_HEADERS)
    assert (ctype, extra) == (b"multipart/form-data; boundary=B0undary", b"")


def test_aliases_exact_names_before_globs_in_order() -> None:
    aliases = {"claude-*": "qwen3:32b", "claude-haiku-*": "qwen3:8b", "gpt-4o-mini": "llama3.2:3b",
               "llama3": "llama3.1:8b"}
    assert resolve_alias(aliases, "claude-sonnet-4-5") == "qwen3:32b"
    assert resolve_alias(aliases, "claude-haiku-4-5") == "qwen3:32b"  # the first glob wins
    assert resolve_alias({"claude-haiku-4-5": "x:1b", **aliases}, "claude-haiku-4-5") == "x:1b"
    assert resolve_alias(aliases, "gpt-4o-mini") == "llama3.2:3b"
    assert resolve_alias(aliases, "llama3:latest") == "llama3.1:8b"  # Ollama's tag rule
    assert resolve_alias(aliases, "gpt-4o") is None
    request = RouteRequest(request_id="r", api="anthropic", endpoint="messages",
                           model="claude-x:latest", body={"model": "claude-x", "max_tokens": 5},
                           raw=b'{"model":"claude-x","max_tokens":5}', path="/v1/messages")
    assert apply_alias(request, aliases) == "claude-x"
    assert msgspec.json.decode(request.payload()) == {"model": "qwen3:32b", "max_tokens": 5}
    assert apply_alias(request, {}) == ""


def test_the_aliases_setting_takes_json_and_refuses_bad_targets() -> None:
    assert coerce("model_aliases", '{"claude-*": "qwen3:8b"}') == {"claude-*": "qwen3:8b"}
    assert coerce("model_aliases", "") == {}
    for bad in ('{"a": 1}', '["a"]', '{"a": "no spaces allowed"}', '{"": "qwen3:8b"}'):
        with pytest.raises(SettingsError, match="model_aliases"):
            coerce("model_aliases", bad)
    settings = Settings.load({"FLEET_MODEL_ALIASES": '{"gpt-4o-mini": "llama3.2:3b"}'})
    assert settings.model_aliases == {"gpt-4o-mini": "llama3.2:3b"}


def test_credentials_as_agents_send_them() -> None:
    assert credential({"authorization": "Bearer k1"}) == "Bearer k1"
    assert credential({"x-api-key": "k2"}) == "Bearer k2"
    assert credential({"authorization": "Bearer k1", "x-api-key": "k2"}) == "Bearer k1"
    assert credential({}) == ""
    ctype, extra = forward_headers(MESSAGES, {"anthropic-version": "2023-06-01",
                                              "x-api-key": "secret", "content-type": "x"})
    assert (ctype, extra) == (b"application/json", b"anthropic-version: 2023-06-01\r\n")


def node(node_id: str, version: str) -> NodeState:
    return NodeState(node_id=node_id, ollama_url="http://x", ollama_version=version,
                     models_available=(M,))


def test_a_node_serves_a_path_by_its_version_and_what_it_answered() -> None:
    inputs = RoutingInputs()
    old, new, dev, unknown = (node("old", "0.13.0"), node("new", "0.14.0"),
                              node("dev", "0.0.0-abc"), node("unknown", ""))
    assert [node_serves(n, "/v1/messages", inputs) for n in (old, new, dev, unknown)] == [
        False, True, True, True]
    assert node_serves(old, "/v1/responses", inputs) is False
    assert node_serves(old, "/api/chat", inputs) is True
    inputs.mark_unserved(dev, "/v1/messages", now=100.0)
    assert inputs.unserved_by(dev, "/v1/messages", now=150.0)
    assert not inputs.unserved_by(dev, "/api/chat", now=150.0)
    assert not inputs.unserved_by(dev, "/v1/messages", now=100.0 + 301)  # for a while only
    inputs.mark_unserved(dev, "/v1/messages", now=100.0)
    upgraded = node("dev", "0.40.8")
    assert not inputs.unserved_by(upgraded, "/v1/messages", now=150.0)  # a new Ollama


def test_no_node_serving_the_path_is_a_404_naming_the_version() -> None:
    snapshot = FleetSnapshot(nodes={"a": node("a", "0.13.0"), "b": node("b", "0.12.1")})
    context = ScoringContext(settings=Settings(), snapshot=snapshot)
    request = RouteRequest(request_id="r", api="anthropic", endpoint="messages", model=M,
                           body={}, raw=b"{}", path="/v1/messages")
    error = unserved_path(request, context)
    assert isinstance(error, EndpointUnserved) and error.status_code == 404
    assert "Ollama 0.14.0 or later" in error.message and "0.12.1, 0.13.0" in error.message
    assert RetryPlan(2).nothing_to_try(request, context) is not None
    assert isinstance(RetryPlan(2).nothing_to_try(request, context), EndpointUnserved)
    request.path = "/api/chat"
    assert unserved_path(request, context) is None
    # a node answering 404 for the path is no retry of the budget
    plan = RetryPlan(0)
    for node_id in ("a", "b", "c"):
        plan.failed(node_id, PathMissing(f"{node_id} does not serve it", 404), request)
    assert plan.unserved == 3


def test_context_protection_leaves_the_agent_apis_bodies_as_sent() -> None:
    from plugins.routing.transforms import ContextProtection
    from shared.models import LoadedModel

    loaded = NodeState(node_id="a", ollama_url="http://x", models_available=(M,),
                       models_loaded=(LoadedModel(name=M, context_length=8192),))
    context = ScoringContext(settings=Settings(), snapshot=FleetSnapshot(nodes={"a": loaded}))
    chat = parse_request(b'{"model": "llama3.2:3b", "messages": []}', "/api/chat", {}, "")
    ContextProtection().apply(chat, context)
    assert chat.node_num_ctx == {"a": 8192}  # a chat inherits the loaded copy's context
    form = parse_request(FORM.replace(b"whisper-1", M.encode()), "/v1/audio/transcriptions",
                         FORM_HEADERS, "")
    raw = b'{"model": "llama3.2:3b", "max_tokens": 5, "messages": []}'
    messages = parse_request(raw, "/v1/messages", {}, "")
    for request in (form, messages):
        ContextProtection().apply(request, context)
        assert request.node_num_ctx == {} and request.payload_for("a") == request.raw
