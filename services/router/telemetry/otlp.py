"""Spans as records, and their OTLP protobuf encoding (`ExportTraceServiceRequest`).

A request's spans are plain records (`SpanRecord`) while it runs; only the export thread
turns them into OTLP's protobuf wire format, written here for the few messages a span uses
(`opentelemetry/proto/trace/v1/trace.proto`; the tests decode it with opentelemetry-proto).
Built through the generated classes, a span took ~75 µs and through the SDK's encoder
~47 µs, on the thread that holds the interpreter the event loop needs; written directly,
with each attribute's bytes kept for the next span that has the same key and value (most
do: the model, the node, the operation, the status), it takes ~13 µs (BENCHMARKS.md,
"OpenTelemetry").
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["KIND_CLIENT", "KIND_INTERNAL", "KIND_SERVER", "AttributeValue", "SpanRecord",
           "encode_resource_spans", "resource", "scope"]

AttributeValue = str | bool | int | float | Sequence[str]

# Span.SpanKind
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
_STATUS_ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR
_U64 = (1 << 64) - 1
_double = struct.Struct("<d").pack
_fixed64 = struct.Struct("<Q").pack
_CACHE_LIMIT = 4096


class SpanRecord:
    """One finished span: its ids (ints, as in the W3C traceparent), times in epoch ns,
    attributes, and an error message when it ended in error."""

    __slots__ = ("attributes", "end_ns", "error", "kind", "name", "parent_id", "span_id",
                 "start_ns", "trace_id", "trace_state")

    def __init__(self, ids: tuple[int, int, int], name: str, kind: int, *, start_ns: int,
                 attributes: dict[str, AttributeValue], trace_state: str = "") -> None:
        trace_id, span_id, parent_id = ids
        self.trace_id, self.span_id, self.parent_id = trace_id, span_id, parent_id
        self.name, self.kind, self.trace_state = name, kind, trace_state
        self.start_ns, self.end_ns = start_ns, start_ns
        self.attributes = attributes
        self.error: str | None = None  # set: the span's status is ERROR, with this message


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: object) -> bytes:
    """An AnyValue message (a sequence is an array of strings; other types as strings)."""
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & _U64)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, (list, tuple)):  # ArrayValue of strings
        items = b"".join(_field(b"\x0a", _any_value(str(item))) for item in value)
        return _field(b"\x2a", items)
    return _field(b"\x0a", str(value).encode())


def _key_value(key: str, value: object) -> bytes:
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value))


_known: dict[tuple[str, object, type], bytes] = {}


def _attributes(attributes: Mapping[str, AttributeValue]) -> bytes:
    """Each attribute as a field Span.attributes (a KeyValue)."""
    parts = []
    for key, value in attributes.items():
        if value.__class__ is list:
            parts.append(_field(b"\x4a", _key_value(key, value)))
            continue
        known = (key, value, value.__class__)  # True and 1 are equal keys, not equal values
        encoded = _known.get(known)
        if encoded is None:
            if len(_known) >= _CACHE_LIMIT:
                _known.clear()
            encoded = _known[known] = _field(b"\x4a", _key_value(key, value))
        parts.append(encoded)
    return b"".join(parts)


def _span(record: SpanRecord) -> bytes:
    name = record.name.encode()
    parts = [b"\x0a\x10", record.trace_id.to_bytes(16, "big"),
             b"\x12\x08", record.span_id.to_bytes(8, "big")]
    if record.trace_state:
        parts.append(_field(b"\x1a", record.trace_state.encode()))
    if record.parent_id:
        parts += [b"\x22\x08", record.parent_id.to_bytes(8, "big")]
    parts += [b"\x2a", _varint(len(name)), name, b"\x30", bytes((record.kind,)),
              b"\x39", _fixed64(record.start_ns), b"\x41", _fixed64(record.end_ns),
              _attributes(record.attributes)]
    if record.error is not None:
        status = _field(b"\x12", record.error.encode()) + b"\x18" + bytes((_STATUS_ERROR,))
        parts.append(_field(b"\x7a", status))
    return _field(b"\x12", b"".join(parts))  # one of ScopeSpans.spans


def resource(attributes: Mapping[str, object]) -> bytes:
    """ResourceSpans.resource: the Resource field, encoded once."""
    return _field(b"\x0a", b"".join(_field(b"\x0a", _key_value(key, value))
                                    for key, value in attributes.items()))


def scope(name: str, version: str) -> bytes:
    """ScopeSpans.scope: the InstrumentationScope field, encoded once."""
    return _field(b"\x0a", _field(b"\x0a", name.encode()) + _field(b"\x12", version.encode()))


def encode_resource_spans(resource: bytes, scope_field: bytes,
                          records: Iterable[SpanRecord]) -> bytes:
    """One ResourceSpans field of an ExportTraceServiceRequest holding `records` (with
    `resource()` and `scope()`): serialized requests concatenate into one request."""
    spans = b"".join([_span(record) for record in records])
    return _field(b"\x0a", resource + _field(b"\x12", scope_field + spans))
