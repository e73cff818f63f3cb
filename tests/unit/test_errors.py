"""Error shapes: Ollama's on /api/*, Anthropic's on /v1/messages, OpenAI's on the rest of
/v1/* (clients parse these)."""

from __future__ import annotations

import pytest

from shared.errors import (
    ModelNotFound,
    QueueFull,
    RateLimited,
    RefusedByNode,
    StateUnavailable,
    Unauthorized,
    UpstreamError,
    error_body,
)


def test_ollama_shape() -> None:
    error = ModelNotFound("x")
    assert error_body("/api/chat", error.status_code, error.message, error) == {
        "error": 'model "x" not found, try pulling it first'
    }
    assert error.status_code == 404


def test_openai_shape_words_an_unknown_model_as_ollama_does() -> None:
    error = ModelNotFound("x")
    body = error_body("/v1/chat/completions", 404, error.message, error)
    assert body == {
        "error": {
            "message": 'model "x" not found, try pulling it first',
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
    }


@pytest.mark.parametrize(("error", "kind"), [
    (ModelNotFound("x"), "not_found_error"),
    (Unauthorized("no key"), "authentication_error"),
    (RateLimited("slow down", 3), "rate_limit_error"),
    (StateUnavailable(), "overloaded_error"),
    (UpstreamError("node failed"), "api_error"),
    (RefusedByNode("bad option", 500), "invalid_request_error"),
])
def test_anthropic_shape_on_the_messages_paths(error: Exception, kind: str) -> None:
    assert isinstance(error, ModelNotFound | Unauthorized | RateLimited | StateUnavailable
                      | UpstreamError | RefusedByNode)
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        assert error_body(path, error.status_code, error.message, error) == {
            "type": "error", "error": {"type": kind, "message": error.message}}


def test_queue_full_carries_retry_after() -> None:
    error = QueueFull("busy", retry_after=7)
    assert error.status_code == 503
    assert error.headers == {"Retry-After": "7"}


def test_a_nodes_refusal_is_the_clients_400_in_the_nodes_words_in_either_shape() -> None:
    message = "model requires more system memory (30.2 GiB) than is available (22.4 GiB)"
    error = RefusedByNode(message, 500)
    assert (error.status_code, error.node_status) == (400, 500)
    assert not isinstance(error, UpstreamError)
    assert error_body("/api/chat", error.status_code, error.message, error) == {
        "error": message}
    assert error_body("/v1/chat/completions", 400, error.message, error)["error"] == {
        "message": message, "type": "invalid_request_error", "param": None, "code": None}
