"""The OTLP protobuf Herd writes, decoded by opentelemetry-proto's generated classes, and
the samplers named by OTEL_TRACES_SAMPLER."""

from __future__ import annotations

import random

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from services.router.telemetry import otlp
from services.router.telemetry.spans import sampler
from tests.otlp import _attributes

RESOURCE = otlp.resource({"service.name": "herd", "service.instance.id": "r1", "pid": 42})
SCOPE = otlp.scope("herd.router", "1.2.3")


def record(name: str, **attributes: otlp.AttributeValue) -> otlp.SpanRecord:
    span = otlp.SpanRecord((random.getrandbits(128), random.getrandbits(64),
                            random.getrandbits(64)), name, otlp.KIND_CLIENT,
                           start_ns=1_700_000_000_000_000_000, attributes=dict(attributes))
    span.end_ns = span.start_ns + 1234
    return span


def decode(data: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    return request


def test_every_field_and_attribute_type_decodes_as_written() -> None:
    span = record("node call", text="llama3.2:3b", empty="", unicode="ü→✓", yes=True,
                  no=False, count=11434, zero=0, negative=-5, big=2**40, ratio=0.125,
                  tags=["docs", "search"], none_listed=[])
    span.trace_state = "vendor=abc,other=x"
    span.error = "n0 answered 500: model failed"
    root = record("chat llama3.2:3b", **{"x" * 300: "a long key", "long": "v" * 5000})
    root.parent_id, root.kind = 0, otlp.KIND_SERVER
    request = decode(otlp.encode_resource_spans(RESOURCE, SCOPE, [span, root]))

    [resource_spans] = request.resource_spans
    assert _attributes(resource_spans.resource.attributes) == {
        "service.name": "herd", "service.instance.id": "r1", "pid": 42}
    [scope_spans] = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("herd.router", "1.2.3")
    got, got_root = scope_spans.spans
    assert got.trace_id == span.trace_id.to_bytes(16, "big")
    assert got.span_id == span.span_id.to_bytes(8, "big")
    assert got.parent_span_id == span.parent_id.to_bytes(8, "big")
    assert (got.name, got.kind) == ("node call", Span.SPAN_KIND_CLIENT)
    assert (got.start_time_unix_nano, got.end_time_unix_nano) == (span.start_ns, span.end_ns)
    assert got.trace_state == "vendor=abc,other=x"
    assert got.status.code == Status.STATUS_CODE_ERROR
    assert got.status.message == "n0 answered 500: model failed"
    assert _attributes(got.attributes) == {
        "text": "llama3.2:3b", "empty": "", "unicode": "ü→✓", "yes": True, "no": False,
        "count": 11434, "zero": 0, "negative": -5, "big": 2**40, "ratio": 0.125,
        "tags": ["docs", "search"], "none_listed": []}
    # bools keep their type beside equal ints, in the encodings kept for reuse
    assert type(_attributes(got.attributes)["yes"]) is bool
    assert got_root.parent_span_id == b"" and got_root.kind == Span.SPAN_KIND_SERVER
    assert got_root.status.code == Status.STATUS_CODE_UNSET and got_root.trace_state == ""
    assert _attributes(got_root.attributes) == {"x" * 300: "a long key", "long": "v" * 5000}


def test_pieces_concatenate_into_one_request_and_reused_encodings_stay_right() -> None:
    spans = [record("queue wait", node=f"n{i % 3}", flag=i % 2 == 0, attempt=i % 2)
             for i in range(50)]
    data = b"".join(otlp.encode_resource_spans(RESOURCE, SCOPE, spans[i:i + 16])
                    for i in range(0, 50, 16))
    request = decode(data)
    assert len(request.resource_spans) == 4
    got = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [_attributes(s.attributes) for s in got] == [
        {"node": f"n{i % 3}", "flag": i % 2 == 0, "attempt": i % 2} for i in range(50)]
    assert [s.span_id for s in got] == [s.span_id.to_bytes(8, "big") for s in spans]


@pytest.mark.parametrize(("name", "argument", "root", "sampled_parent", "unsampled_parent"), [
    ("", "", True, True, False),  # parentbased_always_on, the default
    ("parentbased_always_on", "", True, True, False),
    ("parentbased_always_off", "", False, True, False),
    ("always_on", "", True, True, True),
    ("always_off", "", False, False, False),
    ("no_such_sampler", "", True, True, False),  # said in the log; the default applies
])
def test_samplers_follow_their_name(name: str, argument: str, root: bool,
                                    sampled_parent: bool, unsampled_parent: bool) -> None:
    sample = sampler(name, argument)
    trace_id = random.getrandbits(128)
    assert sample(trace_id, None) is root
    assert sample(trace_id, True) is sampled_parent
    assert sample(trace_id, False) is unsampled_parent


def test_a_ratio_keeps_its_share_of_trace_ids_and_every_service_agrees_on_each() -> None:
    sample = sampler("traceidratio", "0.1")
    ids = [random.getrandbits(128) for _ in range(20000)]
    kept = [t for t in ids if sample(t, None)]
    assert 0.08 < len(kept) / len(ids) < 0.12
    # decided by the low 64 bits against round(ratio * 2^64), as the SDK does
    bound = round(0.1 * 2**64)
    assert all((t & (2**64 - 1)) < bound for t in kept)
    assert sample(bound - 1, None) and not sample(bound, None)
    assert sample((7 << 64) + bound - 1, None)  # the high bits play no part
    assert sample(ids[0], False) is (ids[0] in kept)  # not parent-based: the ratio decides
    based = sampler("parentbased_traceidratio", "0.1")
    assert based(2**64 - 1, True) and not based(0, False)
    assert sampler("traceidratio", "nonsense")(2**64 - 1, None)  # a bad ratio: 1
