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
    "NameInUse",
    "NoMedium",
    "NodeInUse",
    "NodeInfo",
    "NodeNotFound",
    "Qcow2Info",
    "SizeMismatch",
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
class ImageError(CoreError): ...

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

def create_image(
    filename: str,
    fmt: str,
    size: int,
    backing_file: str | None = None,
    backing_format: str | None = None,
) -> None:
    """Creates (or truncates) ``filename`` as an empty ``qcow2`` or ``raw`` image of ``size``
    bytes, as ``qemu-img create`` / drive-backup's target creation do (qcow2: QEMU's defaults,
    64 KiB clusters, compat 1.1; the backing file and format are only recorded in the header).

    Raises ImageError(message, errno) for host errors (errno 2 when the directory does not
    exist) and QEMU's qcow2 option messages (``Image size must be a multiple of 512 bytes``),
    ValueError for any other format (the caller reports ``Unknown file format``).
    """

@final
class Graph:
    def __new__(cls) -> Graph: ...
    def add_file(self, name: str, filename: str, read_only: bool) -> None: ...
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
    def write_zeroes(self, node: str, offset: int, length: int) -> None: ...
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
        ``iotype`` (str: read write write-zeroes discard flush; absent = all but block-status),
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
        self, create_before: int, create_after: int, clean: int, free: int
    ) -> None:
        """How many drain-everything sections (a ``paused``/``running`` pair for every running
        job) the job layer's own graph changes cause, per emulated version. QEMU 10.0 drains
        everything on each graph change (graph write lock); measured: a new backup job causes
        4 pairs before its ``created`` and 1 after (besides the transaction's own drain), a
        job's clean 3 pairs between ``aborting``/``waiting`` and its COMPLETED/CANCELLED, and
        freeing a job 1 pair after its ``null``. 7.2: all 0 (the default), where clean drains
        only the source. Set 4, 1, 3, 1 for 10.0."""

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
        access), the clusters saved by copy-before-write (starts empty), the clusters still to
        copy (all set until the job starts, then per sync mode); then the job. The
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
