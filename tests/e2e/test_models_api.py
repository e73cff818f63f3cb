"""Model management against real processes: a herd router and two simulated Ollamas."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Proc, free_port, herd_bin

EXAMPLE = json.loads(
    (Path(__file__).parent.parent / "data" / "herd-heartbeat-example.json").read_text()
)
TOKEN = "adm1n"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_sim(tmp_path: Path, name: str, models: str) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(
        [sys.executable, "-m", "services.sim", "--host", "127.0.0.1", "--port", str(port),
         "--node-name", name, "--models", models, "--pull-seconds-per-gb", "0.15"],
        tmp_path / f"sim-{name}.log",
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/api/version")
    return proc, url


def beat(router: str, node_id: str, sim_url: str, available_gb: float) -> None:
    tags = httpx.get(sim_url + "/api/tags").json()["models"]
    body: dict[str, Any] = copy.deepcopy(EXAMPLE)
    body["node_id"] = node_id
    body["ollama_host"] = sim_url
    body["memory"].update(total_gb=32.0, used_gb=32.0 - available_gb, available_gb=available_gb)
    body["ollama"]["models_loaded"] = []
    body["ollama"]["models_available"] = [m["name"] for m in tags]
    body["ollama"]["models_available_sizes"] = {m["name"]: m["size"] / 1e9 for m in tags}
    response = httpx.post(router + "/heartbeat", json=body)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("models")
    procs: list[Proc] = []
    try:
        sim_a, url_a = start_sim(tmp, "a", "llama3.2:3b")
        procs.append(sim_a)
        sim_b, url_b = start_sim(tmp, "b", "llama3.2:3b,nomic-embed-text")
        procs.append(sim_b)
        port = free_port()
        router = f"http://127.0.0.1:{port}"
        herd = Proc(
            [herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--no-mdns",
             "--no-dashboard", "--data-dir", str(tmp / "data")],
            tmp / "herd.log", env={"FLEET_ADMIN_TOKEN": TOKEN},
        )
        procs.append(herd)
        herd.wait_http(router + "/healthz")
        beat(router, "node-a", url_a, available_gb=20.0)
        beat(router, "node-b", url_b, available_gb=8.0)
        yield {"router": router, "a": url_a, "b": url_b}
    finally:
        for proc in reversed(procs):
            proc.stop()


def installed(sim_url: str) -> set[str]:
    return {m["name"] for m in httpx.get(sim_url + "/api/tags").json()["models"]}


def test_model_management_lists_each_node(fleet: dict[str, str]) -> None:
    data = httpx.get(fleet["router"] + "/dashboard/api/model-management").json()
    nodes = {n["node_id"]: n for n in data["nodes"]}
    assert set(nodes) == {"node-a", "node-b"}
    names_b = {m["name"] for m in nodes["node-b"]["installed"]}
    assert names_b == {"llama3.2:3b", "nomic-embed-text:latest"}
    sizes = {m["name"]: m["size_gb"] for m in nodes["node-b"]["installed"]}
    assert sizes["llama3.2:3b"] > 1.0
    assert nodes["node-a"]["memory_available_gb"] == 20.0
    assert sorted(data["models"]["llama3.2:3b"]) == ["node-a", "node-b"]


def test_pull_streams_progress_from_the_named_node(fleet: dict[str, str]) -> None:
    lines = []
    with httpx.stream("POST", fleet["router"] + "/dashboard/api/pull", headers=AUTH,
                      json={"model": "qwen3:0.6b", "node_id": "node-b"}, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["x-fleet-node"] == "node-b"
        assert response.headers["content-type"].startswith("application/x-ndjson")
        for line in response.iter_lines():
            if line:
                lines.append(json.loads(line))
    assert lines[0] == {"status": "pulling manifest"}
    completed = [line["completed"] for line in lines if "completed" in line]
    assert len(completed) >= 2 and completed == sorted(completed)
    assert completed[-1] == lines[1]["total"]
    assert lines[-1] == {"status": "success"}
    assert "qwen3:0.6b" in installed(fleet["b"])
    assert "qwen3:0.6b" not in installed(fleet["a"])


def test_ollama_pull_without_node_picks_the_roomiest(fleet: dict[str, str]) -> None:
    response = httpx.post(fleet["router"] + "/api/pull", headers=AUTH,
                          json={"model": "smollm:135m", "stream": False}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success"}
    assert response.headers["x-fleet-node"] == "node-a"  # 20 GB free beats 8 GB
    assert "smollm:135m" in installed(fleet["a"])


def test_delete_and_errors(fleet: dict[str, str]) -> None:
    router = fleet["router"]
    response = httpx.post(router + "/dashboard/api/delete", headers=AUTH,
                          json={"model": "nomic-embed-text", "node_id": "node-b"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "deleted"
    assert "nomic-embed-text:latest" not in installed(fleet["b"])
    again = httpx.post(router + "/dashboard/api/delete", headers=AUTH,
                       json={"model": "nomic-embed-text", "node_id": "node-b"})
    assert again.status_code == 404
    assert "not found" in again.json()["error"]
    unknown = httpx.post(router + "/dashboard/api/pull", headers=AUTH,
                         json={"model": "x", "node_id": "nowhere"})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "node 'nowhere' not found"}
    no_auth = httpx.post(router + "/dashboard/api/delete",
                         json={"model": "llama3.2:3b", "node_id": "node-a"})
    assert no_auth.status_code == 401
    bad = httpx.post(router + "/dashboard/api/pull", headers=AUTH, json={"node_id": "node-a"})
    assert bad.status_code == 400
    assert "model" in bad.json()["error"]
