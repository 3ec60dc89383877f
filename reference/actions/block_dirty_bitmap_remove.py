"""``block-dirty-bitmap-remove``: mark busy and skip-store now, release at commit (§2.3).

The bitmap stays attached until commit, so later actions of the same transaction see it as busy
(``[remove b, clear b]``) and its name as taken (``[remove b, add b]``). A persistent bitmap is
deleted from the image in prepare already and is not written back on abort.
"""

from __future__ import annotations

from reference import bitmaps
from reference.actions.base import Action


class BlockDirtyBitmapRemove(Action):
    """Busy + skip-store in prepare; released at commit; un-busied on abort."""

    kind = "block-dirty-bitmap-remove"
    _node: str | None = None

    def prepare(self) -> None:
        self._node = bitmaps.prepare_remove(self.ctx.layer, self.data["node"], self.data["name"])
        self.ctx.layer.graph.bitmap_set(self._node, self.data["name"], busy=True, skip_store=True)

    def commit(self) -> None:
        assert self._node is not None
        self.ctx.layer.graph.bitmap_take(self._node, self.data["name"])

    def abort(self) -> None:
        if self._node is not None:
            self.ctx.layer.graph.bitmap_set(
                self._node, self.data["name"], busy=False, skip_store=False
            )
