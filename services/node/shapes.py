"""What a model's own metadata says about the memory its context takes: the KV cache bytes
per token, read once per model from Ollama's /api/show, for the routers' fit estimate.

Only figures that are sure are reported. A model with sliding-window attention, recurrent
(SSM) layers, a compressed KV cache, per-layer head counts or no KV cache at all (an
embedding model) gets none: the routers would over-estimate its need, and an estimate
that is too high refuses requests a node could serve.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

__all__ = ["SHOWS_PER_BEAT", "ModelShapes", "model_shape"]

log = logging.getLogger("herd.node")

SHOWS_PER_BEAT = 4  # /api/show calls one heartbeat may make; new models wait for the next
F16_BYTES = 2
# Keys whose presence means the KV cache is not one full-size cache per layer and token.
_UNSURE = ("sliding_window", ".ssm.", "kv_lora_rank", "shortconv", "wkv", "pooling_type",
           "shared_kv")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def model_shape(show: Mapping[str, Any]) -> dict[str, int] | None:
    """`{"kv_bytes_per_token", "context_length"}` from an /api/show answer, or None.

    K and V at f16 across all layers: block_count x head_count_kv x (key_length +
    value_length) x 2 bytes, the head lengths defaulting to embedding_length / head_count
    as in llama.cpp.
    """
    info = show.get("model_info")
    capabilities = show.get("capabilities")
    if not isinstance(info, Mapping) or (
            isinstance(capabilities, list) and "embedding" in capabilities):
        return None
    arch = info.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        return None
    prefix = f"{arch}."
    if any(part in key for key in info if isinstance(key, str) and key.startswith(prefix)
           for part in _UNSURE):
        return None
    blocks = _count(info.get(f"{prefix}block_count"))
    heads = _count(info.get(f"{prefix}attention.head_count"))
    kv_heads = info.get(f"{prefix}attention.head_count_kv", heads)
    if not _count(kv_heads):
        return None  # a count per layer (a list), or none: not one figure for every layer
    width = _count(info.get(f"{prefix}embedding_length"))
    default_head = width // heads if heads else 0
    key_length = _count(info.get(f"{prefix}attention.key_length")) or default_head
    value_length = _count(info.get(f"{prefix}attention.value_length")) or default_head
    per_token = blocks * int(kv_heads) * (key_length + value_length) * F16_BYTES
    if not per_token:
        return None
    return {"kv_bytes_per_token": per_token,
            "context_length": _count(info.get(f"{prefix}context_length"))}


class ModelShapes:
    """Each installed model's shape, asked once per model name and digest."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[str, dict[str, int] | None]] = {}

    async def update(self, client: httpx.AsyncClient,
                     models: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
        """The shapes of `models` (/api/tags entries) known so far, asking /api/show for
        at most SHOWS_PER_BEAT new ones; models no longer installed are forgotten."""
        current: dict[str, str] = {}
        for entry in models:
            name = entry.get("name") or entry.get("model")
            if isinstance(name, str) and name:
                current[name] = str(entry.get("digest") or "")
        self._known = {n: known for n, known in self._known.items()
                       if current.get(n) == known[0]}
        asked = 0
        for name, digest in current.items():
            if name in self._known or asked >= SHOWS_PER_BEAT:
                continue
            asked += 1
            try:
                response = await client.post("/api/show", json={"model": name})
                response.raise_for_status()
                body = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                log.debug("no model metadata", extra={"model": name, "error": repr(exc)})
                continue  # asked again with a later heartbeat
            self._known[name] = (digest, model_shape(body) if isinstance(body, dict) else None)
        return {n: shape for n, (_, shape) in self._known.items() if shape is not None}
