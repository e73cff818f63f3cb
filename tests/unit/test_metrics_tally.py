"""The process's Prometheus metrics: counted in plain dicts, exported in the usual shape."""

from __future__ import annotations

import uuid

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.router.fleet.metrics import REGISTRY, observe
from shared.models import TraceStatus
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
