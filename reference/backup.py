"""Backup job creation as QEMU's ``do_backup_common`` and ``backup_job_create`` decide it
(SEMANTICS.md §2.7): every check, in QEMU's order, with QEMU's message; then the core creates the
job (successor bitmap, copy-before-write filter, job object).

Shared by the ``blockdev-backup`` and ``drive-backup`` actions (and so by the standalone
commands, which are one-action transactions).
"""

from __future__ import annotations

from typing import Any

from reference import _core, bitmaps, jobs
from reference.block import BlockLayer, is_wellformed_id
from reference.errors import QMPError

#: The backup job's smallest copy granularity (block-copy's default cluster size).
MIN_CLUSTER_SIZE = 65536
INT_MAX = (1 << 31) - 1
#: Drivers whose nodes accept compressed writes.
COMPRESSING_DRIVERS = frozenset({"qcow2"})
#: Where every graph change drains all (10.0, profile ``graph_change_drains``): the drained
#: sections of inserting the copy-before-write filter and of dropping it again when a check
#: after it fails (max-chunk, job id), counted through another running job's pause/resume
#: pairs. (A successful creation's drains are the core's, ``set_graph_drains``.)
FILTER_INSERT_DRAINS = 4
FILTER_DROP_DRAINS = 2


def device_name(layer: BlockLayer, node: str) -> str:
    """``bdrv_get_device_name``: the device whose root is ``node``, else the empty string."""
    for device, root in layer.graph.backends():
        if root == node:
            return device
    return ""


def blocked_by_job(layer: BlockLayer, node: str) -> bool:
    """Whether a live job holds ``node`` as its target or filter (QEMU's op blockers)."""
    return any(node in (info.target, info.filter_node) for info in layer.graph.jobs())


def op_blocker(layer: BlockLayer, node: str) -> None:
    """``bdrv_op_is_blocked`` for the blocker a backup job puts on every operation of its
    target and its copy-before-write node (backup source and target, external snapshot...)."""
    if blocked_by_job(layer, node):
        raise QMPError(f"Node '{node}' is busy: block device is in use by block job: backup")


#: QEMU's permission bits (BlockPermission) and their names, lowest bit first.
PERM_CONSISTENT_READ = 0x01
PERM_WRITE = 0x02
PERM_WRITE_UNCHANGED = 0x04
PERM_RESIZE = 0x08
PERM_ALL = 0x0F
_PERM_NAMES = ("consistent read", "write", "write unchanged", "resize")


def _perm_names(perms: int) -> str:
    return ", ".join(name for bit, name in enumerate(_PERM_NAMES) if perms & (1 << bit))


def _job_parents(layer: BlockLayer, node: str) -> list[tuple[str, str, int, int]]:
    """The copy-before-write filters of live jobs that are parents of ``node``, newest first,
    as (filter, child role, permissions, shared permissions). A filter's ``target`` child
    writes and shares all but resize; its ``file`` (source) child, once the filter has parents
    (the job's own), needs consistent read and shares neither write nor resize."""
    parents: list[tuple[str, str, int, int]] = []
    for info in layer.graph.jobs():  # newest first, as QEMU lists a node's parents
        if info.filter_node is None:
            continue
        if info.target == node:
            parents.append((info.filter_node, "target", PERM_WRITE, PERM_ALL & ~PERM_RESIZE))
        if info.source == node:
            shared = PERM_ALL & ~(PERM_WRITE | PERM_RESIZE)
            parents.append((info.filter_node, "file", PERM_CONSISTENT_READ, shared))
    return parents


