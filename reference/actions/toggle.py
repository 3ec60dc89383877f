"""What enable and disable share: set the recording state, remember the previous one."""

from __future__ import annotations

from typing import ClassVar

from reference import bitmaps
from reference.actions.base import Action


class Toggle(Action):
    """Sets ``enabled`` to ``target_state`` in prepare; abort puts the previous state back."""

    target_state: ClassVar[bool]
    _previous: tuple[str, bool] | None = None

    def prepare(self) -> None:
        node, bm = bitmaps.lookup(self.ctx.layer, self.data["node"], self.data["name"])
        if self.ctx.profile.toggle_abort_uses_unrecorded_state:
            # QEMU has found the bitmap; its undo state says "was disabled" until recorded below.
            self._previous = (node, False)
        bitmaps.check(bm, bitmaps.Check.ALLOW_RO)
        self._previous = (node, bm.enabled)
        self.ctx.layer.graph.bitmap_set(node, self.data["name"], enabled=self.target_state)

    def abort(self) -> None:
        if self._previous is not None:
            node, was_enabled = self._previous
            if was_enabled != self.target_state:
                self.ctx.layer.graph.bitmap_set(node, self.data["name"], enabled=was_enabled)
