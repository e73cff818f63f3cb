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
    resolve_num_parallel,
)
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
