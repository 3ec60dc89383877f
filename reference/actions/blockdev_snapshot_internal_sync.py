"""``blockdev-snapshot-internal-sync``: a snapshot inside the qcow2 image (SEMANTICS.md §2.11)."""

from __future__ import annotations

from reference import snapshots
from reference.actions.base import Action


class BlockdevSnapshotInternalSync(Action):
    """Takes the snapshot in prepare; abort deletes it again (QEMU only prints a failure)."""

    kind = "blockdev-snapshot-internal-sync"
    _node: str | None = None
    _created: tuple[str, str] | None = None

    def prepare(self) -> None:
        layer = self.ctx.layer
        device, name = self.data["device"], self.data["name"]
        node = snapshots.internal_snapshot_node(layer, device, name)
        self._node = node
        created = snapshots.create_internal(layer, node, device, name)
        self._created = (created.id, created.name)

    def abort(self) -> None:
        if self._node is not None and self._created is not None:
            snapshot_id, name = self._created
            self.ctx.layer.graph.snapshot_delete(self._node, snapshot_id, name)

    def qemu_crash(self) -> str | None:
        """QEMU 7.2 dies rolling back a snapshot of an overlay that an earlier
        ``blockdev-snapshot-sync`` of the same transaction opened (its drained section is ended
        twice); an overlay given to ``blockdev-snapshot`` is fine."""
        if (
            self.ctx.profile.internal_snapshot_of_new_overlay_rollback_crashes
            and self._created is not None
            and self._node in self.ctx.new_overlays
        ):
            return (
                f"QEMU {self.ctx.profile.name} aborts rolling back this transaction "
                "(bdrv_do_drained_end: Assertion `bs->quiesce_counter > 0' failed): "
                f"internal snapshot of '{self._node}', an overlay opened by this transaction"
            )
        return None
