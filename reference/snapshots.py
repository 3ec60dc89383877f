"""Snapshot semantics shared by the standalone snapshot commands and the transaction actions
(SEMANTICS.md §2.9-2.11, §5).

External snapshots (``blockdev-snapshot``, ``blockdev-snapshot-sync``) put an overlay above a
node: :class:`ExternalSnapshot` holds one such operation through prepare, commit, abort and clean.
Internal snapshots live in the qcow2 image: :func:`internal_snapshot_root`,
:func:`check_internal_snapshot`, :func:`create_internal` and :func:`delete_internal` do QEMU's
checks in QEMU's order and raise
:class:`QMPError` with QEMU's message at the first that fails.

This module decides what QEMU decides (names, checks, messages); the graph and the image
formats are the core's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from reference import _core, backup
from reference.block import FILTER_DRIVERS, BlockLayer, snapshot_info, strerror
from reference.compat import VersionProfile
from reference.errors import QMPError

#: Image formats QEMU knows but this reference cannot create (``Unknown file format`` is only
#: for names QEMU does not know at all).
OTHER_QEMU_FORMATS = frozenset(
    {"bochs", "cloop", "dmg", "luks", "parallels", "qcow", "qed", "vdi", "vhdx", "vmdk", "vpc"}
)
#: errno of an image lock conflict (``LockConflict``, a kind of ``ImageError``).
EAGAIN = 11
#: The image formats whose nodes can have a backing child.
BACKING_FORMATS = frozenset({"qcow2"})
#: The image formats with internal snapshots (QEMU also has rbd).
INTERNAL_SNAPSHOT_FORMATS = frozenset({"qcow2"})


def drained_new_overlay_crash(
    profile: VersionProfile, drained: str | None, new: set[str]
) -> str | None:
    """Why QEMU dies rolling back an action that drained ``drained``, if it does: 7.2 aborts
    when that node is an overlay an earlier ``blockdev-snapshot-sync`` of the same transaction
    opened (its drained section is ended twice). ``new``: those overlays."""
    if not profile.rollback_after_draining_new_overlay_crashes or drained not in new:
        return None
    return (
        f"QEMU {profile.name} aborts rolling back this transaction (bdrv_do_drained_end: "
        f"Assertion `bs->quiesce_counter > 0' failed): '{drained}' was opened by an earlier "
        "blockdev-snapshot-sync of it"
    )


# ---- external snapshots ---------------------------------------------------------------------


@dataclass
class ExternalSnapshot:
    """One external snapshot: the overlay ``new`` goes above ``old``.

    ``prepare_old`` and ``attach`` are the two halves of QEMU's prepare (the caller opens or
    finds the overlay in between); ``commit``, ``abort`` and ``clean`` are the other hooks.
    ``owns_overlay`` says the overlay was opened for this snapshot (``blockdev-snapshot-sync``):
    it is closed again on abort, and when nothing uses it after commit.
    """

    layer: BlockLayer
    old: str | None = None
    new: str | None = None
    owns_overlay: bool = False
    appended: bool = False
    committed: bool = False

    def prepare_old(self, old: str) -> None:
        """Checks on the node to snapshot, after its lookup and drain (§2.9 steps 3-5)."""
        self.old = old
        # The op blocker "external snapshot": a backup job's target carries it (added last, so
        # listed first), and so does a backing child.
        backup.op_blocker(self.layer, old)
        self.layer.check_not_backing(old)

    def attach(self, new: str) -> None:
        """Checks on the overlay, then QEMU's bdrv_append (§2.9 steps 7-12)."""
        layer = self.layer
        assert self.old is not None
        self.new = new
        if layer.graph.parents(new):
            raise QMPError("The overlay is already in use")
        info = layer.graph.node(new)
        assert info is not None
        if info.driver in FILTER_DRIVERS:
            raise QMPError("Filters cannot be used as overlays")
        if layer.backing_child(new) is not None:
            raise QMPError("The overlay already has a backing image")
        if info.driver not in BACKING_FORMATS:
            raise QMPError("The overlay does not support backing images")
        try:
            layer.graph.append_overlay(self.old, new)
        except _core.CycleError as e:
            child, parent = e.args
            raise QMPError(
                f"Making '{child}' a backing child of '{parent}' would create a cycle"
            ) from None
        self.appended = True

    def commit(self) -> None:
        """The old node is reopened read-only; QEMU ignores a failure, and the reopen fails when
        another parent still writes through it (the overlay's own file link, for instance)."""
        self.committed = True
        assert self.old is not None
        old_info = self.layer.graph.node(self.old)
        # A copy-on-read filter always takes write-unchanged on its child, which a read-only
        # reopen cannot keep: QEMU's reopen fails (ignored), filter and child stay writable.
        if old_info is not None and old_info.driver == "copy-on-read":
            return
        if all(role == "backing" for _, role in self.layer.graph.parents(self.old)):
            self.layer.graph.reopen_read_only(self.old)

    def abort(self) -> None:
        """The overlay is taken out again and the old node put back in its place."""
        if self.appended:
            assert self.old is not None and self.new is not None
            self.layer.graph.remove_overlay(self.new, self.old)
            self.appended = False

    def clean(self) -> None:
        """Drops the transaction's reference to an overlay it opened: the overlay goes away if
        the snapshot was rolled back or nothing uses it (the old node had no parent)."""
        new = self.new
        if not self.owns_overlay or new is None or self.layer.graph.node(new) is None:
            return
        if not self.committed or not self.layer.graph.parents(new):
            self.layer.close_implicit(new)
        else:
            self.layer.implicit.add(new)


