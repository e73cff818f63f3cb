"""The figures of a benchmark run: percentiles, rates, cold loads, per group."""

from __future__ import annotations

import pytest

from services.bench.results import COLD_LOAD_MS, Sample, figures, percentiles
from services.bench.runner import BenchConfig, make_prompt


def test_percentiles_are_nearest_rank() -> None:
    got = percentiles(float(v) for v in range(1, 101))
    assert (got.p50, got.p95, got.p99, got.max) == (50.0, 95.0, 99.0, 100.0)
    assert percentiles([]).p99 == 0.0
    assert percentiles([7.0]).p50 == 7.0


def test_figures_count_only_answered_requests() -> None:
    samples = [
        Sample(model="m", node="a", ok=True, latency_ms=100, ttft_ms=10, completion_tokens=20,
               load_ms=COLD_LOAD_MS + 1),
        Sample(model="m", node="a", ok=True, latency_ms=300, ttft_ms=30, completion_tokens=20,
               load_ms=3),  # a warm answer still reports a little load time
        Sample(model="m", node="b", ok=False, latency_ms=5000, error="HTTP 503"),
    ]
    got = figures(samples, wall_s=2.0)
    assert (got.requests, got.failed, got.cold_loads) == (2, 1, 1)
    assert (got.requests_per_s, got.tokens_per_s) == (1.0, 20.0)
    assert got.latency_ms.max == 300.0 and got.ttft_ms.p50 == 10.0


def test_config_takes_one_bound_and_prompts_differ() -> None:
    with pytest.raises(ValueError, match="not both"):
        BenchConfig(router_url="http://127.0.0.1:1", models=("m",), requests=5, duration_s=1)
    with pytest.raises(ValueError, match="at least one model"):
        BenchConfig(router_url="http://127.0.0.1:1", models=())
    assert make_prompt(16, 0) != make_prompt(16, 1)
    assert len(make_prompt(16, 3).split()) == 15
