"""A third-party health check: reports nodes whose name says they are a spare."""

from __future__ import annotations

from shared.health import Finding, FunctionCheck, HealthCheck, HealthView, Severity
from shared.hookspecs import hookimpl

__all__ = ["herd_register_health_checks"]


def spare_nodes(view: HealthView) -> list[Finding]:
    return [
        Finding(
            check_id="sample_spare_nodes",
            severity=Severity.INFO,
            title=f"{node.node_id} is a spare",
            description=f"{node.node_id} is named as a spare machine.",
            fix="Rename it once it serves for real.",
            node_id=node.node_id,
            data={"plugin": "herd-sample-check"},
        )
        for node in view.snapshot.nodes.values()
        if node.node_id.startswith("spare")
    ]


@hookimpl
def herd_register_health_checks() -> list[HealthCheck]:
    return [FunctionCheck("sample_spare_nodes", spare_nodes)]
