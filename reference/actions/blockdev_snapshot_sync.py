"""``blockdev-snapshot-sync``: creates (or opens) an overlay image and puts it above a node
(SEMANTICS.md §2.10). Files it created stay on disk when the transaction rolls back."""

from __future__ import annotations

from typing import Any

from reference import jobs
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
        before = {info.name for info in layer.graph.nodes()}
        overlay = open_new_overlay(layer, old, self.data)
        if self.data.get("mode", "absolute-paths") != "existing":
            self.graph_locks(jobs.LOCKS_CREATE.get(self.data.get("format", "qcow2"), 0))
        opened = [info.name for info in layer.graph.nodes() if info.name not in before]
        self.graph_locks(jobs.open_locks(layer.graph, opened))
        self.snapshot.new = overlay
        self.snapshot.attach(overlay)
        self.graph_locks(jobs.LOCKS_APPEND)
        self.ctx.new_overlays.add(overlay)

    def commit(self) -> None:
        self.snapshot.commit()
        self.graph_locks(jobs.LOCKS_REOPEN)

    def abort(self) -> None:
        if self.snapshot.appended:
            self.graph_locks(jobs.LOCKS_SNAPSHOT_ABORT)
        self.snapshot.abort()

    def clean(self) -> None:
        self.end_drain()
        before = len(self.ctx.layer.graph.nodes())
        self.snapshot.clean()
        closed = before - len(self.ctx.layer.graph.nodes())
        self.graph_locks(jobs.LOCKS_PER_CLOSE * closed)

    def qemu_crash(self) -> str | None:
        return drained_new_overlay_crash(self.ctx.profile, self.snapshot.old, self.ctx.new_overlays)
