"""Usage statistics: the counters of a scope (node, node:model, tag) summed over hours, and
the window of hourly buckets that the usage API, the trends and the health checks read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LATENCY_BUCKETS_MS", "Scopes", "StatsWindow", "Usage"]

# Upper bounds of the latency histogram kept per hour; fixed so buckets of any hour, node
# or model add up, and percentiles come from counts instead of a scan of traces.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, float("inf"),
)



@dataclass(slots=True)
class Usage:
    """Counters of one scope (a node, node:model, tag) summed over some hours."""

    requests: int = 0
    errors: int = 0  # final outcome failed or incomplete
    rejected: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0  # sum of retry_count
    retried_requests: int = 0
    latency_ms_sum: float = 0.0
    ttft_ms_sum: float = 0.0
    ttft_count: int = 0
    cold_loads: int = 0
    context_reloads: int = 0  # of the cold loads, reloads of a copy already loaded
    load_ms_sum: float = 0.0
    disconnects: int = 0
    incomplete: int = 0
    timeouts: int = 0
    connection_failures: int = 0
    attempt_failures: int = 0  # attempts here that failed and went to another node
    queue_wait_ms_sum: float = 0.0
    # Of the rejected, those refused at the door (never traced): no valid credential (401),
    # a forbidden one (403), the key's app over its limit (429).
    unauthorized: int = 0
    forbidden: int = 0
    rate_limited: int = 0
    hist: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))

    def copy(self) -> Usage:
        clone = Usage()
        clone.add(self)
        return clone

    def add(self, other: Usage) -> None:
        # Spelled out: this runs for every scope of every hour on each health call.
        self.requests += other.requests
        self.errors += other.errors
        self.rejected += other.rejected
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.retries += other.retries
        self.retried_requests += other.retried_requests
        self.latency_ms_sum += other.latency_ms_sum
        self.ttft_ms_sum += other.ttft_ms_sum
        self.ttft_count += other.ttft_count
        self.cold_loads += other.cold_loads
        self.context_reloads += other.context_reloads
        self.load_ms_sum += other.load_ms_sum
        self.disconnects += other.disconnects
        self.incomplete += other.incomplete
        self.timeouts += other.timeouts
        self.connection_failures += other.connection_failures
        self.attempt_failures += other.attempt_failures
        self.queue_wait_ms_sum += other.queue_wait_ms_sum
        self.unauthorized += other.unauthorized
        self.forbidden += other.forbidden
        self.rate_limited += other.rate_limited
        if any(other.hist):
            self.hist = [a + b for a, b in zip(self.hist, other.hist, strict=True)]

    @property
    def error_rate_pct(self) -> float:
        """Failed attempts over attempts: a node's own reliability, retries included."""
        attempts = self.requests + self.attempt_failures
        return 100.0 * (self.errors + self.attempt_failures) / attempts if attempts else 0.0

    @property
    def outcome_error_rate_pct(self) -> float:
        """Requests whose final answer was an error, over requests."""
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    def pct(self, part: int) -> float:
        return 100.0 * part / self.requests if self.requests else 0.0

    @property
    def avg_latency_ms(self) -> float:
        # Rejected requests add no latency (stats.increments): averaging over them too
        # would let a flood of refusals make the fleet look fast.
        timed = self.requests - self.rejected
        return self.latency_ms_sum / timed if timed > 0 else 0.0

    @property
    def avg_ttft_ms(self) -> float:
        return self.ttft_ms_sum / self.ttft_count if self.ttft_count else 0.0

    @property
    def avg_queue_wait_ms(self) -> float:
        return self.queue_wait_ms_sum / self.requests if self.requests else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile (0-100) estimated by interpolating inside histogram buckets."""
        total = sum(self.hist)
        if not total:
            return 0.0
        rank = q / 100.0 * total
        seen = 0
        lower = 0.0
        for upper, count in zip(LATENCY_BUCKETS_MS, self.hist, strict=True):
            if count and seen + count >= rank:
                top = upper if upper != float("inf") else max(lower * 2, lower + 1)
                return lower + (top - lower) * max(rank - seen, 0) / count
            seen += count
            lower = upper if upper != float("inf") else lower
        return lower

    def summary(self) -> dict[str, Any]:
        """The JSON shape the usage APIs return for one scope."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rejected": self.rejected,
            "error_rate_pct": round(self.outcome_error_rate_pct, 2),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "retries": self.retries,
            "cold_loads": self.cold_loads,
            "context_reloads": self.context_reloads,
            "client_disconnects": self.disconnects,
            "incomplete": self.incomplete,
            "timeouts": self.timeouts,
            "unauthorized": self.unauthorized,
            "forbidden": self.forbidden,
            "rate_limited": self.rate_limited,
            "avg_latency_ms": round(self.avg_latency_ms, 1),
            "p50_latency_ms": round(self.percentile(50), 1),
            "p95_latency_ms": round(self.percentile(95), 1),
            "p99_latency_ms": round(self.percentile(99), 1),
            "avg_ttft_ms": round(self.avg_ttft_ms, 1),
            "avg_queue_wait_ms": round(self.avg_queue_wait_ms, 1),
        }


