"""Job commands: query-jobs, query-block-jobs, ``job-*`` and ``block-job-*`` (SEMANTICS.md §4.2).

``job-*`` commands find the job by ``id`` (``Job not found``); ``block-job-*`` commands by
``device`` or ``id`` (class ``DeviceNotActive``, ``Block job 'X' not found``). The verb table and
its message come from the core's refusal (``reference.jobs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reference import _core, jobs
from reference.commands import command
from reference.errors import QMPError

if TYPE_CHECKING:
    from reference.machine import Machine


@command("query-jobs")
def query_jobs(machine: Machine, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Every job not yet dismissed, newest first."""
    return [jobs.job_info(info) for info in machine.layer.graph.jobs()]


@command("query-block-jobs")
def query_block_jobs(machine: Machine, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Every block job, newest first."""
    return [jobs.block_job_info(info) for info in machine.layer.graph.jobs()]


#: Verbs that drop a backup job's filter (its clean), at once or when the job stops, and the
#: states in which the verb is accepted.
_CLEANING_VERBS = {
    "cancel": ("running", "paused", "ready", "standby", "waiting", "pending"),
    "finalize": ("pending",),
}


def _clean_crash(machine: Machine, info: _core.JobInfo) -> None:
    """Refuses, as an error, a verb after which real QEMU dies dropping the job's filter: 10.0
    aborts when the filter (below any newer backup's filters) no longer sits on the source,
    i.e. an external snapshot put an overlay there (``VersionProfile`` says which versions).
    A job that gets there by itself fails instead (``displaced_filter_fails``)."""
    layer = machine.layer
    if not layer.profile.backup_clean_after_source_overlay_crashes:
        return
    over = layer.graph.job_filter_displaced(info.id)
    if over is not None:
        raise QMPError(
            f"QEMU {layer.profile.name} aborts when job '{info.id}' drops its filter "
            "(bdrv_do_drained_end: Assertion `bs->quiesce_counter > 0' failed): an external "
            f"snapshot put '{over}' above its source '{info.source}'"
        )


def _verb(machine: Machine, job_id: str, block: bool, name: str, *extra: Any) -> dict[str, Any]:
    graph = machine.layer.graph
    find = jobs.find_block_job if block else jobs.find_job
    info = find(graph, job_id)
    if info.status in _CLEANING_VERBS.get(name, ()):
        _clean_crash(machine, info)
    method = getattr(graph, f"job_{name}")
    machine.emit_all(jobs.apply(lambda: list(method(job_id, *extra))))
    return {}


@command("job-pause")
def job_pause(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """User pause."""
    return _verb(machine, args["id"], False, "pause")


@command("job-resume")
def job_resume(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """User resume."""
    return _verb(machine, args["id"], False, "resume")


@command("job-cancel")
def job_cancel(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Cancel (always hard for backup)."""
    return _verb(machine, args["id"], False, "cancel", True)


@command("job-complete")
def job_complete(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Complete (only ready jobs; a backup never is)."""
    return _verb(machine, args["id"], False, "complete")


@command("job-finalize")
def job_finalize(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Finalize every member of the job's txn."""
    return _verb(machine, args["id"], False, "finalize")


@command("job-dismiss")
def job_dismiss(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Dismiss a concluded job."""
    return _verb(machine, args["id"], False, "dismiss")


@command("block-job-pause")
def block_job_pause(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """User pause of a block job."""
    return _verb(machine, args["device"], True, "pause")


@command("block-job-resume")
def block_job_resume(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """User resume of a block job."""
    return _verb(machine, args["device"], True, "resume")


@command("block-job-cancel")
def block_job_cancel(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Cancel; without ``force`` a user-paused job is refused."""
    device = args["device"]
    info = jobs.find_block_job(machine.layer.graph, device)
    force = bool(args.get("force", False))
    if info.user_paused and not force:
        raise QMPError(f"The block job for device '{device}' is currently paused")
    return _verb(machine, device, True, "cancel", force)


@command("block-job-complete")
def block_job_complete(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Complete (only ready jobs)."""
    return _verb(machine, args["device"], True, "complete")


@command("block-job-finalize")
def block_job_finalize(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Finalize every member of the job's txn."""
    return _verb(machine, args["id"], True, "finalize")


@command("block-job-dismiss")
def block_job_dismiss(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Dismiss a concluded job."""
    return _verb(machine, args["id"], True, "dismiss")


@command("block-job-set-speed")
def block_job_set_speed(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Change the rate limit: the verb table first, then the sign of ``speed``."""
    try:
        _verb(machine, args["device"], True, "set_speed", int(args["speed"]))
    except ValueError:
        raise QMPError("Parameter 'speed' expects a non-negative value") from None
    return {}
