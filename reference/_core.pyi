"""Stub of the native module ``reference._core`` (Rust, ``rust/blockcore-py``).

Checked against the built module by ``python -m mypy.stubtest reference._core``.
"""

from collections.abc import Mapping, Sequence
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
    "JobAlreadyPaused",
    "JobError",
    "JobEvent",
    "JobIdInUse",
    "JobInfo",
    "JobNotFound",
    "JobNotPaused",
    "JobVerbError",
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
    [-b BACKING_FILE -F BACKING_FORMAT] FILENAME SIZE`` does (and drive-backup and
    ``blockdev-snapshot-sync`` their new images) (qcow2: default options, compat 1.1,
    64 KiB clusters, byte-identical header; raw: a sparse file of ``size`` bytes). The backing
    file is recorded, never opened. ``driver`` other than ``qcow2``/``raw``: ImageError errno 95
    (``Unknown file format 'X'``); QEMU's qcow2 option messages (``Image size must be a multiple
    of 512 bytes``): ImageError errno 95;
    backing with raw: ImageError errno 95; unwritable path: ImageError with the OS errno (e.g. 2);
    file held by another user (an open qcow2 node, even read-only): LockConflict
    ``Failed to get "write" lock``, and the file is left untouched.
    """

class JobError(CoreError):
    """Base of the job-layer errors. ``args[0]`` is always the job id."""

class JobNotFound(JobError):
    """No job with that id. args: ``(job_id,)``."""

class JobIdInUse(JobError):
    """A job with that id exists (QEMU: ``Job ID '%s' already in use``). args: ``(job_id,)``."""

class JobVerbError(JobError):
    """The verb is not allowed in the job's state (QEMU's verb table, SEMANTICS 4.2).

    args: ``(job_id, status, verb)``, e.g. ``("j0", "pending", "dismiss")``; Python formats
    ``Job 'j0' in state 'pending' cannot accept command verb 'dismiss'``. ``verb`` is one of
    ``cancel pause resume set-speed complete finalize dismiss``.
    """

class JobAlreadyPaused(JobError):
    """``job_pause`` on a job the user already paused (``Job is already paused``).

    args: ``(job_id,)``.
    """

class JobNotPaused(JobError):
    """``job_resume`` on a job not paused by the user (``Can't resume a job that was not paused``).

    Checked before the verb table, as QEMU does. args: ``(job_id,)``.
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
    @property
    def frozen(self) -> bool:
        """Has a successor (a backup job owns it); set together with ``busy``."""

@final
class JobEvent:
    """One QMP event emitted by the job layer, in emission order.

    ``name`` is the QMP event name: ``JOB_STATUS_CHANGE``, ``BLOCK_JOB_COMPLETED``,
    ``BLOCK_JOB_CANCELLED``, ``BLOCK_JOB_ERROR`` or ``BLOCK_JOB_PENDING``. ``data`` is the event's
    QMP ``data`` object with QEMU's keys in QEMU's order (``{"id", "status"}``;
    ``{"type", "device", "len", "offset", "speed"[, "error"]}``;
    ``{"device", "operation", "action"}``; ``{"type", "id"}``). ``time_ns`` is the deterministic
    clock when it happened.
    """

    @property
    def name(self) -> str: ...
    @property
    def data(self) -> dict[str, str | int]: ...
    @property
    def time_ns(self) -> int: ...

@final
class JobInfo:
    """A read-only view of one job, as of the call that made it.

    ``status`` is QEMU's JobStatus name. ``user_paused`` is QEMU's job->user_paused (job-pause or
    an error with policy stop); ``pause_count`` counts user pause + drained sections + the
    not-yet-started hold (query-block-jobs ``paused`` is ``pause_count > 0``). ``busy`` is true
    while a running job has work due now (not paused, not sleeping for ``speed``).
    ``io_status`` is ``ok``, ``failed`` or ``nospace``. ``error`` is the job's error text
    (``Input/output error``, ``Operation canceled``) once it failed or was cancelled.
    ``current_progress``/``total_progress`` are bytes (query-jobs ``current-progress`` /
    ``total-progress``; query-block-jobs ``offset``/``len``). ``txn`` is the job transaction id
    (grouped members share it). ``filter_node`` is the copy-before-write node's name while the
    job holds it, else None. ``sync`` is ``full``/``top``/``none``/``bitmap``. ``cluster_size``
    is the job's copy granularity (max(target cluster size, 64 KiB)). ``started`` is true once
    ``job_start`` ran.
    """

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def txn(self) -> int: ...
    @property
    def auto_finalize(self) -> bool: ...
    @property
    def auto_dismiss(self) -> bool: ...
    @property
    def user_paused(self) -> bool: ...
    @property
    def pause_count(self) -> int: ...
    @property
    def busy(self) -> bool: ...
    @property
    def speed(self) -> int: ...
    @property
    def io_status(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def current_progress(self) -> int: ...
    @property
    def total_progress(self) -> int: ...
    @property
    def source(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def filter_node(self) -> str | None: ...
    @property
    def sync(self) -> str: ...
    @property
    def bitmap(self) -> str | None: ...
    @property
    def bitmap_mode(self) -> str | None: ...
    @property
    def cluster_size(self) -> int: ...
    @property
    def started(self) -> bool: ...

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
    def set_pass_discard_request(self, name: str, on: bool) -> None:
        """A qcow2 node's ``pass-discard-request``: clusters freed by guest discards and
        unmapping write-zeroes are discarded in its file too. On until told otherwise."""
    def set_discard_unmap(self, name: str, unmap: bool) -> None:
        """Whether discard requests (a format parent's too) reach protocol node ``name``'s
        store: QEMU's ``discard`` option. Nodes pass them until told otherwise."""
    def add_null(self, name: str, size: int, read_only: bool, read_zeroes: bool = True) -> None:
        """A null-co node; without ``read_zeroes`` reads leave the reader's buffer as it was."""
    def add_format(
        self,
        name: str,
        driver: str,
        file: str,
        read_only: bool,
        *,
        option_error: str | None = None,
        cache_size: int | None = None,
        l2_cache_size: int | None = None,
        l2_cache_entry_size: int | None = None,
        refcount_cache_size: int | None = None,
        cache_clean_interval: int | None = None,
        lazy_refcounts: bool | None = None,
        discard_no_unref: bool | None = None,
        pass_discard_snapshot: bool | None = None,
    ) -> None:
        """A format node over ``file``; a qcow2 node takes QEMU's runtime options (bytes,
        seconds), checked after its header is read, in QEMU's order: ``option_error`` (an
        option value that did not parse, as the caller words it) first, then the cache sizes
        (``GenericError`` text as ``ImageError``), lazy refcounts, ``discard-no-unref``; what the
        reference does not model is refused the same way. ``pass_discard_snapshot=False``
        keeps the clusters snapshot operations free in the file."""
    def add_copy_on_read(
        self, name: str, file: str, read_only: bool, bottom: str | None = None
    ) -> None:
        """A ``copy-on-read`` filter over ``file``: reads through it first copy the clusters
        ``file``'s top layer lacks into it (with ``bottom``: only those allocated down to that
        node), marking no bitmap of ``file``; writes pass through, marking the filter's."""
    def reserve_name(self, name: str) -> None:
        """Gives ``name`` to a node about to be opened, before its children: the node takes
        its place in ``nodes()`` now, so the children added before it are listed as newer."""
    def release_name(self, name: str) -> None: ...
    def is_reserved(self, name: str) -> bool: ...
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
    def read(self, node: str, offset: int, length: int, fill: int = 0) -> bytes:
        """Guest read into a buffer first filled with ``fill`` (what a driver that leaves the
        buffer alone, null-co without ``read-zeroes``, returns)."""
    def set_copy_on_read(self, node: str, on: bool) -> None:
        """QEMU's copy-on-read flag of a node (``-drive copy-on-read=on``): its reads first copy
        what its top layer does not hold from the backing chain. NodeNotFound."""
    def truncate(self, node: str, size: int, parents_follow: bool = False) -> None:
        """``bdrv_co_truncate``: resizes the node (and a raw node's or filter's child first);
        the node's bitmaps follow; with ``parents_follow`` raw and filter parents take the new
        length too. ImageError with QEMU's message or an errno."""
    def write(self, node: str, offset: int, data: bytes) -> None: ...
    def write_zeroes(self, node: str, offset: int, length: int, may_unmap: bool = True) -> None:
        """Guest write-zeroes. ``may_unmap`` is QEMU's BDRV_REQ_MAY_UNMAP (``qemu-io write -z
        -u``); without it (plain ``write -z``) qcow2 keeps allocated clusters allocated under
        the zero flag, which ``qemu-img check``/``map`` show."""
    def discard(self, node: str, offset: int, length: int) -> None: ...
    def flush(self, node: str) -> None: ...
    def add_blkdebug(
        self,
        name: str,
        image: str,
        read_only: bool,
        inject_error: Sequence[Mapping[str, str | int | bool]] = ...,
        set_state: Sequence[Mapping[str, str | int]] = ...,
    ) -> None:
        """Adds a ``blkdebug`` node over protocol node ``image`` (child role ``image``).

        ``inject_error`` items use QAPI's keys: ``event`` (str, BlkdebugEvent name such as
        ``read_aio``, ``write_aio``, ``flush_to_disk``), optional ``state`` (int, absent = any),
        ``iotype`` (str: read write write-zeroes discard flush block-status; absent = all but
        block-status),
        ``errno`` (int, default 5), ``sector`` (int, 512-byte sector of this node's address
        space; absent = any), ``once`` (bool, default False), ``immediately`` (bool, default
        False; no visible difference here). ``set_state`` items: ``event``, optional ``state``,
        ``new_state``. The state starts at 1. Events are signalled by the format driver above
        (qcow2/raw: ``read_aio`` before a data read, ``write_aio`` before a data write,
        ``flush_to_disk`` when the format node is flushed); an event makes the matching
        inject-error rules the active set, and the next matching I/O fails with ``errno``
        (surfacing as ImageError(message, errno)). Raises NameInUse, NodeNotFound, NoMedium (image
        is not a protocol node), ValueError (malformed rule).
        """

    # ---- deterministic clock and job scheduling ------------------------------------------------
    # Nothing moves unless told. Every call that can change job state returns the JobEvents it
    # caused, in order; Python turns them into QMP events. Steps happen in rounds: every due job
    # takes one step, oldest-started first; a step issues up to 64 requests (runs of up to 1 MiB
    # of dirty clusters of one allocation status, capped by max_chunk), max_workers of them in
    # flight: requests in flight when one fails still complete, the error is handled after
    # them. speed=0 means steps are due immediately; speed>0 rate-limits like QEMU's ratelimit
    # (100 ms slices, quota = speed/10 bytes per slice; a job over its quota sleeps until the
    # extended slice ends, so a speed-limited job copies its first request at once). An ignored
    # I/O error retries 1 ms later. A job that finished its work (or failed, or noticed a
    # cancel) exits; exits are processed after the round: waiting/pending/finalization, txn
    # abort. Real QEMU runs jobs in the background between commands, so a running job has
    # issued its first request by the time the next command arrives: the in-process reference
    # should call advance(0) after every command (speed-0 jobs then finish, as they do within
    # milliseconds in QEMU; speed-limited ones copy their first request).

    def now_ns(self) -> int:
        """The deterministic clock in nanoseconds (starts at 0)."""

    def advance(self, ns: int) -> list[JobEvent]:
        """Moves the clock forward by ``ns`` (>= 0, else ValueError), running every job step that
        becomes due, in time order (ties: oldest job first). ``advance(0)`` runs all work due
        now: speed-0 jobs run to completion (or to an error/pause)."""

    def run_jobs(self, max_steps: int) -> list[JobEvent]:
        """Runs at most ``max_steps`` steps that are due now, without moving the clock. For
        fine-grained interleaving (tests: guest writes between two chunks)."""

    def next_due_ns(self) -> int | None:
        """Clock time at which some job next has work, or None if no job can progress on its
        own (all paused, waiting, pending, concluded, sync=none, or no jobs)."""

    def run_until_idle(self, max_ns: int) -> list[JobEvent]:
        """Repeatedly advances to ``next_due_ns`` while that is at most ``now + max_ns`` (the clock
        ends at the last step's time, not at now + max_ns)."""

    # ---- jobs -----------------------------------------------------------------------------

    def set_graph_drains(
        self,
        create_before: int,
        create_after: int,
        clean: int,
        free: int,
        all_through_nodes: bool = False,
    ) -> None:
        """How many drain-everything sections (a ``paused``/``running`` pair for every running
        job) the job layer's own graph changes cause, per emulated version. QEMU 10.0 drains
        everything on each graph change (graph write lock); measured: a new backup job causes
        4 pairs before its ``created`` and 1 after (besides the transaction's own drain), a
        job's clean 3 pairs between ``aborting``/``waiting`` and its COMPLETED/CANCELLED, and
        freeing a job 1 pair after its ``null``. 7.2: all 0 (the default), where clean drains
        only the source. Set 4, 1, 3, 1 for 10.0.

        ``all_through_nodes``: draining everything quiesces every node and passes it on to its
        parent nodes (10.0), which decides the order several jobs pause and resume in; False
        (7.2): each node tells only its jobs, oldest node first. A node's drained section
        reaches jobs depth first up from the node, newest attached edge first (both)."""

    def txn_new(self) -> int:
        """A new job transaction (JobTxn) id for a grouped transaction's jobs."""

    def backup_create(
        self,
        job_id: str,
        source: str,
        target: str,
        *,
        sync: str,
        filter_node_name: str,
        bitmap: str | None = None,
        bitmap_mode: str | None = None,
        speed: int = 0,
        compress: bool = False,
        on_source_error: str = "report",
        on_target_error: str = "report",
        auto_finalize: bool = True,
        auto_dismiss: bool = True,
        txn: int | None = None,
        max_chunk: int = 0,
        max_workers: int = 64,
        min_cluster_size: int = 0,
        copy_bitmap_on_source: bool = False,
        target_owned_nodes: int = 0,
        discard_source: bool = False,
        displaced_filter_fails: bool = False,
    ) -> list[JobEvent]:
        """Creates a backup job in state ``created``; returns ``[JOB_STATUS_CHANGE created]``,
        preceded and followed by the pause/resume pairs of other running jobs that
        ``set_graph_drains`` asks for.

        Mechanics only; Python has already made every QEMU check with QEMU's messages
        (SEMANTICS 2.7). ``sync`` is ``full``/``top``/``none``/``bitmap`` (Python rewrites
        ``incremental`` to ``bitmap`` + ``on-success``); ``bitmap_mode`` is
        ``on-success``/``never``/``always`` or None (required iff ``bitmap``). Effects, in QEMU's
        order: the sync bitmap (on ``source``) gets an anonymous successor bitmap pushed on the
        front of the node's list (same granularity, inherits enabled; the named bitmap becomes
        busy and stops recording, still shown as recording if the successor records); a
        copy-before-write filter node ``filter_node_name`` (driver ``copy-before-write``,
        children ``file`` -> source, ``target`` -> target) replaces ``source`` under all its
        parents (backends and nodes). The filter carries three anonymous, disabled bitmaps at
        the job cluster size, as QEMU 10.0 shows them (newest first): all set (snapshot
        access), the clusters written through the filter once their old data was saved
        (starts empty), the clusters still to
        copy (all set until the job starts, then per sync mode; with
        ``copy_bitmap_on_source``, QEMU <= 8.x, that one goes on the front of the source's list
        instead and leaves it when the filter does); then the job. ``target_owned_nodes``: how
        many nodes close with the filter at clean (a drive-backup target and its file), each
        one more drain-everything pair where ``set_graph_drains`` asks for them.
        ``discard_source`` (9.1+): each range copied (background or copy-before-write) is then
        discarded on the source, recorded by its bitmaps like any discard (pass False where
        the source ignores discards). ``displaced_filter_fails`` (QEMU 10.0 aborts there): a
        job that would end well while ``job_filter_displaced`` names a node fails instead,
        with an error text saying where QEMU dies. The
        job starts held (pause_count 1) plus one per active drained section touching it.
        ``min_cluster_size`` (x-perf, 9.2+) raises the job cluster size (QEMU 10.0:
        max(target cluster, 64 KiB, min-cluster-size); a power of two, else ValueError).
        ``max_chunk``/``max_workers`` are x-perf's (0 = 1 MiB requests; requests in flight:
        those in flight when one fails still complete, later ones do not start).
        ``compress`` writes data clusters compressed (zlib, as QEMU; a qcow2 target; other
        targets make the job fail with ENOTSUP on its first data write).
        ``txn`` None = a job transaction of its own (individual completion). ``speed`` >= 0.
        Raises JobIdInUse, NodeNotFound, NameInUse (filter name), BitmapNotFound, ValueError
        (unknown enum value, negative speed/max_chunk, bitmap without mode or vice versa,
        source == target), ImageError. On an exception nothing is changed.
        """

    def job_start(self, job_id: str) -> list[JobEvent]:
        """Starts a created job (transaction commit): ``running``, then ``paused`` at once if a
        drained section still holds it. Raises JobNotFound, JobVerbError(id, status, "start")
        if not ``created``."""

    def job_discard(self, job_id: str) -> list[JobEvent]:
        """Early failure of a created job (QEMU's job_early_fail, e.g. after the ``speed < 0``
        check): ``null``; successor merged back, filter and its bitmaps removed (the clean's
        and the free's drain pairs of ``set_graph_drains`` around it). Raises JobNotFound,
        JobVerbError(id, status, "discard") if not ``created``."""

    def job_pause(self, job_id: str) -> list[JobEvent]:
        """User pause (job-pause / block-job-pause). Verb ``pause`` first (JobVerbError), then
        JobAlreadyPaused. A running job emits ``paused`` at once."""

    def job_resume(self, job_id: str) -> list[JobEvent]:
        """User resume. JobNotPaused first (not user-paused), then verb ``resume``. Resets
        io_status to ``ok``; emits ``running`` if nothing else holds the job."""

    def job_cancel(self, job_id: str, force: bool) -> list[JobEvent]:
        """User cancel (verb ``cancel``). The caller checks QEMU's ``The block job for device
        '%s' is currently paused`` (block-job-cancel without force on a user-paused job).
        A user-paused job is resumed first (``running``). A never-started job ends at once
        (``aborting``, ``concluded``, ``null``, no CANCELLED). A job that finished its work
        (``waiting``/``pending``) aborts its whole txn at once. A running job stops at its next
        step (due now): ``aborting``, txn abort, BLOCK_JOB_CANCELLED, ``concluded`` [``null``].
        Backup cancel is always hard (force only matters for the caller's paused check)."""

    def job_complete(self, job_id: str) -> list[JobEvent]:
        """Verb ``complete``: backups are never ready, so this raises JobVerbError (or
        JobNotFound)."""

    def job_finalize(self, job_id: str) -> list[JobEvent]:
        """Verb ``finalize`` (only ``pending``): finalizes every member of the job's txn, in txn
        order (newest first): bitmap commit/abort, filter removed, BLOCK_JOB_COMPLETED (or
        CANCELLED), ``concluded`` [``null`` if auto-dismiss]."""

    def job_dismiss(self, job_id: str) -> list[JobEvent]:
        """Verb ``dismiss`` (only ``concluded``): ``null``, the job is gone."""

    def job_set_speed(self, job_id: str, speed: int) -> list[JobEvent]:
        """Verb ``set-speed`` then the new limit (ValueError if negative; the caller formats
        QEMU's message first). Raising the limit (or setting 0) wakes a sleeping job."""

    def drained_begin(self, node: str | None) -> list[JobEvent]:
        """Begins a drained section of ``node`` (and, through it, its parents) or, with None, of
        everything. Each job using an affected node (source, target, its filter, or a parent of
        them... i.e. any job whose source/target/filter is ``node`` or an ancestor of it) gets
        one more pause; a running job emits ``paused``. Raises NodeNotFound."""

    def drained_end(self, node: str | None) -> list[JobEvent]:
        """Ends the newest matching drained section: the jobs it paused lose that pause; one that
        is no longer held emits ``running``. Raises ValueError if no such section is open."""

    def jobs(self) -> list[JobInfo]:
        """Every job not yet dismissed, newest first (query-jobs order)."""

    def job(self, job_id: str) -> JobInfo | None:
        """The job ``job_id``, if any."""

    def job_filter_displaced(self, job_id: str) -> str | None:
        """The node an external snapshot put between backup job ``job_id``'s copy-before-write
        filter (below newer jobs' filters stacked on it) and its source, if any (None also for
        no such job or no filter)."""

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
    def keep_own_read_only(self, node: str) -> None:
        """``node`` has a ``read-only`` option of its own: reopening a parent read-only does not
        reach it."""
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