# scope -> usage; scopes are "nm:<node>|<model>" (routed requests), "n:<node>" (what has no
# model: requests rejected before routing under node "", failed attempts) and "t:<tag>".
Scopes = Mapping[str, Usage]


def _sum_into(target: dict[str, Usage], key: str, usage: Usage) -> None:
    total = target.get(key)
    if total is None:
        total = target[key] = Usage()
    total.add(usage)


class StatsWindow:
    """Hourly stats buckets, oldest first, with sums per node, model, node:model and tag.

    Each sum is computed once per window (a health call asks for them many times).
    """

    def __init__(
        self, hours: Iterable[tuple[int, Scopes]] = (), *,
        presummed: tuple[int, Scopes] | None = None,
    ) -> None:
        """`presummed` = (n, totals of the oldest n hours), which a caller may have cached."""
        self.hours: list[tuple[int, Scopes]] = sorted(hours, key=lambda item: item[0])
        self._presummed = presummed
        self._totals: dict[str, Usage] | None = None
        self._node_models: dict[tuple[str, str], Usage] | None = None
        self._nodes: dict[str, Usage] | None = None
        self._models: dict[str, Usage] | None = None
        self._fleet: Usage | None = None

    def last(self, count: int) -> StatsWindow:
        """The newest `count` buckets."""
        if count >= len(self.hours):
            return self
        return StatsWindow(self.hours[-count:] if count > 0 else [])

    @property
    def totals(self) -> dict[str, Usage]:
        if self._totals is None:
            totals: dict[str, Usage] = {}
            skip = 0
            if self._presummed is not None:
                skip, summed = self._presummed
                totals = {scope: usage.copy() for scope, usage in summed.items()}
            for _, scopes in self.hours[skip:]:
                for scope, usage in scopes.items():
                    _sum_into(totals, scope, usage)
            self._totals = totals
        return self._totals

    def _by(self, kind: str) -> dict[str, Usage]:
        return {s[len(kind):]: u for s, u in self.totals.items() if s.startswith(kind)}

    def node_models(self) -> dict[tuple[str, str], Usage]:
        if self._node_models is None:
            result: dict[tuple[str, str], Usage] = {}
            for rest, usage in self._by("nm:").items():
                node, _, model = rest.partition("|")
                result[(node, model)] = usage
            self._node_models = result
        return self._node_models

    def nodes(self) -> dict[str, Usage]:
        """Per node id ('' holds requests rejected before any node was chosen)."""
        if self._nodes is None:
            result: dict[str, Usage] = {}
            for (node, _), usage in self.node_models().items():
                _sum_into(result, node, usage)
            for node, usage in self._by("n:").items():
                _sum_into(result, node, usage)
            self._nodes = result
        return dict(self._nodes)

    def models(self) -> dict[str, Usage]:
        if self._models is None:
            result: dict[str, Usage] = {}
            for (_, model), usage in self.node_models().items():
                _sum_into(result, model, usage)
            self._models = result
        return dict(self._models)

    def tags(self) -> dict[str, Usage]:
        return self._by("t:")

    def node(self, node_id: str) -> Usage:
        self.nodes()
        assert self._nodes is not None
        return self._nodes.get(node_id) or Usage()

    def fleet(self) -> Usage:
        if self._fleet is None:
            total = Usage()
            for usage in self.nodes().values():
                total.add(usage)
            self._fleet = total
        return self._fleet

    def series(self, kind: str = "") -> list[tuple[int, Usage]]:
        """One Usage per hour: the fleet's, or one model's ('m:<model>') or tag's ('t:<tag>')."""
        result = []
        for hour, scopes in self.hours:
            one = StatsWindow([(hour, scopes)])
            if not kind:
                usage = one.fleet()
            elif kind.startswith("m:"):
                usage = one.models().get(kind[2:]) or Usage()
            else:
                usage = one.totals.get(kind) or Usage()
            result.append((hour, usage))
        return result
