"""The introspection → JSON Schema converter, on real and reference schemas and in focus."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from conformance.schema.jsonschema import (
    INT_MAX,
    INT_MIN,
    INTEGER_BOUNDS,
    ConversionError,
    convert,
    recursive_types,
)

from .support import SOURCES, derived, introspection

Info = list[dict[str, Any]]


def _schemas(document: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for name, entry in document["commands"].items():
        yield f"{name}.arguments", entry["arguments"]
        yield f"{name}.returns", entry["returns"]
    for name, schema in document["events"].items():
        yield f"event {name}", schema


def _keywords(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            yield key
            if key not in ("properties", "$defs"):
                yield from _keywords(value)
            else:
                for sub in value.values():
                    yield from _keywords(sub)
    elif isinstance(schema, list):
        for item in schema:
            yield from _keywords(item)


# --- every command and event of every source ---------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_every_command_and_event_converts_to_a_valid_draft_2020_12_schema(source: str) -> None:
    info = introspection(source)
    document = derived(source)
    commands = {i["name"] for i in info if i["meta-type"] == "command"}
    events = {i["name"] for i in info if i["meta-type"] == "event"}
    assert set(document["commands"]) == commands
    assert set(document["events"]) == events
    assert "transaction" in commands and len(commands) > 20
    for where, schema in _schemas(document):
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", where
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("source", SOURCES)
def test_no_allof_or_unevaluated_properties_anywhere(source: str) -> None:
    used = {k for _, schema in _schemas(derived(source)) for k in _keywords(schema)}
    assert not used & {"allOf", "unevaluatedProperties", "if", "not"}
    assert {"oneOf", "const", "enum", "additionalProperties"} <= used


def _renumber(info: Info, seed: int) -> Info:
    """The same schema as another build would mask it: new numbers, another entry order."""
    rng = random.Random(seed)
    masked = [i["name"] for i in info if i["name"].isdigit()]
    numbers = [str(n) for n in range(1000, 1000 + len(masked))]
    rng.shuffle(numbers)
    rename: dict[str, str] = dict(zip(masked, numbers, strict=True))

    def name(text: str) -> str:
        if text.startswith("[") and text.endswith("]"):
            return f"[{name(text[1:-1])}]"
        return rename.get(text, text)

    out = copy.deepcopy(info)
    for entry in out:
        entry["name"] = name(entry["name"])
        for key in ("arg-type", "ret-type", "element-type"):
            if key in entry:
                entry[key] = name(entry[key])
        for member in entry.get("members", ()):
            if "type" in member:
                member["type"] = name(member["type"])
        for variant in entry.get("variants", ()):
            variant["type"] = name(variant["type"])
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("source", ["recorded:10.0", "reference:7.2"])
def test_renumbered_masked_names_give_identical_output(source: str) -> None:
    info = introspection(source)
    renumbered = _renumber(info, seed=3)
    assert renumbered != info
    assert convert(renumbered) == convert(info)


# --- focused cases -----------------------------------------------------------------------------

BUILTINS: Info = [
    {"name": "str", "meta-type": "builtin", "json-type": "string"},
    {"name": "int", "meta-type": "builtin", "json-type": "int"},
    {"name": "bool", "meta-type": "builtin", "json-type": "boolean"},
    {"name": "null", "meta-type": "builtin", "json-type": "null"},
    {"name": "number", "meta-type": "builtin", "json-type": "number"},
    {"name": "any", "meta-type": "builtin", "json-type": "value"},
    {"name": "0", "meta-type": "object", "members": []},
]


def _command(arg_type: str, ret_type: str = "0") -> dict[str, Any]:
    return {"name": "cmd", "meta-type": "command", "arg-type": arg_type, "ret-type": ret_type}


def _arguments(*types: dict[str, Any], arg_type: str = "1") -> dict[str, Any]:
    schema: dict[str, Any] = convert([_command(arg_type), *BUILTINS, *types])["commands"]["cmd"][
        "arguments"
    ]
    return schema


def _valid(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def test_struct_members_required_optional_and_closed() -> None:
    schema = _arguments(
        {
            "name": "1",
            "meta-type": "object",
            "members": [
                {"name": "node", "type": "str"},
                {"name": "count", "type": "int", "default": None},
                {"name": "tags", "type": "[str]", "default": None, "features": ["deprecated"]},
            ],
        },
        {"name": "[str]", "meta-type": "array", "element-type": "str"},
    )
    assert schema["required"] == ["node"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["tags"] == {
        "type": "array",
        "items": {"type": "string"},
        "deprecated": True,
    }
    assert schema["properties"]["count"] == {
        "type": "integer",
        "minimum": INT_MIN,
        "maximum": INT_MAX,
    }
    assert _valid(schema, {"node": "a", "count": 3, "tags": ["x"]})
    assert not _valid(schema, {"count": 3})
    assert not _valid(schema, {"node": "a", "extra": 1})
    assert not _valid(schema, {"node": 1})
    assert not _valid(schema, {"node": "a", "count": 2**64})


UNION: Info = [
    {"name": "E", "meta-type": "enum", "values": ["a", "b", "c"]},
    {
        "name": "1",
        "meta-type": "object",
        "members": [{"name": "kind", "type": "E"}, {"name": "id", "type": "str", "default": None}],
        "tag": "kind",
        # "c" is not listed: an empty branch, as QAPI's implicit ones
        "variants": [{"case": "a", "type": "2"}, {"case": "b", "type": "0"}],
    },
    {"name": "2", "meta-type": "object", "members": [{"name": "size", "type": "int"}]},
]


def test_flat_union_becomes_one_complete_branch_per_tag_value() -> None:
    schema = _arguments(*UNION)
    branches = schema["oneOf"]
    assert [b["properties"]["kind"] for b in branches] == [
        {"const": "a"},
        {"const": "b"},
        {"const": "c"},
    ]
    assert branches[0]["required"] == ["kind", "size"]
    assert set(branches[0]["properties"]) == {"kind", "id", "size"}
    assert set(branches[1]["properties"]) == {"kind", "id"}
    assert all(b["additionalProperties"] is False for b in branches)
    assert _valid(schema, {"kind": "a", "size": 1, "id": "x"})
    assert _valid(schema, {"kind": "c"})
    assert not _valid(schema, {"kind": "a"})
    assert not _valid(schema, {"kind": "b", "size": 1})
    assert not _valid(schema, {"kind": "d"})


def test_union_branch_that_is_itself_a_union_multiplies_out() -> None:
    inner: Info = [
        {"name": "F", "meta-type": "enum", "values": ["x", "y"]},
        {
            "name": "2",
            "meta-type": "object",
            "members": [{"name": "sub", "type": "F"}],
            "tag": "sub",
            "variants": [{"case": "x", "type": "3"}, {"case": "y", "type": "0"}],
        },
        {"name": "3", "meta-type": "object", "members": [{"name": "depth", "type": "int"}]},
    ]
    outer = [UNION[0], {**UNION[1], "variants": [{"case": "a", "type": "2"}]}]
    schema = _arguments(*outer, *inner)
    shapes = [
        (b["properties"]["kind"]["const"], b["properties"].get("sub"), b["required"])
        for b in schema["oneOf"]
    ]
    assert shapes == [
        ("a", {"const": "x"}, ["kind", "sub", "depth"]),
        ("a", {"const": "y"}, ["kind", "sub"]),
        ("b", None, ["kind"]),
        ("c", None, ["kind"]),
    ]
    assert _valid(schema, {"kind": "a", "sub": "x", "depth": 2})
    assert not _valid(schema, {"kind": "a", "sub": "x"})


def test_alternate_is_one_of_its_branches_by_json_type() -> None:
    schema = _arguments(
        {"name": "1", "meta-type": "object", "members": [{"name": "v", "type": "2"}]},
        {"name": "2", "meta-type": "alternate", "members": [{"type": "str"}, {"type": "3"}]},
        {"name": "3", "meta-type": "object", "members": [{"name": "node", "type": "str"}]},
    )
    assert schema["properties"]["v"]["oneOf"][0] == {"type": "string"}
    assert _valid(schema, {"v": "name"})
    assert _valid(schema, {"v": {"node": "n"}})
    assert not _valid(schema, {"v": 1})
    assert not _valid(schema, {"v": None})


RECURSIVE: Info = [
    # BlockdevOptions-like "1" with a BlockdevRef-like alternate "2" pointing back at it
    {
        "name": "1",
        "meta-type": "object",
        "members": [
            {"name": "driver", "type": "str"},
            {"name": "file", "type": "2", "default": None},
        ],
    },
    {"name": "2", "meta-type": "alternate", "members": [{"type": "1"}, {"type": "str"}]},
]


def test_recursive_types_go_to_defs_and_validate_nested_values() -> None:
    assert recursive_types({i["name"]: i for i in [*BUILTINS, *RECURSIVE]}) == {"1", "2"}
    schema = _arguments(*RECURSIVE)
    assert schema["$ref"] == "#/$defs/r0"
    assert set(schema["$defs"]) == {"r0", "r1"}
    jsonschema.Draft202012Validator.check_schema(schema)
    nested = {"driver": "qcow2", "file": {"driver": "raw", "file": {"driver": "file", "file": "x"}}}
    assert _valid(schema, nested)
    assert not _valid(schema, {"driver": "qcow2", "file": {"driver": "raw", "file": 3}})


def test_recursion_is_found_in_real_schemas_only_where_it_exists() -> None:
    document = derived("recorded:10.0")
    assert "$defs" in document["commands"]["blockdev-add"]["arguments"]
    assert "$defs" not in document["commands"]["transaction"]["arguments"]
    assert "$defs" in document["commands"]["query-named-block-nodes"]["returns"]


def test_integer_bounds_come_from_our_qapi_by_path() -> None:
    with_bounds = derived("recorded:10.0")["commands"]
    without = convert(introspection("recorded:10.0"))["commands"]
    granularity = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
    args = with_bounds["block-dirty-bitmap-add"]["arguments"]
    assert args["properties"]["granularity"] == granularity
    generic = without["block-dirty-bitmap-add"]["arguments"]["properties"]["granularity"]
    assert generic == {"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX}
    # the same member reached through transaction: array item -> union branch -> wrapper
    branches = with_bounds["transaction"]["arguments"]["properties"]["actions"]["items"]["oneOf"]
    add = next(
        b for b in branches if b["properties"]["type"] == {"const": "block-dirty-bitmap-add"}
    )
    assert add["properties"]["data"]["properties"]["granularity"] == granularity
    assert not _valid(args, {"node": "n", "name": "b", "granularity": 2**32})
    assert _valid(args, {"node": "n", "name": "b", "granularity": 2**32 - 1})


def test_integer_bounds_agree_with_the_reference_qapi_model() -> None:
    from reference.qapi.schema import INTEGER_RANGES  # noqa: PLC0415

    assert {k: (lo, hi) for k, (lo, hi, _) in INTEGER_RANGES.items()} == INTEGER_BOUNDS


def test_builtins_map_by_json_type() -> None:
    members = [{"name": b["name"], "type": b["name"]} for b in BUILTINS if b["name"] != "0"]
    schema = _arguments({"name": "1", "meta-type": "object", "members": members})
    assert schema["properties"] == {
        "str": {"type": "string"},
        "int": {"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX},
        "bool": {"type": "boolean"},
        "null": {"type": "null"},
        "number": {"type": "number"},
        "any": {},
    }


def test_object_and_array_json_types_of_builtins() -> None:
    info = [
        _command("1"),
        {"name": "1", "meta-type": "object", "members": [{"name": "o", "type": "obj"}]},
        {"name": "obj", "meta-type": "builtin", "json-type": "object"},
        {"name": "0", "meta-type": "object", "members": []},
    ]
    schema = convert(info)["commands"]["cmd"]["arguments"]
    assert schema["properties"]["o"] == {"type": "object"}
    info[2] = {"name": "obj", "meta-type": "builtin", "json-type": "tuple"}
    with pytest.raises(ConversionError):
        convert(info)


def test_events_and_returns() -> None:
    info = [
        _command("0", "[1]"),
        {"name": "EV", "meta-type": "event", "arg-type": "1"},
        {"name": "[1]", "meta-type": "array", "element-type": "1"},
        {"name": "1", "meta-type": "object", "members": [{"name": "e", "type": "2"}]},
        {"name": "2", "meta-type": "enum", "values": ["on", "off"]},
        *BUILTINS,
    ]
    document = convert(info)
    returns = document["commands"]["cmd"]["returns"]
    assert _valid(returns, [{"e": "on"}])
    assert not _valid(returns, [{"e": "maybe"}])
    assert _valid(document["commands"]["cmd"]["arguments"], {})
    assert not _valid(document["commands"]["cmd"]["arguments"], {"x": 1})
    assert document["events"]["EV"]["properties"]["e"] == {"type": "string", "enum": ["on", "off"]}


@pytest.mark.parametrize(
    "info",
    [
        [_command("9"), *BUILTINS],
        [_command("1"), *BUILTINS, {"name": "1", "meta-type": "gadget"}],
        [{"meta-type": "object"}],
    ],
    ids=["dangling", "unknown-meta-type", "no-name"],
)
def test_malformed_introspection_is_a_conversion_error(info: Info) -> None:
    with pytest.raises(ConversionError):
        convert(info)


def test_output_is_plain_json() -> None:
    document = derived("reference:10.0")
    assert json.loads(json.dumps(document)) == document
