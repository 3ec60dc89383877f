"""A held backup on real QEMU 7.2 is recorded only once its copy bitmap is whole again.

Right after a speed-1 backup's first request, block-copy takes its next chunk off the copy
bitmap (QEMU 7.2 lists that bitmap, without a name, on the source node), asks block status,
then puts the chunk back and sleeps for the rate limit. When block status waits on metadata
I/O of a backing chain, ``current-progress`` already shows the first request while the bitmap
still lacks the next chunk. A CI run caught that window once
(``jobs/graph_changes_drain_running_job_snapshots``: 3080192 instead of 4128768).

Here a throttle node under the backing image's qcow2 holds that metadata read back for about a
second, so the window is wide: the wait condition alone holds inside it, and
:func:`conformance.scenario.settle_jobs` must wait it out.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from conformance.endpoints import QemuEndpoint, qemu_binaries
from conformance.scenario import job_matches, query_jobs, settle_jobs

from .conftest import require_qemu

pytestmark = pytest.mark.qemu

MIB = 1 << 20
SIZE = 4 * MIB
FIRST_REQUEST = 64 * 1024
#: The copy bitmap between requests: all but the first request left to copy.
WHOLE = SIZE - FIRST_REQUEST
#: The same while block-copy holds its next chunk (1 MiB) to ask block status.
CHUNK_TAKEN = WHOLE - MIB


def _ok(endpoint: QemuEndpoint, command: str, arguments: Mapping[str, object]) -> None:
    reply = endpoint.execute(command, arguments)
    assert "return" in reply, reply


def _start_held_backup(workdir: Path) -> QemuEndpoint:
    """A speed-1 backup of ``top`` (64k of data over a backing image read through a throttle
    node at one read per second) onto a raw target."""
    for command in (
        f"qemu-img create -q -f qcow2 {workdir}/base.qcow2 4M",
        f"qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 {workdir}/top.qcow2",
        f"qemu-img create -q -f raw {workdir}/t.raw 4M",
    ):
        subprocess.run(command, shell=True, check=True)
    endpoint = QemuEndpoint(qemu_binaries()["7.2"], workdir=workdir)
    _ok(endpoint, "object-add", {"qom-type": "throttle-group", "id": "tg", "limits": {}})
    base = {"driver": "file", "filename": f"{workdir}/base.qcow2"}
    throttled = {"driver": "throttle", "node-name": "thr", "throttle-group": "tg", "file": base}
    _ok(endpoint, "blockdev-add", {"driver": "qcow2", "node-name": "base", "file": throttled})
    top_file = {"driver": "file", "filename": f"{workdir}/top.qcow2"}
    top = {"driver": "qcow2", "node-name": "top", "backing": "base", "file": top_file}
    _ok(endpoint, "blockdev-add", top)
    target = {"driver": "file", "filename": f"{workdir}/t.raw"}
    _ok(endpoint, "blockdev-add", {"driver": "raw", "node-name": "tgt", "file": target})
    _ok(endpoint, "human-monitor-command", {"command-line": 'qemu-io top "write -P 0x33 0 64k"'})
    # One read per second from now on, and this read (of the throttle node itself, so that no
    # L2 table of ``base`` gets cached) takes the first second's.
    _limit(endpoint, {"iops-read": 1})
    _ok(endpoint, "human-monitor-command", {"command-line": 'qemu-io thr "read 0 512"'})
    backup = {"job-id": "j", "device": "top", "target": "tgt", "sync": "full", "speed": 1}
    _ok(endpoint, "blockdev-backup", backup)
    return endpoint


def _limit(endpoint: QemuEndpoint, limits: dict[str, int]) -> None:
    _ok(endpoint, "qom-set", {"path": "/objects/tg", "property": "limits", "value": limits})


def _close(endpoint: QemuEndpoint) -> None:
    """Lift the throttle first: quitting drains the reads it still holds back."""
    _limit(endpoint, {})
    endpoint.close()


def _copy_bitmap(endpoint: QemuEndpoint) -> int:
    nodes = endpoint.execute("query-named-block-nodes", {"flat": True})["return"]
    (top,) = [node for node in nodes if node["node-name"] == "top"]
    (bitmap,) = top["dirty-bitmaps"]
    return int(bitmap["count"])


def test_the_window_exists_behind_the_progress_condition(tmp_path: Path) -> None:
    require_qemu("7.2")
    endpoint = _start_held_backup(tmp_path)
    try:
        wanted = {"status": "running", "current-progress": FIRST_REQUEST}
        assert endpoint.settle(lambda: job_matches(query_jobs(endpoint).get("j"), wanted))
        assert _copy_bitmap(endpoint) == CHUNK_TAKEN
        # Once the throttle lets block status read, the chunk goes back by itself.
        assert endpoint.settle(lambda: _copy_bitmap(endpoint) == WHOLE)
    finally:
        _close(endpoint)


def test_a_held_job_is_recorded_after_its_chunk_is_back(tmp_path: Path) -> None:
    require_qemu("7.2")
    endpoint = _start_held_backup(tmp_path)
    try:
        started = time.monotonic()
        wait = {"jobs": {"j": {"status": "running", "current-progress": FIRST_REQUEST}}}
        assert settle_jobs(endpoint, wait)
        assert _copy_bitmap(endpoint) == WHOLE
        # The throttle let the metadata read through after most of a second.
        assert time.monotonic() - started > 0.5
    finally:
        _close(endpoint)
