"""Request bodies: JSON decoded once, every way it can be wrong turned into one clear 400."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.errors import BadRequest
from shared.models import normalize_model, valid_model_name

__all__ = ["decode_json", "decode_object", "model_field"]

_decode = msgspec.json.Decoder().decode


def decode_json(raw: bytes, what: str = "request body") -> Any:
    """The decoded JSON, or BadRequest. msgspec raises more than DecodeError: invalid UTF-8
    inside a string is a UnicodeDecodeError, and nesting deeper than it allows (a body of
    20,000 `[`) a RecursionError. Each is the client's error."""
    try:
        return _decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid JSON in {what}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"invalid UTF-8 in a string of the {what} at byte {exc.start}") from None
    except RecursionError:
        raise BadRequest(f"invalid JSON in {what}: nested too deeply") from None


def decode_object(raw: bytes, what: str = "request body") -> dict[str, Any]:
    """A JSON object, or BadRequest saying what was wrong with the body."""
    if not raw.strip():
        raise BadRequest(f"missing {what}: send a JSON object")
    body = decode_json(raw, what)
    if not isinstance(body, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return body


def model_field(body: dict[str, Any], *names: str) -> str:
    """The model name in the first of `names` the body has ("model", then the older
    "name"), normalized (`:latest` added); BadRequest naming the field if it is missing or
    not a model name."""
    value = next((body[name] for name in names if body.get(name)), None)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{names[0]} must be a non-empty string")
    if not valid_model_name(value.strip()):
        raise BadRequest(f"{names[0]} is not a valid model name")
    return normalize_model(value)
