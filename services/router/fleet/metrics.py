"""Prometheus metrics of this process: request counters and histograms, counted per request.

A request adds to plain dicts (a few microseconds); the metric families are built from them
only when /metrics is scraped. prometheus_client's own Counter and Histogram take a lock
per increment and walk every bucket per observation: with labels() lookups that was tens
of microseconds per request, a measurable share of the router's budget. Everything here
runs on the event loop's thread, the scrape included, so no lock is needed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.models import Trace, TraceStatus
from shared.routing import NO_APP

__all__ = ["REGISTRY", "observe", "refused"]

_LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Most requests wait 0 s; the top bound is the default queue_timeout.
_QUEUE_WAIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# The app is a client key's app, else the request's first tag, which any client may invent:
# past this many distinct apps a process counts the rest under OTHER_APP.
MAX_APPS = 200
OTHER_APP = "(other)"

_ERROR_STATUSES = frozenset({TraceStatus.FAILED, TraceStatus.INCOMPLETE})

Pair = tuple[str, str]  # model, node
Series = Sequence[tuple[tuple[str, ...], float]]  # label values -> value
_Key = TypeVar("_Key", bound=tuple[str, ...])


class _Histogram:
    """Counts per bucket (the last is +Inf) and the sum, not yet cumulative."""

    __slots__ = ("counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def cumulative(self, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*map(float, bounds), float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class _Tally(Collector):
    """This process's counts, exported as the families herd_requests_total and so on."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], float] = {}
        self.errors: dict[Pair, float] = {}
        self.retries: dict[Pair, float] = {}
        self.tokens: dict[tuple[str, str, str], float] = {}
        self.cold_loads: dict[Pair, float] = {}
        self.refused: dict[Pair, float] = {}  # (app, status code)
        self.latency: dict[Pair, _Histogram] = {}
        self.ttft: dict[Pair, _Histogram] = {}
        self.queue_wait: dict[tuple[str], _Histogram] = {}
        self.app_tokens: dict[tuple[str, str], float] = {}  # (app, kind)
        self.apps: set[str] = set()  # the apps counted under their own name

    def describe(self) -> list[Metric]:
        return []  # collected only on a scrape: no names to check at registration

    def collect(self) -> Iterator[Metric]:
        counters: tuple[tuple[str, str, list[str], Series], ...] = (
            ("herd_requests", "Requests finished, by model, node and final status.",
             ["model", "node", "status"], list(self.requests.items())),
            ("herd_errors", "Requests that ended in an error (failed or incomplete).",
             ["model", "node"], list(self.errors.items())),
            ("herd_retries", "Retries on another node after a failure.", ["model", "node"],
             list(self.retries.items())),
            ("herd_tokens", "Tokens processed, by kind (prompt or completion).",
             ["model", "node", "kind"], list(self.tokens.items())),
            ("herd_cold_loads", "Requests that made the node load the model first.",
             ["model", "node"], list(self.cold_loads.items())),
            ("herd_rejected_requests", "Requests refused before routing for their credential "
             "or their app's limit: 401, 403, 429, by the key's app ('(none)' without a valid "
             "key) and status code.", ["app", "code"], list(self.refused.items())),
        )
        for name, doc, labels, values in counters:
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, value in values:
                family.add_metric(list(key), value)
            yield family
        histograms = (
            ("herd_request_latency_seconds", "Whole-request latency seen by Herd.",
             self.latency, _LATENCY_BUCKETS_S),
            ("herd_time_to_first_token_seconds", "Time until the first token reached Herd.",
             self.ttft, _TTFT_BUCKETS_S),
        )
        for name, doc, series, bounds in histograms:
            hist = HistogramMetricFamily(name, doc, labels=["model", "node"])
            for pair, h in series.items():
                hist.add_metric(list(pair), h.cumulative(bounds), h.total)
            yield hist
        wait = HistogramMetricFamily("herd_queue_wait_seconds", "Time a request waited in the "
                                     "fleet's queue for a slot.", labels=["model"])
        for (model,), h in self.queue_wait.items():
            wait.add_metric([model], h.cumulative(_QUEUE_WAIT_BUCKETS_S), h.total)
        yield wait
        app_tokens = CounterMetricFamily(
            "herd_app_tokens", "Tokens processed per app (the client key's app, else the "
            "request's first tag), by kind.", labels=["app", "kind"])
        for key, value in list(self.app_tokens.items()):
            app_tokens.add_metric(list(key), value)
        yield app_tokens


