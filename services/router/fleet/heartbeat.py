"""Heartbeats read into node states: the payload rules (Herd's agent and ollama-herd's).

Pure functions, unit-tested: validation with a clear 400 for a bad payload, the node's
Ollama URL, the status a silence means, and the encoded record kept in Redis.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from shared.errors import BadRequest
from shared.fit import REFUSAL_TTL
from shared.keys import MODEL_FAILED_AT_FIELD, MODEL_FAILURES_FIELD, REFUSED_FIELD
from shared.models import (
    LoadedModel,
    MemoryRefusal,
    ModelFailures,
    ModelShape,
    NodeState,
    NodeStatus,
    normalize_model,
)

__all__ = [
    "is_draining_only",
    "node_from_hash",
    "node_id_of",
    "ollama_url_for",
    "parse_heartbeat",
    "state_decoder",
    "state_encoder",
    "status_for",
    "with_model",
]

log = logging.getLogger("herd.registry")

MAX_NODE_ID = 200
DEFAULT_OLLAMA_PORT = 11434

state_encoder = msgspec.json.Encoder()
state_decoder = msgspec.json.Decoder(NodeState)
_refusal_decoder = msgspec.json.Decoder(MemoryRefusal)


def _is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost.localdomain", "ip6-localhost"}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ollama_url_for(reported: str, source_ip: str) -> str:
    """The URL routers use for a node's Ollama.

    The agent's own view (`http://localhost:11434`) is useless to a router on another
    machine, so a loopback host is replaced by the heartbeat's source address; if that is
    loopback too, router and node share the machine and loopback is right.
    """
    raw = reported.strip() or f"http://localhost:{DEFAULT_OLLAMA_PORT}"
    if "://" not in raw:
        raw = f"http://{raw}"
    parts = urlsplit(raw)
    scheme = parts.scheme or "http"
    host = parts.hostname or "localhost"
    try:
        port = parts.port or (443 if scheme == "https" else DEFAULT_OLLAMA_PORT)
    except ValueError as exc:
        raise BadRequest(f"ollama_host {reported!r} has an invalid port") from exc
    if _is_loopback(host) and source_ip and not _is_loopback(source_ip):
        host = source_ip
    return f"{scheme}://{_host_port(host, port)}"


def status_for(
    silence: float, failures: int, *, timeout: float, offline: float, failures_degraded: int
) -> NodeStatus:
    """The status a node should have (the Lua scripts apply the same rule atomically)."""
    if silence >= offline:
        return NodeStatus.OFFLINE
    if silence >= timeout or failures >= failures_degraded:
        return NodeStatus.DEGRADED
    return NodeStatus.ONLINE


def _num(value: Any, name: str, kind: type[float] | type[int] = float) -> Any:
    if value is None:
        return kind(0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"heartbeat field {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise BadRequest(f"heartbeat field {name} must be finite")
    return kind(value)


def _obj(payload: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = payload.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadRequest(f"heartbeat field {name} must be an object")
    return value


def _str(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"heartbeat field {name} must be a string")
    return value


def node_id_of(payload: Mapping[str, Any]) -> str:
    node_id = payload.get("node_id")
    if not isinstance(node_id, str) or not node_id.strip():
        raise BadRequest("heartbeat needs a non-empty string node_id")
    node_id = node_id.strip()
    if len(node_id) > MAX_NODE_ID or not node_id.isprintable() or " " in node_id:
        raise BadRequest(f"node_id must be printable, without spaces, at most {MAX_NODE_ID} chars")
    return node_id


def _loaded(entries: Any) -> tuple[LoadedModel, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise BadRequest("heartbeat field ollama.models_loaded must be a list")
    out: list[LoadedModel] = []
    for entry in entries:
        if isinstance(entry, str):
            out.append(LoadedModel(name=normalize_model(entry)))
            continue
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise BadRequest("each of ollama.models_loaded needs a string name")
        out.append(LoadedModel(
            name=normalize_model(entry["name"]),
            size_gb=_num(entry.get("size_gb"), "size_gb"),
            context_length=_num(entry.get("context_length"), "context_length", int),
            requests_active=_num(entry.get("requests_active"), "requests_active", int),
            expires_at=_str(entry.get("expires_at"), "expires_at"),
        ))
    return tuple(out)


def _names(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"heartbeat field {name} must be a list of strings")
    return tuple(dict.fromkeys(normalize_model(v) for v in value if v.strip()))


def _gpu(value: Any) -> dict[str, float] | None:
    if not isinstance(value, Mapping):
        return None
    return {
        str(k): float(v) for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    } or None


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0 else 0


def _shapes(value: Any) -> dict[str, ModelShape]:
    """`ollama.models_available_shape`: what the agent read of each model's metadata.
    An optional extra: entries that are not what it sends are left out, not refused."""
    if not isinstance(value, Mapping):
        return {}
    shapes: dict[str, ModelShape] = {}
    for name, entry in value.items():
        if isinstance(name, str) and isinstance(entry, Mapping):
            shape = ModelShape(kv_bytes_per_token=_count(entry.get("kv_bytes_per_token")),
                               context_length=_count(entry.get("context_length")))
            if shape.kv_bytes_per_token:
                shapes[normalize_model(name)] = shape
    return shapes


def is_draining_only(payload: Mapping[str, Any]) -> bool:
    """`{"node_id": ..., "draining": true}`: a goodbye that must not erase the node's state."""
    return payload.get("draining") is True and "ollama" not in payload


