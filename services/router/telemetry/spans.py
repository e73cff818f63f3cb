"""The request path's spans over the OpenTelemetry SDK (imported only when tracing is on).

Per request (`RequestSpans`), in the OpenTelemetry GenAI semantic conventions:

    chat llama3.2:3b          SERVER  the request, from its first byte to its end; a
    │                                 client's W3C `traceparent` makes it a child of theirs
    ├── queue wait            INTERNAL taking a slot: the Redis call and any wait in the queue
    └── node call             CLIENT  one per attempt on a node; its context is the
                                      `traceparent` the node receives

Spans go to a BatchSpanProcessor: ending one appends it to a queue, and a thread of the
SDK encodes and sends batches, so the request path never waits on the collector. A
collector that cannot be reached loses spans (the queue drops what does not fit), never
requests, and the log says so once per outage (`_Exporter`), not once per batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit

from litestar.types import Message, Send
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.router.nodes import UpstreamFailure
from shared.errors import HerdError
from shared.models import NodeState, Trace, TraceStatus
from shared.routing import RouteRequest

__all__ = ["OPERATIONS", "RequestSpans", "Tracing"]

log = logging.getLogger("herd.telemetry")

# gen_ai.operation.name per inference path (the GenAI conventions' well-known values).
OPERATIONS: dict[str, str] = {
    "/api/chat": "chat",
    "/v1/chat/completions": "chat",
    "/api/generate": "text_completion",
    "/v1/completions": "text_completion",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "chat",
    "/v1/responses": "chat",
    "/v1/audio/transcriptions": "generate_content",
    "/v1/audio/speech": "generate_content",
}
PROVIDER = "ollama"  # gen_ai.provider.name: every node speaks Ollama's server
# The SDK's own loggers: what they would say per batch (an export failed, the queue is
# full) is said once by _Exporter instead.
_QUIET = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
          "opentelemetry.sdk._shared_internal")
# The batch processor warns of a full queue once per span dropped, on the request path: a
# log record costs more than the span. Below ERROR it is not even built.
_QUEUE_LOGGER = "opentelemetry.sdk._shared_internal"
_ENDED_BADLY = {TraceStatus.FAILED, TraceStatus.INCOMPLETE}
# Encoding a span takes ~50 µs of Python under the GIL; a batch of 512 in one go would hold
# the event loop off for up to the interpreter's 5 ms switch interval at a time. Encoded a
# few at a time with a short sleep between (the sleep releases the GIL to the loop), a
# request waits at most one piece (BENCHMARKS.md, "OpenTelemetry").
PIECE_SPANS = 8
PIECE_PAUSE_S = 0.0002


def _ns_since(t0: float) -> int:
    """The epoch time in ns of `t0`, a perf_counter() reading."""
    return time.time_ns() - int((time.perf_counter() - t0) * 1e9)


@lru_cache(maxsize=4096)
def _address(url: str) -> tuple[str, int]:
    """server.address and server.port of a node's Ollama URL."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


class _Reasons(logging.Filter):
    """Keeps the SDK's last words about an export instead of letting them through."""

    def __init__(self) -> None:
        super().__init__()
        self.last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        self.last = record.getMessage()
        return False


