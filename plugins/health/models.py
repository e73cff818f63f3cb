"""Model checks: thrashing (the same model cold-loaded again and again on one node)."""

from __future__ import annotations

from shared.health import Finding, FunctionCheck, HealthCheck, HealthView, Severity, counted
from shared.hookspecs import hookimpl

__all__ = ["herd_register_health_checks"]


def model_thrashing(view: HealthView) -> list[Finding]:
    limit = view.settings.health_thrash_loads
    hours = view.settings.health_window_hours
    findings = []
    for (node_id, model), usage in sorted(view.recent.node_models().items()):
        if usage.cold_loads < limit:
            continue
        severity = Severity.CRITICAL if usage.cold_loads >= 3 * limit else Severity.WARNING
        node = view.snapshot.nodes.get(node_id)
        others = ", ".join(m.name for m in node.models_loaded if m.name != model) if node else ""
        findings.append(Finding(
            check_id="model_thrashing", severity=severity,
            title=f"{model} keeps reloading on {node_id}",
            description=f"{model} was cold-loaded {counted(usage.cold_loads, 'time')} on "
            f"{node_id} in the last {hours} h ({usage.load_ms_sum / 1000:.1f} s spent "
            f"loading, {counted(usage.requests, 'request')}): it is evicted between requests"
            f"{' by ' + others if others else ''}.",
            fix=f"Give {node_id} room for {model} alongside its other models "
            "(OLLAMA_MAX_LOADED_MODELS, a longer OLLAMA_KEEP_ALIVE), or keep that model on "
            "fewer, larger nodes and remove it elsewhere.",
            node_id=node_id,
            data={"model": model, "cold_loads": usage.cold_loads,
                  "load_seconds": round(usage.load_ms_sum / 1000, 1),
                  "requests": usage.requests},
        ))
    return findings


@hookimpl
def herd_register_health_checks() -> list[HealthCheck]:
    return [FunctionCheck("model_thrashing", model_thrashing)]