def check_filter_target(layer: BlockLayer, filter_name: str, target: str) -> None:
    """The copy-before-write filter ``filter_name`` opens its ``target`` child, which needs
    write: QEMU's ``bdrv_parent_perms_conflict`` over the target's parents (newest first, every
    ordered pair), then the read-only check; prefixed as ``bdrv_insert_node`` does."""
    parents = [(filter_name, "target", PERM_WRITE, PERM_ALL & ~PERM_RESIZE)]
    parents += _job_parents(layer, target)
    for a, a_role, _, a_shared in parents:
        for b, b_role, b_perm, _ in parents:
            if a is b or b_perm & a_shared == b_perm:
                continue
            raise QMPError(
                f"Could not create node: Permission conflict on node '{target}': permissions "
                f"'{_perm_names(b_perm & ~a_shared)}' are both required by node '{b}' (uses "
                f"node '{target}' as '{b_role}' child) and unshared by node '{a}' (uses node "
                f"'{target}' as '{a_role}' child)."
            )
    info = layer.graph.node(target)
    assert info is not None
    if info.read_only:
        raise QMPError("Could not create node: Block node is read-only")


def bitmap_arguments(
    layer: BlockLayer, source: str, args: dict[str, Any]
) -> tuple[str, str | None, str | None]:
    """The argument logic of ``do_backup_common``: (sync, bitmap, bitmap-mode) after rewriting
    ``incremental`` into ``bitmap`` + ``on-success``; QEMU's messages at the first problem."""
    sync: str = args["sync"]
    bitmap: str | None = args.get("bitmap")
    mode: str | None = args.get("bitmap-mode")
    if sync in ("bitmap", "incremental") and bitmap is None:
        raise QMPError(f"must provide a valid bitmap name for '{sync}' sync mode")
    if sync == "incremental":
        if mode is not None and mode != "on-success":
            raise QMPError(
                "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'"
            )
        sync, mode = "bitmap", "on-success"
    if bitmap is not None:
        try:
            info = layer.graph.bitmap(source, bitmap)
        except _core.BitmapNotFound:
            raise QMPError(f"Bitmap '{bitmap}' could not be found") from None
        if mode is None:
            raise QMPError("Bitmap sync mode must be given when providing a bitmap")
        bitmaps.check(info, bitmaps.Check.ALLOW_RO)
        if sync == "none":
            raise QMPError("sync mode 'none' does not produce meaningful bitmap outputs")
        if mode == "never" and sync != "bitmap":
            raise QMPError(
                "Bitmap sync mode 'never' has no meaningful effect when combined with "
                f"sync mode '{sync}'"
            )
    elif mode is not None:
        raise QMPError("Cannot specify bitmap sync mode without a bitmap")
    return sync, bitmap, mode


def _check_min_cluster_size(size: int) -> None:
    """x-perf ``min-cluster-size`` (9.2+), checked when the filter's block-copy state is made."""
    if size and size & (size - 1):
        raise QMPError(
            "Could not create node: Cannot create block-copy-state: "
            "min-cluster-size needs to be a power of 2"
        )
    if size > bitmaps.MAX_GRANULARITY:
        # QEMU 10.0 aborts here (an assertion on the copy bitmap's granularity).
        raise QMPError(
            f"min-cluster-size {size} exceeds the largest bitmap granularity "
            f"({bitmaps.MAX_GRANULARITY})"
        )


def _job_id_after_filter(
    layer: BlockLayer,
    source: str,
    target_info: _core.NodeInfo,
    args: dict[str, Any],
    *,
    max_chunk: int,
    min_cluster_size: int,
    events: list[jobs.Event],
) -> str:
    """The checks QEMU makes after inserting the copy-before-write filter (max-chunk, job id);
    when one fails, the filter's graph changes drain all where the profile says so."""
    graph = layer.graph
    try:
        cluster_size = max(
            target_info.cluster_size or MIN_CLUSTER_SIZE, MIN_CLUSTER_SIZE, min_cluster_size
        )
        if max_chunk and max_chunk < cluster_size:
            raise QMPError(
                f"Required max-chunk ({max_chunk}) is less than backup cluster size "
                f"({cluster_size})"
            )
        job_id: str | None = args.get("job-id")
        if job_id is None:
            job_id = device_name(layer, source)
        if not is_wellformed_id(job_id):
            raise QMPError(f"Invalid job ID '{job_id}'")
        if graph.job(job_id) is not None:
            raise QMPError(f"Job ID '{job_id}' already in use")
    except QMPError:
        if layer.profile.graph_change_drains:  # the filter went in and comes out again
            events += jobs.drain_all(graph, FILTER_INSERT_DRAINS + FILTER_DROP_DRAINS)
        raise
    return job_id


