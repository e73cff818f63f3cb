"""Pure rules of the node registry: status by silence and failures, a node's Ollama URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.router.fleet.heartbeat import ollama_url_for, parse_heartbeat, status_for
from shared.errors import BadRequest
from shared.models import NodeStatus

EXAMPLE = Path(__file__).parent.parent / "data" / "herd-heartbeat-example.json"


@pytest.mark.parametrize(("silence", "failures", "expected"), [
    (0.0, 0, NodeStatus.ONLINE),
    (14.9, 2, NodeStatus.ONLINE),
    (15.0, 0, NodeStatus.DEGRADED),
    (1.0, 3, NodeStatus.DEGRADED),
    (29.9, 0, NodeStatus.DEGRADED),
    (30.0, 0, NodeStatus.OFFLINE),
    (300.0, 5, NodeStatus.OFFLINE),
])
def test_status_for(silence: float, failures: int, expected: NodeStatus) -> None:
    got = status_for(silence, failures, timeout=15, offline=30, failures_degraded=3)
    assert got is expected


@pytest.mark.parametrize(("reported", "source", "expected"), [
    ("http://localhost:11434", "10.0.0.7", "http://10.0.0.7:11434"),
    ("http://127.0.0.1:9999", "10.0.0.7", "http://10.0.0.7:9999"),
    ("http://[::1]:11434", "192.168.1.4", "http://192.168.1.4:11434"),
    ("http://127.0.0.1:11434", "fd00::5", "http://[fd00::5]:11434"),
    ("http://127.0.0.1:11434", "127.0.0.1", "http://127.0.0.1:11434"),
    ("http://10.0.0.9:11434", "10.0.0.7", "http://10.0.0.9:11434"),
    ("http://gpu-3.lan:11434", "10.0.0.7", "http://gpu-3.lan:11434"),
    ("localhost:11500", "10.0.0.7", "http://10.0.0.7:11500"),
    ("https://localhost", "10.0.0.7", "https://10.0.0.7:443"),
    ("", "10.0.0.7", "http://10.0.0.7:11434"),
])
def test_ollama_url_rule(reported: str, source: str, expected: str) -> None:
    assert ollama_url_for(reported, source) == expected


def test_bad_port_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        ollama_url_for("http://localhost:99999", "10.0.0.7")


def test_example_payload_parses_with_models_and_url() -> None:
    node = parse_heartbeat(json.loads(EXAMPLE.read_text()), "10.1.2.3")
    assert node.node_id == "capnode"
    assert node.ollama_url == "http://10.1.2.3:11434"
    assert [m.name for m in node.models_loaded] == ["llama3.2:3b", "nomic-embed-text:latest"]
    assert node.loaded("llama3.2:3b") is not None
    assert node.loaded("llama3.2:3b").context_length == 8192  # type: ignore[union-attr]
    assert node.has_model("qwen3:8b")
    assert node.model_size_gb("qwen3:8b") == pytest.approx(5.36870912)
    assert node.num_parallel == 4
    assert node.slots(1) == 4
    assert node.max_loaded_models == 0
    assert node.cores == 2 and node.memory_available_gb == 23.08
    assert node.servable


def test_ollama_down_hides_models() -> None:
    node = parse_heartbeat({"node_id": "n", "ollama": {"up": False, "models_available": ["a"]}},
                           "10.0.0.1")
    assert not node.ollama_up and not node.servable
    assert node.models_available == ()


def test_unqualified_names_get_latest() -> None:
    node = parse_heartbeat({"node_id": "n", "ollama": {"models_available": ["phi3"],
                                                       "models_loaded": ["phi3"]}}, "")
    assert node.models_available == ("phi3:latest",)
    assert node.models_loaded[0].name == "phi3:latest"


@pytest.mark.parametrize("payload", [
    [], "x", {}, {"node_id": "  "}, {"node_id": "a b"}, {"node_id": "x" * 201},
    {"node_id": "a", "memory": {"total_gb": float("inf")}},
    {"node_id": "a", "ollama": {"models_available": "llama3"}},
    {"node_id": "a", "ollama": []},
])
def test_bad_payloads(payload: object) -> None:
    with pytest.raises(BadRequest):
        parse_heartbeat(payload, "10.0.0.1")
