"""The pin and queue-copy plan, from fleet snapshots alone; and the pinned_models shape."""

from __future__ import annotations

import pytest

from services.router.fleet.pinplan import (
    FRESH_TRUST_S,
    Kind,
    PinState,
    World,
    load_seconds,
    plan,
)
from shared.models import FleetSnapshot, LoadedModel, NodeState, NodeStatus
from shared.pins import PinError, parse_pins

pytestmark = pytest.mark.unit

BIG, SMALL = "big:30b", "small:3b"
FOREVER = "2318-01-01T00:00:00Z"
SOON = "2026-12-04T10:00:00Z"
NOW = 1_796_000_000.0  # December 2026


def node(node_id: str, *loaded: tuple[str, str], total: float = 24.0,
         status: NodeStatus = NodeStatus.ONLINE, models: tuple[str, ...] = (BIG, SMALL)
         ) -> NodeState:
    sizes = {BIG: 18.0, SMALL: 2.0}
    return NodeState(node_id=node_id, ollama_url=f"http://{node_id}", status=status,
                     memory_total_gb=total, models_available=models, model_sizes_gb=sizes,
                     last_seen=NOW - 1,
                     models_loaded=tuple(LoadedModel(name=m, size_gb=sizes[m], expires_at=e)
                                         for m, e in loaded))


def world(*nodes: NodeState, busy: dict[tuple[str, str], int] | None = None,
          queued: dict[str, int] | None = None, held: set[tuple[str, str]] | None = None,
          loading: dict[str, str] | None = None,
          latency: dict[tuple[str, str], float] | None = None,
          fresh: dict[tuple[str, str], float] | None = None) -> World:
    flights = busy or {}
    return World(snapshot=FleetSnapshot(nodes={n.node_id: n for n in nodes}), now=NOW,
                 in_flight=lambda n, m: flights.get((n, m), 0), queued=queued or {},
                 loading=loading or {}, fresh=fresh or {}, held=frozenset(held or set()),
                 latency_ms=latency or {}, slots=lambda n: 2)


def test_a_missing_copy_goes_to_the_roomiest_node_never_over_a_busy_model() -> None:
    # a: a busy small model; b: idle small model (may be evicted); c: too small
    a = node("a", (SMALL, SOON), total=20.0)
    b = node("b", (SMALL, SOON), total=24.0)
    c = node("c", total=10.0)
    statuses, actions = plan({BIG: {"copies": 1, "nodes": []}},
                             world(a, b, c, busy={("b", SMALL): 1}), queue_copies=False)
    # b's small model is busy: 24 - 2 = 22 GB left >= 21.6; a: 20 GB left (idle: evictable)
    assert [(x.kind, x.node_id) for x in actions] == [(Kind.PIN, "b")]
    assert statuses[0].state is PinState.LOADING and statuses[0].loading_on == ["b"]
    # with the small model pinned on b too, b has only 22 GB beside it... still fits; but a
    # pinned big copy elsewhere counts as kept
    _, actions = plan({BIG: {"copies": 1, "nodes": []}},
                      world(a, b, c, busy={("b", SMALL): 1}, loading={BIG: "a"}),
                      queue_copies=False)
    assert actions == []  # one load per model in flight


def test_satisfied_pins_are_held_forever_and_released_when_unpinned() -> None:
    a = node("a", (BIG, SOON))
    statuses, actions = plan({BIG: {"copies": 1, "nodes": []}}, world(a), queue_copies=False)
    assert statuses[0].state is PinState.SATISFIED and statuses[0].loaded_on == ["a"]
    assert [(x.kind, x.keep_alive) for x in actions] == [(Kind.REFRESH, -1)]
    held = node("a", (BIG, FOREVER))
    _, actions = plan({BIG: {"copies": 1, "nodes": []}}, world(held, held={("a", BIG)}),
                      queue_copies=False)
    assert actions == []
    statuses, actions = plan({}, world(held, held={("a", BIG)}), queue_copies=False)
    assert statuses == []
    assert [(x.kind, x.keep_alive) for x in actions] == [(Kind.RELEASE, None)]