class _Exporter(SpanExporter):
    """The OTLP/HTTP exporter, saying in the log when the collector stops taking spans
    (once, with the SDK's reason) and when it takes them again."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.inner = OTLPSpanExporter(endpoint=endpoint)
        self.down = False
        self.closed = False
        self.reasons = _Reasons()
        for name in _QUIET:
            logging.getLogger(name).addFilter(self.reasons)
        queue_logger = logging.getLogger(_QUEUE_LOGGER)
        self.queue_level = queue_logger.level
        queue_logger.setLevel(logging.ERROR)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._send(spans)
        if result is SpanExportResult.SUCCESS:
            if self.down:
                self.down = False
                log.info("the OpenTelemetry collector takes spans again",
                         extra={"endpoint": self.endpoint})
        elif not self.down and not self.closed:
            self.down = True
            log.warning("cannot export spans to the OpenTelemetry collector: spans are "
                        "dropped until it answers (requests are not affected)",
                        extra={"endpoint": self.endpoint, "error": self.reasons.last})
        return result

    def _send(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """One POST of the batch, encoded piece by piece: serialized protobuf messages
        concatenate into their merge, here one request with a ResourceSpans per piece."""
        client = getattr(self.inner, "_client", None)
        if client is None or len(spans) <= PIECE_SPANS:  # an SDK that sends only whole
            return self.inner.export(spans)
        pieces = []
        for start in range(0, len(spans), PIECE_SPANS):
            pieces.append(encode_spans(spans[start:start + PIECE_SPANS])
                          .SerializePartialToString())
            time.sleep(PIECE_PAUSE_S)
        if self.closed:
            return SpanExportResult.FAILURE
        sent = client.export(b"".join(pieces))
        return SpanExportResult.SUCCESS if sent.success else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        if not self.closed:
            self.closed = True
            self.inner.shutdown()  # type: ignore[no-untyped-call]

    def release(self) -> None:
        """Give the SDK's loggers back, once nothing is exported any more."""
        for name in _QUIET:
            logging.getLogger(name).removeFilter(self.reasons)
        logging.getLogger(_QUEUE_LOGGER).setLevel(self.queue_level)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Tracing:
    """One replica's tracer: the SDK's provider, its batch processor and the exporter.

    The resource is `service.name=herd` (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    win), the package version and the replica's id; the sampler is the SDK's default
    (parent-based, always on; OTEL_TRACES_SAMPLER changes it), the batches OTEL_BSP_*'s.
    """

    def __init__(self, endpoint: str, replica_id: str) -> None:
        self.endpoint = endpoint.rstrip("/") + "/v1/traces"
        try:
            herd_version = version("herd")
        except PackageNotFoundError:
            herd_version = "unknown"
        resource = Resource.create({
            "service.name": "herd", "service.version": herd_version,
            "service.instance.id": replica_id,
        }).merge(OTELResourceDetector().detect())
        self.exporter = _Exporter(self.endpoint)
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("herd.router", herd_version)
        self.propagator = TraceContextTextMapPropagator()

    def request(self, headers: Mapping[str, str], path: str, request: RouteRequest, *,
                trace: Trace, t0: float) -> RequestSpans:
        """The spans of a request that arrived at `t0` (perf_counter) with `headers`;
        `trace` is its trace, which the request path fills in as it goes."""
        return RequestSpans(self, headers, path, request, trace=trace, t0=t0)

    async def close(self) -> None:
        """Send what is queued and stop. A collector already known to be down is not
        waited for (its retries are cut short): the shutdown stays quick."""
        if self.exporter.down:
            self.exporter.shutdown()
        try:
            await asyncio.to_thread(self.provider.shutdown)
        finally:
            self.exporter.release()


