"""Request checks: timeouts, error rate per node, retries, disconnects, connection failures."""

from __future__ import annotations

from shared.health import (
    Finding,
    FunctionCheck,
    HealthCheck,
    HealthView,
    Severity,
    counted,
)
from shared.hookspecs import hookimpl
from shared.usage import Usage

__all__ = ["herd_register_health_checks"]


def _judged_nodes(view: HealthView) -> list[tuple[str, Usage]]:
    """Nodes (not the '' scope of rejected requests) with enough attempts to judge a rate."""
    minimum = view.settings.health_min_requests
    return [
        (node_id, usage) for node_id, usage in sorted(view.recent.nodes().items())
        if node_id and usage.requests + usage.attempt_failures >= minimum
    ]


def request_timeouts(view: HealthView) -> list[Finding]:
    limit = view.settings.health_timeout_rate_pct
    findings = []
    for node_id, usage in _judged_nodes(view):
        rate = usage.pct(usage.timeouts)
        if usage.timeouts and rate >= limit:
            findings.append(Finding(
                check_id="request_timeouts", severity=Severity.WARNING,
                title=f"Requests time out on {node_id}",
                description=f"{usage.timeouts} of {counted(usage.requests, 'request')} on "
                f"{node_id} "
                f"({rate:.1f}%) timed out in the last {view.settings.health_window_hours} h.",
                fix=f"{node_id} is too slow for its load: route less to it (weights), give "
                "its models more memory, or raise FLEET_STALE_TIMEOUT if long generations "
                "are expected.",
                node_id=node_id,
                data={"timeouts": usage.timeouts, "rate_pct": round(rate, 2)},
            ))
    return findings


def error_rate(view: HealthView) -> list[Finding]:
    limit = view.settings.health_error_rate_pct
    findings = []
    for node_id, usage in _judged_nodes(view):
        rate = usage.error_rate_pct
        if rate < limit:
            continue
        severity = Severity.CRITICAL if rate >= 4 * limit else Severity.WARNING
        failed = usage.errors + usage.attempt_failures
        findings.append(Finding(
            check_id="error_rate", severity=severity,
            title=f"High error rate on {node_id}",
            description=f"{failed} of "
            f"{counted(usage.requests + usage.attempt_failures, 'attempt')} on "
            f"{node_id} failed ({rate:.1f}%) in the last "
            f"{view.settings.health_window_hours} h; {usage.attempt_failures} "
            f"{'was' if usage.attempt_failures == 1 else 'were'} retried elsewhere.",
            fix=f"Read the Ollama log on {node_id} (journalctl -u ollama): out-of-memory, a "
            "corrupt model or a GPU fault are common causes. Drain it until fixed.",
            node_id=node_id,
            data={"error_rate_pct": round(rate, 2), "errors": usage.errors,
                  "attempt_failures": usage.attempt_failures},
        ))
    return findings


def retry_rate(view: HealthView) -> list[Finding]:
    fleet = view.recent.fleet()
    if fleet.requests < view.settings.health_min_requests:
        return []
    rate = fleet.pct(fleet.retried_requests)
    if rate < view.settings.health_retry_rate_pct:
        return []
    culprits = sorted(
        ((n, u.attempt_failures) for n, u in view.recent.nodes().items() if u.attempt_failures),
        key=lambda item: -item[1],
    )
    named = ", ".join(f"{n} ({c})" for n, c in culprits[:3]) or "no single node"
    return [Finding(
        check_id="retry_rate", severity=Severity.WARNING,
        title="Many requests need a retry",
        description=f"{fleet.retried_requests} of {counted(fleet.requests, 'request')} "
        f"({rate:.1f}%) {'was' if fleet.retried_requests == 1 else 'were'} retried on "
        f"another node; failed first attempts came from {named}.",
        fix="Fix or drain the nodes named; each retry adds the failed attempt's time to "
        "the client's wait.",
        data={"retry_rate_pct": round(rate, 2), "retries": fleet.retries,
              "nodes": dict(culprits)},
    )]


def client_disconnects(view: HealthView) -> list[Finding]:
    fleet = view.recent.fleet()
    if fleet.requests < view.settings.health_min_requests:
        return []
    lost = fleet.disconnects + fleet.incomplete
    rate = fleet.pct(lost)
    if not lost or rate < view.settings.health_disconnect_rate_pct:
        return []
    return [Finding(
        check_id="client_disconnects", severity=Severity.WARNING,
        title="Clients give up or streams break",
        description=f"{counted(fleet.disconnects, 'client disconnect')} and "
        f"{counted(fleet.incomplete, 'incomplete stream')} in "
        f"{counted(fleet.requests, 'request')} ({rate:.1f}%).",
        fix="Disconnects: clients time out before the answer; raise their timeout or add "
        "capacity (queue waits). Incomplete: nodes fail mid-stream; check error_rate findings.",
        data={"client_disconnects": fleet.disconnects, "incomplete": fleet.incomplete,
              "rate_pct": round(rate, 2)},
    )]


def connection_failures(view: HealthView) -> list[Finding]:
    limit = view.settings.health_connection_failures
    findings = []
    for node_id, usage in sorted(view.recent.nodes().items()):
        if not node_id or usage.connection_failures < limit:
            continue
        node = view.snapshot.nodes.get(node_id)
        url = node.ollama_url if node else "its Ollama"
        findings.append(Finding(
            check_id="connection_failures", severity=Severity.WARNING,
            title=f"Cannot connect to {node_id}",
            description=f"Routers failed to connect to {url} "
            f"{counted(usage.connection_failures, 'time')} in the last "
            f"{view.settings.health_window_hours} h.",
            fix=f"Make Ollama on {node_id} listen beyond loopback (OLLAMA_HOST=0.0.0.0) and "
            "open its port to the routers; check the address herd-node reports.",
            node_id=node_id,
            data={"connection_failures": usage.connection_failures, "ollama_url": url},
        ))
    return findings


@hookimpl
def herd_register_health_checks() -> list[HealthCheck]:
    return [
        FunctionCheck("request_timeouts", request_timeouts),
        FunctionCheck("error_rate", error_rate),
        FunctionCheck("retry_rate", retry_rate),
        FunctionCheck("client_disconnects", client_disconnects),
        FunctionCheck("connection_failures", connection_failures),
    ]
