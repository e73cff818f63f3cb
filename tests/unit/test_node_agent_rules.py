"""The agent's pure parts: router preference and failover, parallelism, memory pressure."""

from __future__ import annotations

import pytest

from services.cli import settings_from_args
from services.node.cli import build_parser
from services.node.discovery import RouterDirectory
from services.node.sampler import (
    default_max_loaded_models,
    fixed_memory,
    memory_pressure,
    modelled_machine,
    resolve_max_loaded_models,
    resolve_num_parallel,
)
from services.node.shapes import model_shape
from shared.settings import Settings


def test_directory_prefers_current_then_fewest_failures() -> None:
    routers = RouterDirectory(["http://a:1", "http://b:1/"])
    routers.add("r._fleet-manager._tcp.local.", ["http://c:1"])
    assert routers.candidates() == ["http://a:1", "http://b:1", "http://c:1"]
    routers.failed("http://a:1")
    assert routers.candidates()[0] == "http://b:1"
    routers.succeeded("http://c:1")
    assert routers.current == "http://c:1"
    assert routers.candidates() == ["http://c:1", "http://b:1", "http://a:1"]
    routers.failed("http://c:1")
    assert routers.current is None
    assert routers.candidates()[0] == "http://b:1"


def test_directory_forgets_removed_services() -> None:
    routers = RouterDirectory()
    routers.add("one", ["http://10.0.0.1:11435"])
    routers.add("two", ["http://10.0.0.2:11435"])
    routers.succeeded("http://10.0.0.1:11435")
    routers.remove("one")
    assert routers.urls() == ["http://10.0.0.2:11435"]
    assert routers.current is None
    routers.add("two", ["http://10.0.0.3:11435"])  # moved
    assert routers.urls() == ["http://10.0.0.3:11435"]


def test_num_parallel_flag_then_env_then_default() -> None:
    assert resolve_num_parallel(6, {"OLLAMA_NUM_PARALLEL": "2"}, 64) == (6, "flag")
    assert resolve_num_parallel(0, {"OLLAMA_NUM_PARALLEL": "2"}, 64) == (2, "env")
    assert resolve_num_parallel(0, {"OLLAMA_NUM_PARALLEL": "junk"}, 64) == (4, "default")
    assert resolve_num_parallel(0, {}, 2.0) == (1, "default")


def test_max_loaded_models_default() -> None:
    assert default_max_loaded_models(0) == 3
    assert default_max_loaded_models(2) == 6


@pytest.mark.parametrize(("available", "total", "level"), [
    (50, 100, "normal"), (19, 100, "warning"), (9, 100, "critical"), (0, 0, "normal"),
])
def test_memory_pressure(available: float, total: float, level: str) -> None:
    assert memory_pressure(available, total) == level


def test_fixed_memory_counts_the_loaded_models_against_the_configured_total() -> None:
    assert fixed_memory(24.0, [2.0, 5.5]) == {
        "total_gb": 24.0, "used_gb": 7.5, "available_gb": 16.5, "pressure": "normal"}
    assert fixed_memory(24.0, []) == {
        "total_gb": 24.0, "used_gb": 0.0, "available_gb": 24.0, "pressure": "normal"}
    assert fixed_memory(10.0, [8.5])["pressure"] == "warning"
    assert fixed_memory(10.0, [4.0, 5.5])["pressure"] == "critical"
    over = fixed_memory(4.0, [6.0])
    assert (over["used_gb"], over["available_gb"], over["pressure"]) == (6.0, 0.0, "critical")


def test_memory_gb_flag_and_variable_reach_the_settings() -> None:
    args = build_parser().parse_args(["--memory-gb", "12.5"])
    assert settings_from_args(args).node_memory_gb == 12.5
    assert Settings.load(environ={"FLEET_NODE_MEMORY_GB": "16"}).node_memory_gb == 16.0
    assert Settings.load(environ={}).node_memory_gb == 0.0


SIM_NODE = {"simulated": True, "max_loaded_models": 2, "num_parallel": 3,
            "cpu": {"cores_physical": 12, "cores_logical": 12, "utilization_pct": 25.0},
            "memory": {"total_gb": 10.0, "used_gb": 9.5, "available_gb": 0.5},
            "disk": {"total_gb": 100.0, "used_gb": 7.0, "available_gb": 93.0}}


