"""Dirty-bitmap semantics shared by the standalone ``block-dirty-bitmap-*`` commands and the
transaction actions of the same names (SEMANTICS.md §2.2-2.6, §3).

Each function performs QEMU's checks in QEMU's order and raises :class:`QMPError` with QEMU's
message at the first that fails. State changes go through the core graph; what an undo needs is
returned to the caller (the transaction actions keep it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from reference import _core
from reference.block import BlockLayer
from reference.errors import QMPError

MIN_GRANULARITY = 512
MAX_GRANULARITY = 1 << 31
#: Longest bitmap name (bytes) since QEMU 5.0, for every bitmap.
MAX_NAME_BYTES = 1023
#: Default granularity bounds: the node's cluster size clamped to [4 KiB, 64 KiB].
DEFAULT_GRANULARITY_MIN = 4096
DEFAULT_GRANULARITY_MAX = 65536


class Check(Enum):
    """QEMU's check sets for bitmap operations (``BDRV_BITMAP_*``)."""

    DEFAULT = "default"  # busy, readonly, inconsistent
    ALLOW_RO = "allow-ro"  # busy, inconsistent
    REMOVE = "remove"  # busy, readonly (inconsistent bitmaps may be removed)


def check(bm: _core.BitmapInfo, how: Check) -> None:
    """Refuses an operation on ``bm`` as QEMU's ``bdrv_dirty_bitmap_check`` does."""
    name = bm.name
    if bm.busy:
        raise QMPError(
            f"Bitmap '{name}' is currently in use by another operation and cannot be used"
        )
    if how is not Check.ALLOW_RO and bm.readonly:
        raise QMPError(f"Bitmap '{name}' is readonly and cannot be modified")
    if how is not Check.REMOVE and bm.inconsistent:
        raise QMPError(f"Bitmap '{name}' is inconsistent and cannot be used")


def lookup(layer: BlockLayer, node: str, name: str) -> tuple[str, _core.BitmapInfo]:
    """``block_dirty_bitmap_lookup``: ``Node 'X' not found``, then ``Dirty bitmap 'Y' not found``.

    The node may also be named by a device.
    """
    node_name = layer.bitmap_node(node)
    try:
        return node_name, layer.graph.bitmap(node_name, name)
    except _core.BitmapNotFound:
        raise QMPError(f"Dirty bitmap '{name}' not found") from None


def default_granularity(info: _core.NodeInfo) -> int:
    """The node's cluster size clamped to [4 KiB, 64 KiB]; 64 KiB without a cluster size."""
    if info.cluster_size is None:
        return DEFAULT_GRANULARITY_MAX
    return min(max(info.cluster_size, DEFAULT_GRANULARITY_MIN), DEFAULT_GRANULARITY_MAX)


def device_or_node_name(layer: BlockLayer, node: str) -> str:
    """``bdrv_get_device_or_node_name``: the device using ``node`` as root, else the node name."""
    for device, root in layer.graph.backends():
        if root == node:
            return device
    return node


def add(
    layer: BlockLayer,
    node: str,
    name: str,
    granularity: int | None,
    *,
    persistent: bool,
    disabled: bool,
) -> str:
    """``block-dirty-bitmap-add``; returns the node the bitmap was created on."""
    if name == "":
        raise QMPError("Bitmap name cannot be empty")
    node_name = layer.lookup(node)
    info = layer.graph.node(node_name)
    assert info is not None
    if granularity is None:
        granularity = default_granularity(info)
    elif granularity < MIN_GRANULARITY or granularity & (granularity - 1):
        raise QMPError("Granularity must be power of 2 and at least 512")
    # The persistence checks come first; the name clash is found only at creation (QEMU 7.2 and
    # 10.0: a persistent duplicate on raw is refused for raw, not for the name).
    if persistent:
        refusal = layer.graph.can_store_bitmap(node_name, name, granularity)
        if refusal is not None:
            supported, reason = refusal
            where = device_or_node_name(layer, node_name)
            if not supported:
                raise QMPError(f"Can't store persistent bitmaps to {where}: {reason}")
            raise QMPError(f"Can't make bitmap '{name}' persistent in '{where}': {reason}")
    if any(b.name == name for b in layer.graph.bitmaps(node_name)):
        raise QMPError(f"Bitmap already exists: {name}")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise QMPError(f"Bitmap name too long: {name}")
    layer.graph.bitmap_add(node_name, name, granularity, not disabled, persistent)
    return node_name


