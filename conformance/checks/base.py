"""What every check shares: findings with a "because", verdicts, and the context a check reads.

A check is a function of recorded histories (Jepsen's "history in, verdict out"): it never
talks to an endpoint. Its verdict is ``pass`` (the rule held wherever it applied), ``fail``
(one :class:`Finding` per violation, each saying which step, what was expected, what was seen,
and *because* why that breaks the rule) or ``n/a`` (the rule could not be judged here, with the
reason: a missing capability, a feature the reference model lacks, nothing to judge). A finding
may later be marked *expected* by a known deviation (:mod:`conformance.deviations`); it is still
reported, as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conformance.endpoints import JSONObject
from conformance.history import History

PASS = "pass"
FAIL = "fail"
NOT_APPLICABLE = "n/a"


@dataclass
class Finding:
    """One violation of a check's rule."""

    check: str
    #: Index of the program step at fault (``-1``: the endpoint's start).
    step: int
    #: What was sent at that step (``{"execute": ..., "arguments": ...}``).
    message: JSONObject
    expected: str
    seen: str
    because: str
    #: A short machine-matchable subject (``"disk0/b0 recording"``), for known deviations.
    subject: str = ""
    #: Set when a known deviation explains this finding: its id.
    deviation: str | None = None

    def explain(self) -> str:
        """The finding in words, as the reports print it."""
        sent = _short_message(self.message)
        head = f"[{self.check}] step {self.step} ({sent}): "
        text = f"{head}expected {self.expected}; seen {self.seen}; because {self.because}"
        if self.deviation:
            text += f" (expected: known deviation {self.deviation})"
        return text

    def to_json(self) -> JSONObject:
        """JSON form for reports."""
        return {
            "check": self.check,
            "step": self.step,
            "message": self.message,
            "expected": self.expected,
            "seen": self.seen,
            "because": self.because,
            "subject": self.subject,
            "deviation": self.deviation,
            "explanation": self.explain(),
        }


def _short_message(message: JSONObject) -> str:
    if "execute" in message:
        command = str(message["execute"])
        if command == "transaction":
            actions = (message.get("arguments") or {}).get("actions")
            if isinstance(actions, list):
                kinds = [a.get("type") for a in actions if isinstance(a, dict)]
                return f"transaction {kinds}"
        if "io" in message:
            io = message["io"]
            return f"io {io.get('node')} {io.get('cmd')!r}" if isinstance(io, dict) else command
        return command
    if "run" in message:
        return f"run {message['run']!r}"
    if "observe" in message:
        return f"observe {message['observe']}"
    return "start"


@dataclass
class Verdict:
    """A check's judgement of one history."""

    check: str
    status: str
    findings: list[Finding] = field(default_factory=list)
    #: Why the check is ``n/a`` here, or what it could only partly judge.
    reason: str = ""
    #: How many operations the rule was applied to.
    examined: int = 0

    @property
    def unexpected(self) -> list[Finding]:
        """Findings no known deviation explains."""
        return [f for f in self.findings if f.deviation is None]

    @property
    def outcome(self) -> str:
        """``pass``, ``fail``, ``xfail`` (only expected findings) or ``n/a``."""
        if self.status == FAIL:
            return FAIL if self.unexpected else "xfail"
        return self.status

    def to_json(self) -> JSONObject:
        """JSON form for reports."""
        return {
            "check": self.check,
            "status": self.status,
            "outcome": self.outcome,
            "reason": self.reason,
            "examined": self.examined,
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass
class CheckContext:
    """What a check may read besides the target's history."""

    #: The reference model's history of the same program and version (differential), if any.
    model: History | None = None
    #: Why there is no model history.
    model_missing: str = ""
    #: The target is real QEMU (``qemu_crashes`` steps must crash there, not answer).
    is_qemu: bool = False
    #: The target is the reference (or a variant of it): scenario ``requires`` gate it.
    is_reference: bool = False
    #: The endpoint's derived JSON Schema (:mod:`conformance.qmp_schema`), if any.
    schema: Any = None
    #: Why there is no schema.
    schema_missing: str = ""
    #: Reference features (``reference.FEATURES``) for ``requires`` gating.
    model_features: frozenset[str] = frozenset()


CheckFunction = Callable[[History, CheckContext], Verdict]


def verdict(check: str, findings: list[Finding], examined: int, nothing: str) -> Verdict:
    """``fail`` with findings, ``pass`` when something was examined, else ``n/a`` (``nothing``)."""
    if findings:
        return Verdict(check, FAIL, findings, examined=examined)
    if examined == 0:
        return Verdict(check, NOT_APPLICABLE, reason=nothing)
    return Verdict(check, PASS, examined=examined)
