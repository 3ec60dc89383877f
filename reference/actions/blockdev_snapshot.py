"""``blockdev-snapshot``: an existing node becomes the overlay of another (SEMANTICS.md §2.9)."""

from __future__ import annotations

from reference import jobs
from reference.actions.base import Action, Context
from reference.snapshots import ExternalSnapshot, drained_new_overlay_crash


class BlockdevSnapshot(Action):
    """Appends ``overlay`` above ``node`` in prepare; commit reopens ``node`` read-only; abort
    takes the overlay out again (it stays a node: the monitor added it)."""

    kind = "blockdev-snapshot"

    def __init__(self, ctx: Context, data: dict[str, str]) -> None:
        super().__init__(ctx, data)
        self.snapshot = ExternalSnapshot(ctx.layer)

    def prepare(self) -> None:
        layer = self.ctx.layer
        old = layer.lookup(self.data["node"])
        self.drain_node(old)
        self.snapshot.prepare_old(old)
        overlay = layer.lookup(self.data["overlay"])
        self.snapshot.attach(overlay)
        self.graph_locks(jobs.LOCKS_APPEND)

    def commit(self) -> None:
        self.snapshot.commit()
        self.graph_locks(jobs.LOCKS_REOPEN)

    def abort(self) -> None:
        if self.snapshot.appended:
            self.graph_locks(jobs.LOCKS_SNAPSHOT_ABORT)
        self.snapshot.abort()

    def clean(self) -> None:
        self.end_drain()
        self.snapshot.clean()

    def qemu_crash(self) -> str | None:
        return drained_new_overlay_crash(self.ctx.profile, self.snapshot.old, self.ctx.new_overlays)