def test_our_finished_load_counts_until_a_heartbeat_surely_written_after_it() -> None:
    """A heartbeat that arrives just after our load ended may have been written before it
    (the node read its loaded models, then sent): it does not undo the load at once."""
    pin = {BIG: {"copies": 1, "nodes": ["a"]}}
    a = node("a")  # its last heartbeat (NOW - 1) shows nothing loaded
    for ended in (NOW - 0.5, NOW - 2.0, NOW - FRESH_TRUST_S + 1):  # after, just before
        statuses, actions = plan(pin, world(a, fresh={("a", BIG): ended}),
                                 queue_copies=False)
        assert actions == [] and statuses[0].state is PinState.SATISFIED, ended
    # long enough ago that the heartbeats would show it: it was evicted, load it again
    _, actions = plan(pin, world(a, fresh={("a", BIG): NOW - FRESH_TRUST_S - 1}),
                      queue_copies=False)
    assert [(x.kind, x.node_id) for x in actions] == [(Kind.PIN, "a")]


def test_short_reasons_name_the_cause() -> None:
    small = node("a", total=8.0)
    off = node("b", status=NodeStatus.OFFLINE)
    pins = {BIG: {"copies": 1, "nodes": []}, "ghost:1b": {"copies": 1, "nodes": []},
            SMALL: {"copies": 1, "nodes": ["b"]}}
    statuses, actions = plan(pins, world(small, off), queue_copies=False)
    reasons = {s.model: s.reason for s in statuses if s.state is PinState.SHORT}
    assert "no node has room" in reasons[BIG]
    assert "model missing" in reasons["ghost:1b"]
    assert "node offline: b" in reasons[SMALL]
    assert actions == []


def test_a_queue_longer_than_a_cold_load_gets_one_more_copy() -> None:
    a = node("a", (SMALL, SOON))
    b = node("b")
    # 2 slots, 20 waiting, 3 s a request: 30 s of waiting > a ~3 s cold load of 2 GB
    _, actions = plan({}, world(a, b, queued={SMALL: 20}, latency={("a", SMALL): 3000.0}),
                      queue_copies=True)
    assert [(x.kind, x.node_id, x.keep_alive) for x in actions] == [(Kind.QUEUE, "b", None)]
    assert "expected wait 30.0 s" in actions[0].reason
    # a short queue waits: 2 waiting = 3 s < the load
    _, actions = plan({}, world(a, b, queued={SMALL: 2}, latency={("a", SMALL): 3000.0}),
                      queue_copies=True)
    assert actions == []
    # a node already running as much as its slots gains nothing from another copy
    busy_b = world(a, b, queued={SMALL: 20}, latency={("a", SMALL): 3000.0})
    busy_b.node_in_flight = lambda node_id: 2 if node_id == "b" else 0
    assert plan({}, busy_b, queue_copies=True)[1] == []
    # and the setting turns it off
    _, actions = plan({}, world(a, b, queued={SMALL: 20}, latency={("a", SMALL): 3000.0}),
                      queue_copies=False)
    assert actions == []


def test_load_time_is_learnt_per_node_then_per_gb() -> None:
    a, b = node("a"), node("b")
    w = world(a, b)
    w.load_ms = {("a", SMALL): 4000.0}
    assert load_seconds(a, SMALL, w) == 4.0
    assert load_seconds(b, BIG, w) == pytest.approx(2.0 * 18.0)  # 2 s/GB measured on a


def test_pinned_models_parse_to_one_shape_with_clear_errors() -> None:
    assert parse_pins("qwen3=2,llama3.2:3b=1") == {
        "llama3.2:3b": {"copies": 1, "nodes": []}, "qwen3:latest": {"copies": 2, "nodes": []}}
    assert parse_pins({"m:1b": {"nodes": ["b", "a"]}}) == {
        "m:1b": {"copies": 2, "nodes": ["a", "b"]}}
    for bad, words in [({"m": 0}, "between 1 and"), ({"m": True}, "number of copies"),
                       ({"m": {"copies": 2, "nodes": ["a"]}}, "cannot fit"),
                       ({"m": {"size": 1}}, "unknown field"), ([1], "must be an object"),
                       ("{", "not valid JSON"), ({"bad name": 1}, "not a model name")]:
        with pytest.raises(PinError, match=words):
            parse_pins(bad)
