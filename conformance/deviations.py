"""Known deviations: failures the suite reports that are real QEMU defects or version facts.

``known-deviations.yaml`` lists each with its reason and how it was confirmed (replaying the
reproducer). A finding that a deviation matches is still reported, marked "expected: known
deviation ID"; the verdict's outcome becomes ``xfail`` instead of ``fail`` (exit code 0), never a
silent pass. A deviation matches a finding when all of its given fields match:

* ``checks``: the finding's check is one of them;
* ``targets``: the target's kind (``qemu``, ``reference``, ``qsd``, ...) is one of them (the
  reference reproduces QEMU's defects on purpose, so a defect may list both);
* ``versions``: the history's version is one of them;
* ``scenarios``: glob patterns over the program id (``bitmaps/merge_empty_*``);
* ``message``: a pattern the step's message contains (:func:`contains`: mappings by subset, a
  list pattern ``[]`` only matches an empty list, other list patterns need each element to
  match some element); ``messages``: a list of such patterns, any of which may match;
* ``action``: a pattern that some action of the step's transaction contains;
* ``subject``: a regular expression searched in the finding's subject; ``{node}``, ``{name}``,
  ``{device}`` and ``{bitmap}`` in it stand for those members of ``data`` (escaped) of an action
  that matches ``action`` (any one of them may make the subject match).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conformance.checks.base import Finding

DEFAULT_FILE = Path(__file__).parent / "known-deviations.yaml"


def contains(value: Any, pattern: Any) -> bool:
    """Whether ``value`` contains ``pattern`` (see the module docstring)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            key in value and contains(value[key], sub) for key, sub in pattern.items()
        )
    if isinstance(pattern, list):
        if not isinstance(value, list):
            return False
        if not pattern:
            return not value
        return all(any(contains(item, sub) for item in value) for sub in pattern)
    return bool(value == pattern)


@dataclass(frozen=True)
class Deviation:
    """One known deviation."""

    id: str
    reason: str
    confirmed: str
    checks: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    scenarios: tuple[str, ...] = ()
    messages: tuple[Any, ...] = ()
    action: Any = None
    subject: str | None = None
    #: Its reproducer replays it (a curated scenario shows it on every run); ``False`` for a
    #: race that a run shows only by chance (``replayable: false`` in the file).
    replayable: bool = True

    def matches(self, finding: Finding, *, kind: str, version: str, program: str) -> bool:
        """Whether this deviation explains ``finding``."""
        if self.checks and finding.check not in self.checks:
            return False
        if self.targets and kind not in self.targets:
            return False
        if self.versions and version not in self.versions:
            return False
        if self.scenarios and not any(fnmatch.fnmatch(program, p) for p in self.scenarios):
            return False
        if self.messages and not any(contains(finding.message, m) for m in self.messages):
            return False
        candidates: list[dict[str, Any]] = [{}]
        if self.action is not None:
            candidates = [a for a in _actions(finding.message) if contains(a, self.action)]
            if not candidates:
                return False
        if self.subject is None:
            return True
        return any(_subject_matches(self.subject, a, finding.subject) for a in candidates)


def _subject_matches(template: str, action: dict[str, Any], subject: str) -> bool:
    data = action.get("data") if isinstance(action.get("data"), dict) else {}
    assert isinstance(data, dict)
    pattern = template
    for member in ("node", "name", "device", "bitmap"):
        pattern = pattern.replace("{" + member + "}", re.escape(str(data.get(member, ""))))
    return re.search(pattern, subject) is not None


def _actions(message: Any) -> list[dict[str, Any]]:
    arguments = message.get("arguments") if isinstance(message, dict) else None
    actions = arguments.get("actions") if isinstance(arguments, dict) else None
    if not isinstance(actions, list):
        return []
    return [dict(a) for a in actions if isinstance(a, dict)]


def _tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def load(path: Path = DEFAULT_FILE) -> list[Deviation]:
    """Parse a deviations file; ValueError on a malformed entry."""
    raw = yaml.safe_load(path.read_text()) or []
    result = []
    for entry in raw:
        if not isinstance(entry, dict) or not {"id", "reason", "confirmed"} <= set(entry):
            raise ValueError(f"{path}: each deviation needs id, reason and confirmed: {entry!r}")
        result.append(
            Deviation(
                id=str(entry["id"]),
                reason=str(entry["reason"]).strip(),
                confirmed=str(entry["confirmed"]).strip(),
                checks=_tuple(entry.get("checks")),
                targets=_tuple(entry.get("targets")),
                versions=_tuple(entry.get("versions")),
                scenarios=_tuple(entry.get("scenarios")),
                messages=tuple(
                    ([entry["message"]] if "message" in entry else [])
                    + list(entry.get("messages") or [])
                ),
                action=entry.get("action"),
                subject=entry.get("subject"),
                replayable=bool(entry.get("replayable", True)),
            )
        )
    return result


def mark(
    findings: Sequence[Finding],
    deviations: Sequence[Deviation],
    *,
    kind: str,
    version: str,
    program: str,
) -> None:
    """Set ``finding.deviation`` for every finding a deviation explains."""
    for finding in findings:
        for deviation in deviations:
            if deviation.matches(finding, kind=kind, version=version, program=program):
                finding.deviation = deviation.id
                break
