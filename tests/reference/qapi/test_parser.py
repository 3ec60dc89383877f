"""The schema-language reader and the typed model built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from reference.qapi import QAPIParseError, QAPISchemaError, UnknownCommand, load_schema
from reference.qapi.parser import Expression, parse_file, parse_text
from reference.qapi.schema import (
    AlternateType,
    ArrayType,
    EnumType,
    ObjectType,
    Schema,
    build_schema,
    version_matches,
)


def test_parse_text_single_quotes_comments_and_bools() -> None:
    text = (
        "# leading comment\n{ 'a': 'x', # trailing\n  'b': [ true, false ], 'c': {} }\n{ 'd': '' }"
    )

    exprs = parse_text(text)

    assert exprs == [({"a": "x", "b": [True, False], "c": {}}, 2), ({"d": ""}, 4)]


def test_parse_text_keeps_key_order() -> None:
    [(expr, _)] = parse_text("{ 'z': 'a', 'y': 'b', 'x': 'c' }")

    assert list(expr) == ["z", "y", "x"]


def test_parse_text_escapes() -> None:
    [(expr, _)] = parse_text(r"{ 'a': 'it\'s \\ ok' }")

    assert expr["a"] == "it's \\ ok"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{ 'a': 'b' ", "expected '}'"),
        ('{ "a": 1 }', 'expected "\'"'),
        ("{ 'a': 'b', 'a': 'c' }", "duplicate key 'a'"),
        ("[ 'a' ]", "top-level expressions must be objects"),
        ("{ 'a': 'unterminated }\n", "unterminated string"),
        ("{ 'a': nul }", "unexpected 'n'"),
    ],
)
def test_parse_text_rejects_malformed_input(text: str, message: str) -> None:
    with pytest.raises(QAPIParseError, match=message):
        parse_text(text, "t.json")


def test_parse_error_says_where() -> None:
    with pytest.raises(QAPIParseError) as info:
        parse_text("{ 'a': 'b' }\n{ 'c' 'd' }", "t.json")

    assert (info.value.line, str(info.value).split(":")[0]) == (2, "t.json")


def test_parse_file_resolves_includes_once(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "main.json").write_text(
        "{ 'include': 'sub/a.json' }\n{ 'include': 'sub/a.json' }\n{ 'enum': 'M', 'data': [] }"
    )
    (tmp_path / "sub" / "a.json").write_text("{ 'include': 'b.json' }\n{ 'enum': 'A', 'data': [] }")
    (tmp_path / "sub" / "b.json").write_text("{ 'include': '../main.json' }\n{ 'enum': 'B' }")

    names = [e.expr.get("enum") for e in parse_file(tmp_path / "main.json")]

    assert names == ["B", "A", "M"]


@pytest.mark.parametrize(
    ("condition", "version", "expected"),
    [
        (None, (7, 2), True),
        (">=9.1", (7, 2), False),
        (">=9.1", (10, 0), True),
        (">=8.0 <10.0", (9, 2), True),
        (">=8.0 <10.0", (10, 0), False),
        ("==7.2", (7, 2), True),
    ],
)
def test_version_matches(condition: str | None, version: tuple[int, int], expected: bool) -> None:
    assert version_matches(condition, version) is expected


def _schema(text: str, version: str = "10.0") -> Schema:
    exprs = [Expression(e, Path("t.json"), line) for e, line in parse_text(text)]
    return build_schema(exprs, version)


def test_build_schema_version_conditions_and_same_name_definitions() -> None:
    text = """
    { 'enum': 'E', 'data': [ 'a', { 'name': 'b', 'qemu-versions': '>=9.0' } ] }
    { 'struct': 'S', 'qemu-versions': '<9.0', 'data': { 'old': 'E' } }
    { 'struct': 'S', 'qemu-versions': '>=9.0',
      'data': { 'new': { 'type': 'int', 'features': [ 'unstable' ] } } }
    { 'command': 'c', 'data': 'S', 'qemu-versions': '>=8.0' }
    """
    old, new = _schema(text, "7.2"), _schema(text, "10.0")

    old_s, new_s, old_e, new_e = old.types["S"], new.types["S"], old.types["E"], new.types["E"]
    assert isinstance(old_s, ObjectType) and isinstance(new_s, ObjectType)
    assert isinstance(old_e, EnumType) and isinstance(new_e, EnumType)
    assert [m.name for m in old_s.members] == ["old"]
    assert (old_e.values, new_e.values) == (["a"], ["a", "b"])
    assert new_s.members[0].features == ["unstable"]
    assert "c" not in old.commands and "c" in new.commands


def test_build_schema_rejects_unknown_type() -> None:
    with pytest.raises(QAPISchemaError, match="unknown type 'Nope'"):
        _schema("{ 'struct': 'S', 'data': { 'a': 'Nope' } }")


def test_build_schema_rejects_non_enum_discriminator() -> None:
    with pytest.raises(QAPISchemaError, match="discriminator"):
        _schema(
            "{ 'struct': 'B', 'data': {} }\n{ 'union': 'U', 'base': { 'k': 'str' }, "
            "'discriminator': 'k', 'data': { 'x': 'B' } }"
        )


def test_our_schema_models_transaction() -> None:
    schema = load_schema("10.0")

    action = schema.lookup_type("TransactionAction")
    merge = schema.lookup_type("BlockDirtyBitmapMerge")

    assert isinstance(action, ObjectType) and action.tag == "type"
    assert len(action.variants) == 12
    assert isinstance(merge, ObjectType)
    bitmaps = merge.members[2].type
    assert isinstance(bitmaps, ArrayType) and isinstance(bitmaps.element, AlternateType)
    kind = action.all_members()[0].type
    assert isinstance(kind, EnumType) and kind.members[-1].features == ["deprecated"]


@pytest.mark.parametrize(("version", "present"), [("7.2", False), ("10.0", True)])
def test_our_schema_version_differences(version: str, present: bool) -> None:
    schema = load_schema(version)

    backup = schema.lookup_type("BackupCommon")
    perf = schema.lookup_type("BackupPerf")

    assert isinstance(backup, ObjectType) and isinstance(perf, ObjectType)
    assert ("discard-source" in [m.name for m in backup.members]) is present
    assert ("min-cluster-size" in [m.name for m in perf.members]) is present
    assert schema.has_command("block-job-change") is present


def test_check_arguments_unknown_command_is_lookup_error() -> None:
    with pytest.raises(UnknownCommand):
        load_schema("7.2").check_arguments("block-job-change", {})


def test_check_arguments_returns_arguments_unchanged() -> None:
    args = {"actions": [{"type": "abort", "data": {}}]}

    result = load_schema("10.0").check_arguments("transaction", args)

    assert result is args and args == {"actions": [{"type": "abort", "data": {}}]}


def test_load_schema_is_cached() -> None:
    assert load_schema("10.0") is load_schema("10.0")
