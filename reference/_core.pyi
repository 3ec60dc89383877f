"""Stub of the native module ``reference._core`` (Rust, ``rust/blockcore-py``).

Checked against the built module by ``python -m mypy.stubtest reference._core``.
"""

from typing import final

__all__ = [
    "Bitmap",
    "BitmapExists",
    "BitmapInfo",
    "BitmapNotFound",
    "BitsCopy",
    "CoreError",
    "CycleError",
    "DetachedBitmap",
    "Graph",
    "ImageError",
    "LockConflict",
    "NameInUse",
    "NoMedium",
    "NodeInUse",
    "NodeInfo",
    "NodeNotFound",
    "PermissionConflict",
    "Qcow2Info",
    "SizeMismatch",
    "SnapshotInfo",
    "SnapshotNotFound",
    "create_image",
]

class CoreError(Exception): ...
class NodeNotFound(CoreError): ...
class NameInUse(CoreError): ...
class NodeInUse(CoreError): ...
class NoMedium(CoreError): ...
class BitmapNotFound(CoreError): ...
class BitmapExists(CoreError): ...
class SizeMismatch(CoreError): ...

class ImageError(CoreError):
    """An I/O or image-format error; ``args == (message, errno)``.

    errno 1 (EPERM) for writes to read-only images, 2 (ENOENT) for missing files, 95 (ENOTSUP)
    for operations the format does not have (e.g. internal snapshots on raw), 5 (EIO) otherwise.
    """

class LockConflict(ImageError):
    """Another user of the image file (this process or another) holds a conflicting OFD lock;
    ``args == (message, 11)`` with QEMU's message, e.g. ``Failed to get "write" lock`` or
    ``Failed to get shared "write" lock``. Raised by ``Graph.add_format`` (qcow2 over a locked
    file, before the image is read) and ``create_image`` (before anything is truncated)."""

class PermissionConflict(ImageError):
    """Two parents of one node need permissions the other does not share (QEMU's permission
    system, within one process); ``args == (message, 1)`` with QEMU's message, e.g.
    ``Permission conflict on node 'f': permissions 'write, resize' are both required by node
    'a' (uses node 'f' as 'file' child) and unshared by node 'b' (uses node 'f' as 'file'
    child).`` Raised by ``Graph.add_format`` when a second qcow2 node is put on a ``file`` node
    that a qcow2 node already uses (checked before image locks)."""

class SnapshotNotFound(CoreError):
    """No internal snapshot matches; ``args == (id, name)`` as given (``None`` when absent)."""

class CycleError(CoreError):
    """Attaching would create a cycle; ``args == (child, parent)``, as in QEMU's
    ``Making 'CHILD' a backing child of 'PARENT' would create a cycle``."""

def create_image(
    driver: str,
    filename: str,
    size: int,
    backing_file: str | None = None,
    backing_format: str | None = None,
) -> None:
    """Creates (or truncates and overwrites) ``filename`` as ``qemu-img create -f DRIVER
    [-b BACKING_FILE -F BACKING_FORMAT] FILENAME SIZE`` does (qcow2: default options, compat 1.1,
    64 KiB clusters, byte-identical header; raw: a sparse file of ``size`` bytes). The backing
    file is recorded, never opened. ``driver`` other than ``qcow2``/``raw``: ImageError errno 95;
    backing with raw: ImageError errno 95; unwritable path: ImageError with the OS errno (e.g. 2);
    file held by another user (an open qcow2 node, even read-only): LockConflict
    ``Failed to get "write" lock``, and the file is left untouched.
    """

@final
class Qcow2Info:
    @property
    def compat(self) -> str: ...
    @property
    def compression_type(self) -> str: ...
    @property
    def lazy_refcounts(self) -> bool: ...
    @property
    def refcount_bits(self) -> int: ...
    @property
    def corrupt(self) -> bool: ...
    @property
    def extended_l2(self) -> bool: ...
    @property
    def bitmaps(self) -> list[tuple[str, int, list[str]]]: ...

