"""``block-dirty-bitmap-add``: create now, release on abort (SEMANTICS.md §2.2)."""

from __future__ import annotations

from reference import bitmaps
from reference.actions.base import Action


class BlockDirtyBitmapAdd(Action):
    """Creates the bitmap in prepare; abort releases it if it was created."""

    kind = "block-dirty-bitmap-add"
    _created_on: str | None = None

    def prepare(self) -> None:
        d = self.data
        self._created_on = bitmaps.add(
            self.ctx.layer,
            d["node"],
            d["name"],
            d.get("granularity"),
            persistent=d.get("persistent", False),
            disabled=d.get("disabled", False),
        )

    def abort(self) -> None:
        if self._created_on is not None:
            self.ctx.layer.graph.bitmap_take(self._created_on, self.data["name"])
