"""The node boundary's reading of a failed answer: whose fault it is, and what the client gets.

The messages are Ollama's own (server/routes.go, server/sched.go, llm/server.go, the MLX
runner, api/types.go), in both of its shapes: `{"error": "..."}` and, on its OpenAI
endpoints, `{"error": {"message": "...", "type": "api_error"}}`.
"""

from __future__ import annotations

import msgspec
import pytest

from services.router.nodes import (
    Blame,
    ModelMissing,
    RequestRefused,
    TooLarge,
    UpstreamFailure,
    classify,
    node_message,
)

pytestmark = pytest.mark.unit

GIB = 2**30


def ollama(message: str) -> bytes:
    return msgspec.json.encode({"error": message})


def openai(message: str) -> bytes:
    return msgspec.json.encode({"error": {"message": message, "type": "api_error",
                                          "param": None, "code": None}})


MEMORY = "model requires more system memory (58.6 GiB) than is available (23.5 GiB)"


@pytest.mark.parametrize("shape", [ollama, openai])
def test_a_memory_refusal_is_too_large_with_the_nodes_figure_rounded_down(shape: object) -> None:
    body = shape(MEMORY)  # type: ignore[operator]
    failure = classify("a", 500, body)
    assert isinstance(failure, TooLarge)
    assert failure.blame is Blame.NOBODY
    assert (failure.status, failure.message, failure.body) == (500, MEMORY, body)
    # 58.6 printed from anything in [58.55, 58.65): the lower end, so never an overestimate
    assert failure.need_gb == pytest.approx(58.55 * GIB / 1e9)
    assert "a answered 500" in failure.reason and MEMORY in failure.reason


@pytest.mark.parametrize(("message", "need_gb"), [
    ("model requires 30.2 GiB but only 22.1 GiB are available (after 0.5 GiB overhead)",
     30.15 * GIB / 1e9),
    ("model requires more system memory (812.4 MiB) than is available (500.0 MiB)",
     812.35 * 2**20 / 1e9),
    ("unable to load full model on GPU", 0.0),
    ("llama-server reported out-of-memory during startup: cudaMalloc failed: out of memory",
     0.0),
])
def test_other_ollama_words_for_a_model_that_does_not_fit(message: str, need_gb: float) -> None:
    failure = classify("a", 500, ollama(message))
    assert isinstance(failure, TooLarge)
    assert failure.need_gb == pytest.approx(need_gb)


@pytest.mark.parametrize("message", [
    'option "num_ctx" must be of type integer',
    'option "stop" must be of type array',
    'template: :1:10: executing "" at <.Foo>: can\'t evaluate field Foo',
    'invalid format: "yaml"; expected "json" or a valid JSON Schema object',
])
@pytest.mark.parametrize("shape", [ollama, openai])
def test_the_requests_own_errors_are_refusals_not_failures(message: str, shape: object) -> None:
    failure = classify("a", 500, shape(message))  # type: ignore[operator]
    assert type(failure) is RequestRefused
    assert failure.blame is Blame.NOBODY
    assert failure.message == message


@pytest.mark.parametrize(("status", "body"), [
    (500, ollama("model runner has unexpectedly stopped, this may be due to resource "
                 "limitations or an internal error, check ollama server logs for details")),
    (500, ollama("an error was encountered while running the model: CUDA error: out of "
                 "memory")),  # OOM while running: the node's, not the request's
    (500, ollama("llama runner process has terminated: exit status 2")),
    (500, openai("simulated internal error")),
    (502, b"<html><body>Bad Gateway</body></html>"),
    (500, b""),
])
def test_anything_else_blames_the_model_on_that_node(status: int, body: bytes) -> None:
    failure = classify("a", status, body)
    assert type(failure) is UpstreamFailure
    assert failure.blame is Blame.MODEL
    assert failure.status == status


def test_a_busy_node_is_nobodys_fault_but_worth_another_node() -> None:
    failure = classify(
        "a", 503, ollama("server busy, please try again.  maximum pending requests exceeded"))
    assert type(failure) is UpstreamFailure
    assert failure.blame is Blame.NOBODY


def test_defaults_blame_the_node_and_a_miss_blames_nobody() -> None:
    assert UpstreamFailure("a: cannot connect").blame is Blame.NODE
    assert ModelMissing("a does not have it", 404).blame is Blame.NOBODY


def test_the_message_is_read_from_either_shape_and_bounded() -> None:
    assert node_message(ollama(" spaced ")) == "spaced"
    assert node_message(openai("inner")) == "inner"
    assert node_message(b"plain text") == "plain text"
    assert node_message(b'{"error": 5}') == '{"error": 5}'
    assert len(node_message(ollama("x" * 5000))) == 1000
