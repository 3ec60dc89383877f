"""Our ``query-qmp-schema`` equals real QEMU's, compared structurally.

Masked type names differ between builds, so the comparison starts at a command or event and
follows type references in both replies side by side: meta-types, member names, optionality,
features, tags, variants, enum values and alternates must agree at every step. QEMU's replies
come from ``schema/recorded/`` (see ``scripts/record-qmp-schema.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reference.qapi import load_schema
from reference.qapi.introspect import introspect

RECORDED = Path(__file__).resolve().parents[3] / "schema" / "recorded"
VERSIONS = ("7.2", "10.0")

#: Entities whose graph we do not model completely, and why.
PARTIAL = {
    # Only the drivers the reference implements have their own branches.
    "blockdev-add": (
        "BlockdevOptions models file, raw, qcow2, null-co, blkdebug and copy-on-read only"
    ),
}

Info = dict[str, Any]


def recorded(version: str) -> dict[str, Info]:
    data = json.loads((RECORDED / f"qemu-{version}.json").read_text())
    return {entry["name"]: entry for entry in data["schema"]}


class _GraphDiff:
    """Walks two introspection graphs side by side, collecting differences."""

    def __init__(self, ours: dict[str, Info], theirs: dict[str, Info]) -> None:
        self.ours = ours
        self.theirs = theirs
        self.problems: list[str] = []
        self.seen: set[tuple[str, str]] = set()

    def walk(self, a: str, b: str, path: str) -> None:
        if (a, b) in self.seen:
            return
        self.seen.add((a, b))
        ea, eb = self.ours[a], self.theirs[b]
        if ea["meta-type"] != eb["meta-type"]:
            self.problems.append(f"{path}: meta-type {ea['meta-type']} != {eb['meta-type']}")
            return
        if ea.get("features") != eb.get("features"):
            self.problems.append(f"{path}: features {ea.get('features')} != {eb.get('features')}")
        meta = ea["meta-type"]
        if meta == "builtin":
            if a != b:
                self.problems.append(f"{path}: builtin {a} != {b}")
        elif meta == "array":
            self.walk(ea["element-type"], eb["element-type"], path + "[]")
        elif meta == "enum":
            if ea["values"] != eb["values"]:
                self.problems.append(f"{path}: values {ea['values']} != {eb['values']}")
            if ea.get("members") != eb.get("members"):
                self.problems.append(f"{path}: enum members differ")
        elif meta == "alternate":
            ta = [m["type"] for m in ea["members"]]
            tb = [m["type"] for m in eb["members"]]
            if len(ta) != len(tb):
                self.problems.append(f"{path}: {len(ta)} alternatives != {len(tb)}")
            for i, (x, y) in enumerate(zip(ta, tb, strict=False)):
                self.walk(x, y, f"{path}|{i}")
        elif meta in ("command", "event"):
            self.walk(ea["arg-type"], eb["arg-type"], path + "(arg)")
            if meta == "command":
                self.walk(ea["ret-type"], eb["ret-type"], path + "(ret)")
                if ea.get("allow-oob") != eb.get("allow-oob"):
                    self.problems.append(f"{path}: allow-oob differs")
        else:
            self.walk_object(ea, eb, path)

    def walk_object(self, ea: Info, eb: Info, path: str) -> None:
        names_a = [m["name"] for m in ea["members"]]
        names_b = [m["name"] for m in eb["members"]]
        if names_a != names_b:
            self.problems.append(f"{path}: members {names_a} != {names_b}")
            return
        for ma, mb in zip(ea["members"], eb["members"], strict=True):
            where = f"{path}.{ma['name']}"
            if ("default" in ma) != ("default" in mb):
                self.problems.append(f"{where}: optionality differs")
            if ma.get("features") != mb.get("features"):
                self.problems.append(
                    f"{where}: features {ma.get('features')} != {mb.get('features')}"
                )
            self.walk(ma["type"], mb["type"], where)
        if ea.get("tag") != eb.get("tag"):
            self.problems.append(f"{path}: tag {ea.get('tag')} != {eb.get('tag')}")
        va = [(v["case"], v["type"]) for v in ea.get("variants", [])]
        vb = [(v["case"], v["type"]) for v in eb.get("variants", [])]
        if [c for c, _ in va] != [c for c, _ in vb]:
            self.problems.append(f"{path}: cases {[c for c, _ in va]} != {[c for c, _ in vb]}")
            return
        for (case, x), (_, y) in zip(va, vb, strict=True):
            self.walk(x, y, f"{path}<{case}>")


def diff(ours: dict[str, Info], theirs: dict[str, Info], root: str) -> list[str]:
    """Every structural difference reachable from entity ``root`` (empty when equal)."""
    walker = _GraphDiff(ours, theirs)
    walker.walk(root, root, root)
    return walker.problems


def ours_by_name(version: str) -> dict[str, Info]:
    return {entry["name"]: entry for entry in introspect(load_schema(version))}


@pytest.mark.parametrize("version", VERSIONS)
def test_transaction_introspection_equals_qemu(version: str) -> None:
    assert diff(ours_by_name(version), recorded(version), "transaction") == []


def _entities() -> list[object]:
    params: list[object] = []
    for version in VERSIONS:
        schema = load_schema(version)
        for name in [*schema.commands, *schema.events]:
            marks = (
                [pytest.mark.xfail(reason=PARTIAL[name], strict=True)] if name in PARTIAL else []
            )
            params.append(pytest.param(version, name, id=f"{name}@{version}", marks=marks))
    return params


@pytest.mark.parametrize(("version", "name"), _entities())
def test_every_entity_introspection_equals_qemu(version: str, name: str) -> None:
    theirs = recorded(version)
    assert name in theirs, f"{name} is not a QEMU {version} command or event"
    assert diff(ours_by_name(version), theirs, name) == []


def test_diff_sees_a_version_difference() -> None:
    problems = diff(ours_by_name("7.2"), recorded("10.0"), "transaction")

    assert any("discard-source" in p for p in problems)


@pytest.mark.parametrize("version", VERSIONS)
def test_introspection_names_are_unique_and_resolvable(version: str) -> None:
    entries = introspect(load_schema(version))
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names))
    known = set(names)
    for entry in entries:
        refs = [entry.get("arg-type"), entry.get("ret-type"), entry.get("element-type")]
        refs += [m.get("type") for m in entry.get("members", [])]
        refs += [v["type"] for v in entry.get("variants", [])]
        assert {r for r in refs if r is not None} <= known, entry["name"]