class RequestSpans:
    """One request's spans; each method is one hook on the request path."""

    __slots__ = ("attempts", "call", "context", "error_type", "node", "operation", "request",
                 "span", "status", "trace", "tracing", "waited_ms")

    def __init__(self, tracing: Tracing, headers: Mapping[str, str], path: str,
                 request: RouteRequest, *, trace: Trace, t0: float) -> None:
        self.tracing = tracing
        # both are filled in as the request goes (its priority, its node, its tokens ...)
        # and read at the end
        self.request, self.trace = request, trace
        self.operation = OPERATIONS.get(path, "chat")
        parent: Context | None = None
        if "traceparent" in headers:
            parent = tracing.propagator.extract(headers)
        self.span: Span = tracing.tracer.start_span(
            f"{self.operation} {request.model}", context=parent, kind=SpanKind.SERVER,
            start_time=_ns_since(t0), attributes={
                "gen_ai.operation.name": self.operation,
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.request.model": request.model,
                "url.path": path,
                "herd.request_id": request.request_id,
            })
        self.context = set_span_in_context(self.span)
        self.call: Span | None = None
        self.node: NodeState | None = None
        self.attempts = 0
        self.error_type = ""
        self.status = 0  # of the answer's start, as sent to the client
        self.waited_ms = 0.0  # the trace's queue wait before this attempt's

    def watching(self, send: Send) -> Send:
        """`send`, noting the status the client is answered with."""
        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            await send(message)

        return watched

    def waited(self, node_id: str) -> None:
        """A slot was just granted on `node_id`; the trace holds the time it took."""
        waited_ms = self.trace.queue_wait_ms - self.waited_ms
        self.waited_ms = self.trace.queue_wait_ms
        now = time.time_ns()
        span = self.tracing.tracer.start_span(
            "queue wait", context=self.context, start_time=now - int(waited_ms * 1e6),
            attributes={"herd.node": node_id})
        span.end(now)

    def calling(self, node: NodeState) -> bytes:
        """The node call starts: the header lines that carry its context to the node."""
        self.node = node
        self.attempts += 1
        host, port = _address(node.ollama_url)
        call = self.call = self.tracing.tracer.start_span(
            "node call", context=self.context, kind=SpanKind.CLIENT, attributes={
                "server.address": host, "server.port": port, "herd.node": node.node_id,
                "herd.attempt": self.attempts})
        ids = call.get_span_context()
        line = b"traceparent: 00-%032x-%016x-%02x\r\n" % (
            ids.trace_id, ids.span_id, ids.trace_flags)
        if ids.trace_state:
            line += b"tracestate: %s\r\n" % ids.trace_state.to_header().encode()
        return line

    def call_failed(self, failure: UpstreamFailure) -> None:
        """The node call failed before anything reached the client (retried elsewhere, or
        the request's own error)."""
        call, self.call = self.call, None
        if call is None:
            return
        attributes: dict[str, str | int] = {"error.type": type(failure).__name__,
                                            "herd.blame": str(failure.blame)}
        if failure.status:
            attributes["http.response.status_code"] = failure.status
        call.set_attributes(attributes)
        call.set_status(StatusCode.ERROR, failure.reason[:300])
        call.end()

    def refused(self, exc: HerdError) -> None:
        """The client is answered with `exc` (Herd's error, in the API's own shape)."""
        self.error_type = type(exc).__name__

    def end(self) -> None:
        """The request ended, as its trace tells."""
        trace, status = self.trace, self.status
        node_status = status if self.call is not None else 0
        error_type = self.error_type
        if not error_type and trace.status is not TraceStatus.COMPLETED:
            error_type = str(status) if trace.status is TraceStatus.REJECTED and status \
                else str(trace.status)
        call, self.call = self.call, None
        if call is not None:
            if node_status:
                call.set_attribute("http.response.status_code", node_status)
            if trace.status is TraceStatus.INCOMPLETE:
                call.set_attribute("error.type", error_type)
                call.set_status(StatusCode.ERROR, trace.error_message[:300])
            call.end()
        span = self.span
        if not span.is_recording():
            span.end()
            return
        attributes: dict[str, str | int | float | bool | list[str]] = {
            "gen_ai.response.model": trace.model,
            "gen_ai.usage.input_tokens": trace.prompt_tokens,
            "gen_ai.usage.output_tokens": trace.completion_tokens,
            "herd.status": str(trace.status),
            "herd.retries": trace.retry_count,
            "herd.queue_wait_ms": round(trace.queue_wait_ms, 3),
            "herd.affinity": trace.affinity,
            "herd.affinity_hit": trace.affinity == "hit",
            "herd.priority": self.request.priority,
        }
        if trace.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [trace.finish_reason]
        if status:
            attributes["http.response.status_code"] = status
        if self.node is not None:
            host, port = _address(self.node.ollama_url)
            attributes.update({"server.address": host, "server.port": port,
                               "herd.node": self.node.node_id})
        if trace.fallback_used:
            attributes["herd.fallback_used"] = True
        if trace.app:
            attributes["herd.app"] = trace.app
        if trace.tags:
            attributes["herd.tags"] = trace.tags
        if trace.excluded_nodes:
            attributes["herd.excluded_nodes"] = trace.excluded_nodes
        if trace.time_to_first_token_ms is not None:
            attributes["herd.time_to_first_token_ms"] = trace.time_to_first_token_ms
        if trace.load_duration_ms:
            attributes["herd.load_duration_ms"] = trace.load_duration_ms
        if error_type:
            attributes["error.type"] = error_type
        span.set_attributes(attributes)
        if trace.status in _ENDED_BADLY or status >= 500:
            span.set_status(StatusCode.ERROR, trace.error_message[:300])
        span.end()
