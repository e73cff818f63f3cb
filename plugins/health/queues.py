"""Queue checks: saturation (waits near the bound) and zombie requests reaped."""

from __future__ import annotations

from collections import Counter

from shared.health import Finding, FunctionCheck, HealthCheck, HealthView, Severity, counted
from shared.hookspecs import hookimpl

__all__ = ["herd_register_health_checks"]


def queue_saturation(view: HealthView) -> list[Finding]:
    bound = view.settings.max_queue_depth
    warn_at = bound * view.settings.health_queue_saturation_pct / 100.0
    timeout_ms = view.settings.queue_timeout * 1000.0
    models = view.recent.models()
    findings = []
    for model in sorted(set(view.queue_depths) | set(models)):
        depth = view.queue_depths.get(model, 0)
        usage = models.get(model)
        wait_ms = usage.avg_queue_wait_ms if usage else 0.0
        if depth >= bound:
            severity = Severity.CRITICAL
        elif depth >= warn_at or (timeout_ms and wait_ms >= timeout_ms / 2):
            severity = Severity.WARNING
        else:
            continue
        findings.append(Finding(
            check_id="queue_saturation", severity=severity,
            title=f"Queue for {model} is {'full' if depth >= bound else 'filling up'}",
            description=f"{counted(depth, 'request')} {'waits' if depth == 1 else 'wait'} "
            f"for {model} (the bound is {bound}); recent "
            f"requests waited {wait_ms / 1000:.1f} s on average (timeout "
            f"{view.settings.queue_timeout:.0f} s). New requests get 503 at the bound.",
            fix=f"Load {model} on more nodes (see recommendations), raise the nodes' "
            "OLLAMA_NUM_PARALLEL if memory allows, or raise FLEET_MAX_QUEUE_DEPTH.",
            data={"model": model, "waiting": depth, "max_queue_depth": bound,
                  "avg_queue_wait_ms": round(wait_ms, 1)},
        ))
    return findings


def zombie_requests(view: HealthView) -> list[Finding]:
    events = view.recent_events("zombie_reaped")
    if not events:
        return []
    per_node: Counter[str] = Counter()
    for event in events:
        count = event.get("count", 1)
        per_node[str(event.get("node_id") or "")] += count if isinstance(count, int) else 1
    total = sum(per_node.values())
    severity = Severity.WARNING if total >= view.settings.health_zombie_reaps else Severity.INFO
    nodes = ", ".join(f"{n or 'unknown'} ({c})" for n, c in per_node.most_common(3))
    return [Finding(
        check_id="zombie_requests", severity=severity,
        title="Requests were reaped as zombies",
        description=f"{counted(total, 'slot lease')} expired without a release in the last "
        f"{view.settings.health_window_hours} h ({nodes}): a router replica died or stalled "
        "mid-request, and the slot was given back when its lease lapsed.",
        fix="Look for router replicas that restarted or were killed (OOM, deploys without "
        "a graceful stop); give them time to finish requests on shutdown.",
        data={"reaped": total, "nodes": dict(per_node)},
    )]


@hookimpl
def herd_register_health_checks() -> list[HealthCheck]:
    return [
        FunctionCheck("queue_saturation", queue_saturation),
        FunctionCheck("zombie_requests", zombie_requests),
    ]
