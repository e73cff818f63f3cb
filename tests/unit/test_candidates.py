"""A request's candidates on a large fleet: a shortlist is scored, not every node."""

from __future__ import annotations

from services.router.fleet.candidates import Candidates, shortlist
from services.router.fleet.routing import RoutingEngine
from shared.plugins import build_plugin_manager
from shared.routing import ScoringContext
from tests.unit.test_routing_plugins import M, context, node, request


def fleet(warm: int, cold: int, **settings: object) -> ScoringContext:
    nodes = [node(f"w{i:02d}", loaded=4096) for i in range(warm)]
    nodes += [node(f"c{i:02d}") for i in range(cold)]
    return context(*nodes, **settings)


def ids(nodes: list[object] | None) -> list[str]:
    assert nodes is not None
    return [n.node_id for n in nodes]  # type: ignore[attr-defined]


def test_a_small_fleet_scores_every_node() -> None:
    ctx = fleet(3, 2)
    assert shortlist(request(), ctx, 8, (), 0) is None
    assert shortlist(request(), ctx, 0, (), 0) is None  # 0: always every node
    chosen = Candidates(RoutingEngine(build_plugin_manager()), request(), ctx, (), 0)
    assert chosen.widened and len(chosen.ranked) == 5


def test_the_shortlist_takes_free_loaded_nodes_in_turn() -> None:
    ctx = fleet(6, 6)
    assert ids(shortlist(request(), ctx, 3, (), 0)) == ["w00", "w01", "w02"]
    assert ids(shortlist(request(), ctx, 3, (), 4)) == ["w04", "w05", "w00"]
    # full nodes (2 of 2 slots) are passed over, excluded ones too
    for _ in range(2):
        ctx.inputs.started("w00", M)
    assert ids(shortlist(request(), ctx, 3, ["w01"], 0)) == ["w02", "w03", "w04"]


def test_cold_nodes_then_full_ones_fill_a_short_shortlist() -> None:
    ctx = fleet(3, 3)
    for _ in range(2):
        ctx.inputs.started("w01", M)
    assert ids(shortlist(request(), ctx, 4, (), 0)) == ["w00", "w02", "c00", "c01"]
    for name in ("w00", "w02", "c00", "c01", "c02"):
        for _ in range(2):
            ctx.inputs.started(name, M)
    # nothing is free: the request will wait, on the first nodes met
    assert ids(shortlist(request(), ctx, 4, (), 0)) == ["w00", "w01", "w02", "c00"]


def test_the_conversations_node_leads_the_shortlist() -> None:
    # with the replica's own memory the affinity scorer ranks; with the fleet-wide index
    # the slot acquisition does, among the same shortlist
    ctx = fleet(6, 0, routing_candidates=2, session_affinity="replica")
    req = request({"model": M, "messages": [{"role": "user", "content": "hi"}]})
    engine = RoutingEngine(build_plugin_manager())
    engine.prepare(req, ctx)
    ctx.inputs.remember_session(req.session_key, "w05")
    assert ids(shortlist(req, ctx, 2, (), 0))[0] == "w05"
    chosen = Candidates(engine, req, ctx, (), 0)
    assert not chosen.widened and len(chosen.ranked) == 2
    assert chosen.ranked[0].node.node_id == "w05"  # the affinity scorer agrees


def test_widening_keeps_the_shortlist_first_and_adds_every_other_node() -> None:
    ctx = fleet(5, 5, routing_candidates=3)
    engine = RoutingEngine(build_plugin_manager())
    chosen = Candidates(engine, request(), ctx, ["c04"], 0)
    first = [r.node.node_id for r in chosen.ranked]
    assert sorted(first) == ["w00", "w01", "w02"] and not chosen.widened
    pairs, scores = chosen.widen()
    assert len(scores) == len(pairs)
    assert [s.score for s in scores] == [r.score for r in chosen.ranked]
    assert [p[0] for p in pairs[:len(first)]] == first
    assert sorted(p[0] for p in pairs) == sorted(f"{k}{i:02d}" for k in "wc" for i in range(5)
                                                  if f"{k}{i:02d}" != "c04")
    assert chosen.widened and chosen.get("c03").node.node_id == "c03"


def test_a_pin_outside_the_shortlist_falls_back_to_every_node() -> None:
    ctx = fleet(12, 0)
    engine = RoutingEngine(build_plugin_manager())
    chosen = Candidates(engine, request(headers={"x-herd-node": "w11"}), ctx, (), 0)
    assert [r.node.node_id for r in chosen.ranked] == ["w11"]


def test_a_turns_scores_carry_the_load_they_assumed() -> None:
    """What the acquisition needs to rate the conversation's last node on its live leases:
    each busy candidate's in-flight count, and the points one fewer would give it back."""
    ctx = fleet(2, 0, weight_load=30.0)
    engine = RoutingEngine(build_plugin_manager())
    turn = request({"model": M, "messages": [{"role": "user", "content": "hi"}]})
    engine.prepare(turn, ctx)
    ctx.inputs.started("w01", M)
    chosen = Candidates(engine, turn, ctx, (), 0)
    scored = {r.node.node_id: s for r, s in zip(chosen.ranked, chosen.scores(), strict=True)}
    assert scored["w00"].busy == 0 and scored["w00"].freed == 0
    assert scored["w01"].busy == 1
    # 2 slots, one model loaded: 0.75 / 2 + 0.25 / 2 of the load weight
    assert abs(scored["w01"].freed - 15.0) < 1e-9
    ctx.inputs.finished("w01", M)
    idle = {r.node.node_id: r.score for r in engine.rank(turn, ctx)}
    assert abs(scored["w01"].score + scored["w01"].freed - idle["w01"]) < 0.01
    # a request of no conversation has no last node to rate: nothing is assumed
    plain = request()
    engine.prepare(plain, ctx)
    ctx.inputs.started("w01", M)
    assert all(s.busy == 0 for s in Candidates(engine, plain, ctx, (), 0).scores())
