"""The health-check contract: findings, the HealthCheck protocol, and the view checks read."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import msgspec

from shared.models import FleetSnapshot
from shared.settings import Settings
from shared.usage import StatsWindow

__all__ = [
    "Counters",
    "Finding",
    "FunctionCheck",
    "HealthCheck",
    "HealthView",
    "Severity",
    "counted",
    "health_score",
    "run_checks",
    "sort_findings",
]

log = logging.getLogger("herd.health")


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


_SEVERITY_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
_SEVERITY_COST = {Severity.CRITICAL: 20, Severity.WARNING: 10, Severity.INFO: 3}


class Finding(msgspec.Struct, kw_only=True):
    """One thing wrong (or worth knowing) about the fleet, with what to do about it."""

    check_id: str
    severity: Severity
    title: str
    description: str
    fix: str
    node_id: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Counters:
    """The slot counters of one node:model (written by the queue)."""

    pending: int = 0
    in_flight: int = 0
    done: int = 0
    failed: int = 0


@dataclass(frozen=True)
class HealthView:
    """Everything a check may read, gathered once per /dashboard/api/health call."""

    snapshot: FleetSnapshot
    settings: Settings
    stats: StatsWindow  # the last 24 hourly buckets
    counters: dict[tuple[str, str], Counters] = field(default_factory=dict)
    queue_depths: dict[str, int] = field(default_factory=dict)  # model -> waiting requests
    events: list[dict[str, Any]] = field(default_factory=list)  # newest first, last 24 h
    now: float = 0.0
    # pinned model -> its state as GET /fleet/pins shows it (model, copies, state, reason,
    # loaded_on, ...)
    pins: dict[str, dict[str, Any]] = field(default_factory=dict)

    @cached_property
    def recent(self) -> StatsWindow:
        """The buckets rate checks judge (settings.health_window_hours)."""
        return self.stats.last(self.settings.health_window_hours)

    def recent_events(self, kind: str) -> list[dict[str, Any]]:
        since = self.now - self.settings.health_window_hours * 3600
        return [e for e in self.events if e.get("kind") == kind and e.get("ts", 0) >= since]


@runtime_checkable
class HealthCheck(Protocol):
    """A check registered through `herd_register_health_checks`; must be fast and pure."""

    @property
    def check_id(self) -> str: ...

    def check(self, view: HealthView) -> list[Finding]: ...


@dataclass(frozen=True, slots=True)
class FunctionCheck:
    """Wraps a plain function as a HealthCheck."""

    check_id: str
    fn: Callable[[HealthView], list[Finding]]

    def check(self, view: HealthView) -> list[Finding]:
        return self.fn(view)


def counted(count: int, singular: str, plural: str = "") -> str:
    """"1 request", "3 requests", "1 copy" / "2 copies" (pass the plural when not +s)."""
    return f"{count:,} {singular if count == 1 else (plural or singular + 's')}"


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Critical first, then warning, then info; stable within a severity."""
    return sorted(findings, key=lambda f: _SEVERITY_ORDER[Severity(f.severity)])


def health_score(findings: Iterable[Finding]) -> int:
    """100 - 20 per critical - 10 per warning - 3 per info, never below 0."""
    return max(0, 100 - sum(_SEVERITY_COST[Severity(f.severity)] for f in findings))


def run_checks(checks: Iterable[HealthCheck], view: HealthView) -> list[Finding]:
    """Every check's findings, sorted; a check that raises reports itself instead of a 500."""
    findings: list[Finding] = []
    for check in checks:
        try:
            findings.extend(check.check(view))
        except Exception as exc:  # a third-party check must not break health
            log.exception("health check failed", extra={"check": check.check_id})
            findings.append(
                Finding(
                    check_id=check.check_id,
                    severity=Severity.INFO,
                    title=f"Health check {check.check_id} failed",
                    description=f"The check raised {type(exc).__name__}: {exc}",
                    fix="Fix or disable the plugin that provides this check "
                    "(FLEET_DISABLED_PLUGINS).",
                )
            )
    return sort_findings(findings)
