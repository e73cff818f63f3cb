"""A local OTLP/HTTP trace receiver: a collector's `/v1/traces` on 127.0.0.1, in a thread,
decoding what it is sent (opentelemetry-proto's ExportTraceServiceRequest)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

__all__ = ["OtlpReceiver", "ReceivedSpan"]

KINDS = {ProtoSpan.SPAN_KIND_INTERNAL: "internal", ProtoSpan.SPAN_KIND_SERVER: "server",
         ProtoSpan.SPAN_KIND_CLIENT: "client"}
STATUSES = {Status.STATUS_CODE_UNSET: "unset", Status.STATUS_CODE_OK: "ok",
            Status.STATUS_CODE_ERROR: "error"}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    kind: str
    attributes: dict[str, Any]
    status: str
    status_message: str
    start_ns: int
    end_ns: int
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


class OtlpReceiver:
    """Collects every span posted to `url + "/v1/traces"` (protobuf, uncompressed); with
    `keep=False` only parses and counts them, as cheaply as a collector in C would."""

    def __init__(self, port: int = 0, *, keep: bool = True) -> None:
        self.spans: list[ReceivedSpan] = []
        self.keep = keep
        self.counted = 0
        self.posts = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                data = self.rfile.read(length)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.take(data)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self, data: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(data)
        if not self.keep:
            counted = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            with self.lock:
                self.posts += 1
                self.counted += counted
            return
        found: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(ReceivedSpan(
                        name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(), kind=KINDS.get(span.kind, "other"),
                        attributes=_attributes(span.attributes),
                        status=STATUSES[span.status.code], status_message=span.status.message,
                        start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                        resource=resource, scope=scope_spans.scope.name,
                    ))
        with self.lock:
            self.posts += 1
            self.spans.extend(found)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def by_request(self, request_id: str) -> list[ReceivedSpan]:
        """Every span of the trace whose request span carries `herd.request_id`."""
        with self.lock:
            roots = [s for s in self.spans if s.attributes.get("herd.request_id") == request_id]
        return self.trace(roots[0].trace_id) if roots else []

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    """Run a receiver as a process of its own (the overhead benchmark's collector), which
    only counts what it parses: on SIGTERM it prints how many spans and batches it got."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    receiver = OtlpReceiver(args.port, keep=False)
    signal.signal(signal.SIGTERM, lambda *_: receiver.server.shutdown())
    receiver.thread.start()
    receiver.thread.join()
    receiver.server.server_close()
    print(f"{receiver.counted} spans received in {receiver.posts} batches", flush=True)


if __name__ == "__main__":
    main()