def parse_heartbeat(payload: Any, source_ip: str) -> NodeState:
    """Herd's agent payload or ollama-herd's (same field names) → a NodeState, or BadRequest."""
    if not isinstance(payload, Mapping):
        raise BadRequest("heartbeat body must be a JSON object")
    node_id = node_id_of(payload)
    cpu, memory, disk = _obj(payload, "cpu"), _obj(payload, "memory"), _obj(payload, "disk")
    ollama = _obj(payload, "ollama")
    up = ollama.get("up", True) is not False
    sizes = ollama.get("models_available_sizes")
    model_sizes = {
        normalize_model(str(k)): float(v) for k, v in (sizes or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    } if isinstance(sizes, Mapping) else {}
    draining = payload.get("draining", False)
    if not isinstance(draining, bool):
        raise BadRequest("heartbeat field draining must be a boolean")
    return NodeState(
        node_id=node_id,
        ollama_url=ollama_url_for(_str(payload.get("ollama_host"), "ollama_host"), source_ip),
        status=NodeStatus.ONLINE,
        ollama_up=up,
        draining=draining,
        cpu_pct=_num(cpu.get("utilization_pct"), "cpu.utilization_pct"),
        cores=_num(cpu.get("cores_physical") or cpu.get("cores_logical"), "cpu.cores", int),
        memory_total_gb=_num(memory.get("total_gb"), "memory.total_gb"),
        memory_used_gb=_num(memory.get("used_gb"), "memory.used_gb"),
        memory_available_gb=_num(memory.get("available_gb"), "memory.available_gb"),
        memory_pressure=_str(memory.get("pressure"), "memory.pressure") or "normal",
        swap_total_gb=max(0.0, _num(memory.get("swap_total_gb"), "memory.swap_total_gb")),
        models_loaded=_loaded(ollama.get("models_loaded")) if up else (),
        models_available=_names(ollama.get("models_available"), "models_available")
        if up else (),
        model_sizes_gb=model_sizes,
        model_shapes=_shapes(ollama.get("models_available_shape")) if up else {},
        num_parallel=max(0, _num(ollama.get("num_parallel", payload.get("num_parallel")),
                                 "num_parallel", int)),
        max_loaded_models=max(0, _num(ollama.get("max_loaded_models"), "max_loaded_models",
                                      int)),
        ollama_version=_str(ollama.get("version"), "ollama.version"),
        agent_version=_str(payload.get("agent_version"), "agent_version"),
        gpu=_gpu(payload.get("gpu")),
        disk_total_gb=_num(disk.get("total_gb"), "disk.total_gb"),
        disk_available_gb=_num(disk.get("available_gb"), "disk.available_gb"),
        requests_active=_num(ollama.get("requests_active"), "requests_active", int),
        lan_ip=_str(payload.get("lan_ip"), "lan_ip"),
        ollama_error=_str(ollama.get("error"), "ollama.error"),
    )


def node_from_hash(fields: Mapping[str, str], now: float | None = None) -> NodeState | None:
    """The registry hash → a NodeState with the routers' view (status, failures, what the
    node refused) applied. Refusals older than REFUSAL_TTL at `now` are left out."""
    raw = fields.get("state")
    if not raw:
        return None
    try:
        state = state_decoder.decode(raw)
        status = NodeStatus(fields.get("status") or "online")
        failures, refusals = _per_model(fields, time.time() if now is None else now)
        return msgspec.structs.replace(
            state,
            status=status,
            last_seen=float(fields.get("last_seen") or 0.0),
            draining=fields.get("draining") == "1",
            router_failures=int(fields.get("failures") or 0),
            model_failures=failures,
            memory_refusals=refusals,
        )
    except (msgspec.DecodeError, ValueError):
        log.warning("unreadable node record ignored", extra={"state": raw[:200]})
        return None


def _per_model(
    fields: Mapping[str, str], now: float,
) -> tuple[dict[str, ModelFailures], dict[str, MemoryRefusal]]:
    failures: dict[str, ModelFailures] = {}
    refusals: dict[str, MemoryRefusal] = {}
    for name, value in fields.items():
        if name.startswith(MODEL_FAILURES_FIELD):
            model = name[len(MODEL_FAILURES_FIELD):]
            try:
                last = float(fields.get(MODEL_FAILED_AT_FIELD + model) or 0.0)
                failures[model] = ModelFailures(count=int(value), last=last)
            except ValueError:
                continue
        elif name.startswith(REFUSED_FIELD):
            try:
                refusal = _refusal_decoder.decode(value)
            except msgspec.DecodeError:
                continue
            if now - refusal.at < REFUSAL_TTL:
                refusals[name[len(REFUSED_FIELD):]] = refusal
    return failures, refusals


def with_model(state: NodeState, model: str, size_gb: float | None) -> NodeState:
    """The state with `model` added (size known) or removed (size None)."""
    available = [m for m in state.models_available if m != model]
    sizes = {k: v for k, v in state.model_sizes_gb.items() if k != model}
    loaded = tuple(m for m in state.models_loaded if m.name != model)
    if size_gb is not None:
        available.append(model)
        sizes[model] = size_gb
        loaded = state.models_loaded
    return msgspec.structs.replace(
        state, models_available=tuple(available), model_sizes_gb=sizes, models_loaded=loaded)
