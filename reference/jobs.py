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
