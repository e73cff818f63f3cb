"""The request path's spans (imported only when tracing is on).

Per request (`RequestSpans`), in the OpenTelemetry GenAI semantic conventions:

    chat llama3.2:3b          SERVER  the request, from its first byte to its end; a
    │                                 client's W3C `traceparent` makes it a child of theirs
    ├── queue wait            INTERNAL taking a slot: the Redis call and any wait in the queue
    └── node call             CLIENT  one per attempt on a node; its context is the
                                      `traceparent` the node receives

The hooks build plain records (`otlp.SpanRecord`), not the SDK's spans: its span start and
end cost ~60 µs a request on the event loop, these ~10 µs (BENCHMARKS.md, "OpenTelemetry").
The SDK still gives the resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) and the
OTLP/HTTP client (`export.py`); the sampler follows the SDK's variables and rules
(OTEL_TRACES_SAMPLER: parentbased_always_on by default, always_on, always_off,
traceidratio, parentbased_always_off, parentbased_traceidratio; OTEL_TRACES_SAMPLER_ARG).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import OTELResourceDetector, Resource

from services.router.nodes import UpstreamFailure
from services.router.telemetry import otlp
from services.router.telemetry.export import Batches
from services.router.telemetry.otlp import AttributeValue, SpanRecord
from shared.errors import HerdError
from shared.models import NodeState, Trace, TraceStatus
from shared.routing import RouteRequest

__all__ = ["OPERATIONS", "RequestSpans", "Tracing", "sampler"]

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
_ENDED_BADLY = {TraceStatus.FAILED, TraceStatus.INCOMPLETE}
# the W3C header: version, trace id, parent span id, flags (bit 0: sampled); a later
# version may add fields after these (read as version 00), version ff is invalid
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_SAMPLED, _RANDOM = 0x01, 0x02  # trace flags; "random" is W3C Trace Context level 2's
_TRACESTATE_MAX = 512  # longer is not forwarded (W3C: at least 512 must be propagated)
_ids = random.getrandbits  # what the SDK's RandomIdGenerator uses

# A sampler: (trace id, the remote parent's sampled flag or None for a root) -> record it?
Sampler = Callable[[int, "bool | None"], bool]


def sampler(name: str, argument: str) -> Sampler:
    """The sampler OTEL_TRACES_SAMPLER names, with the SDK's rules: a trace id ratio keeps
    a trace when its low 64 bits fall below ratio * 2^64 (every service that samples by
    ratio agrees on a trace); `parentbased_*` follows a remote parent's decision."""
    name = name.strip().lower() or "parentbased_always_on"
    root_name = name.removeprefix("parentbased_")
    if root_name not in {"always_on", "always_off", "traceidratio"}:
        log.warning("unknown OTEL_TRACES_SAMPLER: parentbased_always_on is used",
                    extra={"sampler": name})
        name, root_name = "parentbased_always_on", "always_on"
    if root_name == "traceidratio":
        try:
            ratio = min(max(float(argument), 0.0), 1.0)
        except ValueError:
            ratio = 1.0
        bound = round(ratio * (1 << 64))

        def root(trace_id: int) -> bool:
            return (trace_id & 0xFFFF_FFFF_FFFF_FFFF) < bound
    else:
        always = root_name == "always_on"

        def root(trace_id: int) -> bool:
            return always

    if not name.startswith("parentbased_"):
        return lambda trace_id, parent: root(trace_id)
    return lambda trace_id, parent: root(trace_id) if parent is None else parent


def _ns_since(t0: float) -> int:
    """The epoch time in ns of `t0`, a perf_counter() reading."""
    return time.time_ns() - int((time.perf_counter() - t0) * 1e9)


@lru_cache(maxsize=4096)
def _address(url: str) -> tuple[str, int]:
    """server.address and server.port of a node's Ollama URL."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


class Tracing:
    """One replica's tracer: its resource, sampler and the batches sent to the collector.

    The resource is `service.name=herd` (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    win), the package version and the replica's id.
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
        self.sample = sampler(os.environ.get("OTEL_TRACES_SAMPLER", ""),
                              os.environ.get("OTEL_TRACES_SAMPLER_ARG", ""))
        self.batches = Batches(self.endpoint, otlp.resource(resource.attributes),
                               otlp.scope("herd.router", herd_version))

    def request(self, headers: Mapping[str, str], path: str, request: RouteRequest, *,
                trace: Trace, t0: float) -> RequestSpans:
        """The spans of a request that arrived at `t0` (perf_counter) with `headers`;
        `trace` is its trace, which the request path fills in as it goes."""
        return RequestSpans(self, headers, path, request, trace=trace, t0=t0)

    async def close(self) -> None:
        """Send what is queued and stop (not waiting for a collector known to be down)."""
        await asyncio.to_thread(self.batches.close)


