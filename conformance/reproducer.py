"""Replayable reproducers: a failure as a QMP script, one JSON message per line.

Line 1 is a header ``{"reproducer": {...}}``: program id, target, version, the failing check
and step, the explanation in words, and what the program needs before its first message
(``setup`` host commands, ``drives``, ``blockdevs``; ``{dir}`` stands for the working
directory). Then one line per step up to and including the failing one::

    {"execute": "transaction", "arguments": {...}, "expected": {...}, "observed": {...}}
    {"io": {"node": "disk0", "cmd": "write 0 64k"}, "expected": {...}, "observed": {...}}
    {"run": "qemu-img info {dir}/a.qcow2"}
    {"observe": ["disk0"]}

``expected`` is the reference model's reply (or ``null`` without a model); ``observed`` what the
target answered (``{"crashed": "SIGSEGV"}`` when it died); ``"event_order": "per-job"`` keeps
a step's job events grouped per job as when it was recorded. :func:`load` turns the file back into
a program that :mod:`conformance.history` runs on any target (``qmp-conformance replay``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from conformance.checks.base import Finding
from conformance.endpoints import JSONObject
from conformance.history import History, Operation
from conformance.scenario import Scenario, SetupCommand, Step


def _observed(op: Operation) -> Any:
    if op.outcome in ("crashed", "hung"):
        return {op.outcome: op.failure}
    return op.reply


def lines(history: History, model: History | None, finding: Finding) -> list[JSONObject]:
    """The reproducer's lines for ``finding`` (header first)."""
    program = history.program
    model_ops = {op.index: op for op in (model.operations if model else [])}
    header: JSONObject = {
        "program": program.id,
        "description": program.description.strip(),
        "target": history.target,
        "version": history.version,
        "check": finding.check,
        "step": finding.step,
        "explanation": finding.explain(),
        "setup": [{"run": s.run, "may_fail": s.may_fail} for s in program.setup],
        "drives": [dict(d) for d in program.drives],
        "blockdevs": [dict(b) for b in program.blockdevs],
        "requires": sorted(program.requires),
        "qemu_crashes": {
            str(s.index): list(s.qemu_crashes) for s in program.steps if s.qemu_crashes
        },
    }
    out: list[JSONObject] = [{"reproducer": header}]
    steps = {s.index: s for s in program.steps}
    last = (
        finding.step
        if finding.step >= 0
        else (history.operations[-1].index if history.operations else -1)
    )
    for op in history.operations:
        if op.index > last:
            break
        step = steps[op.index]
        line: JSONObject
        if op.kind == "run":
            line = {"run": step.body}
            if step.json_output:
                line["json"] = True
        elif op.kind == "observe":
            line = {"observe": list(step.body)}
        else:
            if op.kind == "io":
                line = {"io": dict(step.body)}
            else:
                line = {"execute": step.body}
                if step.arguments is not None:
                    line["arguments"] = step.arguments
            want = model_ops.get(op.index)
            line["expected"] = _observed(want) if want is not None else None
            line["observed"] = _observed(op)
        if step.qemu_crashes:
            line["qemu_crashes"] = list(step.qemu_crashes)
        if step.event_order is not None:
            line["event_order"] = step.event_order
        out.append(line)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]


def save(
    directory: Path,
    history: History,
    model: History | None,
    finding: Finding,
    *,
    all_findings: list[Finding] | None = None,
) -> Path:
    """Write the reproducer of ``finding`` (+ a ``.txt`` with every finding explained)."""
    target_dir = directory / "reproducers"
    target_dir.mkdir(parents=True, exist_ok=True)
    stem = _slug(f"{history.target}__{history.program.id}__{finding.check}")
    path = target_dir / f"{stem}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines(history, model, finding)))
    words = [f.explain() for f in (all_findings or [finding])]
    path.with_suffix(".txt").write_text("\n\n".join(words) + "\n")
    return path


def load(path: Path) -> tuple[JSONObject, Scenario]:
    """Parse a reproducer into its header and a program to run."""
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not raw or "reproducer" not in raw[0]:
        raise ValueError(f"{path}: not a reproducer (first line must be a 'reproducer' header)")
    header = dict(raw[0]["reproducer"])
    steps: list[Step] = []
    for index, line in enumerate(raw[1:]):
        crashes = tuple(line.get("qemu_crashes") or ())
        order = line.get("event_order")
        if "run" in line:
            steps.append(Step(index, "run", line["run"], json_output=bool(line.get("json"))))
        elif "observe" in line:
            steps.append(Step(index, "observe", line["observe"]))
        elif "io" in line:
            steps.append(Step(index, "io", line["io"], qemu_crashes=crashes, event_order=order))
        elif "execute" in line:
            steps.append(
                Step(
                    index,
                    "execute",
                    line["execute"],
                    line.get("arguments"),
                    qemu_crashes=crashes,
                    event_order=order,
                )
            )
        else:
            raise ValueError(f"{path}: line {index + 2} has no execute/io/run/observe")
    program_id = str(header.get("program", path.stem))
    area, _, name = program_id.rpartition("/")
    program = Scenario(
        name=name or program_id,
        area=area or "replay",
        path=path,
        description=str(header.get("description", "")),
        versions=("7.2", "10.0"),
        setup=tuple(
            SetupCommand(str(s["run"]), bool(s.get("may_fail", False)))
            for s in header.get("setup") or []
        ),
        drives=tuple(header.get("drives") or ()),
        blockdevs=tuple(header.get("blockdevs") or ()),
        steps=tuple(steps),
        requires=frozenset(header.get("requires") or ()),
    )
    return header, program