@final
class NodeInfo:
    @property
    def name(self) -> str: ...
    @property
    def driver(self) -> str: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def children(self) -> list[tuple[str, str]]: ...
    @property
    def length(self) -> int: ...
    @property
    def cluster_size(self) -> int | None: ...
    @property
    def filename(self) -> str | None: ...
    @property
    def dirty(self) -> bool: ...
    @property
    def qcow2(self) -> Qcow2Info | None: ...
    @property
    def backing_file(self) -> str | None:
        """Backing file name recorded in the image header (qcow2), as stored (may be relative);
        independent of whether a ``backing`` child is attached."""
    @property
    def backing_format(self) -> str | None:
        """Backing format recorded in the image header (qcow2 extension), if any."""

@final
class BitmapInfo:
    @property
    def name(self) -> str | None: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def busy(self) -> bool: ...
    @property
    def readonly(self) -> bool: ...
    @property
    def inconsistent(self) -> bool: ...
    @property
    def persistent(self) -> bool: ...
    @property
    def skip_store(self) -> bool: ...
    @property
    def granularity(self) -> int: ...
    @property
    def count(self) -> int: ...

@final
class SnapshotInfo:
    """One internal snapshot as stored in the qcow2 snapshot table (QEMU's ``SnapshotInfo``)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str:
        """Stored name (at most 255 bytes; decoded lossily if truncation split a character)."""
    @property
    def vm_state_size(self) -> int: ...
    @property
    def date_sec(self) -> int: ...
    @property
    def date_nsec(self) -> int: ...
    @property
    def vm_clock_sec(self) -> int: ...
    @property
    def vm_clock_nsec(self) -> int: ...
    @property
    def icount(self) -> int | None:
        """``None`` when not recorded (QEMU stores -1 in the v3 extra data)."""

@final
class BitsCopy: ...

@final
class DetachedBitmap: ...

@final
class Bitmap:
    def __new__(cls, length: int, granularity: int) -> Bitmap: ...
    def set(self, offset: int, length: int) -> None: ...
    def reset(self, offset: int, length: int) -> None: ...
    def get(self, offset: int) -> bool: ...
    def count(self) -> int: ...
    def clear(self) -> None: ...
    def merge(self, other: Bitmap) -> None: ...
    def sha256(self) -> str: ...

@final
class Graph:
    def __new__(cls) -> Graph: ...
    def add_file(self, name: str, filename: str, read_only: bool, locking: bool = True) -> None:
        """A ``file`` node; ``locking`` is QEMU's ``locking`` option (default on, as ``auto``
        on Linux). With locking, qcow2 parents take QEMU's lock bytes on the file: writable
        qcow2 wants consistent-read/write/resize, read-only wants consistent-read, neither
        shares write or resize; raw parents take none (no devices)."""
    def add_null(self, name: str, size: int, read_only: bool) -> None: ...
    def add_format(self, name: str, driver: str, file: str, read_only: bool) -> None: ...
    def add_backend(self, name: str, root: str | None = None) -> None: ...
    def remove_node(self, name: str) -> None: ...
    def close_node(self, name: str) -> None: ...
    def close_all(self) -> list[tuple[str, str]]: ...
    def nodes(self) -> list[NodeInfo]: ...
    def node(self, name: str) -> NodeInfo | None: ...
    def backends(self) -> list[tuple[str, str | None]]: ...
    def parents(self, name: str) -> list[tuple[str, str]]: ...
    def bitmaps(self, node: str) -> list[BitmapInfo]: ...
    def bitmap(self, node: str, name: str) -> BitmapInfo: ...
    def bitmap_add(
        self, node: str, name: str, granularity_bytes: int, enabled: bool, persistent: bool
    ) -> None: ...
    def bitmap_set(
        self,
        node: str,
        name: str,
        *,
        enabled: bool | None = None,
        busy: bool | None = None,
        skip_store: bool | None = None,
    ) -> None: ...
    def bitmap_clear(self, node: str, name: str) -> None: ...
    def bitmap_copy_bits(self, node: str, name: str) -> BitsCopy: ...
    def bitmap_restore_bits(self, node: str, name: str, copy: BitsCopy) -> None: ...
    def bitmap_merge(self, node: str, target: str, src_node: str, src_name: str) -> None: ...
    def bitmap_sha256(self, node: str, name: str) -> str: ...
    def bitmap_take(self, node: str, name: str) -> tuple[int, DetachedBitmap]: ...
    def bitmap_put(self, node: str, pos: int, bitmap: DetachedBitmap) -> None: ...
    def can_store_bitmap(
        self, node: str, name: str, granularity_bytes: int
    ) -> tuple[bool, str] | None: ...
    def remove_stored_bitmap(self, node: str, name: str) -> None: ...
    def read(self, node: str, offset: int, length: int) -> bytes: ...
    def write(self, node: str, offset: int, data: bytes) -> None: ...
    def write_zeroes(self, node: str, offset: int, length: int, may_unmap: bool = True) -> None:
        """Guest write-zeroes. ``may_unmap`` is QEMU's BDRV_REQ_MAY_UNMAP (``qemu-io write -z
        -u``); without it (plain ``write -z``) qcow2 keeps allocated clusters allocated under
        the zero flag, which ``qemu-img check``/``map`` show."""
    def discard(self, node: str, offset: int, length: int) -> None: ...
    def flush(self, node: str) -> None: ...

    # ---- backing chains (children with role ``backing``) ----
    def set_backing(self, node: str, backing: str | None) -> None:
        """Attaches ``backing`` as the ``backing`` child of format node ``node`` (replacing any),
        or detaches it (``None``). Used for blockdev-add's ``backing`` option and for opening an
        image's backing file (Python opens the file + format nodes read-only with the names it
        chooses, then attaches). Unallocated clusters of ``node`` then read from ``backing``
        (zeros beyond its length); partial-cluster writes copy the rest of the cluster up; zeroes
        and discard keep reading as zeros. The image header is not changed.
        NodeNotFound; ImageError errno 95 if ``node`` is not a qcow2 node; CycleError if
        ``node`` is reachable from ``backing`` (or is ``backing``)."""
    def append_overlay(self, node: str, overlay: str) -> None:
        """QEMU's bdrv_append: makes ``node`` the ``backing`` child of ``overlay`` and re-points
        every other parent of ``node`` (node children of any role and backends) to ``overlay``.
        Same errors as ``set_backing`` (checked before anything changes)."""
    def remove_overlay(self, overlay: str, node: str) -> None:
        """Undo of ``append_overlay`` (external snapshot abort): detaches ``overlay``'s backing
        child and re-points every parent of ``overlay`` back to ``node``."""
    def reopen_read_only(self, node: str) -> list[tuple[str, str]]:
        """Reopens ``node`` and its ``file`` child read-only (external snapshot commit): first
        stores the node's persistent bitmaps (not ``skip_store``) into the image with in-use
        cleared and flushes, then marks the node's persistent bitmaps ``readonly`` (others are
        untouched) and the nodes read-only. Already read-only: no-op, ``[]``. If storing fails
        the reopen is abandoned and the node stays writable (QEMU ignores that error at commit):
        returns ``[(node, message)]`` then, else ``[]``. NodeNotFound."""

    # ---- internal snapshots (qcow2) ----
    def snapshots(self, node: str) -> list[SnapshotInfo]:
        """The snapshot table in stored order. Non-qcow2 node: ImageError errno 95."""
    def snapshot_create(
        self,
        node: str,
        name: str,
        date_sec: int,
        date_nsec: int,
        vm_clock_nsec: int,
        icount: int | None = None,
    ) -> SnapshotInfo:
        """Creates an internal snapshot of ``node`` (qcow2): id = max numeric id + 1, name
        truncated to 255 bytes, no VM state, L1 table copied, refcounts of every referenced
        cluster raised (later writes copy on write). No duplicate check (callers check by
        untruncated name, as QEMU). Non-qcow2: ImageError errno 95; read-only: errno 1."""
    def snapshot_delete(self, node: str, id: str | None, name: str | None) -> SnapshotInfo:
        """Deletes the first snapshot matching ``id`` and/or ``name`` (both must match when both
        are given), releasing its clusters; returns what was deleted. SnapshotNotFound if none;
        ImageError errno 95 for non-qcow2, errno 1 if read-only."""
