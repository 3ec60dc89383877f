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
        self._node = snapshots.internal_snapshot_root(layer, device)
        self.drain_node(self._node)
        snapshots.check_internal_snapshot(layer, self._node, device, name)
        created = snapshots.create_internal(layer, self._node, device, name)
        self._created = (created.id, created.name)

    def abort(self) -> None:
        if self._node is not None and self._created is not None:
            snapshot_id, name = self._created
            self.ctx.layer.graph.snapshot_delete(self._node, snapshot_id, name)

    def clean(self) -> None:
        self.end_drain()

    def qemu_crash(self) -> str | None:
        return snapshots.drained_new_overlay_crash(
            self.ctx.profile, self._node, self.ctx.new_overlays
        )
