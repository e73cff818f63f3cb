"""The built-in routing plugins and the engine that combines them (pure logic)."""

from __future__ import annotations

import logging

import msgspec
import pytest

from plugins.routing.filters import PinnedNode
from plugins.routing.scorers import ContextFit, FailurePenalty, Latency, Load, Loaded, MemoryFit
from plugins.routing.transforms import ContextProtection, Tags
from services.router.fleet.routing import RoutingEngine
from services.router.proxy.forward import error_tail, parse_final
from shared.errors import BadRequest
from shared.hookspecs import hookimpl
from shared.models import FleetSnapshot, LoadedModel, NodeState, NodeStatus
from shared.plugins import build_plugin_manager
from shared.routing import LatencyStats, RouteRequest, RoutingInputs, ScoringContext
from shared.settings import Settings

M = "llama3.2:3b"


def node(node_id: str, *, loaded: int | None = None, **kw: object) -> NodeState:
    models_loaded = (LoadedModel(name=M, size_gb=2.0, context_length=loaded),) if loaded else ()
    defaults: dict[str, object] = {
        "memory_total_gb": 24.0, "memory_available_gb": 20.0, "num_parallel": 2,
        "models_available": (M,), "model_sizes_gb": {M: 2.0},
    }
    defaults.update(kw)
    return NodeState(node_id=node_id, ollama_url=f"http://{node_id}", models_loaded=models_loaded,
                     **defaults)  # type: ignore[arg-type]


def context(*nodes: NodeState, **settings: object) -> ScoringContext:
    return ScoringContext(
        settings=Settings.load(environ={}, **settings),
        snapshot=FleetSnapshot(nodes={n.node_id: n for n in nodes}),
        inputs=RoutingInputs(),
    )


def request(body: dict[str, object] | None = None, **kw: object) -> RouteRequest:
    body = body or {"model": M}
    return RouteRequest(request_id="r1", api="ollama", endpoint="chat", model=M, body=body,
                        raw=b"{}", **kw)  # type: ignore[arg-type]


# --- transforms --------------------------------------------------------------------------


def test_context_protection_strips_a_num_ctx_a_default_copy_covers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = context(node("a", loaded=4096))
    req = request({"model": M, "options": {"num_ctx": 2048, "top_p": 0.5}})
    with caplog.at_level(logging.INFO, logger="herd.routing"):
        ContextProtection().apply(req, ctx)
    assert req.body == {"model": M, "options": {"top_p": 0.5}}
    assert req.requested_num_ctx == 2048
    assert b"num_ctx" not in req.payload() and b"num_ctx" not in req.payload_for("a")
    assert req.notes[0].kind == "context_protection"
    assert req.notes[0].fields["action"] == "stripped"
    assert "Context protection: stripped" in caplog.text


