"""/api/version's answer: the oldest Ollama among the servable nodes, with the fallbacks
the module documents."""

from __future__ import annotations

import pytest

from services.router.fleet.versions import BASELINE, fleet_version
from shared.endpoints import since
from shared.models import NodeState, NodeStatus

pytestmark = pytest.mark.unit


def node(node_id: str, version: str, status: NodeStatus = NodeStatus.ONLINE,
         draining: bool = False) -> NodeState:
    return NodeState(node_id=node_id, ollama_url="http://x", ollama_version=version,
                     status=status, draining=draining)


def test_the_oldest_servable_node_decides() -> None:
    nodes = [node("a", "0.40.8"), node("b", "0.13.3"), node("c", "0.14.0-rc1"),
             node("d", "0.9.0", status=NodeStatus.OFFLINE), node("e", "0.5.0", draining=True)]
    assert fleet_version(nodes) == "0.13.3"
    assert fleet_version([node("a", "0.14.0"), node("b", "v0.14.0-rc2")]) == "0.14.0-rc2"


def test_unstamped_and_unreadable_versions_count_only_when_nothing_else_does() -> None:
    assert fleet_version([node("a", "0.0.0"), node("b", "0.20.1"), node("c", "")]) == "0.20.1"
    assert fleet_version([node("a", "0.0.0-fake"), node("b", "weird")]) == "0.0.0"


def test_with_no_servable_node_the_known_ones_stand_in_then_the_baseline() -> None:
    offline = [node("a", "0.30.0", status=NodeStatus.OFFLINE),
               node("b", "0.20.0", status=NodeStatus.DEGRADED)]
    assert fleet_version(offline) == "0.20.0"
    assert fleet_version([]) == str(BASELINE)
    assert fleet_version([node("a", "", status=NodeStatus.OFFLINE)]) == str(BASELINE)
    # the baseline serves every core path and is one of their first versions
    assert BASELINE == since("/v1/embeddings") == since("/api/embed")
