"""The named checks, selectable with ``--checks`` (issue 4's definitions, one module each).

``CHECKS`` maps each name to its function ``(History, CheckContext) -> Verdict``, in report
order. :mod:`conformance.checks.base` has the shared types.
"""

from __future__ import annotations

from conformance.checks import all_effects, atomicity, completion_mode, differential, liveness
from conformance.checks import schema as schema_check
from conformance.checks.base import (
    FAIL,
    NOT_APPLICABLE,
    PASS,
    CheckContext,
    CheckFunction,
    Finding,
    Verdict,
)

CHECKS: dict[str, CheckFunction] = {
    atomicity.NAME: atomicity.check,
    all_effects.NAME: all_effects.check,
    completion_mode.NAME: completion_mode.check,
    schema_check.NAME: schema_check.check,
    differential.NAME: differential.check,
    liveness.NAME: liveness.check,
}

#: What each check asserts, in one line (for ``--help`` and reports).
DESCRIPTIONS = {
    "atomicity": "a failed transaction leaves the observable state exactly as before",
    "all-effects": "a successful transaction shows every action's effect",
    "completion-mode": "grouped jobs fail together, individual ones independently; grouped "
    "refused for non-backup actions as the version says",
    "schema": "every reply and event validates against the endpoint's own derived schema",
    "differential": "replies, events and state equal the reference model of the same version "
    "(and the scenario's recorded QEMU expectations)",
    "liveness": "the endpoint still answers after every step (no crash, no hang)",
}


def select(names: list[str] | None) -> dict[str, CheckFunction]:
    """The checks named (all when ``names`` is empty); ValueError names unknown ones."""
    if not names:
        return dict(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; choose from {', '.join(CHECKS)}")
    return {n: CHECKS[n] for n in CHECKS if n in names}


__all__ = [
    "CHECKS",
    "DESCRIPTIONS",
    "FAIL",
    "NOT_APPLICABLE",
    "PASS",
    "CheckContext",
    "Finding",
    "Verdict",
    "select",
]