def create(
    layer: BlockLayer,
    source: str,
    target: str,
    args: dict[str, Any],
    *,
    txn: int | None,
    events: list[jobs.Event],
    owned_target_nodes: int = 0,
) -> str:
    """``do_backup_common`` + ``backup_job_create`` for a resolved source and target node.

    Returns the job id; the events the creation emitted are appended to ``events`` (also when
    it fails after the job object existed: ``speed < 0`` gives created, then null).
    ``owned_target_nodes``: the nodes of a target only the job uses (drive-backup), which
    close with its filter.
    """
    graph = layer.graph
    sync, bitmap, mode = bitmap_arguments(layer, source, args)
    perf: dict[str, Any] = args.get("x-perf") or {}
    if source == target:
        raise QMPError("Source and target cannot be the same")
    target_info = graph.node(target)
    source_info = graph.node(source)
    assert target_info is not None and source_info is not None
    compress = bool(args.get("compress", False))
    if compress and target_info.driver not in COMPRESSING_DRIVERS:
        raise QMPError(f"Compression is not supported for this drive {device_name(layer, target)}")
    op_blocker(layer, source)
    op_blocker(layer, target)
    max_workers = int(perf.get("max-workers", 64))
    max_chunk = int(perf.get("max-chunk", 0))
    if max_workers < 1 or max_workers > INT_MAX:
        raise QMPError(f"max-workers must be between 1 and {INT_MAX}")
    if max_chunk < 0:
        raise QMPError("max-chunk must be zero (which means no limit) or positive")
    if bitmap is not None and mode != "never":
        bitmaps.check(graph.bitmap(source, bitmap), bitmaps.Check.DEFAULT)
    if source_info.length != target_info.length:
        raise QMPError("Source and target image have different sizes")
    filter_name = args.get("filter-node-name")
    if filter_name is not None:
        layer.check_new_node_name(filter_name)
    else:
        filter_name = layer.auto_node_name()
    check_filter_target(layer, filter_name, target)
    min_cluster_size = int(perf.get("min-cluster-size", 0))
    _check_min_cluster_size(min_cluster_size)
    job_id = _job_id_after_filter(
        layer,
        source,
        target_info,
        args,
        max_chunk=max_chunk,
        min_cluster_size=min_cluster_size,
        events=events,
    )
    speed = int(args.get("speed", 0))
    discard_source = bool(args.get("discard-source", False))
    try:
        made = graph.backup_create(
            job_id,
            source,
            target,
            sync=sync,
            filter_node_name=filter_name,
            bitmap=bitmap,
            bitmap_mode=mode,
            speed=max(speed, 0),
            compress=compress,
            on_source_error=args.get("on-source-error", "report"),
            on_target_error=args.get("on-target-error", "report"),
            auto_finalize=bool(args.get("auto-finalize", True)),
            auto_dismiss=bool(args.get("auto-dismiss", True)),
            txn=txn,
            max_chunk=max_chunk,
            max_workers=max_workers,
            min_cluster_size=min_cluster_size,
            copy_bitmap_on_source=layer.profile.copy_bitmap_on_source,
            displaced_filter_fails=layer.profile.backup_clean_after_source_overlay_crashes,
            target_owned_nodes=owned_target_nodes,
            # A source that ignores discards (no discard=unmap) keeps its data.
            discard_source=discard_source and source in layer.unmap,
        )
    except _core.JobError as error:
        raise jobs.job_error(error) from None
    events += jobs.qmp_events(made)
    if discard_source and source_info.read_only:
        # discard-source needs write access to the source, refused once the job exists.
        events += jobs.qmp_events(graph.job_discard(job_id))
        raise QMPError("Block node is read-only")
    if speed < 0:
        # Checked by block_job_create after the job object exists: created, then null.
        events += jobs.qmp_events(graph.job_discard(job_id))
        raise QMPError("Parameter 'speed' expects a non-negative value")
    return job_id
