"""Facts about QEMU's ``transaction`` that the checks state their rules with.

Only facts (names, version windows, messages), each confirmed on real QEMU 7.2 and 10.0
(SEMANTICS.md §1.3, §1.4, §1.6). The checks ask these questions; they never compare version
numbers themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Every ``TransactionActionKind`` (QEMU 7.2 and 10.0, schema order).
ACTION_KINDS = (
    "abort",
    "block-dirty-bitmap-add",
    "block-dirty-bitmap-remove",
    "block-dirty-bitmap-clear",
    "block-dirty-bitmap-enable",
    "block-dirty-bitmap-disable",
    "block-dirty-bitmap-merge",
    "blockdev-backup",
    "blockdev-snapshot",
    "blockdev-snapshot-internal-sync",
    "blockdev-snapshot-sync",
    "drive-backup",
)
#: Kinds that create a block job and may join a grouped job transaction.
JOB_KINDS = frozenset({"blockdev-backup", "drive-backup"})
#: Standalone commands that QEMU runs as a one-action transaction (SEMANTICS.md §1.5).
ONE_ACTION_TRANSACTIONS = frozenset(
    {
        "blockdev-backup",
        "drive-backup",
        "blockdev-snapshot",
        "blockdev-snapshot-sync",
        "blockdev-snapshot-internal-sync",
    }
)
#: Kinds whose files QEMU leaves on disk when the transaction rolls back, and the member that
#: names the file: QEMU's modelled exception to atomicity.
FILE_CREATING = {"blockdev-snapshot-sync": "snapshot-file", "drive-backup": "target"}


@dataclass(frozen=True)
class GroupedRule:
    """How a QEMU version refuses ``completion-mode: grouped`` for non-job actions."""

    #: Checked before anything runs (≥ 8.1) rather than inside each action's prepare (≤ 8.0).
    up_front: bool
    #: The word in the message: ``transaction`` (≥ 8.1) or ``Transaction`` (≤ 8.0).
    word: str
    #: Whether the ``abort`` action is refused too (only up front).
    refuses_abort: bool

    def message(self, kind: str) -> str:
        """QEMU's error text for ``kind``."""
        return f"Action '{kind}' does not support {self.word} property completion-mode = grouped"


def grouped_rule(version: str) -> GroupedRule:
    """The grouped-mode rule of QEMU ``major.minor``."""
    major, _, minor = version.partition(".")
    try:
        since_8_1 = (int(major), int(minor or 0)) >= (8, 1)
    except ValueError:
        since_8_1 = True
    if since_8_1:
        return GroupedRule(up_front=True, word="transaction", refuses_abort=True)
    return GroupedRule(up_front=False, word="Transaction", refuses_abort=False)


NOT_IMPLEMENTED_SUFFIX = "is not implemented by this reference"


def not_implemented_kind(desc: str) -> str | None:
    """The action kind of the reference's "Action 'X' is not implemented" error, else None."""
    if desc.startswith("Action '") and desc.endswith(NOT_IMPLEMENTED_SUFFIX):
        return desc[len("Action '") :].split("'", 1)[0]
    return None


#: The errors QEMU's QAPI input visitor gives while it parses a command's arguments, before the
#: command runs: they win over every check the command makes, the grouped refusal included.
_ARGUMENT_ERROR = re.compile(
    r"^(Parameter '[^']*' (is missing|is unexpected|expects .+|does not accept value '.*')"
    r"|Invalid parameter type for '[^']*', expected: .+)$"
)


def is_argument_error(desc: str) -> bool:
    """Whether ``desc`` is a QAPI argument-parsing error (raised before the command's handler)."""
    return _ARGUMENT_ERROR.match(desc) is not None
