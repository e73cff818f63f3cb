"""What a benchmark run measured: its samples, and the figures computed from them.

A run's shape is `shared.schemas.BenchmarkRun` (BenchRun here): stored as JSON in Redis,
served by `/dashboard/api/benchmarks`, and printed by `herd bench`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

import msgspec

from shared.schemas import BenchmarkRun as BenchRun
from shared.schemas import Figures, Percentiles

__all__ = [
    "COLD_LOAD_MS",
    "BenchRun",
    "Figures",
    "Percentiles",
    "Sample",
    "figures",
    "percentiles",
]

# Ollama reports a few milliseconds of load_duration on every request to a loaded model;
# a real (cold) load of even a small model takes far longer.
COLD_LOAD_MS = 100.0


class Sample(msgspec.Struct):
    """One request: what the client saw and what the final chunk said."""

    model: str
    node: str  # X-Fleet-Node ("" when the answer carried none)
    ok: bool
    latency_ms: float
    ttft_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    eval_ms: float = 0.0  # the node's generation time (eval_duration)
    load_ms: float = 0.0  # the node's load_duration
    error: str = ""

    @property
    def cold(self) -> bool:
        return self.load_ms >= COLD_LOAD_MS


def _nearest_rank(ordered: Sequence[float], share: float) -> float:
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def percentiles(values: Iterable[float]) -> Percentiles:
    """Nearest-rank p50/p95/p99 and the maximum, in milliseconds rounded to 0.1."""
    ordered = sorted(values)
    if not ordered:
        return Percentiles()
    return Percentiles(
        p50=round(_nearest_rank(ordered, 0.50), 1),
        p95=round(_nearest_rank(ordered, 0.95), 1),
        p99=round(_nearest_rank(ordered, 0.99), 1),
        max=round(ordered[-1], 1),
    )


def figures(samples: Sequence[Sample], wall_s: float) -> Figures:
    """The figures of `samples`, rates over the run's wall time."""
    good = [s for s in samples if s.ok]
    wall = max(wall_s, 1e-9)
    completion = sum(s.completion_tokens for s in good)
    return Figures(
        requests=len(good),
        failed=len(samples) - len(good),
        requests_per_s=round(len(good) / wall, 2),
        tokens_per_s=round(completion / wall, 1),
        prompt_tokens=sum(s.prompt_tokens for s in good),
        completion_tokens=completion,
        latency_ms=percentiles(s.latency_ms for s in good),
        ttft_ms=percentiles(s.ttft_ms for s in good if s.ttft_ms is not None),
        cold_loads=sum(1 for s in good if s.cold),
    )


def mean_generation_speed(samples: Iterable[Sample]) -> float:
    """Mean tokens/s of one request's generation, as the nodes timed it."""
    speeds = [s.completion_tokens / (s.eval_ms / 1000) for s in samples
              if s.ok and s.eval_ms > 0 and s.completion_tokens]
    return round(statistics.fmean(speeds), 1) if speeds else 0.0
