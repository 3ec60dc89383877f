"""Job commands: query-jobs, query-block-jobs, ``job-*`` and ``block-job-*`` (SEMANTICS.md §4.2).

``job-*`` commands find the job by ``id`` (``Job not found``); ``block-job-*`` commands by
``device`` or ``id`` (class ``DeviceNotActive``, ``Block job 'X' not found``). The verb table and
its message come from the core's refusal (``reference.jobs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reference import jobs
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


def _verb(machine: Machine, job_id: str, block: bool, name: str, *extra: Any) -> dict[str, Any]:
    graph = machine.layer.graph
    if block:
        jobs.find_block_job(graph, job_id)
    else:
        jobs.find_job(graph, job_id)
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
