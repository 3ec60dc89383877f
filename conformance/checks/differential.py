"""``differential``: the endpoint agrees with the reference model of the same version.

Two oracles, both per step:

* the curated scenario's ``expect`` entries, recorded from real QEMU (replies, error class and
  text, events, observed bitmaps);
* the reference model (``reference.Machine(version)``, in this process) fed the same program: its
  replies, events and observable state after every step must equal the endpoint's.

Where real QEMU is known to crash (a ``qemu_crashes`` step) the comparison stops: the crash is
the ``liveness`` check's finding. Where the model lacks a feature the program needs (scenario
``requires`` not in ``reference.FEATURES``, or the model answers "Action 'X' is not implemented
by this reference") the model comparison is not applicable from that step on, and the verdict
says so; the recorded expectations still apply.
"""

from __future__ import annotations

from conformance import rules
from conformance.checks.base import (
    FAIL,
    NOT_APPLICABLE,
    PASS,
    CheckContext,
    Finding,
    Verdict,
    verdict,
)
from conformance.endpoints import JSONObject
from conformance.history import History, Operation
from conformance.scenario import check_expectations
from conformance.state import differences

NAME = "differential"


def _expectation_findings(history: History, ctx: CheckContext) -> tuple[list[Finding], int]:
    program = history.program
    if not any(step.expect or step.qemu_crashes for step in program.steps):
        return [], 0
    problems = check_expectations(program, history.transcript(), qemu=ctx.is_qemu)
    ops = {op.index: op for op in history.operations}
    findings = []
    for problem in problems:
        head, _, rest = problem.partition(": ")
        index = int(head.split()[1]) if head.startswith("step ") else -1
        op = ops.get(index)
        if op is not None and (
            op.stream_broken or (op.outcome in ("crashed", "hung") and not ctx.is_qemu)
        ):
            continue  # the liveness check's finding
        findings.append(
            Finding(
                NAME,
                index,
                op.message if op is not None else {},
                expected="what real QEMU answered when the scenario was recorded",
                seen=rest or problem,
                because="the scenario's expectations are real QEMU's behaviour for this version",
                subject=rest or problem,
            )
        )
    return findings, len(ops)


def _visible(op: Operation) -> JSONObject:
    entry = op.to_entry()
    entry.pop("io", None)
    return entry


def _model_findings(history: History, model: History) -> tuple[list[Finding], int, str]:
    program = history.program
    crash_steps = {s.index for s in program.steps if s.crashes_qemu(history.version)}
    findings: list[Finding] = []
    examined = 0
    note = ""
    model_ops = {op.index: op for op in model.operations}
    for op in history.operations:
        want = model_ops.get(op.index)
        if want is None:
            break
        error = want.error() or {}
        missing = rules.not_implemented_kind(str(error.get("desc", "")))
        if missing is not None and op.reply != want.reply:
            note = f"the model does not implement {missing}: compared up to step {op.index}"
            break
        if op.outcome in ("crashed", "hung"):
            if op.index not in crash_steps:
                note = (
                    f"the endpoint {op.outcome} at step {op.index} (the liveness check's finding)"
                )
            break
        examined += 1
        got_entry, want_entry = _visible(op), _visible(want)
        problems = [f"{line}" for line in differences(want_entry, got_entry) if line]
        if not problems and op.state is not None and want.state is not None:
            problems = [f"state {line}" for line in differences(want.state, op.state)]
        if problems:
            findings.append(
                Finding(
                    NAME,
                    op.index,
                    op.message,
                    expected=f"the reference model's answer ({_short(want_entry)})",
                    seen="; ".join(problems[:6]),
                    because=(
                        f"an endpoint of QEMU {history.version} must answer and change state "
                        "as that version does"
                    ),
                    subject=" | ".join(problems),
                )
            )
            break  # after the first divergence the two runs are no longer comparable
    return findings, examined, note


def _short(entry: JSONObject) -> str:
    reply = entry.get("reply")
    if reply is not None:
        text = str(reply)
        return text if len(text) < 200 else text[:197] + "..."
    return "see reproducer"


def check(history: History, ctx: CheckContext) -> Verdict:
    """Compare with the recorded expectations and with the model."""
    missing_features = sorted(history.program.requires - ctx.model_features)
    if missing_features and ctx.is_reference:
        return Verdict(
            NAME,
            NOT_APPLICABLE,
            reason=f"the reference does not implement {', '.join(missing_features)} yet",
        )
    if history.missing:
        return Verdict(
            NAME,
            NOT_APPLICABLE,
            reason=f"the endpoint lacks {', '.join(history.missing)}: the program's guest writes "
            "cannot happen there, so neither QEMU's recorded answers nor the model compare",
        )
    findings, examined = _expectation_findings(history, ctx)
    notes: list[str] = []
    if missing_features:
        notes.append(
            f"the reference model lacks {', '.join(missing_features)}: model comparison n/a"
        )
    elif ctx.model is None:
        notes.append(ctx.model_missing or "no model history")
    else:
        model_findings, model_examined, note = _model_findings(history, ctx.model)
        findings += model_findings
        examined += model_examined
        if note:
            notes.append(note)
    result = verdict(NAME, findings, examined, "; ".join(notes) or "nothing to compare")
    if result.status in (PASS, FAIL) and notes:
        result.reason = "; ".join(notes)
    return result
