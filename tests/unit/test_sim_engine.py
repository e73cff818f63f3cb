"""The modelled node, driven directly: loads, eviction, num_ctx reloads, slots, prompt cache."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from services.sim.catalogue import parse_models, spec_for
from services.sim.config import SimConfig
from services.sim.engine import Engine, SimError
from services.sim.infer import Generation, Job, job_options
from services.sim.openai_api import chat_options
from services.sim.stats import Stats
from services.sim.text import render_chat

BASE = SimConfig(models=tuple(parse_models("llama3.2:3b,qwen3:8b,gemma3:4b")),
                 load_seconds_per_gb=0.0, load_base_seconds=0.0, prompt_tps=0,
                 tokens_per_s=0, num_parallel=2, memory_gb=100, max_loaded_models=3)


def make(**changes: object) -> Engine:
    config = replace(BASE, **changes)
    return Engine(config, Stats("t", 10))


async def run(engine: Engine, model: str, prompt: str = "hi", num_ctx: int = 4096,
              keep_alive: float = 300.0, num_predict: int = 4) -> Generation:
    job = Job(engine.model(model), prompt, num_ctx, keep_alive, num_predict=num_predict)
    gen = Generation(engine, job)
    try:
        await gen.start()
        async for _ in gen.tokens():
            pass
    finally:
        gen.finish()
    return gen


def counters(engine: Engine, model: str) -> dict[str, int]:
    c = engine.stats.model(model)
    return {k: getattr(c, k) for k in vars(c)}


async def test_first_request_loads_and_the_load_takes_time_by_size() -> None:
    engine = make(load_seconds_per_gb=0.05)
    started = time.monotonic()
    gen = await run(engine, "llama3.2:3b")
    took = time.monotonic() - started
    assert took >= 0.09  # 2.0 GB at 0.05 s/GB
    assert gen.load_duration >= 0.09
    again = await run(engine, "llama3.2:3b")
    assert again.load_duration == 0.0
    assert counters(engine, "llama3.2:3b")["loads"] == 1
    assert gen.timings()["eval_count"] == 4 and gen.done_reason == "length"


async def test_unknown_model_is_a_404() -> None:
    with pytest.raises(SimError) as info:
        make().model("nope")
    assert info.value.status == 404
    assert info.value.message == "model 'nope' not found"  # Ollama's chat handler's words


async def test_max_loaded_models_evicts_the_least_recently_used() -> None:
    engine = make(max_loaded_models=2)
    await run(engine, "llama3.2:3b")
    await run(engine, "qwen3:8b")
    await run(engine, "llama3.2:3b")  # now qwen3 is the least recently used
    await run(engine, "gemma3:4b")
    assert set(engine.runners) == {"llama3.2:3b", "gemma3:4b"}
    assert counters(engine, "qwen3:8b")["evictions"] == 1
    assert counters(engine, "llama3.2:3b")["evictions"] == 0


async def test_memory_limit_evicts_and_too_big_fails() -> None:
    engine = make(memory_gb=9.0)  # llama3.2:3b (~3.9 GB) and qwen3:8b (~6.4 GB) do not fit
    await run(engine, "llama3.2:3b")
    await run(engine, "qwen3:8b")
    assert list(engine.runners) == ["qwen3:8b"]
    assert counters(engine, "llama3.2:3b")["evictions"] == 1
    assert engine.memory_used <= engine.memory_total
    with pytest.raises(SimError, match="more system memory"):
        await run(engine, "qwen3:8b", num_ctx=40960)


def test_an_option_of_the_wrong_type_is_ollamas_500() -> None:
    # Ollama checks option types inside its scheduler: a 500 with this wording, not a 400.
    engine = make()
    for value in ("8192", True, [1]):
        with pytest.raises(SimError) as info:
            job_options(engine, {"options": {"num_ctx": value}})
        assert (info.value.status, info.value.message) == (
            500, 'option "num_ctx" must be of type integer')
    assert job_options(engine, {"options": {"num_ctx": 8192.0}})["num_ctx"] == 8192


async def test_a_busy_model_is_not_evicted_the_newcomer_waits() -> None:
    engine = make(max_loaded_models=1, tokens_per_s=50)
    long = asyncio.create_task(run(engine, "llama3.2:3b", num_predict=10))  # ~0.2 s
    await asyncio.sleep(0.05)
    other = await run(engine, "qwen3:8b")
    assert long.done()  # the newcomer got memory only once the first finished
    assert len(other.output) == 4
    assert counters(engine, "llama3.2:3b")["evictions"] == 1


async def test_other_num_ctx_reloads_the_model() -> None:
    engine = make()
    await run(engine, "llama3.2:3b", num_ctx=4096)
    await run(engine, "llama3.2:3b", num_ctx=4096)
    await run(engine, "llama3.2:3b", num_ctx=8192)
    c = counters(engine, "llama3.2:3b")
    assert c["loads"] == 2 and c["reloads"] == 1
    assert engine.runners["llama3.2:3b"].num_ctx == 8192


async def test_keep_alive_unloads_after_idle_and_zero_unloads_at_once() -> None:
    engine = make()
    await run(engine, "llama3.2:3b", keep_alive=0.05)
    assert "llama3.2:3b" in engine.runners
    await asyncio.sleep(0.1)
    assert "llama3.2:3b" not in engine.runners
    await run(engine, "qwen3:8b", keep_alive=0)
    await asyncio.sleep(0)
    assert "qwen3:8b" not in engine.runners
    assert counters(engine, "llama3.2:3b")["expirations"] == 1


async def test_parallel_slots_limit_running_requests_and_the_rest_queue() -> None:
    engine = make(num_parallel=2, tokens_per_s=100)
    await asyncio.gather(*(run(engine, "llama3.2:3b", prompt=f"q{i}", num_predict=5)
                           for i in range(6)))
    c = counters(engine, "llama3.2:3b")
    assert c["max_running"] == 2
    assert c["max_queued"] >= 4
    assert c["running"] == 0 and c["queued"] == 0


async def test_more_running_requests_are_slower_each() -> None:
    engine = make(num_parallel=4, tokens_per_s=200, contention=1.0)
    alone = await run(engine, "llama3.2:3b", num_predict=10)
    together = await asyncio.gather(*(run(engine, "llama3.2:3b", prompt=f"q{i}",
                                          num_predict=10) for i in range(4)))
    assert min(g.eval_duration for g in together) > 2 * alone.eval_duration


async def test_prompt_cache_hit_evaluates_only_new_tokens() -> None:
    engine = make(num_parallel=1, prompt_tps=2000)
    first_msgs = [{"role": "user", "content": " ".join(["word"] * 200)}]
    first = await run(engine, "llama3.2:3b", prompt=render_chat(first_msgs))
    reply = "".join(first.output)
    follow = [*first_msgs, {"role": "assistant", "content": reply},
              {"role": "user", "content": "more please"}]
    second = await run(engine, "llama3.2:3b", prompt=render_chat(follow))
    c = counters(engine, "llama3.2:3b")
    assert c["prompt_cache_misses"] == 1 and c["prompt_cache_hits"] == 1
    assert second.lease is None  # released
    assert c["cached_prompt_tokens"] >= len(first.prompt_tokens)
    assert second.prompt_eval_duration < first.prompt_eval_duration / 3
    # Counts stay those of the whole prompt, as Ollama reports them.
    assert second.timings()["prompt_eval_count"] == len(second.prompt_tokens)
    unrelated = await run(engine, "llama3.2:3b", prompt="something else entirely")
    assert unrelated.prompt_tokens and counters(engine, "llama3.2:3b")["prompt_cache_misses"] == 2


async def test_output_is_deterministic_for_seed_and_prompt() -> None:
    engine = make()
    spec = spec_for("llama3.2:3b")

    async def text(prompt: str, seed: int) -> str:
        gen = Generation(engine, Job(spec, prompt, 4096, 300.0, num_predict=30, seed=seed))
        await gen.start()
        out = "".join([t async for t in gen.tokens()])
        gen.finish()
        return out

    assert await text("a", 1) == await text("a", 1)
    assert await text("a", 1) != await text("a", 2)
    assert await text("a", 1) != await text("b", 1)


async def test_stop_sequences_end_the_reply() -> None:
    engine = make()
    spec = spec_for("llama3.2:3b")
    gen = Generation(engine, Job(spec, "x", 4096, 300.0, num_predict=500, stop=["."]))
    await gen.start()
    out = "".join([t async for t in gen.tokens()])
    gen.finish()
    assert "." not in out and gen.done_reason == "stop" and len(gen.output) < 500


async def test_a_loaded_model_keeps_its_queued_requests_against_another_model() -> None:
    # One model at a time, requests for two models at once: a model just loaded for waiting
    # requests is not idle, so the other model's requests wait for it instead of evicting it
    # before its requests ran (which made the two models evict each other forever).
    engine = make(max_loaded_models=1, load_seconds_per_gb=0.01, num_parallel=1)
    jobs = [run(engine, model, prompt=f"q{i}")
            for i in range(3) for model in ("llama3.2:3b", "qwen3:8b")]
    await asyncio.wait_for(asyncio.gather(*jobs), 10)
    loads = counters(engine, "llama3.2:3b")["loads"] + counters(engine, "qwen3:8b")["loads"]
    assert loads <= 6, loads


def test_an_openai_field_of_the_wrong_type_stays_a_400() -> None:
    # Ollama's OpenAI layer binds max_tokens and seed into typed fields: a 400 there
    for field in ("max_tokens", "seed"):
        with pytest.raises(SimError) as info:
            chat_options({"model": "llama3.2:3b", field: "NaN"})
        assert (info.value.status, info.value.message) == (400, f"{field} must be an integer")
