"""``block_resize``: QEMU's checks in QEMU's order and its messages (both versions measured on
real QEMU 7.2 and 10.0: scenarios ``blockdev/resize_*``).

Order: the node lookup (device first, then node name), ``size`` not negative, the node's op
blockers (a backup job's target or filter, a backing child), then the temporary block backend
QEMU attaches to the node wanting ``resize`` (refused by a parent that does not share it), then
the truncate itself: the length limit, read-only, the driver (raw resizes its file, qcow2 its
image, null-co cannot). The graph change of attaching and detaching that backend drains every
node where the profile says so (10.0): running jobs see pause/resume pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reference import _core, backup, bitmaps, jobs
from reference.block import BlockLayer, strerror
from reference.errors import QMPError

if TYPE_CHECKING:
    from reference.machine import Machine

#: QEMU's ``BDRV_MAX_LENGTH``: INT64_MAX rounded down to a multiple of 1 GiB.
BDRV_MAX_LENGTH = (2**63 - 1) // 2**30 * 2**30
#: Drivers that pass their parents' permissions (and what they share) on to their child.
PASS_THROUGH_DRIVERS = frozenset({"raw", "blkdebug", "copy-on-read"})
#: Graph changes of a resize that got its block backend: attaching it, then detaching it.
LOCKS_ATTACHED = 2
#: Graph changes of a resize whose block backend was refused: the attempt to attach it.
LOCKS_REFUSED = 1


def resize_blocker(layer: BlockLayer, node: str, device: str | None, *, names_device: bool) -> None:
    """``bdrv_op_is_blocked(RESIZE)``: a backup job's target or filter, a backing child. 10.0
    gives the blocker's own message; 7.2 says ``Device 'X' is in use`` with the ``device``
    argument (``(null)`` when only ``node-name`` was given)."""
    try:
        if backup.blocked_by_job(layer, node):
            # The blocker's message names the device whose root the node is, if any.
            named = backup.device_name(layer, node) or node
            raise QMPError(f"Node '{named}' is busy: block device is in use by block job: backup")
        layer.check_not_backing(node)
    except QMPError:
        if names_device:
            named = device if device is not None else "(null)"
            raise QMPError(f"Device '{named}' is in use") from None
        raise


def _unshares_resize(layer: BlockLayer, node: str) -> tuple[str, str] | None:
    """The first parent of ``node`` (newest first) that does not share ``resize``, with the
    role of ``node`` under it; None if every parent shares it."""
    for filter_node, role, _, shared in backup._job_parents(layer, node):
        if not shared & backup.PERM_RESIZE:
            return filter_node, role
    for parent, role in layer.graph.parents(node):
        if role == "root":
            continue  # a -drive backend without a guest device shares everything
        info = layer.graph.node(parent)
        if info is None or info.driver == "copy-before-write":
            continue  # a job's filter: counted above
        if info.driver == "qcow2" and role == "file":
            return parent, role
        if info.driver in PASS_THROUGH_DRIVERS and _unshares_resize(layer, parent) is not None:
            return parent, role
    return None


def check_resize_permission(layer: BlockLayer, node: str) -> None:
    """The unnamed block backend wanting ``resize`` on ``node``: QEMU's permission conflict."""
    refused = _unshares_resize(layer, node)
    if refused is not None:
        parent, role = refused
        raise QMPError(
            f"Permission conflict on node '{node}': permissions 'resize' are both required by "
            f"an unnamed block device (uses node '{node}' as 'root' child) and unshared by node "
            f"'{parent}' (uses node '{node}' as '{role}' child)."
        )


def check_stored_bitmaps(layer: BlockLayer, node: str) -> None:
    """qcow2 resizes only if every bitmap stored in the image is loaded and usable."""
    info = layer.graph.node(node)
    if info is None or info.qcow2 is None:
        return
    for name, _, _ in info.qcow2.bitmaps:
        try:
            bm = layer.graph.bitmap(node, name)
        except _core.BitmapNotFound:
            continue
        bitmaps.check(bm, bitmaps.Check.DEFAULT)


def truncate(layer: BlockLayer, node: str, size: int) -> None:
    """``blk_truncate``: the length limit, then the node's driver; QEMU's messages."""
    if size > BDRV_MAX_LENGTH:
        raise QMPError(f"offset({size}) exceeds maximum({BDRV_MAX_LENGTH})")
    check_stored_bitmaps(layer, node)
    try:
        layer.graph.truncate(node, size, parents_follow=layer.profile.parents_follow_resize)
    except _core.ImageError as e:
        message, errno = e.args
        if errno == 1 and message == "image is read-only":
            raise QMPError("Image is read-only") from None
        if errno == 95:
            raise QMPError(str(message)) from None
        raise QMPError(f"Could not resize file: {strerror(errno)}") from None


def block_resize(machine: Machine, device: str | None, node_name: str | None, size: int) -> None:
    """The whole command: lookup, checks, the truncate, and the drains around it."""
    layer = machine.layer
    profile = layer.profile
    node = layer.device_or_node(device, node_name)
    if size < 0:
        raise QMPError("Parameter 'size' expects a >0 size")
    resize_blocker(layer, node, device, names_device=profile.resize_blocker_names_device)
    try:
        check_resize_permission(layer, node)
    except QMPError:
        machine.emit_all(jobs.graph_locks(profile, layer.graph, LOCKS_REFUSED))
        raise
    try:
        truncate(layer, node, size)
    finally:
        machine.emit_all(jobs.graph_locks(profile, layer.graph, LOCKS_ATTACHED))
