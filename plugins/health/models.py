"""Model checks: thrashing (the same model cold-loaded again and again on one node), and
pins the fleet cannot keep."""

from __future__ import annotations

from shared.health import Finding, FunctionCheck, HealthCheck, HealthView, Severity, counted
from shared.hookspecs import hookimpl

__all__ = ["herd_register_health_checks"]


def model_thrashing(view: HealthView) -> list[Finding]:
    """A model cold-loaded again and again on one node, with the cause named: reloads of a
    copy that was already loaded (a request's num_ctx or options differed from the loaded
    copy's) point to clients and context protection; evictions point to the node's room."""
    limit = view.settings.health_thrash_loads
    hours = view.settings.health_window_hours
    findings = []
    for (node_id, model), usage in sorted(view.recent.node_models().items()):
        if usage.cold_loads < limit:
            continue
        severity = Severity.CRITICAL if usage.cold_loads >= 3 * limit else Severity.WARNING
        node = view.snapshot.nodes.get(node_id)
        others = ", ".join(m.name for m in node.models_loaded if m.name != model) if node else ""
        reloads = min(usage.context_reloads, usage.cold_loads)
        evictions = usage.cold_loads - reloads
        causes = []
        if reloads:
            causes.append(f"{counted(reloads, 'context reload')} (requests asked for "
                          "another num_ctx than the loaded copy's)")
        if evictions:
            causes.append(f"{evictions} after an eviction{' by ' + others if others else ''}")
        fixes = []
        if reloads:
            fixes.append(
                "Send the same options.num_ctx from every client of this model, or set "
                f"context_protection=strip (now {view.settings.context_protection}) so "
                "requests use the loaded copy's context; set default_num_ctx to the nodes' "
                "OLLAMA_CONTEXT_LENGTH.")
        if evictions:
            fixes.append(
                f"Give {node_id} room for {model} alongside its other models "
                "(OLLAMA_MAX_LOADED_MODELS, a longer OLLAMA_KEEP_ALIVE), or keep that model "
                "on fewer, larger nodes and remove it elsewhere.")
        title = (f"{model} keeps reloading its context on {node_id}" if reloads > evictions
                 else f"{model} keeps reloading on {node_id}")
        findings.append(Finding(
            check_id="model_thrashing", severity=severity,
            title=title,
            description=f"{model} was cold-loaded {counted(usage.cold_loads, 'time')} on "
            f"{node_id} in the last {hours} h ({usage.load_ms_sum / 1000:.1f} s spent "
            f"loading, {counted(usage.requests, 'request')}): {'; '.join(causes)}.",
            fix=" ".join(fixes),
            node_id=node_id,
            data={"model": model, "cold_loads": usage.cold_loads,
                  "context_reloads": reloads, "evictions": evictions,
                  "load_seconds": round(usage.load_ms_sum / 1000, 1),
                  "requests": usage.requests},
        ))
    return findings


def pins_short(view: HealthView) -> list[Finding]:
    """A pinned model with fewer loaded copies than its pin asks, and why (the leader's
    last round): critical with none loaded, a warning with some."""
    findings = []
    for model, pin in sorted(view.pins.items()):
        if pin.get("state") != "short" or "not reconciled" in pin.get("reason", ""):
            continue
        loaded = list(pin.get("loaded_on", []))
        reason = str(pin.get("reason", ""))
        if "model missing" in reason:
            fix = f"Pull {model} onto a node (herd's Models page, or POST /api/pull), or unpin it."
        elif "node offline" in reason:
            fix = "Bring the node back, or pin the model without naming nodes."
        else:
            fix = (f"Free memory for {model} (unpin or remove other models, a larger "
                   "OLLAMA_MAX_LOADED_MODELS), add a node that holds it, or pin fewer copies.")
        findings.append(Finding(
            check_id="pins_short",
            severity=Severity.WARNING if loaded else Severity.CRITICAL,
            title=f"{model} is pinned but not kept: {len(loaded)} of {pin.get('copies')} "
                  "copies loaded",
            description=reason,
            fix=fix,
            data={"model": model, "copies": pin.get("copies"), "loaded_on": loaded,
                  "reason": reason},
        ))
    return findings


@hookimpl
def herd_register_health_checks() -> list[HealthCheck]:
    return [FunctionCheck("model_thrashing", model_thrashing),
            FunctionCheck("pins_short", pins_short)]
