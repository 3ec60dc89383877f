"""Image locks between processes through blkdebug: real QEMU and the reference refuse each other
both ways when either holds a qcow2 image whose file node sits under a blkdebug node."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from conformance.endpoints import Endpoint, QemuEndpoint, ReferenceEndpoint, qemu_binaries

from .support import qemu_target, reference_target

VERSIONS = ("7.2", "10.0")


def _over_blkdebug(path: Path, node: str, *, read_only: bool = False) -> dict[str, Any]:
    image = {"driver": "file", "filename": str(path)}
    return {
        "driver": "qcow2",
        "node-name": node,
        "read-only": read_only,
        "file": {"driver": "blkdebug", "image": image},
    }


def _plain(path: Path, node: str, *, read_only: bool = False) -> dict[str, Any]:
    file = {"driver": "file", "filename": str(path)}
    return {"driver": "qcow2", "node-name": node, "read-only": read_only, "file": file}


def _endpoints(version: str, workdir: Path) -> tuple[Endpoint, Endpoint]:
    qemu_target(version)
    reference_target(version)
    return (
        QemuEndpoint(qemu_binaries()[version], workdir=workdir),
        ReferenceEndpoint(version, workdir=workdir),
    )


def _error(reply: dict[str, Any]) -> str | None:
    error = reply.get("error")
    return None if error is None else str(error["desc"])


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("holder_is_qemu", [True, False], ids=["qemu-holds", "reference-holds"])
def test_blkdebug_user_and_other_process_refuse_each_other(
    version: str, holder_is_qemu: bool, tmp_path: Path
) -> None:
    image = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    qemu, reference = _endpoints(version, tmp_path)
    holder, other = (qemu, reference) if holder_is_qemu else (reference, qemu)
    with qemu, reference:
        assert _error(holder.execute("blockdev-add", _over_blkdebug(image, "held"))) is None

        writer = _error(other.execute("blockdev-add", _plain(image, "w")))
        reader = _error(other.execute("blockdev-add", _plain(image, "r", read_only=True)))
        debug = _error(other.execute("blockdev-add", _over_blkdebug(image, "d")))
        holder.execute("blockdev-del", {"node-name": "held"})
        after = _error(other.execute("blockdev-add", _over_blkdebug(image, "d")))
        back = _error(holder.execute("blockdev-add", _plain(image, "again")))

    assert writer == 'Failed to get "write" lock'
    assert reader == 'Failed to get shared "write" lock'
    assert debug == 'Failed to get "write" lock'
    assert after is None
    assert back == 'Failed to get "write" lock'