def open_new_overlay(layer: BlockLayer, old: str, data: dict[str, Any]) -> str:
    """``blockdev-snapshot-sync``'s overlay: checks its node name, creates the image unless
    ``mode`` is ``existing``, and opens it without its backing (§2.10 steps 6-10). ``format``
    defaults to qcow2 in both modes: an existing image is not probed."""
    if "node-name" in data and "snapshot-node-name" not in data:
        raise QMPError("New overlay node-name missing")
    new_name = data.get("snapshot-node-name")
    if new_name is not None and layer.name_in_use(new_name):
        raise QMPError("New overlay node-name already in use")
    path: str = data["snapshot-file"]
    mode = data.get("mode", "absolute-paths")
    fmt: str = data.get("format", "qcow2")
    if mode != "existing":
        _create_overlay_image(layer, old, path, fmt)
    old_info = layer.graph.node(old)
    assert old_info is not None
    # QEMU opens the overlay with the old node's flags: read-only stays read-only.
    options: dict[str, Any] = {
        "driver": fmt,
        "read-only": old_info.read_only,
        "file": {"driver": "file", "filename": path},
        "backing": None,
    }
    if new_name is not None:
        options["node-name"] = new_name
    if options["driver"] not in ("qcow2", "raw"):
        raise QMPError(f"Unknown driver '{options['driver']}'")
    return layer.open_blockdev(options, root=False)


def _create_overlay_image(layer: BlockLayer, old: str, path: str, fmt: str) -> None:
    """``bdrv_img_create`` with the old node as backing file and format, at its size."""
    if fmt == "raw":
        raise QMPError("Backing file not supported for file format 'raw'")
    if fmt != "qcow2":
        if fmt in OTHER_QEMU_FORMATS:
            raise QMPError(f"Format '{fmt}' is not supported by this reference implementation")
        raise QMPError(f"Unknown file format '{fmt}'")
    info = layer.graph.node(old)
    assert info is not None
    backing_file = layer.filename(info)
    if path == backing_file:
        raise QMPError(
            "Error: Trying to create an image with the same filename as the backing file"
        )
    try:
        _core.create_image(fmt, path, info.length, backing_file, info.driver)
    except _core.ImageError as e:
        message, errno = e.args
        if errno == EAGAIN:  # a lock conflict: QEMU's own message, the file left untouched
            raise QMPError(str(message)) from None
        raise QMPError(f"Could not create '{path}': {strerror(errno)}") from None


# ---- internal snapshots ---------------------------------------------------------------------


def _root_node(layer: BlockLayer, device: str) -> str:
    node = layer.lookup(device)
    if not layer.is_root(node):
        raise QMPError("Need a root block node")
    return node


def internal_snapshot_root(layer: BlockLayer, device: str) -> str:
    """The node of ``blockdev-snapshot-internal-sync`` (§2.11 step 1); QEMU drains it next."""
    return _root_node(layer, device)


def check_internal_snapshot(layer: BlockLayer, node: str, device: str, name: str) -> None:
    """The other checks of ``blockdev-snapshot-internal-sync`` (§2.11 steps 3-7)."""
    info = layer.graph.node(node)
    assert info is not None
    if info.read_only:
        raise QMPError(f"Device '{device}' is read only")
    if info.driver not in INTERNAL_SNAPSHOT_FORMATS:
        raise QMPError(
            f"Block format '{info.driver}' used by device '{device}' "
            "does not support internal snapshots"
        )
    if name == "":
        raise QMPError("Name is empty")
    # QEMU compares the name as given with the stored (possibly truncated) names.
    if any(sn.name == name for sn in layer.graph.snapshots(node)):
        raise QMPError(f"Snapshot with name '{name}' already exists on device '{device}'")


def create_internal(layer: BlockLayer, node: str, device: str, name: str) -> _core.SnapshotInfo:
    """Takes the snapshot: wall-clock date (microseconds, as g_get_real_time), VM clock."""
    micros = time.time_ns() // 1000
    try:
        return layer.graph.snapshot_create(
            node,
            name,
            micros // 1_000_000,
            (micros % 1_000_000) * 1000,
            layer.vm_clock_ns(),
        )
    except _core.ImageError as e:
        _, errno = e.args
        raise QMPError(
            f"Failed to create snapshot '{name}' on device '{device}': {strerror(errno)}"
        ) from None


def delete_internal(
    layer: BlockLayer, device: str, snapshot_id: str | None, name: str | None
) -> dict[str, Any]:
    """``blockdev-snapshot-delete-internal-sync``: returns the deleted ``SnapshotInfo``."""
    node = _root_node(layer, device)
    if snapshot_id is None and name is None:
        raise QMPError("Name or id must be provided")
    info = layer.graph.node(node)
    assert info is not None
    if info.driver not in INTERNAL_SNAPSHOT_FORMATS:
        raise QMPError(f"Failed to get a snapshot list: {strerror(95)}")
    found = next(
        (
            sn
            for sn in layer.graph.snapshots(node)
            if (snapshot_id is None or sn.id == snapshot_id) and (name is None or sn.name == name)
        ),
        None,
    )
    if found is None:
        shown_id = "null" if snapshot_id is None else snapshot_id
        shown_name = "null" if name is None else name
        raise QMPError(
            f"Snapshot with id '{shown_id}' and name '{shown_name}' "
            f"does not exist on device '{device}'"
        )
    try:
        deleted = layer.graph.snapshot_delete(node, found.id, found.name)
    except _core.ImageError as e:
        # QEMU has already dropped the snapshot from its in-memory list when the table write
        # fails (EPERM on a read-only image): the core does the same.
        _, errno = e.args
        raise QMPError(f"Failed to remove snapshot from snapshot list: {strerror(errno)}") from None
    return snapshot_info(deleted)
