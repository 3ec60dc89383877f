"""qcow2 runtime options the reference refuses because it does not model them, and the ones
``-drive`` passes on as strings. What QEMU itself checks is pinned by the scenarios
blockdev/qcow2_options_* and persistence/qcow2_cache_* on real QEMU."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from reference import Machine
from reference.errors import QMPError


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "a.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", str(path), "1M"],
        check=True,
    )
    return path


def add(machine: Machine, image: Path, **options: Any) -> dict[str, Any]:
    args = {"driver": "qcow2", "node-name": "q", "file": {"driver": "file", "filename": str(image)}}
    return machine.execute("blockdev-add", args | options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"l2-cache-entry-size": 512, "l2-cache-size": 512}, None),
        ({"cache-clean-interval": 1}, "cache-clean-interval=1 is not modelled by this reference"),
        ({"discard-no-unref": True}, "discard-no-unref=on is not modelled by this reference"),
        ({"pass-discard-other": True}, "pass-discard-other=on is not modelled by this reference"),
        ({"pass-discard-snapshot": False}, None),
    ],
)
def test_unmodelled_options_are_refused_never_ignored(
    image: Path, options: dict[str, Any], message: str | None
) -> None:
    reply = add(Machine("10.0"), image, **options)
    if message is None:
        assert reply == {"return": {}}
    else:
        assert reply["error"]["class"] == "GenericError"
        assert message in reply["error"]["desc"]


def test_l2_slices_smaller_than_a_cluster_are_cached(tmp_path: Path) -> None:
    path = tmp_path / "b.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1G"], check=True)
    # 64 KiB clusters: an L2 cache too small for the disk takes 4 KiB slices by default.
    for options in ({"l2-cache-size": 65536}, {"l2-cache-entry-size": 8192}):
        machine = Machine("10.0")
        assert add(machine, path, **options) == {"return": {}}
        io = 'qemu-io q "write -P 0x5a 300M 64k"'
        machine.execute("human-monitor-command", {"command-line": io})
        assert machine.execute("blockdev-del", {"node-name": "q"}) == {"return": {}}
        read = ["qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 300M 64k", str(path)]
        out = subprocess.run(read, capture_output=True, text=True, check=True).stdout
        assert "read 65536/65536 bytes" in out, out
    subprocess.run(["qemu-img", "check", "-q", str(path)], check=True)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("l2-cache-size=abc", "Parameter 'l2-cache-size' expects a non-negative number below 2^64"),
        ("lazy-refcounts=maybe", "Parameter 'lazy-refcounts' expects 'on' or 'off'"),
        ("cache-clean-interval=abc", "Parameter 'cache-clean-interval' expects a number"),
        ("cache-clean-interval=-1", "Cache clean interval too big"),
        ("l2-cache-size=-1", "Value '-1' is out of range for parameter 'l2-cache-size'"),
        ("overlap-check=bogus", "Unsupported value 'bogus' for qcow2 option 'overlap-check'"),
        (
            "overlap-check=none,overlap-check.template=all",
            "Conflicting values for qcow2 options 'overlap-check' ('none') and "
            "'overlap-check.template' ('all')",
        ),
        ("overlap-check.l1=off", "Block format 'qcow2' does not support the option"),
        ("l2-cache-size=1k,cache-size=0", "l2-cache-size may not exceed cache-size"),
    ],
)
def test_drive_options_fail_as_qemus_command_line(image: Path, option: str, message: str) -> None:
    options = {"id": "d", "if": "none", "file": str(image), "format": "qcow2"}
    options |= dict(pair.split("=", 1) for pair in option.split(","))
    with pytest.raises(QMPError) as caught:
        Machine("10.0").add_drive(options)
    assert message in str(caught.value)


def test_drive_options_are_typed_as_blockdev_add_has_them(image: Path) -> None:
    machine = Machine("7.2")
    machine.add_drive(
        {
            "id": "d",
            "if": "none",
            "file": str(image),
            "format": "qcow2",
            "node-name": "disk0",
            "l2-cache-size": "1.5k",
            "lazy-refcounts": "on",
            "overlap-check.active-l1": "off",
        }
    )
    machine.execute("human-monitor-command", {"command-line": 'qemu-io disk0 "write 0 4k"'})
    nodes = machine.execute("query-named-block-nodes", {"flat": True})["return"]
    assert nodes[0]["image"]["dirty-flag"] is True
