"""Block jobs as QMP sees them: job lookups and verb errors with QEMU's messages, the query
output (``JobInfo``, ``BlockJobInfo``) and the conversion of the core's job events into QMP events
(SEMANTICS.md §4).

The mechanics (states, transitions, JobTxn, the deterministic clock, the backup job itself) live
in the core (``_core.Graph``); this module only adds QEMU's wording and shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from reference import _core
from reference.compat import VersionProfile
from reference.errors import DEVICE_NOT_ACTIVE, QMPError

#: A queued event: ``{"event": NAME, "data": {...}}`` (the machine adds the timestamp).
Event = dict[str, Any]


def qmp_events(events: Iterable[_core.JobEvent]) -> list[Event]:
    """The core's job events as QMP events, in order."""
    return [{"event": e.name, "data": dict(e.data)} for e in events]


def drain_all(graph: _core.Graph, times: int = 1) -> list[Event]:
    """``times`` drained sections of everything (``bdrv_drain_all``, or since 8.x the drained
    graph write lock of a graph change): each running job pauses and resumes."""
    events: list[Event] = []
    for _ in range(times):
        events += qmp_events(graph.drained_begin(None))
        events += qmp_events(graph.drained_end(None))
    return events


#: QEMU 10.0 takes the graph write lock for every graph change, and taking it drains
#: everything: each running job pauses and resumes once per lock (7.2 has no such lock; profile
#: ``graph_change_drains``). Locks per change, measured on 10.0.2 through a running backup's
#: events (``conformance/scenarios/jobs/graph_changes_drain_running_job_*``); the job layer's
#: own changes (creating, cleaning, freeing a backup) are the core's (``set_graph_drains``).
#: Opening a format node over its file: the probing BlockBackend attached and detached.
LOCKS_FORMAT_PROBE = 2
#: Each child edge attached while opening a node (file, image, backing).
LOCKS_PER_CHILD = 1
#: Each node closed (its children are detached under one lock).
LOCKS_PER_CLOSE = 1
#: ``bdrv_append``: an overlay put above a node (external snapshots).
LOCKS_APPEND = 1
#: The snapshotted node reopened read-only at commit.
LOCKS_REOPEN = 1
#: An external snapshot rolled back: the overlay taken out again.
LOCKS_SNAPSHOT_ABORT = 2
#: A temporary BlockBackend attached, or detached (HMP ``qemu-io`` on a node name).
LOCKS_BLOCK_BACKEND = 1
#: ``bdrv_img_create`` by format: qcow2 opens and reopens the new image several times, raw
#: only creates the file.
LOCKS_CREATE = {"qcow2": 15, "raw": 0}


def graph_locks(profile: VersionProfile, graph: _core.Graph, count: int) -> list[Event]:
    """The events of ``count`` graph write locks: pause/resume pairs of the running jobs where
    the profile drains everything for each graph change, else none."""
    return drain_all(graph, count) if profile.graph_change_drains else []


def open_locks(graph: _core.Graph, opened: Iterable[str]) -> int:
    """Graph write locks of opening the nodes ``opened`` (a node tree, each with its edges)."""
    locks = 0
    for name in opened:
        info = graph.node(name)
        if info is None:
            continue
        locks += LOCKS_PER_CHILD * len(info.children)
        if any(role == "file" for role, _ in info.children):
            locks += LOCKS_FORMAT_PROBE
    return locks


def job_error(error: _core.JobError) -> QMPError:
    """QEMU's message for a job-layer refusal."""
    if isinstance(error, _core.JobVerbError):
        job_id, status, verb = error.args
        return QMPError(f"Job '{job_id}' in state '{status}' cannot accept command verb '{verb}'")
    if isinstance(error, _core.JobAlreadyPaused):
        return QMPError("Job is already paused")
    if isinstance(error, _core.JobNotPaused):
        return QMPError("Can't resume a job that was not paused")
    if isinstance(error, _core.JobIdInUse):
        return QMPError(f"Job ID '{error.args[0]}' already in use")
    return QMPError("Job not found")


def find_job(graph: _core.Graph, job_id: str) -> _core.JobInfo:
    """``find_job_locked`` for the ``job-*`` commands: ``Job not found``."""
    info = graph.job(job_id)
    if info is None:
        raise QMPError("Job not found")
    return info


def find_block_job(graph: _core.Graph, job_id: str) -> _core.JobInfo:
    """``find_block_job_locked`` (``block-job-*``): DeviceNotActive ``Block job 'X' not found``."""
    info = graph.job(job_id)
    if info is None:
        raise QMPError(f"Block job '{job_id}' not found", DEVICE_NOT_ACTIVE)
    return info


def apply(verb: Callable[[], list[_core.JobEvent]]) -> list[Event]:
    """Runs a core job verb; QEMU's message for a refusal."""
    try:
        return qmp_events(verb())
    except _core.JobError as error:
        raise job_error(error) from None


def job_info(info: _core.JobInfo) -> dict[str, Any]:
    """``JobInfo`` (query-jobs), keys in QEMU's order."""
    out: dict[str, Any] = {
        "current-progress": info.current_progress,
        "status": info.status,
        "total-progress": info.total_progress,
        "type": info.type,
        "id": info.id,
    }
    if info.error is not None:
        out["error"] = info.error
    return out


def block_job_info(info: _core.JobInfo) -> dict[str, Any]:
    """``BlockJobInfo`` (query-block-jobs), keys in QEMU's order (same in 7.2 and 10.0)."""
    out: dict[str, Any] = {
        "auto-finalize": info.auto_finalize,
        "io-status": info.io_status,
        "device": info.id,
        "auto-dismiss": info.auto_dismiss,
        "busy": info.busy,
        "len": info.total_progress,
        "offset": info.current_progress,
        "status": info.status,
        "paused": info.pause_count > 0,
        "speed": info.speed,
        "ready": False,
        "type": info.type,
    }
    if info.error is not None:
        out["error"] = info.error
    return out