def test_context_protection_sends_a_larger_copy_its_own_num_ctx(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Stripping would not do here: without num_ctx the node loads its default (4096) and
    # reloads the 8192 copy. The copy's own value keeps it.
    ctx = context(node("a", loaded=8192), node("b"))
    req = request({"model": M, "options": {"num_ctx": 4096, "top_p": 0.5}})
    with caplog.at_level(logging.INFO, logger="herd.routing"):
        ContextProtection().apply(req, ctx)
    assert req.node_num_ctx == {"a": 8192}
    assert msgspec.json.decode(req.payload_for("a"))["options"] == {
        "num_ctx": 8192, "top_p": 0.5}
    # other nodes get what the client sent
    assert not req.body_changed and req.payload_for("b") == req.raw
    assert req.notes[0].fields["action"] == "matched"
    assert "becomes the loaded copy's (a=8192)" in caplog.text


def test_a_request_without_num_ctx_inherits_a_larger_loaded_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = context(node("a", loaded=8192), node("b", loaded=4096), node("c", loaded=2048))
    req = request({"model": M, "messages": []})
    with caplog.at_level(logging.INFO, logger="herd.routing"):
        ContextProtection().apply(req, ctx)
    assert req.node_num_ctx == {"a": 8192}  # b has the default; c must reload anyway
    assert not req.body_changed and req.requested_num_ctx == 0
    assert msgspec.json.decode(req.payload_for("a"))["options"] == {"num_ctx": 8192}
    assert req.payload_for("b") == req.raw
    assert req.notes[0].fields["action"] == "inherited"
    assert "without num_ctx gets the loaded copy's num_ctx (a=8192)" in caplog.text
    # default-context copies only: nothing to do, nothing said
    plain = request({"model": M})
    ContextProtection().apply(plain, context(node("b", loaded=4096)))
    assert not plain.node_num_ctx and not plain.notes


def test_context_protection_drops_an_emptied_options_object() -> None:
    req = request({"model": M, "options": {"num_ctx": 2048}})
    ContextProtection().apply(req, context(node("a", loaded=4096)))
    assert "options" not in req.body


def test_context_protection_keeps_a_larger_num_ctx_and_never_invents_one() -> None:
    req = request({"model": M, "options": {"num_ctx": 32768}})
    ContextProtection().apply(req, context(node("a", loaded=8192)))
    assert req.body["options"] == {"num_ctx": 32768} and not req.body_changed
    assert "kept" in req.notes[0].message
    assert not req.node_num_ctx


@pytest.mark.parametrize("mode", ["warn", "passthrough"])
def test_context_protection_warn_and_passthrough_change_nothing(mode: str) -> None:
    req = request({"model": M, "options": {"num_ctx": 2048}})
    ContextProtection().apply(req, context(node("a", loaded=8192), context_protection=mode))
    assert req.body["options"] == {"num_ctx": 2048} and not req.body_changed
    assert len(req.notes) == (1 if mode == "warn" else 0)


def test_context_protection_ignores_unloaded_and_equal_contexts() -> None:
    for n in (node("a"), node("a", loaded=2048)):
        req = request({"model": M, "options": {"num_ctx": 2048}})
        ContextProtection().apply(req, context(n))
        assert not req.body_changed and not req.notes


def test_tags_from_header_metadata_and_user() -> None:
    req = request({"model": M, "metadata": {"tags": ["agent", "batch"]}, "user": "alice"},
                  headers={"x-herd-tags": "ci, agent"})
    Tags().apply(req, context())
    assert req.tags == ["ci", "agent", "batch", "alice"]
    odd = request({"model": M, "metadata": {"tags": "a,b"}, "user": 5})
    Tags().apply(odd, context())
    assert odd.tags == ["a", "b"]


# --- scorers -----------------------------------------------------------------------------


def test_loaded_memory_and_context_scorers() -> None:
    ctx = context()
    hot, cold = node("hot", loaded=4096), node("cold")
    req = request()
    assert Loaded().score(hot, req, ctx) == 1.0 and Loaded().score(cold, req, ctx) == 0.0
    assert MemoryFit().score(hot, req, ctx) == 1.0
    assert 0.5 < MemoryFit().score(cold, req, ctx) <= 1.0
    tight = node("tight", memory_available_gb=1.0)
    assert MemoryFit().score(tight, req, ctx) < 0.3
    req.requested_num_ctx = 8192
    assert ContextFit().score(hot, req, ctx) < ContextFit().score(cold, req, ctx)
    assert ContextFit().score(node("big", loaded=16384), req, ctx) == 1.0


def test_load_scorer_counts_this_replicas_work_between_refreshes() -> None:
    ctx = context()
    n = node("a")
    before = Load().score(n, request(), ctx)
    ctx.inputs.started("a", M)
    ctx.inputs.started("a", M)
    full = Load().score(n, request(), ctx)
    assert before == 1.0 and full < 0.3
    ctx.inputs.finished("a", M)
    assert full < Load().score(n, request(), ctx) < before
    ctx.inputs.replace({("a", M): 1}, {}, {})  # Redis already counts this replica's work
    assert ctx.inputs.in_flight("a", M) == 1 and ctx.inputs.node_in_flight("a") == 1


def test_latency_scorer_prefers_the_faster_node_and_is_neutral_when_unknown() -> None:
    ctx = context()
    ctx.inputs.replace({}, {
        ("fast", M): LatencyStats(tokens_per_s=100, samples=5),
        ("slow", M): LatencyStats(tokens_per_s=25, samples=5),
    }, {})
    req = request()
    assert Latency().score(node("fast"), req, ctx) == 1.0
    assert Latency().score(node("slow"), req, ctx) == 0.25
    assert Latency().score(node("new"), req, ctx) == 0.5


def test_failure_penalty() -> None:
    ctx = context()
    assert FailurePenalty().score(node("a"), request(), ctx) == 1.0
    assert FailurePenalty().score(node("a", router_failures=3), request(), ctx) == 0.25


# --- the engine --------------------------------------------------------------------------


def engine() -> RoutingEngine:
    return RoutingEngine(build_plugin_manager())


def test_engine_ranks_loaded_first_but_skips_unservable_and_excluded() -> None:
    nodes = [node("cold"), node("hot", loaded=4096), node("off", loaded=4096,
             status=NodeStatus.OFFLINE), node("other", models_available=("x:1b",))]
    ctx = context(*nodes)
    routing = engine()
    ranked = routing.rank(request(), ctx)
    assert [r.node.node_id for r in ranked] == ["hot", "cold"]
    assert set(ranked[0].breakdown) == {"loaded", "memory", "load", "latency", "context",
                                        "failures", "affinity"}
    assert ranked[0].score == pytest.approx(sum(ranked[0].breakdown.values()), abs=0.1)
    assert [r.node.node_id for r in routing.rank(request(), ctx, ["hot"])] == ["cold"]


def test_pinned_node_filter_keeps_only_the_named_node() -> None:
    pin = PinnedNode()
    ctx = context(node("a"), node("b"))
    assert pin.allows(node("a"), request(), ctx)  # no header: every node passes
    pinned = request(headers={"x-herd-node": " b "})
    assert not pin.allows(node("a"), pinned, ctx)
    assert pin.allows(node("b"), pinned, ctx)


def test_engine_honours_a_pin_but_never_moves_it_elsewhere() -> None:
    nodes = [node("cold"), node("hot", loaded=4096),
             node("off", status=NodeStatus.OFFLINE), node("other", models_available=("x:1b",))]
    ctx = context(*nodes)
    routing = engine()
    assert "pinned_node" in {f.name for f in routing.filters}
    assert [r.node.node_id for r in routing.rank(request(), ctx)] == ["hot", "cold"]
    chosen = routing.rank(request(headers={"x-herd-node": "cold"}), ctx)
    assert [r.node.node_id for r in chosen] == ["cold"]
    # unknown, offline, or without the model: no candidate at all
    for target in ("ghost", "off", "other"):
        assert routing.rank(request(headers={"x-herd-node": target}), ctx) == [], target


def test_weights_come_from_settings() -> None:
    ctx = context(node("cold"), node("hot", loaded=4096), weight_loaded=0.0, weight_memory=0.0,
                  weight_context=0.0)
    routing = engine()
    ctx.inputs.started("hot", M)
    ctx.inputs.started("hot", M)
    assert routing.rank(request(), ctx)[0].node.node_id == "cold"


def test_an_idle_node_beats_a_loaded_one_that_is_full() -> None:
    ctx = context(node("idle"), node("busy", loaded=4096))
    routing = engine()
    assert routing.rank(request(), ctx)[0].node.node_id == "busy"
    for _ in range(2):
        ctx.inputs.started("busy", M)
    # the loaded node still ranks first, but the slot acquisition takes the first free
    # candidate, so the order must still hold both
    assert {r.node.node_id for r in routing.rank(request(), ctx)} == {"idle", "busy"}


class PreferLast:
    @hookimpl
    def herd_choose_node(self, request: RouteRequest, ranked: list[tuple[NodeState, float]],
                         context: ScoringContext) -> NodeState | None:
        return ranked[-1][0]


def test_a_policy_plugin_overrides_the_default() -> None:
    manager = build_plugin_manager()
    assert not RoutingEngine(manager).custom_policy
    manager.register(PreferLast(), name="prefer-last")
    routing = RoutingEngine(manager)
    assert routing.custom_policy
    ctx = context(node("cold"), node("hot", loaded=4096))
    assert routing.rank(request(), ctx)[0].node.node_id == "cold"


def test_disabled_plugins_are_not_used() -> None:
    routing = RoutingEngine(build_plugin_manager(["plugins.routing.transforms"]))
    assert routing.transforms == []
    assert {s.name for s in routing.scorers} >= {"loaded", "load"}


# --- response parsing --------------------------------------------------------------------


def test_parse_final_reads_ollama_and_openai_endings() -> None:
    ollama_tail = (b'{"done":false}\n{"done":true,"done_reason":"stop","prompt_eval_count":9,'
                   b'"eval_count":20,"eval_duration":500000000,"load_duration":2000000}\n')
    usage = parse_final(ollama_tail, stream=True)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.finish_reason) == (9, 20, "stop")
    assert usage.tokens_per_s == 40.0 and usage.load_ms == 2.0
    sse = (b'data: {"choices":[{"finish_reason":"length"}],'
           b'"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\ndata: [DONE]\n\n')
    usage = parse_final(sse, stream=True, sse=True)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.finish_reason) == (3, 4, "length")
    assert parse_final(b"not json", stream=False).completion_tokens == 0
    assert error_tail("/api/chat", "boom", False) == b'{"error":"boom"}\n'
    assert error_tail("/v1/chat/completions", "boom", True).startswith(b'data: {"error":{')


