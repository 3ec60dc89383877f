"""Compiled strategies produce only schema-valid values; steering and recursion bounds."""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.schema.strategies import Compiler, Unsatisfiable, from_schema

from .support import derived

#: Schemas per property-test case: every example draws one value from each of them.
CHUNK = 24


def _all_schemas(source: str) -> list[tuple[str, Any]]:
    document = derived(source)
    out: list[tuple[str, Any]] = []
    for name, entry in sorted(document["commands"].items()):
        out.append((f"{name}.arguments", entry["arguments"]))
        out.append((f"{name}.returns", entry["returns"]))
    out += [(f"event {name}", schema) for name, schema in sorted(document["events"].items())]
    return out


def _chunks() -> list[object]:
    params: list[object] = []
    for version in ("7.2", "10.0"):
        count = len(_all_schemas(f"recorded:{version}"))
        for start in range(0, count, CHUNK):
            params.append(pytest.param(version, start, id=f"{version}[{start}:{start + CHUNK}]"))
    return params


@functools.cache
def _compiled(version: str, start: int) -> tuple[list[str], Any, list[Any]]:
    schemas = _all_schemas(f"recorded:{version}")[start : start + CHUNK]
    compiler = Compiler()
    strategies = [compiler.compile(schema) for _, schema in schemas]
    assert compiler.fallbacks == 0, "the converter's output left the compiled subset"
    validators = [jsonschema.Draft202012Validator(schema) for _, schema in schemas]
    return [name for name, _ in schemas], st.tuples(*strategies), validators


@pytest.mark.parametrize(("version", "start"), _chunks())
def test_compiled_strategies_produce_only_valid_values(version: str, start: int) -> None:
    names, strategy, validators = _compiled(version, start)

    @settings(max_examples=8, database=None, deadline=None)
    @given(strategy)
    def check(values: tuple[Any, ...]) -> None:
        for name, validator, value in zip(names, validators, values, strict=True):
            errors = list(validator.iter_errors(value))
            assert not errors, f"{name}: {json.dumps(value)[:500]}: {errors[0].message[:300]}"
            json.dumps(value)  # and it is plain JSON

    check()


def _transaction_arguments() -> Any:
    return derived("recorded:10.0")["commands"]["transaction"]["arguments"]


def test_steering_by_property_name_and_by_path() -> None:
    compiler = Compiler(
        steer={
            "node": st.just("disk0"),
            "actions[].data.name": st.just("b0"),
            "actions[].data.target": st.just("t0"),
        }
    )
    strategy = compiler.compile(_transaction_arguments())
    validator = jsonschema.Draft202012Validator(_transaction_arguments())
    seen: set[str] = set()

    @settings(max_examples=60, database=None, deadline=None)
    @given(strategy)
    def check(value: dict[str, Any]) -> None:
        validator.validate(value)
        for action in value["actions"]:
            data = action["data"]
            if "node" in data:
                assert data["node"] == "disk0"
            if "name" in data:
                assert data["name"] == "b0"
            if isinstance(data.get("target"), str):
                assert data["target"] == "t0"
            seen.add(action["type"])

    check()
    assert len(seen) > 3


def test_path_steering_wins_over_the_bare_name() -> None:
    schema = {
        "type": "object",
        "properties": {
            "node": {"type": "string"},
            "inner": {
                "type": "object",
                "properties": {"node": {"type": "string"}},
                "required": ["node"],
                "additionalProperties": False,
            },
        },
        "required": ["node", "inner"],
        "additionalProperties": False,
    }
    strategy = Compiler(steer={"node": st.just("a"), "inner.node": st.just("b")}).compile(schema)

    @settings(max_examples=10, database=None)
    @given(strategy)
    def check(value: dict[str, Any]) -> None:
        assert value == {"node": "a", "inner": {"node": "b"}}

    check()


def _depth(value: Any) -> int:
    """How many ``driver`` objects are nested (a blockdev tree's height)."""
    if isinstance(value, dict):
        inner = max((_depth(v) for v in value.values()), default=0)
        return inner + (1 if "driver" in value else 0)
    if isinstance(value, list):
        return max((_depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("max_depth", [1, 2, 3])
def test_recursion_is_bounded_and_collapses_to_the_non_recursive_branch(max_depth: int) -> None:
    schema = derived("recorded:10.0")["commands"]["blockdev-add"]["arguments"]
    validator = jsonschema.Draft202012Validator(schema)
    strategy = Compiler(max_depth=max_depth).compile(schema)
    heights: set[int] = set()

    @settings(max_examples=40, database=None, deadline=None)
    @given(strategy)
    def check(value: dict[str, Any]) -> None:
        validator.validate(value)
        heights.add(_depth(value))
        assert _depth(value) <= max_depth

    check()
    assert max(heights) >= min(max_depth, 2)  # deeper trees are drawn, not only leaves


def test_string_branch_of_a_recursive_alternate_at_the_bound() -> None:
    schema = derived("recorded:10.0")["commands"]["blockdev-add"]["arguments"]
    strategy = Compiler(max_depth=1).compile(schema)
    files: list[Any] = []

    @settings(max_examples=40, database=None, deadline=None)
    @given(strategy)
    def check(value: dict[str, Any]) -> None:
        if "file" in value:
            files.append(value["file"])

    check()
    assert files  # most drivers require a file: the bound must not remove them
    assert all(isinstance(f, str) for f in files)  # the node-name branch: no deeper tree


def test_recursion_without_a_way_out_is_unsatisfiable() -> None:
    schema = {
        "$defs": {
            "loop": {
                "type": "object",
                "properties": {"next": {"$ref": "#/$defs/loop"}},
                "required": ["next"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/loop",
    }
    with pytest.raises(Unsatisfiable):
        Compiler(max_depth=5).compile(schema)


def test_outside_the_subset_falls_back_to_hypothesis_jsonschema() -> None:
    compiler = Compiler()
    strategy = compiler.compile({"type": "string", "pattern": "^a[0-9]+$"})
    assert compiler.fallbacks == 1

    @settings(max_examples=20, database=None)
    @given(strategy)
    def check(value: str) -> None:
        jsonschema.validate(value, {"type": "string", "pattern": "^a[0-9]+$"})

    check()


def test_open_objects_get_their_declared_properties_only() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}
    compiler = Compiler()
    strategy = compiler.compile(schema)
    assert compiler.fallbacks == 0

    @settings(max_examples=10, database=None)
    @given(strategy)
    def check(value: dict[str, Any]) -> None:
        assert set(value) == {"a"}

    check()


@settings(max_examples=50, database=None)
@given(from_schema({"type": "string"}))
def test_strings_are_sendable_over_qmp(value: str) -> None:
    assert "\x00" not in value
    value.encode("utf-8")  # no lone surrogates


def test_arrays_respect_max_items_and_optional_keys_vary() -> None:
    schema = {
        "type": "object",
        "properties": {
            "xs": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}},
            "flag": {"type": "boolean"},
        },
        "required": [],
        "additionalProperties": False,
    }
    key_sets: set[frozenset[str]] = set()

    @settings(max_examples=100, database=None)
    @given(Compiler(max_items=2).compile(schema))
    def check(value: dict[str, Any]) -> None:
        assert len(value.get("xs", [])) <= 2
        assert all(0 <= x <= 9 for x in value.get("xs", []))
        key_sets.add(frozenset(value))

    check()
    assert len(key_sets) == 4
