"""``liveness``: the endpoint still answers after every step.

A crash (the process died, with its signal) or a hang (no reply within the timeout) is reported
with the whole sequence of messages that led to it, the last one being the culprit. An endpoint
that cannot even start is a liveness failure at step -1.
"""

from __future__ import annotations

from conformance.checks.base import CheckContext, Finding, Verdict, verdict
from conformance.history import History

NAME = "liveness"


def check(history: History, ctx: CheckContext) -> Verdict:
    """A finding for a start failure, a crash or a hang."""
    if history.start_failure is not None:
        finding = Finding(
            NAME,
            -1,
            {},
            expected="the endpoint starts and greets",
            seen=history.start_failure,
            because="an endpoint that cannot start answers nothing",
            subject="start",
        )
        return verdict(NAME, [finding], 1, "")
    findings: list[Finding] = []
    for op in history.operations:
        if op.outcome not in ("crashed", "hung"):
            continue
        sequence = [o.message.get("execute") or o.kind for o in history.operations]
        what = "died" if op.outcome == "crashed" else "stopped answering"
        findings.append(
            Finding(
                NAME,
                op.index,
                op.message,
                expected="a reply (return or error) and an endpoint that keeps answering",
                seen=f"the endpoint {what} ({op.failure})"
                + (f": {op.assertion}" if op.assertion else ""),
                because=(
                    f"bad input must get an error, never a {op.outcome.removesuffix('ed')}; "
                    f"sequence: {' -> '.join(str(s) for s in sequence)}"
                ),
                subject=f"{op.outcome} {op.failure}"
                + (f" ({op.assertion})" if op.assertion else ""),
            )
        )
    return verdict(NAME, findings, len(history.operations), "no step was run")
