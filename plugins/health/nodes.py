"""Node checks: offline, degraded, memory pressure, underutilised."""

from __future__ import annotations

from shared.health import Finding, FunctionCheck, HealthCheck, HealthView, Severity, counted
from shared.hookspecs import hookimpl
from shared.models import NodeState, NodeStatus

__all__ = ["herd_register_health_checks"]

_CRITICAL_MEMORY_PCT = 97.0


def _silence(view: HealthView, last_seen: float) -> str:
    if not last_seen:
        return "never"
    return f"{max(0.0, view.now - last_seen):.0f} s ago"


def offline_nodes(view: HealthView) -> list[Finding]:
    return [
        Finding(
            check_id="offline_nodes",
            severity=Severity.CRITICAL,
            title=f"Node {node.node_id} is offline",
            description=f"No heartbeat from {node.node_id} for over "
            f"{view.settings.heartbeat_offline:.0f} s (last seen "
            f"{_silence(view, node.last_seen)}); it receives no requests.",
            fix="Check that the machine is up and herd-node is running on it "
            "(herd-node --router-url ...); if it was retired, it is forgotten after a week.",
            node_id=node.node_id,
            data={"last_seen": node.last_seen},
        )
        for node in view.snapshot.nodes.values()
        if node.status is NodeStatus.OFFLINE
    ]


def degraded_nodes(view: HealthView) -> list[Finding]:
    findings: list[Finding] = []
    for node in view.snapshot.nodes.values():
        if node.status is NodeStatus.OFFLINE:
            continue
        data = {"last_seen": node.last_seen, "router_failures": node.router_failures}
        if node.status is NodeStatus.DEGRADED:
            if node.router_failures:
                why = f"requests to it failed {counted(node.router_failures, 'time')} in a row"
                fix = f"Look at the Ollama log on {node.node_id}; Herd sends it work again " \
                      "once a heartbeat reports its Ollama healthy."
            else:
                why = f"its last heartbeat was {_silence(view, node.last_seen)}"
                fix = f"Check the network between {node.node_id} and the routers, and that " \
                      "herd-node is not stalled (CPU starvation, sleep)."
            findings.append(Finding(
                check_id="degraded_nodes", severity=Severity.WARNING,
                title=f"Node {node.node_id} is degraded",
                description=f"{node.node_id} gets no new requests: {why}.",
                fix=fix, node_id=node.node_id, data=data,
            ))
        elif not node.ollama_up:
            findings.append(Finding(
                check_id="degraded_nodes", severity=Severity.CRITICAL,
                title=f"Ollama is down on {node.node_id}",
                description=f"herd-node on {node.node_id} reports that its Ollama does not "
                f"answer{': ' + node.ollama_error if node.ollama_error else ''}.",
                fix=f"Start or restart Ollama on {node.node_id} (systemctl restart ollama, "
                "or `ollama serve`).",
                node_id=node.node_id, data=data,
            ))
        elif node.draining:
            findings.append(Finding(
                check_id="degraded_nodes", severity=Severity.INFO,
                title=f"Node {node.node_id} is draining",
                description=f"{node.node_id} finishes its requests but takes no new ones.",
                fix="Nothing to do if maintenance is planned; restart herd-node to rejoin.",
                node_id=node.node_id, data=data,
            ))
        findings += _failing_models(view, node)
    return findings


def _failing_models(view: HealthView, node: NodeState) -> list[Finding]:
    """Models held off one node by their failures there (the node serves the others)."""
    settings = view.settings
    return [
        Finding(
            check_id="degraded_nodes", severity=Severity.WARNING,
            title=f"{model} keeps failing on {node.node_id}",
            description=f"The last {counted(failures.count, 'request')} for {model} on "
            f"{node.node_id} failed (a runner that crashed, ran out of memory or hung); "
            f"it gets no {model} requests for {settings.model_failure_cooldown:.0f} s at "
            "a time, and serves its other models as usual.",
            fix=f"Look at the Ollama log on {node.node_id} around {model}'s loads; if the "
            f"model is damaged there, `ollama pull {model}` on {node.node_id} again.",
            node_id=node.node_id,
            data={"model": model, "failures": failures.count, "last_failure": failures.last},
        )
        for model, failures in sorted(node.model_failures.items())
        if failures.count >= settings.node_failures_degraded
        and view.now - failures.last < settings.model_failure_cooldown
    ]


def memory_pressure(view: HealthView) -> list[Finding]:
    findings: list[Finding] = []
    limit = view.settings.health_memory_pct
    for node in view.snapshot.nodes.values():
        if node.status is NodeStatus.OFFLINE:
            continue
        used_pct = 100.0 * node.memory_used_gb / node.memory_total_gb \
            if node.memory_total_gb else 0.0
        pressure = node.memory_pressure.lower()
        if pressure == "critical" or used_pct >= _CRITICAL_MEMORY_PCT:
            severity = Severity.CRITICAL
        elif pressure in {"high", "warn", "warning"} or used_pct >= limit:
            severity = Severity.WARNING
        else:
            continue
        loaded = ", ".join(m.name for m in node.models_loaded) or "none"
        findings.append(Finding(
            check_id="memory_pressure", severity=severity,
            title=f"Memory pressure on {node.node_id}",
            description=f"{node.node_id} uses {used_pct:.0f}% of "
            f"{node.memory_total_gb:.1f} GB ({node.memory_available_gb:.1f} GB free, "
            f"pressure {pressure}); loaded models: {loaded}. Loading another model will "
            "evict one or swap.",
            fix=f"Unload models nobody uses on {node.node_id} (see recommendations), lower "
            "OLLAMA_MAX_LOADED_MODELS there, or stop other programs using its memory.",
            node_id=node.node_id,
            data={"used_pct": round(used_pct, 1), "pressure": pressure,
                  "available_gb": node.memory_available_gb},
        ))
    return findings


def underutilised_nodes(view: HealthView) -> list[Finding]:
    servable = [n for n in view.snapshot.nodes.values() if n.servable]
    recent = view.recent
    fleet = recent.fleet().requests - recent.node("").requests
    if len(servable) < 2 or fleet < view.settings.health_min_requests:
        return []
    fair = fleet / len(servable)
    floor = fair * view.settings.health_underused_share_pct / 100.0
    findings = []
    for node in servable:
        served = recent.node(node.node_id).requests
        if served < floor:
            models = ", ".join(node.models_available[:5]) or "no models"
            findings.append(Finding(
                check_id="underutilised_nodes", severity=Severity.INFO,
                title=f"Node {node.node_id} is barely used",
                description=f"{node.node_id} served {served} of the fleet's "
                f"{counted(fleet, 'request')} "
                f"in the last {view.settings.health_window_hours} h (a fair share is "
                f"{fair:.0f}). It has {models}.",
                fix=f"Pull the models clients ask for onto {node.node_id}, or retire it.",
                node_id=node.node_id,
                data={"requests": served, "fair_share": round(fair, 1)},
            ))
    return findings


@hookimpl
def herd_register_health_checks() -> list[HealthCheck]:
    return [
        FunctionCheck("offline_nodes", offline_nodes),
        FunctionCheck("degraded_nodes", degraded_nodes),
        FunctionCheck("memory_pressure", memory_pressure),
        FunctionCheck("underutilised_nodes", underutilised_nodes),
    ]
