"""The reference's snapshot semantics in process (no QEMU): what the differential scenarios of
``conformance/scenarios/snapshots`` compare against real QEMU, stated here as plain facts so
that a regression names the rule it breaks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # running pytest without the project installed
    sys.path.insert(0, str(ROOT))

from reference import Machine  # noqa: E402

VERSIONS = ("7.2", "10.0")


def _qcow2(path: Path, size: str = "64M") -> Path:
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(path), size], check=True, capture_output=True
    )
    return path


def _ok(reply: dict[str, Any]) -> Any:
    assert "return" in reply, reply
    return reply["return"]


def _err(reply: dict[str, Any]) -> str:
    assert "error" in reply, reply
    assert reply["error"]["class"] == "GenericError"
    desc: str = reply["error"]["desc"]
    return desc


def _machine(version: str, tmp_path: Path) -> Machine:
    m = Machine(version)
    m.add_drive(
        {
            "id": "drv0",
            "if": "none",
            "file": str(_qcow2(tmp_path / "a.qcow2")),
            "format": "qcow2",
            "node-name": "base",
        }
    )
    return m


def _snapshot_names(m: Machine, node: str) -> list[str]:
    for entry in _ok(m.execute("query-named-block-nodes", {"flat": True})):
        if entry["node-name"] == node:
            return [s["name"] for s in entry["image"].get("snapshots", [])]
    raise AssertionError(f"no node {node}")


@pytest.mark.parametrize("version", VERSIONS)
def test_internal_snapshot_abort_deletes_it(version: str, tmp_path: Path) -> None:
    m = _machine(version, tmp_path)
    actions = [
        {"type": "blockdev-snapshot-internal-sync", "data": {"device": "drv0", "name": "t1"}},
        {"type": "abort", "data": {}},
    ]

    desc = _err(m.execute("transaction", {"actions": actions}))

    assert desc == "Transaction aborted using Abort action"
    assert _snapshot_names(m, "base") == []


@pytest.mark.parametrize("version", VERSIONS)
def test_internal_snapshot_ids_are_max_plus_one(version: str, tmp_path: Path) -> None:
    m = _machine(version, tmp_path)
    for name in ("s1", "s2", "s3"):
        _ok(m.execute("blockdev-snapshot-internal-sync", {"device": "drv0", "name": name}))
    _ok(m.execute("blockdev-snapshot-delete-internal-sync", {"device": "drv0", "name": "s3"}))

    _ok(m.execute("blockdev-snapshot-internal-sync", {"device": "drv0", "name": "s4"}))
    deleted = _ok(
        m.execute("blockdev-snapshot-delete-internal-sync", {"device": "drv0", "name": "s4"})
    )

    assert deleted["id"] == "3"
    assert set(deleted) == {
        "id",
        "name",
        "vm-state-size",
        "date-sec",
        "date-nsec",
        "vm-clock-sec",
        "vm-clock-nsec",
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_delete_not_found_prints_absent_as_null(version: str, tmp_path: Path) -> None:
    m = _machine(version, tmp_path)

    desc = _err(
        m.execute("blockdev-snapshot-delete-internal-sync", {"device": "drv0", "name": "nope"})
    )

    assert desc == "Snapshot with id 'null' and name 'nope' does not exist on device 'drv0'"


@pytest.mark.parametrize("version", VERSIONS)
def test_sync_rollback_restores_root_and_keeps_file(version: str, tmp_path: Path) -> None:
    m = _machine(version, tmp_path)
    snap = tmp_path / "snap.qcow2"
    actions = [
        {
            "type": "blockdev-snapshot-sync",
            "data": {"device": "drv0", "snapshot-file": str(snap), "snapshot-node-name": "snap"},
        },
        {"type": "abort", "data": {}},
    ]

    _err(m.execute("transaction", {"actions": actions}))

    (block,) = _ok(m.execute("query-block"))
    assert block["inserted"]["node-name"] == "base"
    assert block["inserted"]["ro"] is False
    assert snap.exists()
    names = [n["node-name"] for n in _ok(m.execute("query-named-block-nodes"))]
    assert "snap" not in names


@pytest.mark.parametrize("version", VERSIONS)
def test_sync_commit_builds_chain_and_old_node_read_only(version: str, tmp_path: Path) -> None:
    m = _machine(version, tmp_path)
    m.execute("human-monitor-command", {"command-line": 'qemu-io drv0 "write -P 0x11 0 64k"'})

    _ok(
        m.execute(
            "blockdev-snapshot-sync",
            {
                "device": "drv0",
                "snapshot-file": str(tmp_path / "s.qcow2"),
                "snapshot-node-name": "s",
            },
        )
    )

    (block,) = _ok(m.execute("query-block"))
    inserted = block["inserted"]
    assert inserted["node-name"] == "s"
    assert inserted["backing_file_depth"] == 1
    assert inserted["backing_file"] == str(tmp_path / "a.qcow2")
    assert inserted["image"]["backing-image"]["filename"] == str(tmp_path / "a.qcow2")
    flat = {n["node-name"]: n for n in _ok(m.execute("query-named-block-nodes", {"flat": True}))}
    assert flat["base"]["ro"] is True
    assert flat["s"]["backing_file_depth"] == 0
    assert "backing-image" not in flat["s"]["image"]
    read = m.execute("human-monitor-command", {"command-line": 'qemu-io drv0 "read -P 0x11 0 64k"'})
    assert "Pattern verification failed" not in _ok(read)


@pytest.mark.parametrize("version", VERSIONS)
def test_overlay_without_header_backing_has_json_filename(version: str, tmp_path: Path) -> None:
    m = _machine(version, tmp_path)
    ov = _qcow2(tmp_path / "ov.qcow2")
    _ok(
        m.execute(
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": "ov",
                "backing": None,
                "file": {"driver": "file", "filename": str(ov)},
            },
        )
    )

    _ok(m.execute("blockdev-snapshot", {"node": "base", "overlay": "ov"}))

    (block,) = _ok(m.execute("query-block"))
    filename = block["inserted"]["file"]
    assert filename.startswith("json:")
    assert json.loads(filename[5:]) == {
        "backing": {
            "driver": "qcow2",
            "file": {"driver": "file", "filename": str(tmp_path / "a.qcow2")},
        },
        "driver": "qcow2",
        "file": {"driver": "file", "filename": str(ov)},
    }
    assert "backing-filename" not in block["inserted"]["image"]


@pytest.mark.parametrize("version", VERSIONS)
def test_snapshot_of_backing_node_is_blocked(version: str, tmp_path: Path) -> None:
    m = _machine(version, tmp_path)
    _ok(
        m.execute(
            "blockdev-snapshot-sync",
            {
                "device": "drv0",
                "snapshot-file": str(tmp_path / "s.qcow2"),
                "snapshot-node-name": "s",
            },
        )
    )

    desc = _err(
        m.execute(
            "blockdev-snapshot-sync",
            {
                "node-name": "base",
                "snapshot-file": str(tmp_path / "t.qcow2"),
                "snapshot-node-name": "t",
            },
        )
    )

    assert desc == "Node 'base' is busy: node is used as backing hd of 's'"


def test_internal_snapshot_of_new_overlay_rollback_is_a_7_2_crash(tmp_path: Path) -> None:
    def actions(workdir: Path) -> list[dict[str, Any]]:
        sync = {
            "device": "drv0",
            "snapshot-file": str(workdir / "s.qcow2"),
            "snapshot-node-name": "s",
        }
        return [
            {"type": "blockdev-snapshot-sync", "data": sync},
            {"type": "blockdev-snapshot-internal-sync", "data": {"device": "drv0", "name": "i"}},
            {"type": "abort", "data": {}},
        ]

    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = _machine("7.2", tmp_path / "old")
    new = _machine("10.0", tmp_path / "new")

    old_desc = _err(old.execute("transaction", {"actions": actions(tmp_path / "old")}))
    new_desc = _err(new.execute("transaction", {"actions": actions(tmp_path / "new")}))

    assert old_desc.startswith("QEMU 7.2 aborts rolling back this transaction")
    assert new_desc == "Transaction aborted using Abort action"


@pytest.mark.parametrize("version", VERSIONS)
def test_standalone_equals_one_action_transaction(version: str, tmp_path: Path) -> None:
    cases = [
        ("blockdev-snapshot-internal-sync", {"device": "nope", "name": "x"}),
        ("blockdev-snapshot-internal-sync", {"device": "drv0", "name": ""}),
        ("blockdev-snapshot-sync", {"node-name": "base", "snapshot-file": "/nonexistent/x"}),
        (
            "blockdev-snapshot-sync",
            {"device": "drv0", "snapshot-file": str(tmp_path / "x"), "format": "raw"},
        ),
        ("blockdev-snapshot", {"node": "base", "overlay": "base"}),
    ]
    m = _machine(version, tmp_path)
    for kind, data in cases:
        alone = m.execute(kind, dict(data))
        in_txn = m.execute("transaction", {"actions": [{"type": kind, "data": dict(data)}]})
        assert alone == in_txn, kind
