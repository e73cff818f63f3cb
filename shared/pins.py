"""Pinned models: the `pinned_models` setting's shape, parsed and checked in one place.

A pin says "keep MODEL loaded on at least N nodes", optionally only on the nodes named.
The setting is `{"model": copies}` or `{"model": {"copies": n, "nodes": [...]}}`; it is
stored normalised as `{"model:tag": {"copies": n, "nodes": [...]}}` so every replica and
the dashboard read one shape.
"""

from __future__ import annotations

import json
from typing import Any

from shared.models import normalize_model, valid_model_name

__all__ = ["MAX_COPIES", "PinError", "parse_pin", "parse_pins"]

MAX_COPIES = 64  # more copies than any fleet has nodes is a typo, not a wish


class PinError(ValueError):
    """A pin that cannot be kept as written; the message says what is wrong."""


def parse_pin(model: Any, spec: Any) -> tuple[str, dict[str, Any]]:
    """One pin → (normalised model name, {"copies": n, "nodes": [...]}), or PinError."""
    if not isinstance(model, str) or not valid_model_name(model.strip()):
        raise PinError(f"pinned_models: {model!r} is not a model name")
    name = normalize_model(model)
    if isinstance(spec, bool):
        raise PinError(f"pinned_models[{name!r}]: give a number of copies, not {spec!r}")
    if isinstance(spec, int | float | str) and not isinstance(spec, bool):
        spec = {"copies": spec}
    if not isinstance(spec, dict):
        raise PinError(f"pinned_models[{name!r}] must be a number of copies or "
                       f'{{"copies": n, "nodes": [...]}}, got {spec!r}')
    unknown = sorted(set(spec) - {"copies", "nodes"})
    if unknown:
        raise PinError(f"pinned_models[{name!r}]: unknown field {unknown[0]!r} "
                       "(only copies and nodes)")
    nodes_raw = spec.get("nodes", [])
    if isinstance(nodes_raw, str):
        nodes_raw = [part for part in nodes_raw.split(",") if part.strip()]
    if not isinstance(nodes_raw, list | tuple) or not all(
            isinstance(n, str) and n.strip() for n in nodes_raw):
        raise PinError(f"pinned_models[{name!r}].nodes must be a list of node ids, "
                       f"got {nodes_raw!r}")
    nodes = sorted({n.strip() for n in nodes_raw})
    copies_raw = spec.get("copies", 1 if not nodes else len(nodes))
    try:
        if isinstance(copies_raw, bool) or (
                isinstance(copies_raw, float) and not copies_raw.is_integer()):
            raise ValueError
        copies = int(copies_raw)
    except (TypeError, ValueError):
        raise PinError(f"pinned_models[{name!r}].copies must be a whole number, "
                       f"got {copies_raw!r}") from None
    if not 1 <= copies <= MAX_COPIES:
        raise PinError(f"pinned_models[{name!r}].copies must be between 1 and {MAX_COPIES}, "
                       f"got {copies}")
    if nodes and copies > len(nodes):
        raise PinError(f"pinned_models[{name!r}]: {copies} copies cannot fit on the "
                       f"{len(nodes)} node(s) named ({', '.join(nodes)})")
    return name, {"copies": copies, "nodes": nodes}


def parse_pins(value: Any) -> dict[str, dict[str, Any]]:
    """The whole setting, from a dict, JSON text or `model=2,other=1` → normalised."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise PinError(f"pinned_models is not valid JSON: {exc}") from None
        else:
            pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise PinError("pinned_models must be JSON or model=copies,model=copies, "
                               f"got {text!r}")
            value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, dict):
        raise PinError('pinned_models must be an object such as {"qwen3:8b": 2} or '
                       f'{{"qwen3:8b": {{"copies": 2, "nodes": ["gpu-1", "gpu-2"]}}}}, '
                       f"got {value!r}")
    out: dict[str, dict[str, Any]] = {}
    for model, spec in value.items():
        name, pin = parse_pin(model, spec)
        out[name] = pin
    return dict(sorted(out.items()))
