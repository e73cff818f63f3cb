"""The simulator's JSON Schema generator: every value it draws validates, for the schemas
clients send (pydantic, OpenAI strict, tool parameters) and for many random ones."""

from __future__ import annotations

import enum
import random
from typing import Any, Literal

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from services.sim.schemagen import generate

pytestmark = pytest.mark.unit

_FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER


def _check(schema: dict[str, Any], seeds: range = range(20), *, draft4: bool = False) -> None:
    cls = jsonschema.Draft4Validator if draft4 else jsonschema.Draft202012Validator
    cls.check_schema(schema)
    validator = cls(schema, format_checker=_FORMAT_CHECKER)
    for seed in seeds:
        value = generate(schema, random.Random(seed), top=True)
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, (seed, value, errors)


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    city: str = Field(min_length=2, max_length=20)
    postcode: str = Field(pattern=r"^[A-Z]{2}-\d{4}$")


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=130)
    height_m: float = Field(gt=0.3, lt=2.6)
    email: str | None = None
    colour: Colour
    role: Literal["admin", "user"]
    tags: list[str] = Field(default_factory=list, max_length=3)
    scores: dict[str, int] = Field(default_factory=dict)
    address: Address
    previous: list[Address] | None = None


class Tree(BaseModel):
    value: int
    children: list[Tree] = Field(default_factory=list)


def test_pydantic_models_and_their_openai_strict_form() -> None:
    for model in (Person, Address, Tree):
        _check(model.model_json_schema())
        _check(to_strict_json_schema(model))


def test_values_are_deterministic_per_seed_and_vary_between_seeds() -> None:
    schema = Person.model_json_schema()
    assert generate(schema, random.Random(3)) == generate(schema, random.Random(3))
    assert len({repr(generate(schema, random.Random(s))) for s in range(10)}) > 5


def test_tool_parameters_as_agents_send_them() -> None:
    _check({"type": "object", "properties": {
        "command": {"type": "string", "description": "The command to run"},
        "timeout": {"type": "number", "maximum": 600000},
        "paths": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "mode": {"type": "string", "enum": ["read", "write"]},
        "options": {"type": "object", "additionalProperties": {"type": "boolean"},
                    "minProperties": 1},
    }, "required": ["command", "paths"], "additionalProperties": False,
        "$schema": "http://json-schema.org/draft-07/schema#"})


def test_keywords_one_by_one() -> None:
    cases: list[dict[str, Any]] = [
        {"type": "integer", "minimum": 5, "maximum": 5},
        {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 3},
        {"type": "number", "multipleOf": 0.25, "minimum": 1, "maximum": 2},
        {"type": "integer", "multipleOf": 7, "minimum": -20, "maximum": 20},
        {"type": "integer", "multipleOf": 2.5},
        {"type": "number", "maximum": -10},
        {"type": "number", "minimum": 5000},
        {"type": "string", "minLength": 30},
        {"type": "string", "maxLength": 3},
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "email"},
        {"type": "string", "format": "uuid"},
        {"type": "string", "pattern": "^[0-9]+$"},
        {"type": ["string", "null"]},
        {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
         "items": False},
        {"type": "array", "items": {"enum": [1, 2, 3]}, "uniqueItems": True, "minItems": 3},
        {"type": "array", "minItems": 4, "maxItems": 4, "items": {"type": "boolean"}},
        {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}},
                    "required": ["a"]},
                   {"properties": {"b": {"const": "x"}}, "required": ["b"]}]},
        {"oneOf": [{"type": "string", "maxLength": 2}, {"type": "integer", "minimum": 100}]},
        {"type": "object", "maxProperties": 1, "properties": {
            "a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a"]},
        {"$defs": {"Leaf": {"type": "string", "enum": ["x"]}},
         "type": "object", "properties": {"leaf": {"$ref": "#/$defs/Leaf"}},
         "required": ["leaf"]},
        {"definitions": {"N": {"type": "object", "properties": {
            "next": {"anyOf": [{"$ref": "#/definitions/N"}, {"type": "null"}]}},
            "required": ["next"]}}, "$ref": "#/definitions/N"},
        {"$ref": "#/$defs/L", "$defs": {"L": {"type": "array", "items": {"$ref": "#/$defs/L"}}}},
        {},
        {"properties": {"x": {}}},
        {"type": "object", "required": ["undescribed"]},
    ]
    for schema in cases:
        _check(schema)