_TALLY = _Tally()
# Own registry: the process's default one would also export Python internals per scrape.
REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(_TALLY)


def _add(table: dict[Pair, float], key: Pair, amount: float = 1.0) -> None:
    table[key] = table.get(key, 0.0) + amount


def _observe(series: dict[_Key, _Histogram], key: _Key, bounds: tuple[float, ...],
             value: float) -> None:
    hist = series.get(key)
    if hist is None:
        hist = series[key] = _Histogram(bounds)
    hist.counts[bisect_left(bounds, value)] += 1  # first bound >= value: Prometheus's "le"
    hist.total += value


def observe(trace: Trace) -> None:
    """Count one finished request in this process's metrics (a few dict updates)."""
    tally = _TALLY
    node = trace.node_id or "none"
    # A rejected request may name any model a client typed; keep label sets bounded.
    model = trace.model if trace.node_id else "(none)"
    pair = (model, node)
    key = (model, node, str(trace.status))
    tally.requests[key] = tally.requests.get(key, 0.0) + 1
    if trace.status in _ERROR_STATUSES:
        _add(tally.errors, pair)
    if trace.retry_count:
        _add(tally.retries, pair, trace.retry_count)
    if trace.node_id or trace.queue_wait_ms > 0:
        # It reached the queue, so its model is one the fleet has; a queue timeout (rejected)
        # counts too: those are the longest waits.
        _observe(tally.queue_wait, (trace.model,), _QUEUE_WAIT_BUCKETS_S,
                 trace.queue_wait_ms / 1000.0)
    if trace.status is TraceStatus.REJECTED:
        return
    if trace.prompt_tokens:
        kind = (model, node, "prompt")
        tally.tokens[kind] = tally.tokens.get(kind, 0.0) + trace.prompt_tokens
    if trace.completion_tokens:
        kind = (model, node, "completion")
        tally.tokens[kind] = tally.tokens.get(kind, 0.0) + trace.completion_tokens
    if trace.prompt_tokens or trace.completion_tokens:
        _count_app_tokens(tally, trace)
    if trace.load_duration_ms > 0:
        _add(tally.cold_loads, pair)
    _observe(tally.latency, pair, _LATENCY_BUCKETS_S, trace.latency_ms / 1000.0)
    if trace.time_to_first_token_ms is not None:
        _observe(tally.ttft, pair, _TTFT_BUCKETS_S, trace.time_to_first_token_ms / 1000.0)


def _count_app_tokens(tally: _Tally, trace: Trace) -> None:
    app = trace.app or NO_APP
    if app not in tally.apps:
        if len(tally.apps) >= MAX_APPS:
            app = OTHER_APP
        else:
            tally.apps.add(app)
    table = tally.app_tokens
    if trace.prompt_tokens:
        key = (app, "prompt")
        table[key] = table.get(key, 0.0) + trace.prompt_tokens
    if trace.completion_tokens:
        key = (app, "completion")
        table[key] = table.get(key, 0.0) + trace.completion_tokens


# Refusals count as rejected requests of no model and no node, as a request rejected
# before routing does (observe), so herd_requests_total still counts every request.
_REFUSED_KEY = ("(none)", "none", str(TraceStatus.REJECTED))


def refused(app: str, status: int) -> None:
    """Count one request refused at the door (401, 403, 429); `app` is the key's app or
    '(none)', so the label set stays as small as the number of keys."""
    tally = _TALLY
    _add(tally.refused, (app, str(status)))
    tally.requests[_REFUSED_KEY] = tally.requests.get(_REFUSED_KEY, 0.0) + 1
