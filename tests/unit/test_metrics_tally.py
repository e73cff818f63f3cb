"""The process's Prometheus metrics: counted in plain dicts, exported in the usual shape."""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.router.fleet.metrics import (
    MAX_APPS,
    OTHER_APP,
    REGISTRY,
    _count_app_tokens,
    _Tally,
    observe,
)
from shared.models import TraceStatus
from shared.routing import NO_APP
from tests.helpers import make_trace


def samples(model: str) -> dict[tuple[str, str], float]:
    """(sample name, le or status or kind) -> value, for one model's series."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for s in family.samples:
            if s.labels.get("model") == model:
                extra = s.labels.get("le") or s.labels.get("status") or s.labels.get("kind", "")
                out[(s.name, extra)] = s.value
    return out


def test_counts_and_buckets_follow_prometheus_rules() -> None:
    model = f"m-{uuid.uuid4().hex[:6]}:1"
    observe(make_trace("n1", model, latency_ms=1000.0, time_to_first_token_ms=30.0,
                       prompt_tokens=7, completion_tokens=11, load_duration_ms=900.0))
    observe(make_trace("n1", model, latency_ms=400_000.0, retry_count=2,
                       status=TraceStatus.FAILED))
    got = samples(model)
    assert got[("herd_requests_total", "completed")] == 1
    assert got[("herd_requests_total", "failed")] == 1
    assert got[("herd_errors_total", "")] == 1 and got[("herd_retries_total", "")] == 2
    assert got[("herd_tokens_total", "prompt")] == 14  # both traces carry 7
    assert got[("herd_cold_loads_total", "")] == 1
    # A value on a bound counts in that bucket ("le"); one above every bound only in +Inf.
    assert got[("herd_request_latency_seconds_bucket", "0.5")] == 0
    assert got[("herd_request_latency_seconds_bucket", "1.0")] == 1
    assert got[("herd_request_latency_seconds_bucket", "300.0")] == 1
    assert got[("herd_request_latency_seconds_bucket", "+Inf")] == 2
    assert got[("herd_request_latency_seconds_count", "")] == 2
    assert got[("herd_request_latency_seconds_sum", "")] == 401.0
    assert got[("herd_time_to_first_token_seconds_bucket", "0.025")] == 0
    assert got[("herd_time_to_first_token_seconds_bucket", "0.05")] == 2  # 30 ms and 50 ms


def test_queue_wait_counts_every_request_that_reached_the_queue() -> None:
    model = f"m-{uuid.uuid4().hex[:6]}:1"
    observe(make_trace("n1", model, queue_wait_ms=0.0))
    observe(make_trace("n1", model, queue_wait_ms=1500.0))
    # A queue timeout is rejected with no node: the longest wait, still under its model.
    observe(make_trace("", model, queue_wait_ms=300_000.0, status=TraceStatus.REJECTED))
    # Rejected before the queue (a model nobody has): no wait, and no label for its name.
    typo = f"typo-{uuid.uuid4().hex[:6]}"
    observe(make_trace("", typo, status=TraceStatus.REJECTED))
    got = samples(model)
    assert got[("herd_queue_wait_seconds_bucket", "0.01")] == 1
    assert got[("herd_queue_wait_seconds_bucket", "2.5")] == 2
    assert got[("herd_queue_wait_seconds_bucket", "300.0")] == 3
    assert got[("herd_queue_wait_seconds_count", "")] == 3
    assert got[("herd_queue_wait_seconds_sum", "")] == 301.5
    assert samples(typo) == {}


def app_tokens(registry_text: str) -> dict[tuple[str, str], float]:
    return {(s.labels["app"], s.labels["kind"]): s.value
            for family in text_string_to_metric_families(registry_text)
            for s in family.samples if s.name == "herd_app_tokens_total"}


def test_tokens_per_app_with_the_request_s_app_or_none() -> None:
    app = f"app-{uuid.uuid4().hex[:6]}"
    observe(make_trace("n1", "m:1", app=app, prompt_tokens=5, completion_tokens=0))
    observe(make_trace("n1", "m:1", app=app, prompt_tokens=2, completion_tokens=9))
    got = app_tokens(generate_latest(REGISTRY).decode())
    assert got[(app, "prompt")] == 7 and got[(app, "completion")] == 9
    observe(make_trace("n1", "m:1", app="", prompt_tokens=1, completion_tokens=1))
    assert app_tokens(generate_latest(REGISTRY).decode())[(NO_APP, "prompt")] >= 1


def test_apps_past_the_cap_are_counted_together() -> None:
    tally = _Tally()  # its own: the cap must not fill the process's tally for other tests
    for i in range(MAX_APPS + 5):
        _count_app_tokens(tally, make_trace("n1", "m:1", app=f"a{i}", prompt_tokens=1,
                                            completion_tokens=0))
    _count_app_tokens(tally, make_trace("n1", "m:1", app="a0", prompt_tokens=1,
                                        completion_tokens=0))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(tally)
    got = app_tokens(generate_latest(registry).decode())
    assert len(got) == MAX_APPS + 1
    assert got[(OTHER_APP, "prompt")] == 5
    assert got[("a0", "prompt")] == 2  # an app counted before the cap keeps its own series
