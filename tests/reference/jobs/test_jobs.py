"""The reference's job layer through ``Machine`` alone (no QEMU): messages, event order, the
deterministic clock, point-in-time backups, drive-backup targets, json file names.

Behaviour against real QEMU is the differential suite's job (``conformance/scenarios/jobs``);
these pin the Python side's own rules so a regression shows without launching QEMU.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reference import Machine, _core
from reference.block import qdict_json

MIB = 1 << 20
CLUSTER = 65536


def _machine(tmp: Path, version: str = "10.0", size: int = 4 * MIB, fmt: str = "qcow2") -> Machine:
    """A machine with device drv0 (source ``a.<fmt>``, node disk0) and raw target ``tgt``."""
    _core.create_image(fmt, str(tmp / f"a.{fmt}"), size)
    _core.create_image("raw", str(tmp / "t.raw"), size)
    m = Machine(version)
    m.add_drive({"id": "drv0", "if": "none", "file": str(tmp / f"a.{fmt}"), "format": fmt,
                 "node-name": "disk0"})  # fmt: skip
    ok(m, "blockdev-add", {"driver": "raw", "node-name": "tgt",
                           "file": {"driver": "file", "filename": str(tmp / "t.raw")}})  # fmt: skip
    m.take_events()
    return m


def ok(m: Machine, command: str, args: dict[str, Any] | None = None) -> Any:
    reply = m.execute(command, args)
    assert "return" in reply, reply
    return reply["return"]


def error(m: Machine, command: str, args: dict[str, Any]) -> dict[str, str]:
    reply = m.execute(command, args)
    assert "error" in reply, reply
    return dict(reply["error"])


def statuses(events: list[dict[str, Any]], job: str) -> list[str]:
    return [
        e["data"]["status"]
        for e in events
        if e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job
    ]


def io(m: Machine, device: str, cmd: str) -> None:
    assert ok(m, "human-monitor-command", {"command-line": f'qemu-io {device} "{cmd}"'}) == ""


def test_job_lookup_errors_use_qemu_classes(tmp_path: Path) -> None:
    m = _machine(tmp_path)

    assert error(m, "job-cancel", {"id": "nope"}) == {
        "class": "GenericError",
        "desc": "Job not found",
    }
    assert error(m, "block-job-pause", {"device": "nope"}) == {
        "class": "DeviceNotActive",
        "desc": "Block job 'nope' not found",
    }


def test_speed_job_completes_only_when_the_clock_moves(tmp_path: Path) -> None:
    m = _machine(tmp_path)
    io(m, "drv0", "write -P 0x11 0 64k")
    io(m, "drv0", "write -P 0x12 1M 64k")

    ok(m, "blockdev-backup", {"job-id": "j0", "device": "disk0", "target": "tgt",
                              "sync": "full", "speed": 1})  # fmt: skip
    started = m.take_events()
    m.advance(10**9)
    jobs = ok(m, "query-jobs")
    ok(m, "block-job-set-speed", {"device": "j0", "speed": 0})
    finished = m.take_events()

    assert statuses(started, "j0") == ["created", "running", "paused", "running"]
    assert jobs == [{"current-progress": CLUSTER, "status": "running",
                     "total-progress": 4 * MIB, "type": "backup", "id": "j0"}]  # fmt: skip
    assert statuses(finished, "j0") == ["waiting", "pending", "concluded", "null"]
    assert [e["event"] for e in finished if e["event"] != "JOB_STATUS_CHANGE"] == [
        "BLOCK_JOB_COMPLETED"
    ]


def test_negative_speed_fails_after_the_job_existed(tmp_path: Path) -> None:
    m = _machine(tmp_path)

    err = error(m, "blockdev-backup", {"job-id": "j0", "device": "disk0", "target": "tgt",
                                       "sync": "full", "speed": -1})  # fmt: skip

    assert err["desc"] == "Parameter 'speed' expects a non-negative value"
    assert statuses(m.take_events(), "j0") == ["created", "null"]
    assert ok(m, "query-jobs") == []


def test_verb_in_wrong_state_names_state_and_verb(tmp_path: Path) -> None:
    m = _machine(tmp_path)
    io(m, "drv0", "write -P 0x11 0 64k")
    ok(m, "blockdev-backup", {"job-id": "j0", "device": "disk0", "target": "tgt", "sync": "full",
                              "auto-finalize": False})  # fmt: skip
    m.advance(10**9)

    assert error(m, "job-dismiss", {"id": "j0"})["desc"] == (
        "Job 'j0' in state 'pending' cannot accept command verb 'dismiss'"
    )


def test_rolled_back_backup_never_reports_cancelled(tmp_path: Path) -> None:
    m = _machine(tmp_path)

    err = error(m, "transaction", {"actions": [
        {"type": "blockdev-backup",
         "data": {"job-id": "j0", "device": "disk0", "target": "tgt", "sync": "full"}},
        {"type": "abort", "data": {}},
    ]})  # fmt: skip
    events = m.take_events()

    assert err["desc"] == "Transaction aborted using Abort action"
    assert statuses(events, "j0") == ["created", "aborting", "concluded", "null"]
    assert all(e["event"] == "JOB_STATUS_CHANGE" for e in events)


@settings(max_examples=15, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.integers(0, 4 * MIB // 4096 - 16), st.integers(1, 16), st.integers(1, 255)),
        max_size=8,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_target_is_the_source_as_it_was_at_the_start(
    tmp_path_factory: Any, writes: list[tuple[int, int, int]], seed: int
) -> None:
    tmp = Path(tmp_path_factory.mktemp("pit"))
    m = _machine(tmp, fmt="raw")
    rng = random.Random(seed)
    for offset in range(0, 4 * MIB, MIB):
        io(m, "drv0", f"write -P {rng.randrange(1, 256)} {offset} 64k")
    before = (tmp / "a.raw").read_bytes()

    ok(m, "blockdev-backup", {"job-id": "j0", "device": "disk0", "target": "tgt",
                              "sync": "full", "speed": 1})  # fmt: skip
    for sector, count, pattern in writes:  # guest writes while the job is held
        io(m, "drv0", f"write -P {pattern} {sector * 4096} {count * 4096}")
        m.advance(rng.randrange(10**6))
    ok(m, "block-job-set-speed", {"device": "j0", "speed": 0})
    m.advance(10**9)

    assert ok(m, "query-jobs") == []
    assert (tmp / "t.raw").read_bytes() == before


def test_drive_backup_target_is_created_and_leaves_with_its_job(tmp_path: Path) -> None:
    m = _machine(tmp_path)
    io(m, "drv0", "write -P 0x11 0 64k")
    nodes_before = [n["node-name"] for n in ok(m, "query-named-block-nodes")]

    ok(m, "drive-backup", {"job-id": "j0", "device": "disk0", "target": str(tmp_path / "n.qcow2"),
                           "format": "qcow2", "sync": "full"})  # fmt: skip
    m.advance(10**9)

    assert (tmp_path / "n.qcow2").read_bytes()[:4] == b"QFI\xfb"
    assert [n["node-name"] for n in ok(m, "query-named-block-nodes")] == nodes_before
    assert error(m, "drive-backup", {"device": "disk0", "target": str(tmp_path / "x"),
                                     "format": "nope", "sync": "full"})["desc"] == (
        "Unknown file format 'nope'"
    )  # fmt: skip


def test_json_file_names_follow_qdict_order() -> None:
    options = {
        "driver": "blkdebug",
        "image": {"driver": "file", "filename": "/d/a.qcow2"},
        "inject-error.0.event": "read_aio",
        "inject-error.0.errno": 5,
        "inject-error.0.once": True,
    }

    assert qdict_json(options) == (
        '{"inject-error.0.once": true, "image": {"driver": "file", "filename": "/d/a.qcow2"}, '
        '"driver": "blkdebug", "inject-error.0.errno": 5, "inject-error.0.event": "read_aio"}'
    )


def test_copy_before_write_filter_is_reported_like_a_backing_file(tmp_path: Path) -> None:
    m = _machine(tmp_path)
    io(m, "drv0", "write -P 0x11 0 64k")
    io(m, "drv0", "write -P 0x12 1M 64k")
    ok(m, "blockdev-backup", {"job-id": "j0", "device": "disk0", "target": "tgt", "sync": "full",
                              "speed": 1, "filter-node-name": "cbw0"})  # fmt: skip

    inserted = ok(m, "query-block")[0]["inserted"]
    flat = {n["node-name"]: n for n in ok(m, "query-named-block-nodes", {"flat": True})}

    assert inserted["node-name"] == "cbw0"
    assert inserted["backing_file_depth"] == 1
    assert inserted["image"]["backing-image"]["filename"] == str(tmp_path / "a.qcow2")
    assert "backing-image" not in flat["cbw0"]["image"]
    assert flat["cbw0"]["backing_file_depth"] == 0
