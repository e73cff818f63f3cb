"""The baseline policies the scheduling benchmark compares Herd with, loaded by FLEET_PLUGINS."""

from __future__ import annotations

import pytest

from services.router.fleet.routing import RoutingEngine
from shared.plugins import build_plugin_manager
from shared.settings import Settings
from tests.unit.test_routing_plugins import context, node, request

BASELINE = "plugins.routing.baselines:"
NO_SCORERS = ["plugins.routing.scorers"]


def engine(policy: str) -> RoutingEngine:
    return RoutingEngine(build_plugin_manager(NO_SCORERS, [BASELINE + policy]))


def test_plugins_setting_registers_an_object_by_reference() -> None:
    settings = Settings.load(environ={"FLEET_PLUGINS": f"{BASELINE}round_robin"})
    assert settings.plugins == (f"{BASELINE}round_robin",)
    manager = build_plugin_manager((), settings.plugins)
    assert manager.has_plugin(f"{BASELINE}round_robin")
    assert RoutingEngine(manager).custom_policy
    with pytest.raises(ValueError, match="cannot load plugin"):
        build_plugin_manager((), [f"{BASELINE}no_such_policy"])
    # blocked by name like any other plugin
    blocked = build_plugin_manager([f"{BASELINE}round_robin"], [f"{BASELINE}round_robin"])
    assert not blocked.has_plugin(f"{BASELINE}round_robin")


def test_round_robin_turns_through_the_candidates_whatever_is_loaded() -> None:
    routing = engine("round_robin")
    assert routing.scorers == []
    ctx = context(node("c"), node("a", loaded=4096), node("b"))
    picks = [routing.rank(request(), ctx)[0].node.node_id for _ in range(6)]
    assert sorted(picks[:3]) == ["a", "b", "c"]
    assert picks[3:] == picks[:3]


def test_least_connections_takes_the_node_with_least_work() -> None:
    routing = engine("least_connections")
    ctx = context(node("a", loaded=4096), node("b"), node("c"))
    ctx.inputs.started("a", "other:1b")
    ctx.inputs.started("b", "other:1b")
    ranked = routing.rank(request(), ctx)
    assert ranked[0].node.node_id == "c"
    assert {r.node.node_id for r in ranked} == {"a", "b", "c"}  # the rest stay as fallbacks


def test_random_choice_spreads_over_every_candidate() -> None:
    routing = engine("random_choice")
    ctx = context(node("a", loaded=4096), node("b"), node("c"))
    picks = {routing.rank(request(), ctx)[0].node.node_id for _ in range(60)}
    assert picks == {"a", "b", "c"}
