"""Random snapshot histories, run on real QEMU and on the reference, must agree.

Hypothesis draws a history of guest writes, internal snapshots (create, delete), external
snapshots (``blockdev-snapshot-sync``, ``blockdev-snapshot`` of pre-made overlays), bitmap
operations and transactions mixing them (some rolled back by an ``abort`` action or by a
duplicate snapshot name). The history becomes a scenario: the same steps, then a clean
``quit``, then ``qemu-img check``, ``info`` and ``map`` (the host layout: file length, holes,
where each cluster went), ``qemu-img snapshot -l`` and the sha256 of
every image's data and of every internal snapshot's data. QEMU's normalized transcript and the
reference's must be identical, step by step (issue 6: images consistent and data equal,
checked against QEMU itself rather than a hand-written model).

``HYPOTHESIS_PROFILE=thorough`` runs more histories (default ``fast``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.scenario import (
    Scenario,
    SetupCommand,
    Step,
    compare_transcripts,
    describe,
    run_scenario,
)

from .support import TranscriptCache, qemu_target, reference_target

settings.register_profile(
    "fast",
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fast")

#: The image size (small: every history ends with whole-image conversions).
SIZE = "4M"
SNAPSHOT_NAMES = ("a", "b", "c")
BITMAP_NAMES = ("b0", "b1")
OVERLAYS = ("ov1", "ov2")

# ---- the drawn history -----------------------------------------------------------------------

Op = tuple[Any, ...]

writes = st.tuples(
    st.just("write"),
    st.integers(0, 40).map(lambda k: k * 4096 * 7),
    st.sampled_from([512, 4096, 65536, 100000]),
    st.integers(1, 255),
)
internal = st.tuples(st.just("internal"), st.sampled_from(SNAPSHOT_NAMES))
delete = st.tuples(st.just("delete"), st.sampled_from(SNAPSHOT_NAMES))
external = st.tuples(st.just("external"))
#: ``blockdev-snapshot`` with one of the pre-made overlay images (added on first use).
overlay = st.tuples(st.just("overlay"), st.sampled_from(OVERLAYS))
bitmap_add = st.tuples(st.just("bitmap-add"), st.sampled_from(BITMAP_NAMES), st.booleans())
bitmap_clear = st.tuples(st.just("bitmap-clear"), st.sampled_from(BITMAP_NAMES))
txn_action = st.one_of(internal, external, overlay, bitmap_add, bitmap_clear)
transaction = st.tuples(
    st.just("transaction"), st.lists(txn_action, min_size=1, max_size=4), st.booleans()
)
history = st.lists(
    st.one_of(
        writes, writes, internal, delete, external, overlay, bitmap_add, bitmap_clear, transaction
    ),
    min_size=2,
    max_size=10,
)


def _may_crash_7_2(ops: list[Op]) -> bool:
    """Whether QEMU 7.2 may die rolling back this transaction: a snapshot action (internal or
    external) after an external one drains the overlay the latter opened, and 7.2 aborts if the
    transaction then rolls back (see the ``*_crashes_7_2`` scenarios). Whether it rolls back is
    left to QEMU: a step marked so is compared normally when QEMU survives."""
    kinds = [op[0] for op in ops]
    if "external" not in kinds:
        return False
    after = kinds[kinds.index("external") + 1 :]
    return any(kind in ("internal", "external", "overlay") for kind in after)


@dataclass
class _Builder:
    """Turns a drawn history into scenario steps, tracking the image files it creates."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=lambda: ["a.qcow2", *(f"{o}.qcow2" for o in OVERLAYS)])
    overlays: int = 0
    added: set[str] = field(default_factory=set)

    def action(self, op: Op) -> tuple[str, dict[str, Any]]:
        kind = op[0]
        if kind == "overlay":
            name = op[1]
            if name not in self.added:
                self.added.add(name)
                file = {"driver": "file", "filename": f"{{dir}}/{name}.qcow2"}
                arguments = {"driver": "qcow2", "node-name": name, "backing": None, "file": file}
                self.steps.append({"execute": "blockdev-add", "arguments": arguments})
            return "blockdev-snapshot", {"node": "drv0", "overlay": name}
        if kind == "internal":
            return "blockdev-snapshot-internal-sync", {"device": "drv0", "name": op[1]}
        if kind == "external":
            self.overlays += 1
            name = f"s{self.overlays}"
            self.files.append(f"{name}.qcow2")
            return "blockdev-snapshot-sync", {
                "device": "drv0",
                "snapshot-file": f"{{dir}}/{name}.qcow2",
                "snapshot-node-name": name,
            }
        if kind == "bitmap-add":
            return "block-dirty-bitmap-add", {"node": "drv0", "name": op[1], "persistent": op[2]}
        if kind == "bitmap-clear":
            return "block-dirty-bitmap-clear", {"node": "drv0", "name": op[1]}
        raise AssertionError(kind)

    def add(self, op: Op) -> None:
        kind = op[0]
        if kind == "write":
            _, offset, length, pattern = op
            cmd = f"write -P {pattern} {offset} {length}"
            self.steps.append({"io": {"node": "drv0", "cmd": cmd}})
        elif kind == "delete":
            arguments = {"device": "drv0", "name": op[1]}
            self.steps.append(
                {"execute": "blockdev-snapshot-delete-internal-sync", "arguments": arguments}
            )
        elif kind == "transaction":
            _, ops, abort = op
            actions = []
            for sub in ops:
                name, data = self.action(sub)
                actions.append({"type": name, "data": data})
            if abort:
                actions.append({"type": "abort", "data": {}})
            step: dict[str, Any] = {"execute": "transaction", "arguments": {"actions": actions}}
            if _may_crash_7_2(ops):
                step["qemu_crashes"] = ("7.2",)
            self.steps.append(step)
        else:
            name, data = self.action(op)
            self.steps.append({"execute": name, "arguments": data})

    def finish(self) -> None:
        self.steps.append({"observe": ["drv0"]})
        self.steps.append({"execute": "quit"})
        for f in self.files:
            path = f"{{dir}}/{f}"
            self.steps.append({"run": f"qemu-img check {path}", "may_fail": True})
            # The file length and holes follow QEMU's host layout (qcow2-host-layout).
            for tool in ("info", "map"):
                run = f"qemu-img {tool} --output=json {path}"
                self.steps.append({"run": run, "json": True, "may_fail": True})
            self.steps.append({"run": f"qemu-img snapshot -l {path}", "may_fail": True})
            self.steps.append(
                {"run": f"qemu-img convert -O raw {path} {path}.raw", "may_fail": True}
            )
            self.steps.append({"run": f"sha256sum {path}.raw", "may_fail": True})
            for sn in SNAPSHOT_NAMES:
                raw = f"{path}.{sn}.raw"
                convert = f"qemu-img convert -l snapshot.name={sn} -O raw {path} {raw}"
                self.steps.append({"run": convert, "may_fail": True})
                self.steps.append({"run": f"sha256sum {raw}", "may_fail": True})


