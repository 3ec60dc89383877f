"""``blockdev-snapshot-sync``: creates (or opens) an overlay image and puts it above a node
(SEMANTICS.md §2.10). Files it created stay on disk when the transaction rolls back."""

from __future__ import annotations

from typing import Any

from reference.actions.base import Action, Context
from reference.snapshots import ExternalSnapshot, drained_new_overlay_crash, open_new_overlay


class BlockdevSnapshotSync(Action):
    """Like ``blockdev-snapshot`` with an overlay this action opens itself: the overlay node
    is closed again on abort, and after commit when nothing uses it."""

    kind = "blockdev-snapshot-sync"

    def __init__(self, ctx: Context, data: dict[str, Any]) -> None:
        super().__init__(ctx, data)
        self.snapshot = ExternalSnapshot(ctx.layer, owns_overlay=True)

    def prepare(self) -> None:
        layer = self.ctx.layer
        old = layer.device_or_node(self.data.get("device"), self.data.get("node-name"))
        self.drain_node(old)
        self.snapshot.prepare_old(old)
        overlay = open_new_overlay(layer, old, self.data)
        self.snapshot.new = overlay
        self.snapshot.attach(overlay)
        self.ctx.new_overlays.add(overlay)

    def commit(self) -> None:
        self.snapshot.commit()

    def abort(self) -> None:
        self.snapshot.abort()

    def clean(self) -> None:
        self.end_drain()
        self.snapshot.clean()

    def qemu_crash(self) -> str | None:
        return drained_new_overlay_crash(self.ctx.profile, self.snapshot.old, self.ctx.new_overlays)
