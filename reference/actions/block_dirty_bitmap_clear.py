"""``block-dirty-bitmap-clear``: clear now keeping the old bits, restore them on abort (§2.4)."""

from __future__ import annotations

from reference import _core, bitmaps
from reference.actions.base import Action


class BlockDirtyBitmapClear(Action):
    """Clears in prepare; abort restores the bits saved before."""

    kind = "block-dirty-bitmap-clear"
    _saved: tuple[str, _core.BitsCopy] | None = None

    def prepare(self) -> None:
        self._saved = bitmaps.prepare_clear(self.ctx.layer, self.data["node"], self.data["name"])

    def abort(self) -> None:
        if self._saved is not None:
            node, before = self._saved
            self.ctx.layer.graph.bitmap_restore_bits(node, self.data["name"], before)
