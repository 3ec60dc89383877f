"""``schema``: every reply and event validates against the endpoint's own derived schema.

The schema is derived from the endpoint's ``query-qmp-schema`` (:mod:`conformance.qmp_schema`),
so QEMU 7.2 is judged by 7.2's schema and the reference by the one it declares. Error replies
must have QMP's error shape. An endpoint without ``query-qmp-schema`` makes the check n/a.

Histories hold normalized values: the clock readings of an internal snapshot were masked to
``"<int>"`` (:data:`conformance.observe.SNAPSHOT_CLOCK_KEYS`); they were integers, so they are
validated as the integer 0.
"""

from __future__ import annotations

from typing import Any

from conformance.checks.base import CheckContext, Finding, Verdict, verdict
from conformance.history import History
from conformance.observe import SNAPSHOT_CLOCK_KEYS

NAME = "schema"


def _unmasked(value: Any) -> Any:
    """``value`` with the masked snapshot clock readings back as integers."""
    if isinstance(value, list):
        return [_unmasked(item) for item in value]
    if isinstance(value, dict):
        snapshot_info = "vm-state-size" in value
        return {
            key: 0
            if snapshot_info and key in SNAPSHOT_CLOCK_KEYS and item == "<int>"
            else _unmasked(item)
            for key, item in value.items()
        }
    return value


def check(history: History, ctx: CheckContext) -> Verdict:
    """Validate every reply and event of the history."""
    schema = ctx.schema
    if schema is None:
        return verdict(NAME, [], 0, ctx.schema_missing or "the endpoint declares no schema")
    findings: list[Finding] = []
    examined = 0
    for op in history.operations:
        problems: list[str] = []
        if op.reply is not None and op.command is not None:
            examined += 1
            problems += [
                f"reply: {p}" for p in schema.reply_problems(op.command, _unmasked(op.reply))
            ]
        for event in op.events:
            examined += 1
            problems += [
                f"event {event.get('event')}: {p}" for p in schema.event_problems(_unmasked(event))
            ]
        if problems:
            findings.append(
                Finding(
                    NAME,
                    op.index,
                    op.message,
                    expected="replies and events valid against the endpoint's own schema",
                    seen="; ".join(problems[:5]),
                    because="a client generated from the declared schema could not parse them",
                    subject=" | ".join(problems),
                )
            )
    result = verdict(NAME, findings, examined, "no reply or event to validate")
    if ctx.schema_missing and result.status != "n/a":
        result.reason = ctx.schema_missing
    return result
