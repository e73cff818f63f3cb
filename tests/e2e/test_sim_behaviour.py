"""`herd sim` models a real node: loads, eviction, num_ctx reloads, keep_alive, slots, cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import ollama
import pytest

from tests.helpers import wait_until
from tests.simproc import SimProc, sim_reset, sim_stats, start_sim

SMALL, MEDIUM, OTHER = "llama3.2:3b", "qwen3:8b", "gemma3:4b"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    proc = start_sim(tmp_path_factory.mktemp("sim-behaviour"), "behaviour",
                     models=[SMALL, MEDIUM, OTHER], max_loaded_models=2, num_parallel=2,
                     load_seconds_per_gb=0.1, tokens_per_s=200, prompt_tps=4000,
                     memory_gb=64)
    yield proc
    proc.stop()


@pytest.fixture
def client(sim: SimProc) -> ollama.Client:
    sim_reset(sim.url, unload=True)
    return ollama.Client(host=sim.url)


def chat(client: ollama.Client, model: str, text: str = "hi",
         **options: int) -> ollama.ChatResponse:
    return client.chat(model=model, messages=[{"role": "user", "content": text}],
                       options={"num_predict": 3, **options})


def loaded(client: ollama.Client) -> list[str]:
    return [m.model or "" for m in client.ps().models]


def counters(sim: SimProc, model: str | None = None) -> dict[str, int]:
    stats = sim_stats(sim.url)
    result: dict[str, int] = stats["models"][model] if model else stats["total"]
    return result


def test_a_model_loads_before_answering(sim: SimProc, client: ollama.Client) -> None:
    first = chat(client, SMALL)
    second = chat(client, SMALL)
    # 2.0 GB at 0.1 s/GB: the first answer waited for the load, the second did not.
    assert (first.load_duration or 0) >= 0.15e9
    assert (second.load_duration or 0) < 0.05e9
    assert counters(sim, SMALL)["loads"] == 1
    assert loaded(client) == [SMALL]


def test_bigger_models_load_slower(client: ollama.Client) -> None:
    small = chat(client, SMALL).load_duration or 0
    medium = chat(client, MEDIUM).load_duration or 0
    assert medium > small * 1.8  # 5.2 GB against 2.0 GB


def test_least_recently_used_model_is_evicted(sim: SimProc, client: ollama.Client) -> None:
    chat(client, SMALL)
    chat(client, MEDIUM)
    chat(client, SMALL)
    chat(client, OTHER)  # max 2 loaded: MEDIUM was used least recently
    assert sorted(loaded(client)) == sorted([SMALL, OTHER])
    assert counters(sim, MEDIUM)["evictions"] == 1
    assert counters(sim)["evictions"] == 1


def test_other_num_ctx_reloads_the_model(sim: SimProc, client: ollama.Client) -> None:
    chat(client, SMALL)
    reloaded = chat(client, SMALL, num_ctx=8192)
    assert (reloaded.load_duration or 0) >= 0.15e9
    c = counters(sim, SMALL)
    assert c["reloads"] == 1 and c["loads"] == 2
    ps = httpx.get(sim.url + "/api/ps").json()["models"]
    assert [(m["name"], m["context_length"]) for m in ps] == [(SMALL, 8192)]
    chat(client, SMALL, num_ctx=8192)
    assert counters(sim, SMALL)["reloads"] == 1  # same num_ctx: no reload


def test_keep_alive_unloads_after_idle(sim: SimProc, client: ollama.Client) -> None:
    client.chat(model=SMALL, messages=[{"role": "user", "content": "x"}], keep_alive="300ms",
                options={"num_predict": 1})
    assert loaded(client) == [SMALL]
    wait_until(lambda: not loaded(client), timeout=5, message="keep_alive unload")
    assert counters(sim, SMALL)["expirations"] == 1
    client.chat(model=SMALL, messages=[{"role": "user", "content": "x"}], keep_alive=-1,
                options={"num_predict": 1})
    assert client.ps().models[0].expires_at is not None
    assert client.ps().models[0].expires_at.year > 2300  # forever, as Ollama shows it


def test_parallel_slots_limit_running_requests(sim: SimProc, client: ollama.Client) -> None:
    chat(client, SMALL)
    sim_reset(sim.url)
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda i: chat(client, SMALL, f"q{i}", num_predict=20),
                                range(6)))
    elapsed = time.monotonic() - started
    assert all(r.eval_count == 20 for r in replies)
    c = counters(sim, SMALL)
    assert c["max_running"] == 2  # --num-parallel 2
    assert c["max_in_flight"] >= 4  # the rest waited in the node's queue
    assert c["max_queued"] >= 2
    # Three rounds of two: each round 20 tokens at 200/s, slowed by sharing.
    assert elapsed > 0.3


def test_prompt_cache_hit_skips_evaluating_the_old_prompt(
        sim: SimProc, client: ollama.Client) -> None:
    long_text = " ".join(f"fact{i}" for i in range(1500))
    history = [{"role": "user", "content": long_text}]
    first = client.chat(model=SMALL, messages=history, options={"num_predict": 5})
    history += [{"role": "assistant", "content": first.message.content},
                {"role": "user", "content": "and so?"}]
    second = client.chat(model=SMALL, messages=history, options={"num_predict": 5})
    c = counters(sim, SMALL)
    assert c["prompt_cache_hits"] == 1 and c["prompt_cache_misses"] >= 1
    assert c["cached_prompt_tokens"] >= 1500
    assert (second.prompt_eval_count or 0) > (first.prompt_eval_count or 0)
    assert (second.prompt_eval_duration or 0) < (first.prompt_eval_duration or 1) / 4


def test_a_client_that_leaves_frees_its_slot(sim: SimProc, client: ollama.Client) -> None:
    chat(client, SMALL)
    body = {"model": SMALL, "messages": [{"role": "user", "content": "long"}],
            "options": {"num_predict": 2000}}
    with httpx.stream("POST", sim.url + "/api/chat", json=body) as response:
        lines = response.iter_lines()  # kept: dropping the iterator closes the connection
        assert '"done":false' in next(lines)
        assert counters(sim, SMALL)["running"] == 1
    wait_until(lambda: counters(sim, SMALL)["running"] == 0, timeout=5, message="slot freed")
    c = counters(sim, SMALL)
    assert c["in_flight"] == 0 and c["failed"] == 1
    assert c["eval_tokens"] < 2000 + 3
