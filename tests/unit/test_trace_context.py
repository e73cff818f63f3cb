"""A client's W3C trace context, read by the request's spans and passed on to the node:
which `traceparent` headers are continued, and what the node receives."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest

from services.router.telemetry.spans import RequestSpans, Tracing
from shared.models import NodeState, Trace
from shared.routing import RouteRequest
from tests.helpers import free_port

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
NODE = NodeState(node_id="n0", ollama_url="http://127.0.0.1:11434")
FORWARDED = re.compile(rb"traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\r\n")


@pytest.fixture(scope="module")
def tracing() -> Iterator[Tracing]:
    # nothing listens on the collector's port: these spans are never read, only built
    tracer = Tracing(f"http://127.0.0.1:{free_port()}", "r1")
    yield tracer
    tracer.batches.exporter.shutdown()  # type: ignore[no-untyped-call]
    asyncio.run(tracer.close())


def spans(tracing: Tracing, **headers: str) -> RequestSpans:
    request = RouteRequest(request_id="req-1", api="ollama", endpoint="/api/chat",
                           model="llama3.2:3b", body={}, raw=b"")
    trace = Trace(request_id="req-1", model="llama3.2:3b", original_model="llama3.2:3b")
    return tracing.request(headers, "/api/chat", request, trace=trace, t0=0.0)


def forwarded(spans: RequestSpans) -> tuple[str, str, int, bytes]:
    """The trace id, span id and flags the node receives, and the whole header lines."""
    lines = spans.calling(NODE)
    found = FORWARDED.match(lines)
    assert found is not None, lines
    return found[1].decode(), found[2].decode(), int(found[3], 16), lines


@pytest.mark.parametrize(("header", "sampled"), [
    (f"00-{TRACE}-{SPAN}-01", True),
    (f"00-{TRACE}-{SPAN}-00", False),
    (f"  00-{TRACE.upper()}-{SPAN}-01 ", True),  # read leniently
    (f"01-{TRACE}-{SPAN}-01-what-a-later-version-adds", True),  # a later version's prefix
])
def test_a_valid_traceparent_is_continued(tracing: Tracing, header: str, sampled: bool) -> None:
    request = spans(tracing, traceparent=header, tracestate="vendor=abc")
    assert request.root.trace_id == int(TRACE, 16)
    assert request.root.parent_id == int(SPAN, 16)
    assert (request.records is not None) is sampled  # parentbased: the client decides
    trace_id, span_id, flags, lines = forwarded(request)
    assert trace_id == TRACE and span_id != SPAN and flags == int(sampled)
    assert lines.endswith(b"tracestate: vendor=abc\r\n")
    if sampled:
        assert request.call is not None and request.call.parent_id == request.root.span_id


@pytest.mark.parametrize("header", [
    f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
    f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
    f"00-{'0' * 32}-{SPAN}-01",  # all-zero ids are invalid
    f"00-{TRACE}-{'0' * 16}-01",
    f"00-{TRACE[:-1]}-{SPAN}-01",
    "not a traceparent",
])
def test_an_invalid_traceparent_starts_a_trace_of_its_own(tracing: Tracing, header: str) -> None:
    request = spans(tracing, traceparent=header, tracestate="vendor=abc")
    assert request.root.trace_id != int(TRACE, 16) and request.root.parent_id == 0
    trace_id, _, flags, lines = forwarded(request)
    assert trace_id == f"{request.root.trace_id:032x}"
    assert flags == 0x03  # sampled, and the trace id is random (W3C level 2)
    assert b"tracestate" not in lines  # the state belonged to the trace not continued


def test_a_tracestate_that_is_not_printable_ascii_or_too_long_is_not_forwarded(
    tracing: Tracing,
) -> None:
    for state in ("vendor=\x01bad", "vendor=ü", "a=" + "b" * 600):
        _, _, _, lines = forwarded(spans(tracing, traceparent=f"00-{TRACE}-{SPAN}-01",
                                         tracestate=state))
        assert b"tracestate" not in lines, state