class RequestSpans:
    """One request's spans; each method is one hook on the request path. Not sampled, the
    request still has its ids (the node receives the trace, marked not sampled) but records
    nothing."""

    __slots__ = ("attempts", "call", "error_type", "flags", "node", "records", "request",
                 "root", "trace", "tracing", "waited_ms")

    def __init__(self, tracing: Tracing, headers: Mapping[str, str], path: str,
                 request: RouteRequest, *, trace: Trace, t0: float) -> None:
        self.tracing = tracing
        # both are filled in as the request goes (its priority, its node, its tokens ...)
        # and read at the end
        self.request, self.trace = request, trace
        operation = OPERATIONS.get(path, "chat")
        trace_id = parent_id = flags = 0
        parent_sampled: bool | None = None
        trace_state = ""
        given = headers.get("traceparent")
        if given is not None and (ids := _TRACEPARENT.fullmatch(given.strip().lower())) \
                and ids[1] != "ff" and not (ids[1] == "00" and ids[5]):
            trace_id, parent_id, flags = int(ids[2], 16), int(ids[3], 16), int(ids[4], 16)
            parent_sampled = bool(flags & _SAMPLED)
            state = headers.get("tracestate", "")
            if len(state) <= _TRACESTATE_MAX and state.isascii() and state.isprintable():
                trace_state = state  # forwarded as it came (W3C: unchanged if not ours)
        if not trace_id or not parent_id:  # all zeros is invalid: a trace of its own
            trace_id, parent_id, parent_sampled, trace_state = _ids(128) or 1, 0, None, ""
            flags = _RANDOM
        sampled = tracing.sample(trace_id, parent_sampled)
        # the flags the node receives: sampled or not, and whether the trace id is random
        self.flags = (flags & _RANDOM) | (_SAMPLED if sampled else 0)
        self.root = SpanRecord(
            (trace_id, _ids(64) or 1, parent_id), f"{operation} {request.model}",
            otlp.KIND_SERVER, start_ns=_ns_since(t0), trace_state=trace_state, attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.request.model": request.model,
                "url.path": path,
                "herd.request_id": request.request_id,
            } if sampled else {})
        # the request's finished children, when sampled
        self.records: list[SpanRecord] | None = [] if sampled else None
        self.call: SpanRecord | None = None
        self.node: NodeState | None = None
        self.attempts = 0
        self.error_type = ""
        self.waited_ms = 0.0  # the trace's queue wait before this attempt's

    def _child(self, name: str, kind: int, start_ns: int,
               attributes: dict[str, AttributeValue]) -> SpanRecord:
        root = self.root
        return SpanRecord((root.trace_id, _ids(64) or 1, root.span_id), name, kind,
                          start_ns=start_ns, attributes=attributes,
                          trace_state=root.trace_state)

    def waited(self, node_id: str) -> None:
        """A slot was just granted on `node_id`; the trace holds the time it took."""
        waited_ms = self.trace.queue_wait_ms - self.waited_ms
        self.waited_ms = self.trace.queue_wait_ms
        if self.records is None:
            return
        now = time.time_ns()
        span = self._child("queue wait", otlp.KIND_INTERNAL, now - int(waited_ms * 1e6),
                           {"herd.node": node_id})
        span.end_ns = now
        self.records.append(span)

    def calling(self, node: NodeState) -> bytes:
        """The node call starts: the header lines that carry its context to the node."""
        self.node = node
        self.attempts += 1
        root = self.root
        if self.records is None:  # not sampled: the node still gets the trace, unsampled
            span_id = _ids(64) or 1
        else:
            host, port = _address(node.ollama_url)
            self.call = self._child("node call", otlp.KIND_CLIENT, time.time_ns(), {
                "server.address": host, "server.port": port, "herd.node": node.node_id,
                "herd.attempt": self.attempts})
            span_id = self.call.span_id
        line = b"traceparent: 00-%032x-%016x-%02x\r\n" % (root.trace_id, span_id, self.flags)
        if root.trace_state:
            line += b"tracestate: %s\r\n" % root.trace_state.encode()
        return line

    def _ended(self, call: SpanRecord) -> None:
        call.end_ns = time.time_ns()
        assert self.records is not None  # a call is recorded only when sampled
        self.records.append(call)

    def call_failed(self, failure: UpstreamFailure) -> None:
        """The node call failed before anything reached the client (retried elsewhere, or
        the request's own error)."""
        call, self.call = self.call, None
        if call is None:
            return
        attributes = call.attributes
        attributes["error.type"] = type(failure).__name__
        attributes["herd.blame"] = str(failure.blame)
        if failure.status:
            attributes["http.response.status_code"] = failure.status
        call.error = failure.reason[:300]
        self._ended(call)

    def refused(self, exc: HerdError) -> None:
        """The client is answered with `exc` (Herd's error, in the API's own shape)."""
        self.error_type = type(exc).__name__

    def end(self, status: int) -> None:
        """The request ended, as its trace tells, answered with `status` (0: the client
        got no answer): its spans go to the export queue."""
        records = self.records
        if records is None:
            return
        trace = self.trace
        node_status = status if self.call is not None else 0
        error_type = self.error_type
        if not error_type and trace.status is not TraceStatus.COMPLETED:
            error_type = str(status) if trace.status is TraceStatus.REJECTED and status \
                else str(trace.status)
        call, self.call = self.call, None
        if call is not None:
            if node_status:
                call.attributes["http.response.status_code"] = node_status
            if trace.status is TraceStatus.INCOMPLETE:
                call.attributes["error.type"] = error_type
                call.error = trace.error_message[:300]
            self._ended(call)
        span = self.root
        attributes = span.attributes
        attributes.update({
            "gen_ai.response.model": trace.model,
            "gen_ai.usage.input_tokens": trace.prompt_tokens,
            "gen_ai.usage.output_tokens": trace.completion_tokens,
            "herd.status": str(trace.status),
            "herd.retries": trace.retry_count,
            "herd.queue_wait_ms": round(trace.queue_wait_ms, 3),
            "herd.affinity": trace.affinity,
            "herd.affinity_hit": trace.affinity == "hit",
            "herd.priority": self.request.priority,
        })
        if trace.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [trace.finish_reason]
        if status:
            attributes["http.response.status_code"] = status
        if self.node is not None:
            host, port = _address(self.node.ollama_url)
            attributes["server.address"], attributes["server.port"] = host, port
            attributes["herd.node"] = self.node.node_id
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
        if trace.status in _ENDED_BADLY or status >= 500:
            span.error = trace.error_message[:300]
        span.end_ns = time.time_ns()
        records.append(span)
        self.tracing.batches.put(records)
