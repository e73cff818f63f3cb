"""Whether a request fits on a node (shared/fit.py), and the routing parts built on it: the
fit filter, the 400 for a request that fits nowhere, the context-protection line, the
filter of a model failing on one node, and the retry plan after a node's refusal."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from plugins.routing.filters import FitsInMemory, ModelHealthy
from plugins.routing.scorers import FailurePenalty
from plugins.routing.transforms import ContextProtection, FitsSomewhere
from services.router.nodes import RequestRefused, TooLarge, UpstreamFailure
from services.router.proxy.plan import RetryPlan
from shared.errors import BadRequest, RefusedByNode, UpstreamError
from shared.fit import KV_FLOOR, fits, need_of, report, room_gb
from shared.models import (
    FleetSnapshot,
    LoadedModel,
    MemoryRefusal,
    ModelFailures,
    ModelShape,
    NodeState,
    NodeStatus,
)
from shared.routing import RouteRequest, RoutingInputs, ScoringContext
from shared.settings import Settings

pytestmark = pytest.mark.unit

M = "llama3.2:3b"
OTHER = "nomic-embed-text:latest"
# llama3.2:3b's /api/show: 28 blocks, 8 KV heads of 128 (3072 / 24 heads), K and V at f16
KV_F16 = 2 * 28 * 8 * 128 * 2
SHAPE = ModelShape(kv_bytes_per_token=KV_F16, context_length=131072)


def node(node_id: str, memory: float = 24.0, *, parallel: int = 2, size: float = 2.0,
         **kw: Any) -> NodeState:
    fields: dict[str, Any] = {
        "memory_total_gb": memory, "num_parallel": parallel,
        "models_available": (M, OTHER), "model_sizes_gb": {M: size, OTHER: 0.27}, **kw}
    return NodeState(node_id=node_id, ollama_url=f"http://{node_id}", **fields)


def context(*nodes: NodeState, **settings: Any) -> ScoringContext:
    return ScoringContext(settings=Settings.load(environ={}, **settings),
                          snapshot=FleetSnapshot(nodes={n.node_id: n for n in nodes}),
                          inputs=RoutingInputs())


def request(num_ctx: Any = None, *, api: str = "ollama", model: str = M) -> RouteRequest:
    body: dict[str, Any] = {"model": model}
    if num_ctx is not None:
        body["options"] = {"num_ctx": num_ctx}
    return RouteRequest(request_id="r1", api=api, endpoint="chat",  # type: ignore[arg-type]
                        model=model, body=body, raw=b"{}")


def refusal(num_ctx: int = 131072, slots: int = 2, need: float = 32.4,
            size: float = 2.0) -> MemoryRefusal:
    return MemoryRefusal(num_ctx=num_ctx, slots=slots, need_gb=need, size_gb=size,
                         at=time.time())


# --- the estimate --------------------------------------------------------------------------


def test_room_counts_memory_vram_and_swap_and_unknown_is_zero() -> None:
    assert room_gb(node("a", 24.0)) == 24.0
    assert room_gb(node("a", 24.0, gpu={"vram_total_gb": 16.0}, swap_total_gb=8.0)) == 48.0
    assert room_gb(node("a", 0.0, gpu={"vram_total_gb": 16.0})) == 0.0


def test_need_is_the_weights_without_num_ctx_and_adds_the_kv_floor_with_it() -> None:
    plain = node("a")
    assert need_of(plain, M, 0, (), 2).gb == 2.0
    assert need_of(plain, M, 131072, (), 2).source == "weights"  # no metadata: no KV known
    shaped = node("a", model_shapes={M: SHAPE})
    need = need_of(shaped, M, 131072, (), 2)
    assert need.source == "metadata"
    assert need.gb == pytest.approx(2.0 + KV_F16 * 131072 * KV_FLOOR / 1e9)
    # Ollama clamps num_ctx to the trained context: a larger one needs no more
    assert need_of(shaped, M, 10**7, (), 2).gb == need.gb
    assert need_of(node("a"), "unknown:1b", 8192, (), 2).gb == 0.0


def test_a_refusal_counts_only_where_it_proves_something() -> None:
    said = refusal(num_ctx=65536, slots=2, need=32.4, size=2.0)
    target = node("b", parallel=2)
    assert need_of(target, M, 65536, [said], 2).gb == 32.4
    assert need_of(target, M, 131072, [said], 2).gb == 32.4  # more context needs more
    assert need_of(target, M, 32768, [said], 2).gb == 2.0  # less context: proves nothing
    assert need_of(target, M, 65536, [said], 1).gb == 2.0  # fewer sequences: less KV
    assert need_of(node("b", size=4.9), M, 65536, [said], 2).gb == 4.9  # another build
    assert need_of(node("b", size=0.0), M, 65536, [said], 2).gb == 32.4  # size unknown


def test_fits_unless_surely_too_big_and_a_loaded_copy_always_fits() -> None:
    said = [refusal()]
    assert not fits(node("a", 24.0), M, 131072, said, 2)
    assert fits(node("a", 24.0), M, 8192, said, 2)
    assert fits(node("big", 64.0), M, 131072, said, 2)
    assert fits(node("a", 24.0, swap_total_gb=16.0), M, 131072, said, 2)  # swap counts
    assert fits(node("a", 0.0), M, 131072, said, 2)  # memory unknown: let it through
    copy = (LoadedModel(name=M, size_gb=30.0, context_length=131072),)
    assert fits(node("a", 24.0, models_loaded=copy), M, 131072, said, 2)
    smaller = (LoadedModel(name=M, size_gb=3.0, context_length=8192),)
    assert not fits(node("a", 24.0, models_loaded=smaller), M, 131072, said, 2)  # a reload


def test_metadata_alone_rules_out_only_what_no_setting_could_hold() -> None:
    big = "llama3.3:70b"
    kv70 = 2 * 80 * 8 * 128 * 2  # 80 blocks, 8 KV heads of 128
    shape = {big: ModelShape(kv_bytes_per_token=kv70, context_length=131072)}
    sizes = {big: 42.5}
    small = node("a", 48.0, model_sizes_gb=sizes, model_shapes=shape, models_available=(big,))
    # 42.5 GB of weights + at least 12 GB of q4_0 KV cache at 131072 > 48 GB
    assert not fits(small, big, 131072, (), 1)
    assert fits(small, big, 8192, (), 1)  # 42.5 + 0.8


def test_the_report_says_nowhere_only_when_every_node_is_ruled_out() -> None:
    nodes = [node("a", 24.0), node("b", 16.0)]
    fit = report(nodes, M, lambda _: 131072, [refusal()], lambda n: n.num_parallel)
    assert fit.nowhere and fit.ruled_out == ["a", "b"]
    assert fit.largest == ("a", 24.0)
    message = fit.message(M, 131072)
    for part in (M, "num_ctx 131072", "32.4 GB", "the largest, a, has 24.0 GB"):
        assert part in message
    fit = report([*nodes, node("c", 64.0)], M, lambda _: 131072, [refusal()],
                 lambda n: n.num_parallel)
    assert not fit.nowhere and fit.possible == ["c"]
    assert not report([], M, lambda _: 131072, [refusal()], lambda n: 2).nowhere


# --- what routing does with it ------------------------------------------------------------


def snapshot_with_refusal(*nodes: NodeState) -> ScoringContext:
    first, *rest = nodes
    teller = NodeState(**{**_fields(first), "memory_refusals": {M: refusal()}})
    return context(teller, *rest)


def _fields(state: NodeState) -> dict[str, Any]:
    return {f: getattr(state, f) for f in state.__struct_fields__}


def test_the_fit_filter_uses_what_any_node_said() -> None:
    ctx = snapshot_with_refusal(node("a"), node("b"), node("big", 64.0))
    allows = FitsInMemory().allows
    assert [n for n in ["a", "b", "big"]
            if allows(ctx.snapshot.nodes[n], request(131072), ctx)] == ["big"]
    assert all(allows(ctx.snapshot.nodes[n], request(4096), ctx) for n in ("a", "b"))
    # Ollama's OpenAI endpoints ignore options: no num_ctx there, nothing ruled out
    assert allows(ctx.snapshot.nodes["a"], request(131072, api="openai"), ctx)


def test_a_request_that_fits_nowhere_is_a_400_naming_everything() -> None:
    ctx = snapshot_with_refusal(node("a"), node("b", 16.0))
    with pytest.raises(BadRequest) as info:
        FitsSomewhere().apply(request(131072), ctx)
    assert "num_ctx 131072" in info.value.message and "24.0 GB" in info.value.message
    FitsSomewhere().apply(request(8192), ctx)  # smaller: through
    FitsSomewhere().apply(request(), ctx)  # no num_ctx: through
    FitsSomewhere().apply(request(131072, model=OTHER), ctx)  # other models: through
    FitsSomewhere().apply(request("131072"), ctx)  # not a number: the node's 500 to give


def test_a_node_that_may_recover_keeps_a_request_possible() -> None:
    big = node("big", 64.0, status=NodeStatus.DEGRADED)
    FitsSomewhere().apply(request(131072), snapshot_with_refusal(node("a"), big))
    offline = node("big", 64.0, status=NodeStatus.OFFLINE)
    with pytest.raises(BadRequest):
        FitsSomewhere().apply(request(131072), snapshot_with_refusal(node("a"), offline))


def test_the_kept_line_says_it_will_load_where_it_fits_only_if_something_may(
    caplog: pytest.LogCaptureFixture,
) -> None:
    copy = (LoadedModel(name=M, size_gb=3.0, context_length=4096),)
    with caplog.at_level(logging.INFO, logger="herd.routing"):
        ContextProtection().apply(request(131072),
                                  snapshot_with_refusal(node("a", models_loaded=copy)))
        assert "no node can hold it (32.4 GB or more)" in caplog.text
        assert "it will load where it fits" not in caplog.text
        caplog.clear()
        ContextProtection().apply(request(131072), snapshot_with_refusal(
            node("a", models_loaded=copy), node("big", 64.0)))
        assert "it will load where it fits (not on a: too small)" in caplog.text


def test_a_model_failing_on_a_node_leaves_its_other_models_and_comes_back() -> None:
    now = time.time()
    failing = node("a", model_failures={M: ModelFailures(count=3, last=now)})
    ctx = context(failing, node_failures_degraded=3, model_failure_cooldown=30.0)
    healthy = ModelHealthy().allows
    assert not healthy(failing, request(), ctx)
    assert healthy(failing, request(model=OTHER), ctx)
    cooled = node("a", model_failures={M: ModelFailures(count=3, last=now - 31)})
    assert healthy(cooled, request(), ctx)  # one request may try it again
    assert healthy(node("a", model_failures={M: ModelFailures(count=2, last=now)}),
                   request(), ctx)
    score = FailurePenalty().score
    assert score(failing, request(), ctx) == 0.25
    assert score(failing, request(model=OTHER), ctx) == 1.0


# --- the retry plan after a node's refusal ----------------------------------------------


def too_large(need: float = 32.4) -> TooLarge:
    message = "model requires more system memory (30.2 GiB) than is available (22.4 GiB)"
    return TooLarge(f"a answered 500: {message}", 500, b"", message, need)


def test_an_invalid_request_is_answered_at_once_with_the_nodes_words() -> None:
    plan = RetryPlan(max_retries=2)
    message = 'option "num_ctx" must be of type integer'
    with pytest.raises(RefusedByNode) as info:
        plan.failed("a", RequestRefused("a answered 500", 500, b"", message), request())
    # the client's error, in the node's words: a 400 whatever the node's status
    assert (info.value.status_code, info.value.node_status, info.value.message) == (
        400, 500, message)
    assert plan.learned is None


def test_a_memory_refusal_tries_only_nodes_that_may_hold_it_and_is_learned() -> None:
    ctx = context(node("a"), node("b"), node("big", 64.0), node("few", 24.0, parallel=1))
    plan = RetryPlan(max_retries=0)  # refusals do not spend the retry budget
    plan.failed("a", too_large(), request(131072), ctx)
    assert plan.learned == MemoryRefusal(num_ctx=131072, slots=2, need_gb=32.4, size_gb=2.0)
    assert plan.ruled_out == ["b"]  # big has the room; few runs fewer sequences
    assert plan.skip == ["a", "b"]
    plan.failed("big", too_large(70.0), request(131072), ctx)
    plan.failed("few", too_large(20.0 + 12.4), request(131072), ctx)
    error = plan.nothing_to_try(request(131072))
    assert isinstance(error, RefusedByNode) and error.status_code == 400
    assert "requires more system memory" in error.message


def test_without_a_figure_only_nodes_no_larger_are_ruled_out() -> None:
    ctx = context(node("a"), node("b"), node("big", 64.0))
    plan = RetryPlan(max_retries=2)
    plan.failed("a", too_large(need=0.0), request(), ctx)
    assert plan.learned is None and plan.ruled_out == ["b"]


def test_a_node_failure_after_a_refusal_still_spends_the_budget() -> None:
    ctx = context(node("a"), node("big", 64.0), node("huge", 128.0))
    plan = RetryPlan(max_retries=0)
    plan.failed("a", too_large(), request(131072), ctx)
    with pytest.raises(UpstreamError):
        plan.failed("big", UpstreamFailure("big: cannot connect"), request(131072), ctx)


def test_the_num_ctx_a_node_gets_is_the_bodys_unless_it_was_given_its_own() -> None:
    asked = request(131072)
    assert asked.num_ctx_for("a") == 131072
    asked.node_num_ctx = {"b": 8192}  # context protection: b's copy serves it as loaded
    assert (asked.num_ctx_for("a"), asked.num_ctx_for("b")) == (131072, 8192)
    asked.set_body({"model": M})  # stripped
    assert asked.num_ctx_for("a") == 0
    assert request(4096.7).num_ctx_for("a") == 4096  # Ollama truncates a JSON number
    for value in ("8192", True, -5, None):
        assert request(value).num_ctx_for("a") == 0
    assert request(131072, api="openai").num_ctx_for("a") == 0  # /v1 ignores options


def test_a_failure_where_it_might_have_fit_is_the_answer_not_the_earlier_refusal() -> None:
    ctx = context(node("a"), node("big", 64.0))
    plan = RetryPlan(max_retries=2)
    plan.failed("a", too_large(), request(131072), ctx)
    plan.failed("big", UpstreamFailure("big: cannot connect"), request(131072), ctx)
    error = plan.nothing_to_try(request(131072))
    assert isinstance(error, UpstreamError) and "big: cannot connect" in error.message
