"""``block-dirty-bitmap-merge``: merge now, keeping the target's old bits; restore them on abort
(SEMANTICS.md §2.6)."""

from __future__ import annotations

from reference import _core, bitmaps
from reference.actions.base import Action


class BlockDirtyBitmapMerge(Action):
    """Merges in prepare (a failing source restores the target itself); abort restores it."""

    kind = "block-dirty-bitmap-merge"
    _saved: tuple[str, _core.BitsCopy | None] | None = None

    def prepare(self) -> None:
        d = self.data
        self._saved = bitmaps.merge(self.ctx.layer, d["node"], d["target"], d["bitmaps"])

    def commit_crash(self) -> str | None:
        return None if self.data["bitmaps"] else bitmaps.EMPTY_MERGE_REFUSAL

    def abort(self) -> None:
        if self._saved is not None:
            node, before = self._saved
            if before is not None:
                self.ctx.layer.graph.bitmap_restore_bits(node, self.data["target"], before)
