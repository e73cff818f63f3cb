"""Error shapes: Ollama's on /api/*, OpenAI's on /v1/* (clients parse these)."""

from __future__ import annotations

from shared.errors import ModelNotFound, QueueFull, RefusedByNode, UpstreamError, error_body


def test_ollama_shape() -> None:
    error = ModelNotFound("x")
    assert error_body("/api/chat", error.status_code, error.message, error) == {
        "error": 'model "x" not found, try pulling it first'
    }
    assert error.status_code == 404


def test_openai_shape() -> None:
    error = ModelNotFound("x")
    body = error_body("/v1/chat/completions", 404, error.message, error)
    assert body == {
        "error": {
            "message": 'model "x" not found, try pulling it first',
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    }


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
