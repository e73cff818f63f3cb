"""A JSON value that validates against a JSON Schema, drawn from a seeded generator.

The simulator answers structured-output requests (`format`, `response_format`,
`text.format`) and fills tool-call arguments with it. It covers what clients send: type
(or a list of types), object with properties / required / additionalProperties /
min-maxProperties, array with items / prefixItems / min-maxItems / uniqueItems, string with
enum / const / format / min-maxLength and simple patterns, number and integer with
minimum / maximum (inclusive or exclusive) / multipleOf, boolean, null, anyOf / oneOf /
allOf, $ref into $defs or definitions (recursion is cut short), and OpenAPI's nullable.
A pattern it cannot satisfy gets a plain word; `not`, if/then/else and
dependentSchemas are ignored.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

__all__ = ["generate"]

_WORDS = ("alpha", "river", "stone", "light", "cloud", "garden", "bridge", "forest",
          "window", "summer", "ocean", "signal", "token", "node", "queue", "answer")
_FORMATS = {
    "date-time": "2025-06-01T12:00:00Z", "date": "2025-06-01", "time": "12:00:00Z",
    "email": "user@example.com", "uri": "https://example.com/a", "url": "https://example.com/a",
    "uri-reference": "/a", "hostname": "example.com", "ipv4": "192.0.2.1", "ipv6": "2001:db8::1",
    "uuid": "123e4567-e89b-42d3-a456-426614174000", "duration": "P1D",
}
_PATTERN_TRIES = ("alpha", "Alpha", "ALPHA", "abc123", "123", "42", "2025-06-01", "a", "A1",
                  "user@example.com", "https://example.com", "+15550100", "AB-1234", "x_y")
_MAX_DEPTH = 6
_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


def generate(schema: Any, rng: random.Random, *, top: bool = False) -> Any:
    """A value valid against `schema`; `top` makes an empty schema an object, as a
    model asked for JSON would answer."""
    return _Gen(schema, rng).value(schema, 0, top)


class _Gen:
    def __init__(self, root: Any, rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}  # remote references are not fetched: anything goes
        node: Any = self.root
        for raw in filter(None, ref[1:].split("/")):
            part = raw.replace("~1", "/").replace("~0", "~")
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node

    def value(self, schema: Any, depth: int, top: bool = False) -> Any:
        if schema is True or schema is None:
            schema = {}
        if not isinstance(schema, dict):
            return None
        if "$ref" in schema:
            target = self.resolve(str(schema["$ref"]))
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return self.value(_merge([target, rest]) if rest else target, depth + 1, top)
        if "allOf" in schema and isinstance(schema["allOf"], list):
            parts = [self._deref(s) for s in schema["allOf"]]
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self.value(_merge([rest, *parts]), depth, top)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                rest = {k: v for k, v in schema.items() if k != key}
                branch = self._pick_branch(branches, depth)
                return self.value(_merge([rest, self._deref(branch)]) if rest else branch,
                                  depth + 1, top)
        kind = self._type(schema, depth, top)
        if kind == "null":
            return None
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind in ("number", "integer"):
            return _number(schema, kind == "integer", self.rng)
        if kind == "string":
            return self._string(schema)
        if kind == "array":
            return self._array(schema, depth)
        return self._object(schema, depth)

    def _deref(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, dict) and set(schema) == {"$ref"} and seen < 20:
            schema = self.resolve(str(schema["$ref"]))
            seen += 1
        return schema

    def _pick_branch(self, branches: list[Any], depth: int) -> Any:
        if depth >= _MAX_DEPTH:  # deep in a recursive schema: take the simplest branch
            return min(branches, key=lambda b: len(repr(self._deref(b))))
        # A nullable field (Optional[X]) is mostly X: a model asked for data gives data.
        solid = [b for b in branches if self._deref(b) not in ({"type": "null"},)]
        if solid and self.rng.random() < 0.85:
            return self.rng.choice(solid)
        return self.rng.choice(branches)

    def _type(self, schema: dict[str, Any], depth: int, top: bool) -> str:
        declared = schema.get("type")
        kinds = [declared] if isinstance(declared, str) else list(declared or [])
        kinds = [k for k in kinds if k in _TYPES]
        if schema.get("nullable") is True and kinds and self.rng.random() < 0.1:
            return "null"
        if kinds:
            solid = [k for k in kinds if k != "null"]
            if solid and (depth < _MAX_DEPTH or "null" not in kinds):
                return self.rng.choice(solid)
            return "null" if "null" in kinds else kinds[0]
        if {"properties", "required", "additionalProperties", "minProperties"} & set(schema):
            return "object"
        if {"items", "prefixItems", "minItems", "maxItems"} & set(schema):
            return "array"
        if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"} & set(
                schema):
            return "number"
        return "object" if top else "string"

    def _string(self, schema: dict[str, Any]) -> str:
        low = int(schema.get("minLength", 0) or 0)
        high = schema.get("maxLength")
        fmt = schema.get("format")
        pattern = schema.get("pattern")
        candidates: list[str] = []
        if isinstance(pattern, str):
            try:
                compiled = re.compile(pattern)
            except re.error:
                compiled = None
            if compiled is not None:
                candidates = [c for c in (*_PATTERN_TRIES, *_WORDS) if compiled.search(c)]
        if not candidates and isinstance(fmt, str) and fmt in _FORMATS:
            candidates = [_FORMATS[fmt]]
        if candidates:
            fitting = [c for c in candidates if len(c) >= low and (high is None or len(c) <= high)]
            if fitting:
                return self.rng.choice(fitting)
        count = self.rng.randint(1, 4)
        text = " ".join(self.rng.choice(_WORDS) for _ in range(count))
        while len(text) < low:
            text += " " + self.rng.choice(_WORDS)
        if high is not None:
            text = text[: max(int(high), 0)]
            if len(text) < low:  # minLength > maxLength: unsatisfiable, stay close
                text = text.ljust(low, "a")
        return text

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        if isinstance(items, list):  # draft 4 to 2019-09 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        prefix = prefix if isinstance(prefix, list) else []
        low = int(schema.get("minItems", 0) or 0)
        high = schema.get("maxItems")
        count = self.rng.randint(max(low, 1 if depth < _MAX_DEPTH else 0), max(low, 3))
        if depth >= _MAX_DEPTH:
            count = max(low, len(prefix) if low else 0)
        if high is not None:
            count = min(count, int(high))
        count = max(count, min(len(prefix), int(high) if high is not None else len(prefix)))
        out: list[Any] = []
        unique = schema.get("uniqueItems") is True
        tries = 0
        while len(out) < count and tries < count * 10 + 10:
            tries += 1
            index = len(out)
            item_schema = prefix[index] if index < len(prefix) else items
            if item_schema is False:
                break
            value = self.value(item_schema, depth + 1)
            if unique and any(_same(value, seen) for seen in out):
                continue
            out.append(value)
        return out

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = [r for r in schema.get("required", []) or [] if isinstance(r, str)]
        out: dict[str, Any] = {}
        for name, sub in props.items():
            wanted = name in required or (depth < _MAX_DEPTH - 2 and self.rng.random() < 0.7)
            if wanted:
                out[name] = self.value(sub, depth + 1)
        extra = schema.get("additionalProperties", True)
        for name in required:  # required but not described: any value will do
            if name not in out:
                out[name] = self.value(extra if isinstance(extra, dict) else {}, depth + 1)
        low = int(schema.get("minProperties", 0) or 0)
        index = 0
        while len(out) < low and extra is not False:
            index += 1
            key = f"key{index}"
            if key not in out:
                out[key] = self.value(extra if isinstance(extra, dict) else {}, depth + 1)
        high = schema.get("maxProperties")
        if high is not None and len(out) > int(high):
            keep = required + [k for k in out if k not in required]
            out = {k: out[k] for k in keep[: max(int(high), len(required))]}
        return out


def _same(a: Any, b: Any) -> bool:
    # JSON equality: 1 == 1.0 and True != 1, as a validator sees them
    return (type(a) is type(b) and a == b) or (
        isinstance(a, int | float) and isinstance(b, int | float)
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _merge(schemas: list[Any]) -> dict[str, Any]:
    """allOf as one schema: properties and required unite, bounds tighten, the rest is
    taken from the first schema that has it."""
    merged: dict[str, Any] = {}
    for schema in schemas:
        if not isinstance(schema, dict):
            continue
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                merged.setdefault("properties", {}).update(value)
            elif key == "required" and isinstance(value, list):
                merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
            elif key in ("minimum", "minLength", "minItems", "exclusiveMinimum") and key in merged:
                merged[key] = max(merged[key], value)
            elif key in ("maximum", "maxLength", "maxItems", "exclusiveMaximum") and key in merged:
                merged[key] = min(merged[key], value)
            else:
                merged.setdefault(key, value)
    return merged


def _number(schema: dict[str, Any], integer: bool, rng: random.Random) -> int | float:
    low: float = -1000.0
    high: float = 1000.0
    if isinstance(schema.get("minimum"), int | float):
        low = float(schema["minimum"])
    if isinstance(schema.get("maximum"), int | float):
        high = float(schema["maximum"])
    exmin, exmax = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    strict_low = strict_high = False
    # an exclusive bound tightens a stated one, not the defaults above
    if isinstance(exmin, int | float) and not isinstance(exmin, bool):
        low = max(low, float(exmin)) if "minimum" in schema else float(exmin)
        strict_low = True
    elif exmin is True:  # draft 4: the minimum itself is excluded
        strict_low = True
    if isinstance(exmax, int | float) and not isinstance(exmax, bool):
        high = min(high, float(exmax)) if "maximum" in schema else float(exmax)
        strict_high = True
    elif exmax is True:
        strict_high = True
    if "minimum" not in schema and "exclusiveMinimum" not in schema:
        low = min(low, high - 1000.0) if high < 0 else max(low, 0.0)
    if "maximum" not in schema and "exclusiveMaximum" not in schema:
        high = max(high, low + 1000.0)
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        first = math.ceil(low / step)
        last = math.floor(high / step)
        if strict_low and first * step <= low:
            first += 1
        if strict_high and last * step >= high:
            last -= 1
        if integer and not float(step).is_integer():
            # an integer multiple of a fraction: use the lowest common integer steps
            k = _integer_step(float(step))
            first, last = math.ceil(first * step / k), math.floor(last * step / k)
            step = k
        if first > last:
            return int(first * step) if integer else first * step
        top = min(last, first + 1000)
        if integer:
            return int(rng.randint(first, top) * step)
        # Validators divide back in floating point (41.4 / 0.1 is 413.99999999999994):
        # take a multiple that survives the division exactly.
        for _ in range(64):
            value = _tidy(rng.randint(first, top) * step, step)
            if (value / step).is_integer():
                return value
        return float(first * step)
    if integer:
        first = math.floor(low) + 1 if strict_low else math.ceil(low)
        last = math.ceil(high) - 1 if strict_high else math.floor(high)
        return rng.randint(first, last) if first <= last else first
    if strict_low or strict_high:
        span = high - low
        return low + span * (0.25 + rng.random() * 0.5) if span > 0 else low
    return min(max(round(rng.uniform(low, high), 2), low), high)


def _integer_step(step: float) -> int:
    for k in range(1, 1001):
        if abs(k / step - round(k / step)) < 1e-9:
            return k
    return 1


def _tidy(value: float, step: float) -> float:
    # 0.1 * 3 is 0.30000000000000004: round to the digits the step has.
    digits = max(0, -math.floor(math.log10(step))) + 2 if step < 1 else 6
    return round(value, digits)
