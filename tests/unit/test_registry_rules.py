"""Pure rules of the node registry: status by silence and failures, a node's Ollama URL."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from services.router.fleet.heartbeat import (
    node_from_hash,
    ollama_url_for,
    parse_heartbeat,
    state_encoder,
    status_for,
)
from shared.errors import BadRequest
from shared.fit import REFUSAL_TTL
from shared.models import MemoryRefusal, ModelFailures, ModelShape, NodeStatus

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


def test_the_hash_carries_what_the_routers_saw_per_model() -> None:
    state = parse_heartbeat(json.loads(EXAMPLE.read_text()), "10.0.0.7")
    said = MemoryRefusal(num_ctx=131072, slots=4, need_gb=62.9, size_gb=2.0, at=1000.0)
    fields = {
        "state": state_encoder.encode(state).decode(), "status": "online",
        "last_seen": "990", "failures": "1",
        "mfail:llama3.2:3b": "2", "mfail_at:llama3.2:3b": "995.5",
        "refused:llama3.2:3b": msgspec.json.encode(said).decode(),
        "refused:qwen3:8b": "not json",  # a damaged field is skipped, not the node
    }
    node = node_from_hash(fields, now=1000.0 + REFUSAL_TTL - 1)
    assert node is not None and node.router_failures == 1
    assert node.model_failures == {"llama3.2:3b": ModelFailures(count=2, last=995.5)}
    assert node.memory_refusals == {"llama3.2:3b": said}
    stale = node_from_hash(fields, now=1000.0 + REFUSAL_TTL)
    assert stale is not None and stale.memory_refusals == {}  # believed for an hour


def test_a_heartbeat_may_say_what_models_need_and_the_swap() -> None:
    payload = json.loads(EXAMPLE.read_text())
    payload["memory"]["swap_total_gb"] = 8.0
    payload["ollama"]["models_available_shape"] = {
        "llama3.2:3b": {"kv_bytes_per_token": 114688, "context_length": 131072},
        "qwen3": {"kv_bytes_per_token": 147456, "context_length": 40960},
        "bad": {"kv_bytes_per_token": "many"}, "worse": 7,
    }
    node = parse_heartbeat(payload, "10.0.0.7")
    assert node.swap_total_gb == 8.0
    assert node.model_shapes == {
        "llama3.2:3b": ModelShape(kv_bytes_per_token=114688, context_length=131072),
        "qwen3:latest": ModelShape(kv_bytes_per_token=147456, context_length=40960),
    }