def set_enabled(layer: BlockLayer, node: str, name: str, enabled: bool) -> tuple[str, bool]:
    """``block-dirty-bitmap-enable/-disable``; returns ``(node, previous enabled state)``."""
    node_name, bm = lookup(layer, node, name)
    check(bm, Check.ALLOW_RO)
    layer.graph.bitmap_set(node_name, name, enabled=enabled)
    return node_name, bm.enabled


def prepare_clear(layer: BlockLayer, node: str, name: str) -> tuple[str, _core.BitsCopy]:
    """``block-dirty-bitmap-clear``; returns ``(node, copy of the bits before)``."""
    node_name, bm = lookup(layer, node, name)
    check(bm, Check.DEFAULT)
    before = layer.graph.bitmap_copy_bits(node_name, name)
    layer.graph.bitmap_clear(node_name, name)
    return node_name, before


def prepare_remove(layer: BlockLayer, node: str, name: str) -> str:
    """The checks and image update of ``block-dirty-bitmap-remove``; returns the node.

    A persistent bitmap is deleted from the image at once, even inside a transaction (QEMU).
    """
    node_name, bm = lookup(layer, node, name)
    check(bm, Check.REMOVE)
    if bm.persistent and not bm.skip_store:
        try:
            layer.graph.remove_stored_bitmap(node_name, name)
        except _core.ImageError as e:
            message, _ = e.args
            raise QMPError(str(message)) from None
    return node_name


@dataclass
class MergeSource:
    """One resolved source of a merge."""

    node: str
    name: str


def resolve_source(layer: BlockLayer, target_node: str, source: Any) -> MergeSource:
    """A ``BlockDirtyBitmapOrStr``: a name on the target's node, or ``{node, name}`` anywhere."""
    if isinstance(source, str):
        try:
            layer.graph.bitmap(target_node, source)
        except _core.BitmapNotFound:
            raise QMPError(f"Dirty bitmap '{source}' not found") from None
        return MergeSource(target_node, source)
    node_name, _ = lookup(layer, source["node"], source["name"])
    return MergeSource(node_name, source["name"])


def merge(
    layer: BlockLayer, node: str, target: str, sources: list[Any]
) -> tuple[str, _core.BitsCopy | None]:
    """``block-dirty-bitmap-merge``: sources in order into the target; on error the target is
    restored before the error is raised. Returns ``(node, copy of the target before)``."""
    node_name, _ = lookup(layer, node, target)
    backup: _core.BitsCopy | None = None
    try:
        for source in sources:
            src = resolve_source(layer, node_name, source)
            check(layer.graph.bitmap(node_name, target), Check.DEFAULT)
            check(layer.graph.bitmap(src.node, src.name), Check.ALLOW_RO)
            if backup is None:
                backup = layer.graph.bitmap_copy_bits(node_name, target)
            try:
                layer.graph.bitmap_merge(node_name, target, src.node, src.name)
            except _core.SizeMismatch as e:
                dest_len, src_len = e.args
                raise QMPError(
                    f"Bitmaps are of different sizes (destination size is {dest_len}, "
                    f"source size is {src_len}) and can't be merged"
                ) from None
    except QMPError:
        if backup is not None:
            layer.graph.bitmap_restore_bits(node_name, target, backup)
        raise
    return node_name, backup


#: Our answer where QEMU 7.2 and 10.0 die completing a merge of no sources (SIGSEGV: the
#: target's backup was never made). A transaction prepares such a merge without complaint and
#: dies only when it commits, so an earlier or later failing action still wins.
EMPTY_MERGE_REFUSAL = "'bitmaps' must name at least one source bitmap"


def sha256(layer: BlockLayer, node: str, name: str) -> str:
    """``x-debug-block-dirty-bitmap-sha256``: no state checks at all."""
    node_name, _ = lookup(layer, node, name)
    return layer.graph.bitmap_sha256(node_name, name)
