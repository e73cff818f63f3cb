"""A simulator tells its agent what machine it models (/sim/node); a real server is asked once."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.node.sampler import Sampler
from services.sim.catalogue import spec_for
from tests.helpers import free_port, http_ok, running, wait_until
from tests.simproc import SimProc, start_sim

MODELS = ["llama3.2:3b", "qwen3:8b"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    proc = start_sim(tmp_path_factory.mktemp("sim-node"), "modelled", models=MODELS,
                     memory_gb=10, max_loaded_models=2, num_parallel=3, cpu_cores=12,
                     disk_gb=100, tokens_per_s=0)
    yield proc
    proc.stop()


def test_sim_node_reports_the_modelled_machine(sim: SimProc) -> None:
    body = httpx.get(sim.url + "/sim/node", timeout=5).json()
    assert body["simulated"] is True and body["node_name"] == "modelled"
    assert (body["max_loaded_models"], body["num_parallel"]) == (2, 3)
    assert body["cpu"] == {"cores_physical": 12, "cores_logical": 12, "utilization_pct": 0.0}
    installed = sum(spec_for(m).size for m in MODELS) / 1e9
    assert body["disk"]["total_gb"] == 100.0
    assert body["disk"]["used_gb"] == pytest.approx(installed, abs=0.01)
    assert body["memory"] == {"total_gb": 10.0, "used_gb": 0.0, "available_gb": 10.0}
    loaded = httpx.post(sim.url + "/api/generate", json={"model": "llama3.2:3b", "prompt": ""},
                        timeout=30)
    assert loaded.status_code == 200, loaded.text
    memory = httpx.get(sim.url + "/sim/node", timeout=5).json()["memory"]
    ps = httpx.get(sim.url + "/api/ps", timeout=5).json()["models"]
    assert memory["used_gb"] == pytest.approx(sum(m["size"] for m in ps) / 1e9, abs=0.01)
    assert memory["available_gb"] == pytest.approx(10.0 - memory["used_gb"], abs=0.01)


def test_agent_beside_a_simulator_reports_its_figures_over_the_environment(
    sim: SimProc,
) -> None:
    async def sample() -> dict[str, object]:
        sampler = Sampler(sim.url, 0, environ={"OLLAMA_MAX_LOADED_MODELS": "5",
                                               "OLLAMA_NUM_PARALLEL": "7"})
        try:
            return await sampler.sample("modelled")
        finally:
            await sampler.aclose()

    payload = asyncio.run(sample())
    ollama = payload["ollama"]
    assert isinstance(ollama, dict) and ollama["up"] is True
    assert payload["max_loaded_models"] == ollama["max_loaded_models"] == 2
    assert payload["num_parallel"] == 3 and ollama["num_parallel_source"] == "sim"
    # the simulator's /api/show has no layer counts: no KV figure rather than a guess
    assert ollama["models_available_shape"] == {}
    assert payload["cpu"] == {"cores_physical": 12, "cores_logical": 12,
                              "utilization_pct": 0.0}
    assert payload["disk"] == httpx.get(sim.url + "/sim/node", timeout=5).json()["disk"]
    memory = payload["memory"]
    assert isinstance(memory, dict) and memory["total_gb"] == 10.0


def test_a_server_without_sim_node_is_asked_once(tmp_path: Path) -> None:
    port = free_port()
    # Any HTTP server that is not a simulator answers 404 to /sim/node, as Ollama does.
    with running([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                  "--directory", str(tmp_path)], tmp_path / "http.log") as server:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(url + "/"), timeout=10, message="the plain HTTP server")

        async def ask_three_times() -> list[object]:
            sampler = Sampler(url, 0, environ={})
            try:
                return [await sampler.simulated() for _ in range(3)]
            finally:
                await sampler.aclose()

        assert asyncio.run(ask_three_times()) == [None, None, None]
        wait_until(lambda: "/sim/node" in server.output(), timeout=5, message="the request log")
        assert server.output().count("GET /sim/node") == 1, server.output()