def test_draft4_exclusive_bounds_and_openapi_nullable() -> None:
    _check({"type": "number", "minimum": 0, "exclusiveMinimum": True,
            "maximum": 1, "exclusiveMaximum": True}, draft4=True)
    _check({"type": "integer", "minimum": 0, "exclusiveMinimum": True,
            "maximum": 2, "exclusiveMaximum": True}, draft4=True)
    value = generate({"type": "string", "nullable": True}, random.Random(1))
    assert value is None or isinstance(value, str)


def test_an_empty_schema_at_the_top_is_an_object() -> None:
    assert isinstance(generate({}, random.Random(0), top=True), dict)


# --- random schemas from the subset -------------------------------------------------------

_names = st.text("abcdefghij_", min_size=1, max_size=6)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-50, 50),
                     st.text("xyz -", max_size=5))


@st.composite
def _bounded_number(draw: st.DrawFn) -> dict[str, Any]:
    integer = draw(st.booleans())
    low = draw(st.integers(-1000, 1000))
    span = draw(st.integers(4, 500))
    schema: dict[str, Any] = {"type": "integer" if integer else "number"}
    if draw(st.booleans()):
        schema["minimum" if draw(st.booleans()) else "exclusiveMinimum"] = low
    if draw(st.booleans()):
        schema["maximum" if draw(st.booleans()) else "exclusiveMaximum"] = low + span
    if draw(st.booleans()):
        schema["multipleOf"] = draw(st.sampled_from([1, 2, 0.5, 0.1] if not integer else [1, 3]))
    return schema


@st.composite
def _bounded_string(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.integers(0, 12))
    schema: dict[str, Any] = {"type": "string"}
    if draw(st.booleans()):
        schema["minLength"] = low
    if draw(st.booleans()):
        schema["maxLength"] = low + draw(st.integers(0, 10))
    if len(schema) == 1 and draw(st.booleans()):  # a format with lengths may be unsatisfiable
        schema["format"] = draw(st.sampled_from(["date", "date-time", "email", "uri", "uuid"]))
    return schema


_leaves = st.one_of(
    _bounded_number(), _bounded_string(),
    st.sampled_from([{"type": "boolean"}, {"type": "null"}, {"type": "string"}, {}]),
    st.lists(_scalars, min_size=1, max_size=4, unique_by=repr).map(lambda v: {"enum": v}),
    _scalars.map(lambda v: {"const": v}),
)


def _compound(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def obj(draw: st.DrawFn) -> dict[str, Any]:
        props = draw(st.dictionaries(_names, children, max_size=4))
        schema: dict[str, Any] = {"type": "object", "properties": props}
        names = sorted(props)
        schema["required"] = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
        if draw(st.booleans()):
            schema["additionalProperties"] = False
        return schema

    @st.composite
    def arr(draw: st.DrawFn) -> dict[str, Any]:
        low = draw(st.integers(0, 3))
        schema: dict[str, Any] = {"type": "array", "items": draw(children), "minItems": low}
        if draw(st.booleans()):
            schema["maxItems"] = low + draw(st.integers(0, 3))
        return schema

    return st.one_of(
        obj(), arr(),
        st.lists(children, min_size=1, max_size=3).map(lambda bs: {"anyOf": bs}),
        children.map(lambda c: {"anyOf": [c, {"type": "null"}]}),
        st.tuples(obj(), obj()).map(lambda p: {"allOf": [
            {**p[0], "additionalProperties": True},
            {**p[1], "additionalProperties": True,
             "properties": {f"z{k}": v for k, v in p[1]["properties"].items()},
             "required": [f"z{r}" for r in p[1]["required"]]}]}),
    )


_schemas = st.recursive(_leaves, _compound, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(schema=_schemas, defs=_schemas, seed=st.integers(0, 2**32))
def test_random_schemas_always_get_a_valid_value(schema: dict[str, Any],
                                                 defs: dict[str, Any], seed: int) -> None:
    top = {"$defs": {"D": defs}, "type": "object",
           "properties": {"main": schema, "ref": {"$ref": "#/$defs/D"}},
           "required": ["main", "ref"]}
    _check(top, range(seed, seed + 1))
