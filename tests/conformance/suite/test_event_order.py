"""Event orders that remove real QEMU's timing from job events (conformance.scenario)."""

from __future__ import annotations

from typing import Any

from conformance.scenario import Step, order_events


def _status(job: str, status: str) -> dict[str, Any]:
    return {"event": "JOB_STATUS_CHANGE", "data": {"id": job, "status": status}}


def _statuses(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["data"]["id"], e["data"]["status"]) for e in events]


def test_per_job_one_drain_groups_jobs_and_keeps_one_drain_pair() -> None:
    events = [
        _status("j0", "created"),
        _status("j1", "created"),
        _status("j0", "running"),
        _status("j0", "paused"),
        _status("j1", "running"),
        _status("j0", "running"),
        _status("j0", "paused"),
        _status("j0", "running"),
        _status("j1", "paused"),
        _status("j1", "running"),
        _status("j0", "waiting"),
        {"event": "BLOCK_JOB_COMPLETED", "data": {"device": "j1", "len": 1, "offset": 1}},
    ]

    grouped = order_events(Step(0, "execute", "transaction", event_order="per-job"), events)
    collapsed = order_events(
        Step(0, "execute", "transaction", event_order="per-job-one-drain"), events
    )

    assert len(grouped) == len(events)
    assert [e["event"] for e in collapsed].count("BLOCK_JOB_COMPLETED") == 1
    assert _statuses([e for e in collapsed if e["event"] == "JOB_STATUS_CHANGE"]) == [
        ("j0", "created"),
        ("j0", "running"),
        ("j0", "paused"),
        ("j0", "running"),
        ("j0", "waiting"),
        ("j1", "created"),
        ("j1", "running"),
        ("j1", "paused"),
        ("j1", "running"),
    ]


def test_per_job_one_drain_keeps_what_follows_a_dropped_pause() -> None:
    events = [
        _status("j0", "running"),
        _status("j0", "paused"),
        _status("j0", "running"),
        _status("j0", "paused"),
        _status("j0", "aborting"),
    ]

    collapsed = order_events(
        Step(0, "execute", "transaction", event_order="per-job-one-drain"), events
    )

    assert _statuses(collapsed)[-1] == ("j0", "aborting")
    assert len(collapsed) == 4
