"""``abort``: always fails, so that a transaction can be tested for rollback (SEMANTICS.md §2.1)."""

from __future__ import annotations

from reference.actions.base import Action
from reference.errors import QMPError


class Abort(Action):
    """Fails in prepare with QEMU's message; has nothing to undo."""

    kind = "abort"

    def prepare(self) -> None:
        raise QMPError("Transaction aborted using Abort action")
