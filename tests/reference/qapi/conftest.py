"""Fixtures of the QAPI tests: real QEMU per version (skipped visibly when absent)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # running pytest without the project installed
    sys.path.insert(0, str(ROOT))

from conformance.endpoints import (  # noqa: E402
    EndpointError,
    QemuEndpoint,
    qemu_binaries,
    qemu_binary_available,
)

VERSIONS = ("7.2", "10.0")


@pytest.fixture(scope="session", params=VERSIONS)
def qemu(request: pytest.FixtureRequest) -> Iterator[tuple[str, QemuEndpoint]]:
    """A running QEMU of each version (``-M none``), shared by the session."""
    version: str = request.param
    binary = qemu_binaries()[version]
    if not qemu_binary_available(binary):
        pytest.skip(f"QEMU {version} binary not found: {binary}")
    try:
        endpoint = QemuEndpoint(binary)
    except EndpointError as err:
        pytest.skip(f"QEMU {version} did not start: {err}")
    with endpoint:
        yield version, endpoint