def _scenario(ops: list[Op]) -> Scenario:
    builder = _Builder()
    for op in ops:
        builder.add(op)
    builder.finish()
    steps = []
    for index, raw in enumerate(builder.steps):
        kind = next(k for k in ("execute", "io", "observe", "run") if k in raw)
        steps.append(
            Step(
                index=index,
                kind=kind,
                body=raw[kind],
                arguments=raw.get("arguments"),
                qemu_crashes=raw.get("qemu_crashes", ()),
                json_output=bool(raw.get("json", False)),
                may_fail=bool(raw.get("may_fail", False)),
            )
        )
    return Scenario(
        name="snapshot_history",
        area="properties",
        path=Path(__file__),
        description=f"random snapshot history {ops!r}",
        versions=("10.0", "7.2"),
        setup=tuple(
            SetupCommand(f"qemu-img create -f qcow2 {{dir}}/{name}.qcow2 {SIZE}")
            for name in ("a", *OVERLAYS)
        ),
        drives=({"id": "drv0", "if": "none", "file": "{dir}/a.qcow2", "format": "qcow2"},),
        blockdevs=(),
        steps=tuple(steps),
    )


@pytest.mark.qemu
@pytest.mark.parametrize("version", ["10.0", "7.2"])
@settings(settings.get_profile(PROFILE))
@given(ops=history)
def test_random_snapshot_history_matches_qemu(version: str, ops: list[Op]) -> None:
    scenario = _scenario(ops)
    qemu = qemu_target(version)
    reference = reference_target(version)

    oracle = TranscriptCache.fresh(qemu, scenario, version)
    candidate = run_scenario(scenario, reference.start, label=reference.label, version=version)

    problems = compare_transcripts(scenario, candidate, oracle)
    assert not problems, "\n".join(problems) + "\n" + describe(scenario, [candidate, oracle])
