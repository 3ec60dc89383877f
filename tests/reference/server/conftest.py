"""Fixtures: for each version, a real QEMU and our server listening on unix sockets."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from .support import VERSIONS, Endpoint, ReferenceServer, qemu_process, socket_dir


@pytest.fixture
def tmp_sock_dir() -> Iterator[str]:
    """A private socket directory, removed afterwards."""
    path = socket_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module", params=VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    """Each emulated QEMU version."""
    return str(request.param)


@pytest.fixture(scope="module")
def qemu(version: str) -> Iterator[Endpoint]:
    """Real QEMU ``version`` (skipped with a reason when absent), one process per module."""
    directory = socket_dir()
    path = f"{directory}/qemu.sock"
    try:
        with qemu_process(version, ["-qmp", f"unix:{path},server=on,wait=off"], path):
            yield Endpoint(f"qemu-{version}", version, path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(version: str) -> Iterator[Endpoint]:
    """Our server emulating ``version``, in-process."""
    directory = socket_dir()
    path = f"{directory}/ref.sock"
    try:
        with ReferenceServer(version, path):
            yield Endpoint(f"reference-{version}", version, path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
