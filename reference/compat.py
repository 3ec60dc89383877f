"""Version profiles: every behaviour that differs between the QEMU versions we emulate.

The engine never compares version numbers itself; it asks the profile a named question. Each
field says what differs and since when (SEMANTICS.md §1.3, §1.4, §6; confirmed by running both
binaries). Adding a version means adding one profile here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from reference.qemu_io import Dialect


class Order(Enum):
    """In which order a transaction phase visits its actions."""

    LIST = "list"  # first action first
    REVERSE = "reverse"  # last action first


class GroupedCheck(Enum):
    """Where ``completion-mode: grouped`` is refused for actions that cannot join a job txn."""

    IN_PREPARE = "in-prepare"  # ≤ 8.0: inside each action's prepare; earlier actions roll back
    UP_FRONT = "up-front"  # ≥ 8.1: before anything runs, `abort` included


@dataclass(frozen=True)
class VersionProfile:
    """What one emulated QEMU version does differently."""

    #: ``major.minor`` as given on the command line (``--emulate``).
    name: str
    #: The version triple reported by the greeting and ``query-version``.
    version: tuple[int, int, int]
    #: ``package`` string of ``query-version``.
    package: str
    #: Commit and clean order of a transaction (abort is always reverse).
    commit_order: Order
    clean_order: Order
    #: Where the grouped completion-mode check happens, and the word it uses.
    grouped_check: GroupedCheck
    grouped_word: str
    #: ``BlockDeviceInfo.active`` (new in 10.0).
    reports_active: bool
    #: ``format-specific`` of ``file`` nodes (``{"type": "file", "data": {}}``, 10.0).
    file_format_specific: bool
    #: QEMU defect (7.2 and 10.0): a transactional enable/disable whose bitmap was found but
    #: failed a state check (busy, inconsistent) aborts with its "previous state" never recorded,
    #: i.e. as if the bitmap had been disabled, so a failed ``block-dirty-bitmap-enable`` leaves
    #: the bitmap *disabled*. Found by the differential test ``failing_several_kinds``.
    toggle_abort_uses_unrecorded_state: bool = True
    #: Where a backup's block-copy bitmap is listed: on the source node (≤ 8.x, confirmed 7.2:
    #: first in the source's list) or on the copy-before-write filter (10.0).
    copy_bitmap_on_source: bool = False
    #: Every graph change drains all nodes (the drained graph write lock, 8.x+; confirmed 10.0,
    #: absent in 7.2): other running jobs see pause/resume pairs while a backup job is created
    #: (4 before ``created``, 1 after; 4 + 2 when creation fails after the filter was
    #: inserted) and while a finished one leaves the graph.
    graph_change_drains: bool = False
    #: QEMU defect (7.2; fixed by 10.0): rolling back a transaction in which a snapshot action
    #: (internal, or an external one of it) drained an overlay that an earlier
    #: ``blockdev-snapshot-sync`` of the same transaction opened aborts QEMU
    #: (``bdrv_do_drained_end: Assertion `bs->quiesce_counter > 0' failed``). Found by
    #: ``mixed_snapshot_then_failing_bitmap_merge`` and the snapshot-history property test.
    rollback_after_draining_new_overlay_crashes: bool = False
    #: QEMU defect (10.0; 7.2 is fine): an external snapshot of a running backup job's source
    #: puts the overlay under the job's copy-before-write filter; dropping that filter when the
    #: job leaves the graph (job-cancel, completion, job-finalize) aborts QEMU
    #: (``bdrv_do_drained_end: Assertion `bs->quiesce_counter > 0' failed``). Found by
    #: ``mixed/snapshot_of_backup_source_then_cancel``.
    backup_clean_after_source_overlay_crashes: bool = False
    #: Write-zeroes may unmap (``BDRV_REQ_MAY_UNMAP``, ``qemu-io write -z -u``) only on a node
    #: opened with ``discard=unmap`` (10.0: the flag is dropped otherwise, so a qcow2 cluster
    #: keeps its allocation under the zero flag); 7.2 unmaps on any node. Measured with a
    #: bitmap on the file node (``persistence/qcow2_metadata_cache_zeroes_discard``).
    zeroes_unmap_needs_discard_unmap: bool = False
    #: ``block_resize`` on a node with an op blocker (a backup job's, a backing child's): 7.2
    #: answers ``Device 'X' is in use`` naming its ``device`` argument (``(null)`` when only
    #: ``node-name`` was given); 10.0 gives the blocker's own message.
    resize_blocker_names_device: bool = False
    #: Raw and filter nodes (copy-on-read, blkdebug) take their child's length when it is
    #: resized on its own (7.2 asks the child whenever the length is needed); 10.0 keeps the
    #: length they had. Scenarios blockdev/resize_grow_shrink, blkdebug_over_format_and_null.
    parents_follow_resize: bool = False
    #: A negative size option of a driver (qcow2's ``cache-size``, ``l2-cache-size``, ...):
    #: 10.0 ``Value '-1' is out of range for parameter 'X'``, 7.2 ``Parameter 'X' expects a
    #: non-negative number below 2^64`` (``{value}``, ``{name}``). Scenario
    #: blockdev/qcow2_options_cache_errors.
    negative_size_message: str = "Value '{value}' is out of range for parameter '{name}'"
    #: What ``qemu-io`` through ``human-monitor-command`` accepts (numbers, options).
    qemu_io: Dialect = field(default_factory=Dialect)

    @property
    def version_info(self) -> dict[str, object]:
        """``VersionInfo`` as QEMU returns it."""
        major, minor, micro = self.version
        return {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": self.package}


PROFILES: dict[str, VersionProfile] = {
    "7.2": VersionProfile(
        name="7.2",
        version=(7, 2, 22),
        package="qmp-reference (emulating Debian 1:7.2+dfsg-7+deb12u18)",
        commit_order=Order.LIST,
        clean_order=Order.LIST,
        grouped_check=GroupedCheck.IN_PREPARE,
        grouped_word="Transaction",
        reports_active=False,
        file_format_specific=False,
        copy_bitmap_on_source=True,
        rollback_after_draining_new_overlay_crashes=True,
        resize_blocker_names_device=True,
        parents_follow_resize=True,
        negative_size_message="Parameter '{name}' expects a non-negative number below 2^64",
        qemu_io=Dialect(hex_suffix=True, register_flag=False),
    ),
    "10.0": VersionProfile(
        name="10.0",
        version=(10, 0, 2),
        package="qmp-reference (emulating Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)",
        commit_order=Order.REVERSE,
        clean_order=Order.REVERSE,
        grouped_check=GroupedCheck.UP_FRONT,
        grouped_word="transaction",
        reports_active=True,
        file_format_specific=True,
        graph_change_drains=True,
        backup_clean_after_source_overlay_crashes=True,
        zeroes_unmap_needs_discard_unmap=True,
    ),
}


def profile(version: str) -> VersionProfile:
    """The profile for ``version`` (``"7.2"`` or ``"10.0"``); ValueError names the choices."""
    try:
        return PROFILES[version]
    except KeyError:
        raise ValueError(
            f"unsupported QEMU version {version!r}; choose one of {', '.join(PROFILES)}"
        ) from None
