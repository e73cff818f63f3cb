"""The simulator's pure parts: the catalogue, the tokenizer and text, keep_alive, faults."""

from __future__ import annotations

import math

import pytest

from services.sim.catalogue import CATALOGUE, normalize_name, parse_models, spec_for
from services.sim.faults import FaultMode, FaultState, parse_fault_flag
from services.sim.text import (
    embedding,
    generate_tokens,
    parse_keep_alive,
    render_chat,
    seeded_rng,
    tokenize,
)


def test_names_without_tag_mean_latest() -> None:
    assert normalize_name("llama3.2") == "llama3.2:latest"
    assert normalize_name("llama3.2:3b") == "llama3.2:3b"
    assert normalize_name("registry.example:5000/team/model") == (
        "registry.example:5000/team/model:latest")


def test_catalogue_models_have_real_sizes_and_latest_aliases() -> None:
    spec = spec_for("llama3.2:3b")
    assert spec.size == 2_019_393_189 and spec.family == "llama"
    assert spec.context_length == 131072
    latest = spec_for("llama3.2")
    assert latest.name == "llama3.2:latest" and latest.size == spec.size
    assert spec_for("nomic-embed-text").embedding
    assert spec_for("nomic-embed-text").embedding_length == 768


def test_unknown_models_are_sized_from_their_tag() -> None:
    small, big = spec_for("mystery:7b"), spec_for("mystery:70b")
    assert small.name == "mystery:7b" and small.parameter_size == "7.0B"
    assert 3e9 < small.size < 6e9
    assert big.size > 9 * small.size
    assert spec_for("tiny:500m").size < small.size
    assert spec_for("acme-embed-v1").embedding


def test_parse_models_keeps_order_and_drops_duplicates() -> None:
    names = [s.name for s in parse_models("qwen3:8b, llama3.2:3b,qwen3:8b,,nomic-embed-text")]
    assert names == ["qwen3:8b", "llama3.2:3b", "nomic-embed-text:latest"]


def test_memory_grows_with_context_and_slots() -> None:
    spec = CATALOGUE["qwen3:8b"]
    assert spec.memory_bytes(4096, 1) > spec.size
    assert spec.memory_bytes(8192, 1) > spec.memory_bytes(4096, 1)
    assert spec.memory_bytes(4096, 4) > spec.memory_bytes(4096, 2)


def test_generated_tokens_are_deterministic_and_count_consistently() -> None:
    def reply(seed: int) -> list[str]:
        stream = generate_tokens(seeded_rng(seed, "m", "prompt"))
        return [next(stream) for _ in range(200)]

    assert reply(1) == reply(1)
    assert reply(1) != reply(2)
    text = "".join(reply(1))
    # eval_count (one token per chunk) equals what the tokenizer finds in the text.
    assert len(tokenize(text)) == 200


def test_chat_prompts_extend_each_other() -> None:
    first = [{"role": "user", "content": "hello there"}]
    second = [*first, {"role": "assistant", "content": "Hi."},
              {"role": "user", "content": "and then?"}]
    a, b = tokenize(render_chat(first)), tokenize(render_chat(second))
    assert b[: len(a)] == a and len(b) > len(a)


def test_embeddings_are_deterministic_unit_vectors() -> None:
    v = embedding("m:latest", "text", 384, seed=0)
    assert len(v) == 384
    assert math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4)
    assert v == embedding("m:latest", "text", 384, seed=0)
    assert v != embedding("m:latest", "other", 384, seed=0)


@pytest.mark.parametrize(("value", "seconds"), [
    (None, 300.0), ("", 300.0), (0, 0.0), (30, 30.0), ("30", 30.0), ("10s", 10.0),
    ("5m", 300.0), ("1h30m", 5400.0), ("-1", -1.0), (-1, -1.0), ("250ms", 0.25),
])
def test_keep_alive_durations(value: object, seconds: float) -> None:
    assert parse_keep_alive(value, 300.0) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", True, [1]])
def test_bad_keep_alive_is_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="keep_alive"):
        parse_keep_alive(value, 300.0)


def test_fault_count_paths_and_probability() -> None:
    faults = FaultState(seed=1)
    assert faults.pick("/api/chat") is FaultMode.NONE
    faults.set("error500", {"count": 2, "paths": ["/api/chat"]})
    assert faults.pick("/api/tags") is FaultMode.NONE  # not a listed path
    assert faults.pick("/sim/stats") is FaultMode.NONE  # control paths never fail
    assert faults.pick("/api/chat") is FaultMode.ERROR500
    assert faults.pick("/api/chat") is FaultMode.ERROR500
    assert faults.pick("/api/chat") is FaultMode.NONE  # count used up
    assert faults.mode is FaultMode.NONE
    faults.set("slow", {"probability": 0.5})
    hits = sum(faults.pick("/api/chat") is FaultMode.SLOW for _ in range(400))
    assert 120 < hits < 280


def test_fault_defaults_and_validation() -> None:
    faults = FaultState()
    faults.set("die_mid_stream", {})
    assert faults.params["after_tokens"] == 5
    faults.set("hang", {})
    assert faults.params["after_tokens"] == -1  # hang before any byte
    with pytest.raises(ValueError):
        faults.set("explode", {})
    with pytest.raises(ValueError, match="unknown"):
        faults.set("slow", {"speed": 2})
    with pytest.raises(ValueError, match="probability"):
        faults.set("error500", {"probability": 2})


def test_fault_flag_parsing() -> None:
    assert parse_fault_flag("none") == ("none", {})
    mode, params = parse_fault_flag("slow:factor=5,paths=/api/chat|/v1/")
    assert mode == "slow" and params == {"factor": "5", "paths": ["/api/chat", "/v1/"]}
    with pytest.raises(ValueError):
        parse_fault_flag("slow:factor")


def test_every_flag_is_documented_and_defaults_match_the_config() -> None:
    import argparse
    from dataclasses import fields

    from services.sim.cli import add_arguments, config_from_args
    from services.sim.config import SimConfig

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    actions = [a for a in parser._actions if a.dest != "help"]
    assert all(a.help and len(a.help) > 20 for a in actions)
    config = config_from_args(parser.parse_args([]))
    default = SimConfig()
    for f in fields(SimConfig):
        assert getattr(config, f.name) == getattr(default, f.name), f.name
    documented = {a.dest for a in actions}
    assert {f.name for f in fields(SimConfig)} - {"fault_params"} <= documented
    tuned = config_from_args(parser.parse_args(
        ["--models", "qwen3:8b", "--keep-alive", "10s", "--response-tokens", "5-9",
         "--fault", "slow:factor=3"]))
    assert tuned.model_names() == ["qwen3:8b"] and tuned.keep_alive == 10.0
    assert tuned.response_tokens == (5, 9) and tuned.fault == "slow"
    machine = config_from_args(parser.parse_args(["--cpu-cores", "32", "--disk-gb", "2000"]))
    assert (machine.cpu_cores, machine.disk_gb) == (32, 2000.0)
    for wrong in (["--cpu-cores", "0"], ["--disk-gb", "-1"]):
        with pytest.raises(ValueError, match=wrong[0]):
            config_from_args(parser.parse_args(wrong))
