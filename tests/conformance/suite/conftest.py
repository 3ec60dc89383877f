"""Fixtures: a temporary report directory; QEMU availability as skips with reasons."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # running pytest without the project installed
    sys.path.insert(0, str(ROOT))

from conformance.endpoints import qemu_binaries, qemu_binary_available  # noqa: E402


def require_qemu(version: str) -> str:
    """The target spec of QEMU ``version``, or skip saying which binary is missing."""
    binary = qemu_binaries()[version]
    if not qemu_binary_available(binary):
        pytest.skip(f"QEMU {version} binary not found: {binary}")
    return "qemu" if version == "10.0" else f"qemu:{version}"


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    """Where a test's reports and reproducers go."""
    return tmp_path / "report"
