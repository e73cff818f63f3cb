"""The response contract: COMPAT.md's field names, and the dashboard's decoding of answers."""

from __future__ import annotations

import msgspec
import pytest

from shared import schemas
from streamlit_app import data

pytestmark = pytest.mark.unit

# One node of a /fleet/status answer, as a router of this version sends it.
NODE = {
    "node_id": "gpu-1", "status": "degraded", "servable": False,
    "ollama_url": "http://10.0.0.7:11434", "ollama_up": True, "ollama_error": "",
    "draining": False, "last_seen": 1_700_000_000.5, "seconds_since_heartbeat": 21.0,
    "router_failures": 0, "cpu": {"utilization_pct": 37.5, "cores_physical": 16},
    "memory": {"total_gb": 64, "used_gb": 40.25, "available_gb": 23.75, "pressure": "normal"},
    "disk": {"total_gb": 1000.0, "available_gb": 512.0}, "gpu": None,
    "models_loaded": [{"name": "llama3.2:3b", "size_gb": 2.0, "context_length": 8192,
                       "requests_active": 1, "expires_at": ""}],
    "models_available": ["llama3.2:3b"], "num_parallel": 4, "num_parallel_reported": 0,
    "max_loaded_models": 3, "ollama_version": "0.12.0", "agent_version": "0.1.0",
    "lan_ip": "10.0.0.7",
}
STATUS = {
    "fleet": {"nodes_total": 1, "nodes_online": 0, "nodes_degraded": 1, "nodes_offline": 0,
              "nodes_servable": 0, "models_loaded": 1, "requests_active": 1,
              "requests_waiting": 0},
    "nodes": [NODE],
    "queues": {"gpu-1:llama3.2:3b": {"pending": 0, "in_flight": 1, "done": 9, "failed": 1,
                                     "max_concurrent": 4}},
    "timestamp": 1_700_000_021.5,
    "herd_version": "0.1.0",
    "ollama_version": "0.14.0",
}


def _fields(shape: type[msgspec.Struct]) -> set[str]:
    return set(shape.__struct_fields__)


def test_compat_shapes_keep_their_field_names() -> None:
    """The fields COMPAT.md lists for ollama-herd's users are all there, by name."""
    assert {"fleet", "nodes", "queues", "timestamp"} <= _fields(schemas.FleetStatus)
    assert {"nodes_total", "nodes_online", "models_loaded", "requests_active"} <= _fields(
        schemas.FleetSummary)
    assert {"pending", "in_flight", "done", "failed", "max_concurrent"} == _fields(
        schemas.QueueCounters)
    assert {"nodes_total", "nodes_online", "nodes_degraded", "nodes_offline",
            "overall_error_rate_pct", "cold_loads_24h", "avg_ttft_ms", "total_requests_24h",
            "total_retries_24h", "health_score"} == _fields(schemas.Vitals)
    assert {"vitals", "recommendations", "checked_at"} == _fields(schemas.HealthReport)
    assert {"check_id", "severity", "title", "description", "fix", "node_id", "data"} == _fields(
        schemas.Finding)
    assert msgspec.to_builtins(schemas.HeartbeatAnswer(node_status=schemas.NodeStatus.ONLINE)) \
        == {"status": "ok", "node_status": "online"}


def test_the_dashboard_decodes_a_fleet_status_into_typed_fields() -> None:
    reply = data.decode(data.Reply(STATUS, "", 200), schemas.FleetStatus)
    assert reply.error == "" and reply.data is not None
    node = reply.data.nodes[0]
    assert node.status is schemas.NodeStatus.DEGRADED
    assert node.cpu.utilization_pct == 37.5  # one path, where there used to be three guesses
    assert node.memory.total_gb == 64.0
    assert node.models_loaded[0].context_length == 8192
    assert reply.data.queues["gpu-1:llama3.2:3b"].in_flight == 1
    assert msgspec.to_builtins(reply.data) == STATUS


def test_an_answer_of_another_shape_is_an_error_not_a_guess() -> None:
    old = {**STATUS, "nodes": [{**NODE, "cpu": 37.5}]}  # a router that flattened cpu
    reply = data.decode(data.Reply(old, "", 200), schemas.FleetStatus)
    assert reply.data is None
    assert "same version" in reply.error and "cpu" in reply.error


def test_a_failed_reply_stays_failed_when_decoded() -> None:
    failed = data.Reply({"error": "boom"}, "boom (HTTP 500)", 500)
    reply = data.decode(failed, schemas.HealthReport)
    assert (reply.data, reply.error, reply.status) == (None, "boom (HTTP 500)", 500)


def test_pull_progress_lines_decode() -> None:
    line = b'{"status": "pulling abc", "digest": "sha256:1", "total": 10, "completed": 4}'
    progress = msgspec.json.decode(line, type=schemas.PullProgress)
    assert (progress.total, progress.completed, progress.error) == (10, 4, None)
