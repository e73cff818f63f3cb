"""The request path's pure parts: reading a body, parsing it, and planning retries."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from services.router.nodes import ModelMissing, UpstreamFailure
from services.router.proxy.plan import RetryPlan, pick_model
from services.router.proxy.request import parse_request, read_body
from shared.errors import BadRequest, ModelNotFound, NoNodeAvailable, PayloadTooLarge, UpstreamError
from shared.models import FleetSnapshot, NodeState, NodeStatus
from shared.routing import RouteRequest

pytestmark = pytest.mark.unit


def _receiver(*parts: bytes, disconnect: bool = False) -> Any:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    if disconnect:
        messages = [messages[0] | {"more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


async def test_read_body_joins_parts_and_enforces_the_limit() -> None:
    assert await read_body(_receiver(b'{"a":', b"1}"), {}, 1) == b'{"a":1}'
    assert await read_body(_receiver(b"{", disconnect=True), {}, 1) is None
    with pytest.raises(PayloadTooLarge):
        await read_body(_receiver(b"x" * 2048), {}, 1 / 1024)
    with pytest.raises(PayloadTooLarge):  # refused on the declared size, before reading
        await read_body(_receiver(b""), {"content-length": str(10 * 1024 * 1024)}, 1)


@pytest.mark.parametrize(("raw", "message"), [
    (b"  ", "missing request body"),
    (b"{nope", "invalid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"messages": []}', "model is required"),
    (b'{"model": 7}', "model must be a string"),
])
def test_parse_rejects_what_it_cannot_route(raw: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_request(raw, "/api/chat", {}, "127.0.0.1")


def test_parse_keeps_the_raw_bytes_and_normalizes_the_model() -> None:
    raw = b'{"model": "llama3.2", "prompt": "hi", "top_p": 0.3}'
    request = parse_request(raw, "/v1/completions", {"x": "y"}, "10.0.0.9")
    assert request.model == "llama3.2:latest"
    assert (request.api, request.endpoint) == ("openai", "completions")
    assert request.payload() == raw  # forwarded unchanged
    assert request.client_ip == "10.0.0.9"
    assert len(request.request_id) == 32


def _snapshot(*models: str) -> FleetSnapshot:
    node = NodeState(node_id="n1", ollama_url="http://127.0.0.1:9", status=NodeStatus.ONLINE,
                     models_available=tuple(models))
    return FleetSnapshot(nodes={"n1": node}, taken_at=0.0)


def _request(body: dict[str, Any], headers: dict[str, str] | None = None) -> RouteRequest:
    return parse_request(msgspec.json.encode(body), "/api/chat", headers or {}, "")


def test_pick_model_never_substitutes_only_named_fallbacks() -> None:
    request = _request({"model": "big:70b", "fallback_models": ["nope:1", "small:1b"]})
    pick_model(request, _snapshot("small:1b", "other:2b"))
    assert request.model == "small:1b"
    assert request.body["model"] == "small:1b" and b'"small:1b"' in request.payload()
    with pytest.raises(ModelNotFound, match="big:70b"):
        pick_model(_request({"model": "big:70b"}), _snapshot("small:1b"))


def test_retry_plan_counts_failures_not_misses() -> None:
    plan = RetryPlan(max_retries=1)
    request = _request({"model": "m:1"})
    assert plan.slot_id("abc") == "abc"
    assert isinstance(plan.nothing_to_try(request), NoNodeAvailable)
    plan.failed("a", ModelMissing("a has no m:1", 404), request)
    plan.failed("b", ModelMissing("b has no m:1", 404), request)
    assert plan.slot_id("abc") == "abc.2"  # each attempt its own slot id
    assert isinstance(plan.nothing_to_try(request), ModelNotFound)  # only misses: a 404
    plan.failed("c", UpstreamFailure("c answered 500", 500), request)
    assert isinstance(plan.nothing_to_try(request), UpstreamError)
    with pytest.raises(UpstreamError, match="failed on 4 node"):
        plan.failed("d", UpstreamFailure("d answered 500", 500), request)
    assert plan.excluded == ["a", "b", "c", "d"]


def test_a_pinned_request_says_which_node_it_wanted() -> None:
    error = RetryPlan(2).nothing_to_try(_request({"model": "m:1"}, {"x-herd-node": "gpu-7"}))
    assert isinstance(error, NoNodeAvailable) and "'gpu-7'" in error.message
