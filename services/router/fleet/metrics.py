"""Prometheus metrics of this process: request counters and histograms, counted per request."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
)

from shared.models import Trace, TraceStatus

__all__ = ["REGISTRY", "observe"]

# Own registry: the process's default one would also export Python internals per scrape, and
# a test process that builds several apps must not register the same names twice.
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "herd_requests", "Requests finished, by model, node and final status.",
    ["model", "node", "status"], registry=REGISTRY,
)
ERRORS = Counter(
    "herd_errors", "Requests that ended in an error (failed or incomplete).",
    ["model", "node"], registry=REGISTRY,
)
RETRIES = Counter(
    "herd_retries", "Retries on another node after a failure.", ["model", "node"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "herd_tokens", "Tokens processed, by kind (prompt or completion).",
    ["model", "node", "kind"], registry=REGISTRY,
)
COLD_LOADS = Counter(
    "herd_cold_loads", "Requests that made the node load the model first.",
    ["model", "node"], registry=REGISTRY,
)
LATENCY = Histogram(
    "herd_request_latency_seconds", "Whole-request latency seen by Herd.",
    ["model", "node"], buckets=_LATENCY_BUCKETS_S, registry=REGISTRY,
)
TTFT = Histogram(
    "herd_time_to_first_token_seconds", "Time until the first token reached Herd.",
    ["model", "node"], buckets=_TTFT_BUCKETS_S, registry=REGISTRY,
)

_ERROR_STATUSES = frozenset({TraceStatus.FAILED, TraceStatus.INCOMPLETE})


def observe(trace: Trace) -> None:
    """Count one finished request in this process's metrics (cheap: a few dict lookups)."""
    node = trace.node_id or "none"
    # A rejected request may name any model a client typed; keep label sets bounded.
    model = trace.model if trace.node_id else "(none)"
    REQUESTS.labels(model, node, str(trace.status)).inc()
    if trace.status in _ERROR_STATUSES:
        ERRORS.labels(model, node).inc()
    if trace.retry_count:
        RETRIES.labels(model, node).inc(trace.retry_count)
    if trace.status is TraceStatus.REJECTED:
        return
    if trace.prompt_tokens:
        TOKENS.labels(model, node, "prompt").inc(trace.prompt_tokens)
    if trace.completion_tokens:
        TOKENS.labels(model, node, "completion").inc(trace.completion_tokens)
    if trace.load_duration_ms > 0:
        COLD_LOADS.labels(model, node).inc()
    LATENCY.labels(model, node).observe(trace.latency_ms / 1000.0)
    if trace.time_to_first_token_ms is not None:
        TTFT.labels(model, node).observe(trace.time_to_first_token_ms / 1000.0)