def test_a_simulators_figures_replace_the_hosts() -> None:
    host = {"arch": "x86_64", "cpu": {"cores_physical": 2, "cores_logical": 4,
                                      "utilization_pct": 80.0},
            "memory": {"total_gb": 64.0, "used_gb": 1.0, "available_gb": 63.0,
                       "pressure": "normal", "swap_used_gb": 1.0, "swap_total_gb": 2.0},
            "disk": {"total_gb": 1.0, "used_gb": 0.5, "available_gb": 0.5}}
    out = modelled_machine(host, SIM_NODE)
    assert out["cpu"] == {"cores_physical": 12, "cores_logical": 12, "utilization_pct": 25.0}
    assert out["memory"]["total_gb"] == 10.0 and out["memory"]["pressure"] == "critical"
    assert out["disk"] == SIM_NODE["disk"]
    assert out["arch"] == "x86_64" and host["cpu"]["cores_physical"] == 2  # host untouched
    # A section the simulator gives in part (or not at all) keeps the host's figures.
    partial = modelled_machine(host, {"cpu": {"cores_physical": 12}, "disk": "big"})
    assert partial["cpu"] == host["cpu"] and partial["disk"] == host["disk"]


def test_a_simulators_word_on_slots_and_loaded_models() -> None:
    env = {"OLLAMA_NUM_PARALLEL": "6", "OLLAMA_MAX_LOADED_MODELS": "5"}
    assert resolve_num_parallel(0, env, 20.0, SIM_NODE) == (3, "sim")
    assert resolve_num_parallel(8, env, 20.0, SIM_NODE) == (8, "flag")
    assert resolve_num_parallel(0, env, 20.0, {"num_parallel": True}) == (6, "env")
    assert resolve_max_loaded_models(env, 0, SIM_NODE) == 2
    assert resolve_max_loaded_models(env, 0, None) == 5
    assert resolve_max_loaded_models({}, 1, {"max_loaded_models": 0}) == 3


# Ollama's own /api/show example (docs/api.md): llama3 8B, 32 layers of 8 KV heads of 128.
LLAMA3_SHOW = {
    "model_info": {
        "general.architecture": "llama", "general.parameter_count": 8030261248,
        "llama.attention.head_count": 32, "llama.attention.head_count_kv": 8,
        "llama.block_count": 32, "llama.context_length": 8192,
        "llama.embedding_length": 4096, "llama.rope.dimension_count": 128,
    },
    "capabilities": ["completion", "vision"],
}


def test_a_models_kv_bytes_per_token_from_its_metadata() -> None:
    # 32 layers x 8 heads x (128 + 128) x 2 bytes: the well-known 128 KiB per token
    assert model_shape(LLAMA3_SHOW) == {"kv_bytes_per_token": 131072, "context_length": 8192}
    info = dict(LLAMA3_SHOW["model_info"])  # type: ignore[call-overload]
    explicit = {**info, "llama.attention.key_length": 64, "llama.attention.value_length": 64}
    assert model_shape({"model_info": explicit})["kv_bytes_per_token"] == 65536  # type: ignore[index]


@pytest.mark.parametrize("change", [
    {"llama.attention.sliding_window": 4096},  # most layers hold a window, not num_ctx
    {"llama.ssm.state_size": 16},  # recurrent layers
    {"llama.attention.kv_lora_rank": 512},  # a compressed cache
    {"llama.attention.head_count_kv": [8, 8, 0, 8]},  # per layer
    {"llama.block_count": None},
    {"general.architecture": None},
])
def test_an_unsure_shape_is_no_shape(change: dict[str, object]) -> None:
    info = {**LLAMA3_SHOW["model_info"], **change}  # type: ignore[dict-item]
    assert model_shape({"model_info": info}) is None


def test_an_embedding_model_has_no_kv_cache_to_count() -> None:
    assert model_shape({**LLAMA3_SHOW, "capabilities": ["embedding"]}) is None
    assert model_shape({}) is None
