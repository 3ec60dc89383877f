"""``atomicity``: a failed transaction leaves the observable state exactly as before.

Judged for every ``transaction`` (and every command QEMU runs as a one-action transaction) that
answered an error: the state after it (nodes, backing chains, bitmaps with hashes and flags,
internal snapshots, jobs, files) must equal the state before it. QEMU's known exception is
modelled, not ignored: a file named by a ``blockdev-snapshot-sync`` (``snapshot-file``) or
``drive-backup`` (``target``) action of that transaction may remain on disk; any other new file
is a violation.
"""

from __future__ import annotations

from conformance import rules
from conformance.checks.base import CheckContext, Finding, Verdict, verdict
from conformance.history import History, Operation
from conformance.state import differences

NAME = "atomicity"


def _allowed_files(op: Operation) -> set[str]:
    """Files QEMU may leave behind after this failed operation (``{dir}``-relative)."""
    allowed: set[str] = set()
    specs = op.actions()
    if op.command in rules.FILE_CREATING:
        specs = [{"type": op.command, "data": op.arguments}]
    for action in specs:
        member = rules.FILE_CREATING.get(str(action.get("type")))
        data = action.get("data")
        if member and isinstance(data, dict) and isinstance(data.get(member), str):
            path = str(data[member])
            allowed.add(path.removeprefix("{dir}/"))
    return allowed


def _judged(op: Operation) -> bool:
    return op.outcome == "error" and (
        op.is_transaction() or op.command in rules.ONE_ACTION_TRANSACTIONS
    )


def check(history: History, ctx: CheckContext) -> Verdict:
    """Compare the state around every failed transaction."""
    findings: list[Finding] = []
    examined = 0
    for _position, op, before in history.pairs():
        if not _judged(op) or before is None or op.state is None:
            continue
        examined += 1
        allowed = _allowed_files(op)
        changed = []
        for line in differences(before, op.state):
            if line.startswith("files"):
                new = set(op.state.get("files") or []) - set(before.get("files") or [])
                gone = set(before.get("files") or []) - set(op.state.get("files") or [])
                if not gone and new <= allowed:
                    continue
            changed.append(line)
        if changed:
            error = op.error() or {}
            findings.append(
                Finding(
                    NAME,
                    op.index,
                    op.message,
                    expected="the observable state unchanged by the failed transaction",
                    seen="; ".join(changed[:6]) + (" ..." if len(changed) > 6 else ""),
                    because=(
                        f"the transaction failed ({error.get('class')}: {error.get('desc')!r}) "
                        "so every action's effect must have been rolled back, but "
                        f"{len(changed)} part(s) of the state changed"
                    ),
                    subject=" | ".join(changed),
                )
            )
    return verdict(NAME, findings, examined, "no failed transaction in this history")