# --- conversations ------------------------------------------------------------------------


def chat(*contents: str, system: str = "") -> dict[str, object]:
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    roles = ["user", "assistant"]
    messages += [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]
    return {"model": M, "messages": messages}


def conversation_key(body: dict[str, object], endpoint: str = "chat") -> str:
    from plugins.routing.transforms import Conversation

    req = RouteRequest(request_id="r", api="ollama", endpoint=endpoint, model=M, body=body,
                       raw=b"{}")
    Conversation().apply(req, context(node("a")))
    return req.session_key


def test_a_conversation_keeps_its_key_across_turns() -> None:
    first = conversation_key(chat("plan a trip", system="be brief"))
    later = conversation_key(chat("plan a trip", "Day 1: ...", "and day 2?", system="be brief"))
    assert first and first == later
    assert conversation_key(chat("plan a trip", system="be verbose")) != first
    assert conversation_key(chat("write a poem")) != first
    assert conversation_key({"model": M, "prompt": "hi"}, endpoint="generate") == ""
    assert conversation_key({"model": M, "messages": [{"role": "system", "content": "x"}]}) == ""


def test_anthropic_and_responses_conversations_keep_their_keys_across_turns() -> None:
    def messages(*contents: str, system: object = "be brief") -> dict[str, object]:
        roles = ["user", "assistant"]
        return {"model": M, "system": system, "max_tokens": 10, "messages": [
            {"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]}

    first = conversation_key(messages("fix the bug"), "messages")
    assert first == conversation_key(messages("fix the bug", "done", "now test it"), "messages")
    assert conversation_key(messages("fix the bug", system="be verbose"), "messages") != first
    assert conversation_key(messages("fix the bug", system=[
        {"type": "text", "text": "be brief"}]), "messages") != first
    # the same words as a chat are another conversation (another API, another prompt)
    assert conversation_key(chat("fix the bug", system="be brief")) != first

    def responses(*items: str, instructions: str = "you are codex") -> dict[str, object]:
        roles = ["user", "assistant"]
        return {"model": M, "instructions": instructions, "input": [
            {"type": "message", "role": roles[i % 2], "content": c} for i, c in enumerate(items)]}

    opening = conversation_key(responses("add tests"), "responses")
    assert opening and opening == conversation_key(
        responses("add tests", "added", "run them"), "responses")
    assert conversation_key(responses("add tests", instructions="other"), "responses") != opening
    one = conversation_key({"model": M, "input": "hello", "instructions": "x"}, "responses")
    assert one and one != opening
    assert conversation_key({"model": M, "input": []}, "responses") == ""
    # Codex names its conversation in prompt_cache_key: every turn keeps it, whatever input
    keyed = conversation_key({**responses("add tests"), "prompt_cache_key": "c-1"}, "responses")
    assert keyed not in ("", opening) and keyed == conversation_key(
        {**responses("other", "words"), "prompt_cache_key": "c-1"}, "responses")
    assert conversation_key({"model": M, "input": "hi"}, "speech") == ""


def test_the_node_that_served_the_last_turn_ranks_first_with_replica_memory() -> None:
    engine = RoutingEngine(build_plugin_manager())
    ctx = context(node("a", loaded=4096), node("b", loaded=4096), session_affinity="replica")
    req = request(chat("hello"))
    engine.prepare(req, ctx)
    assert req.session_key
    assert [r.node.node_id for r in engine.rank(req, ctx)] == ["a", "b"]  # a tie: by name
    ctx.inputs.remember_session(req.session_key, "b")
    ranked = engine.rank(req, ctx)
    assert [r.node.node_id for r in ranked] == ["b", "a"]
    assert ranked[0].breakdown["affinity"] == 15.0
    # ... but not over a free slot elsewhere: b full (2 of 2 slots busy), a idle.
    ctx.inputs.started("b", M)
    ctx.inputs.started("b", M)
    assert engine.rank(req, ctx)[0].node.node_id == "a"


def test_room_to_load_keeps_a_model_off_a_node_full_of_busy_models() -> None:
    from plugins.routing.filters import RoomToLoad

    big = "big:14b"

    def box(name: str, loaded: str, size: float, total: float = 24.0) -> NodeState:
        return NodeState(node_id=name, ollama_url=f"http://{name}", memory_total_gb=total,
                         num_parallel=2, models_available=(M, big),
                         model_sizes_gb={M: 2.0, big: 12.0},
                         models_loaded=(LoadedModel(name=loaded, size_gb=size),))

    busy, idle, warm = box("busy", M, 16.0), box("idle", M, 16.0), box("warm", big, 12.0)
    ctx = context(busy, idle, warm)
    ctx.inputs.started("busy", M)
    req = request({"model": big})
    req.model = big
    room = RoomToLoad()
    # 12 GB x 1.2 does not fit beside 16 GB in use; the idle model may be evicted
    assert not room.allows(busy, req, ctx)
    assert room.allows(idle, req, ctx)
    assert room.allows(warm, req, ctx)
    # an idle model that requests wait for fleet-wide is in demand: not room either
    ctx.inputs.queued = {M: 3}
    assert not room.allows(idle, req, ctx)
    ctx.inputs.queued = {}
    # nor a place taken under max_loaded_models by a busy model
    one_place = msgspec.structs.replace(idle, max_loaded_models=1)
    ctx.inputs.started("idle", M)
    assert not room.allows(one_place, req, ctx)
    ctx.inputs.finished("idle", M)
    assert room.allows(one_place, req, ctx)
    # with no loaded copy left (the warm node failed this request), any node may load it
    ctx.excluded = frozenset({"warm"})
    assert room.allows(busy, req, ctx)
    # the engine tells the filters which nodes a retry excludes
    engine = RoutingEngine(build_plugin_manager())
    fresh = context(busy, idle, warm)
    fresh.inputs.started("busy", M)
    assert {r.node.node_id for r in engine.rank(req, fresh)} == {"idle", "warm"}
    assert {r.node.node_id for r in engine.rank(req, fresh, ["warm"])} == {"busy", "idle"}


def test_room_to_load_never_plans_to_evict_a_pinned_copy() -> None:
    from plugins.routing.filters import RoomToLoad

    big = "big:14b"
    idle = NodeState(node_id="idle", ollama_url="http://idle", memory_total_gb=24.0,
                     num_parallel=2, models_available=(M, big),
                     model_sizes_gb={M: 2.0, big: 12.0},
                     models_loaded=(LoadedModel(name=M, size_gb=16.0),))
    warm = NodeState(node_id="warm", ollama_url="http://warm", memory_total_gb=24.0,
                     models_available=(big,), model_sizes_gb={big: 12.0},
                     models_loaded=(LoadedModel(name=big, size_gb=12.0),))
    req = request({"model": big})
    req.model = big
    room = RoomToLoad()
    # idle and unpinned, the 16 GB copy may be evicted for the big model
    assert room.allows(idle, req, context(idle, warm))
    # pinned, it stays: no room on that node while another has the model loaded
    assert not room.allows(idle, req, context(idle, warm, pinned_models={M: 1}))
    # a pin on another model changes nothing
    assert room.allows(idle, req, context(idle, warm, pinned_models={"other:1b": 1}))


def test_the_wait_rule_keeps_a_request_on_loaded_copies_while_waiting_is_quicker() -> None:
    from plugins.routing.filters import WaitForLoaded
    from shared.routing import LatencyStats

    warm = NodeState(node_id="warm", ollama_url="http://warm", num_parallel=2,
                     models_available=(M,), model_sizes_gb={M: 2.0},
                     models_loaded=(LoadedModel(name=M, size_gb=2.0),))
    cold = NodeState(node_id="cold", ollama_url="http://cold", num_parallel=2,
                     models_available=(M,), model_sizes_gb={M: 2.0})
    ctx = context(warm, cold)
    req = request({"model": M})
    rule = WaitForLoaded()
    assert rule.allows(warm, req, ctx)
    assert rule.allows(cold, req, ctx)  # a free slot on the warm copy: no wait, no rule
    ctx.inputs.started("warm", M)
    ctx.inputs.started("warm", M)
    assert rule.allows(cold, req, ctx)  # full, but no running time measured yet
    ctx.inputs.latency[("warm", M)] = LatencyStats(latency_ms=1000.0, samples=5)
    assert rule.allows(cold, req, ctx)  # nor any load: a guess holds nobody back
    ctx.inputs.load_ms = {("cold", M): 8000.0}
    # 1 request ahead (this one) over 2 slots x 1 s = 0.5 s < an 8 s load: wait for warm
    assert not rule.allows(cold, req, ctx)
    ctx.inputs.queued = {M: 19}  # 20 / 2 x 1 s = 10 s > 8 s: load a copy
    assert rule.allows(cold, req, ctx)
    ctx.inputs.queued = {}
    # a node named by X-Herd-Node, a retry, or the setting off: never held back
    assert rule.allows(cold, request({"model": M}, headers={"x-herd-node": "cold"}), ctx)
    ctx.excluded = frozenset({"other"})
    assert rule.allows(cold, req, ctx)
    ctx.excluded = frozenset()
    off = context(warm, cold, wait_for_loaded=False)
    off.inputs = ctx.inputs
    assert rule.allows(cold, req, off)
    # without a measured load there, the fleet's seconds per GB: 8 s for 2 GB elsewhere
    ctx.inputs.load_ms = {("warm", M): 8000.0}
    assert not rule.allows(cold, req, ctx)


def test_with_fleet_affinity_the_scorer_leaves_it_to_the_slot_acquisition() -> None:
    engine = RoutingEngine(build_plugin_manager())
    ctx = context(node("a", loaded=4096), node("b", loaded=4096))
    req = request(chat("hello"))
    engine.prepare(req, ctx)
    ctx.inputs.remember_session(req.session_key, "b")
    ranked = engine.rank(req, ctx)
    assert [r.node.node_id for r in ranked] == ["a", "b"]
    assert ranked[1].breakdown["affinity"] == 0.0
    assert engine.weight("affinity", ctx.settings) == 15.0
    assert engine.weight("no-such-scorer", ctx.settings) == 0.0


def test_an_explicit_session_groups_requests_of_any_endpoint() -> None:
    from plugins.routing.transforms import Conversation

    keys = set()
    for endpoint, body in (("generate", {"model": M, "prompt": "a"}),
                           ("chat", chat("something else")),
                           ("embed", {"model": M, "input": "x"})):
        req = RouteRequest(request_id="r", api="ollama", endpoint=endpoint, model=M,
                           body=body, raw=b"{}", headers={"x-herd-session": "job-7"})
        Conversation().apply(req, context(node("a")))
        keys.add(req.session_key)
    assert len(keys) == 1 and "" not in keys
    long = RouteRequest(request_id="r", api="ollama", endpoint="generate", model=M,
                        body={}, raw=b"{}", headers={"x-herd-session": "x" * 300})
    with pytest.raises(BadRequest):
        Conversation().apply(long, context(node("a")))


def test_priority_header_and_app() -> None:
    from plugins.routing.transforms import Priority

    req = request(headers={"x-herd-priority": "High"})
    Priority().apply(req, context())
    assert req.priority == "high"
    with pytest.raises(BadRequest, match="X-Herd-Priority must be one of high, normal, low"):
        Priority().apply(request(headers={"x-herd-priority": "urgent"}), context())
    assert request().queue_app == "(none)"
    tagged = request({"model": M, "user": "alice"}, headers={"x-herd-tags": "batch"})
    Tags().apply(tagged, context())
    assert tagged.queue_app == "batch"
    tagged.app = "billing"  # the app of the client key the request came with
    assert tagged.queue_app == "billing"


def test_large_context_requests_stay_on_copies_that_have_the_context() -> None:
    engine = RoutingEngine(build_plugin_manager())
    big, small = node("big", loaded=8192), node("small", loaded=4096)
    ctx = context(big, small)
    req = request({"model": M, "options": {"num_ctx": 8192}})
    engine.prepare(req, ctx)
    # the big copy is half busy, the small one idle: still the big one
    ctx.inputs.started("big", M)
    assert engine.rank(req, ctx)[0].node.node_id == "big"


def test_a_grant_says_hit_moved_or_new_and_carries_the_bonus() -> None:
    from services.router.fleet.slots import Grant

    engine = RoutingEngine(build_plugin_manager())
    ctx = context(node("a", loaded=4096), node("b", loaded=4096))
    req = request(chat("hello"))
    engine.prepare(req, ctx)
    place = engine.place(req, ctx.settings)
    assert place.session == req.session_key and place.affinity_bonus == 15.0
    ranked = engine.rank(req, ctx)
    chosen, verdict = engine.granted(req, ctx.settings, place, Grant("b", "b"), ranked)
    assert verdict == "hit" and chosen.node.node_id == "b"
    assert chosen.breakdown["affinity"] == 15.0
    assert chosen.score == pytest.approx(ranked[1].score + 15.0)
    assert engine.granted(req, ctx.settings, place, Grant("a", "b"), ranked)[1] == "moved"
    assert engine.granted(req, ctx.settings, place, Grant("a"), ranked)[1] == "new"
    # no conversation: no session passed to the acquisition, always new
    plain = request({"model": M, "prompt": "x"})
    assert engine.place(plain, ctx.settings).session == ""
