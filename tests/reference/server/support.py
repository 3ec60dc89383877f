"""Endpoints for the server's tests: real QEMU processes and the in-process reference server.

Every endpoint is a unix socket path speaking QMP.  :class:`Wire` is a deliberately dumb client:
it sends raw bytes and collects raw bytes, so that tests compare exactly what is on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reference.server import Listener, QMPServer

try:  # the one line that picks the engine: the real one when it imports
    from reference.machine import Machine as EngineClass
except ImportError:  # pragma: no cover - only before the engine lands
    from .fake_machine import FakeMachine as EngineClass  # type: ignore[assignment]

VERSIONS = ("10.0", "7.2")
QEMU_72_ROOT = Path("/opt/qemu-7.2/usr")
REPO = Path(__file__).resolve().parents[3]
_TIMESTAMP = re.compile(rb'"seconds": \d+,(\s*)"microseconds": \d+')


def qemu_command(version: str) -> tuple[list[str], dict[str, str]]:
    """The binary and environment of QEMU ``version``; skips visibly when it is missing."""
    if version == "10.0":
        binary = shutil.which("qemu-system-x86_64")
        if binary is None:
            pytest.skip("QEMU 10.0 not installed (qemu-system-x86_64 not on PATH)")
        return [binary], dict(os.environ)
    binary72 = QEMU_72_ROOT / "bin/qemu-system-x86_64"
    if not binary72.exists():
        pytest.skip(f"QEMU 7.2 not installed ({binary72} missing)")
    env = dict(os.environ, QEMU_MODULE_DIR=str(QEMU_72_ROOT / "lib/x86_64-linux-gnu/qemu"))
    return [str(binary72), "-L", str(QEMU_72_ROOT / "share/qemu")], env


def reference_command() -> list[str]:
    """Our launcher, run from the repository."""
    return [sys.executable, "-m", "reference.cli"]


BASE_ARGS = ["-M", "none", "-nodefaults", "-display", "none"]


def normalize(data: bytes) -> bytes:
    """Timestamps are the only thing that may differ between two runs."""
    return _TIMESTAMP.sub(rb'"seconds": S,\1"microseconds": U', data)


def wait_for(path: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until a unix socket exists (or fail if the process died)."""
    deadline = time.monotonic() + 15
    while not os.path.exists(path):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"endpoint exited with {process.returncode} before listening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)


@contextlib.contextmanager
def qemu_process(
    version: str, args: list[str], path: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run QEMU ``version`` with ``args``; killed and reaped on exit."""
    command, env = qemu_command(version)
    process = subprocess.Popen(
        [*command, *BASE_ARGS, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        if path is not None:
            wait_for(path, process)
        yield process
    finally:
        stop_process(process)


@contextlib.contextmanager
def reference_process(
    version: str, args: list[str], path: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run our launcher emulating ``version`` with ``args``; killed and reaped on exit."""
    process = subprocess.Popen(
        [*reference_command(), "--emulate", version, *BASE_ARGS, *args],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        if path is not None:
            wait_for(path, process)
        yield process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` if it still runs, reap it and close its pipes."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(10)
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


class ReferenceServer:
    """Our server on a unix socket, in a thread with its own event loop."""

    def __init__(self, version: str, path: str, *, pretty: bool = False) -> None:
        self.engine: Any = EngineClass(version)
        self.path = path
        self.server = QMPServer(self.engine, [Listener("unix", path=path, pretty=pretty)])
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="qmp-reference", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self.server.run())
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            self._loop.close()

    def __enter__(self) -> ReferenceServer:
        self._thread.start()
        wait_for(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server (if ``quit`` did not already) and wait for the thread."""
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.server.stop)
            self._thread.join(10)
        if self.error is not None:
            raise self.error


class Wire:
    """A raw QMP connection: bytes out, bytes in."""

    def __init__(self, path: str, *, quiet: float = 0.15) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.quiet = quiet
        self.eof = False

    def read(self, quiet: float | None = None, limit: float = 10.0) -> bytes:
        """Everything that arrives until nothing more comes for ``quiet`` seconds (or EOF).

        A peer that exits with bytes of ours still unread (the newline after a command it
        had parsed) resets the connection instead of closing it. A unix socket hands over
        everything the peer sent before the reset (checked with a socketpair), so the reset
        counts as EOF too."""
        out = bytearray()
        deadline = time.monotonic() + limit
        self.sock.settimeout(self.quiet if quiet is None else quiet)
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                break
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                break
            out += data
        return bytes(out)

    def read_lines(self, count: int, limit: float = 120.0) -> bytes:
        """Exactly until ``count`` CRLF-terminated lines arrived (compact output only)."""
        out = bytearray()
        deadline = time.monotonic() + limit
        while out.count(b"\r\n") < count and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(1 << 20)
            if not data:
                break
            out += data
        return bytes(out)

    def greeting(self) -> bytes:
        """The greeting (waits for the whole message, compact or pretty)."""
        data = b""
        while not (data.startswith(b'{"') and data.endswith(b"}\r\n")) and not data.endswith(
            b"\r\n}\r\n"
        ):
            self.sock.settimeout(10)
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def send(self, data: bytes) -> None:
        self.sock.settimeout(60)
        self.sock.sendall(data)

    def negotiate(self) -> None:
        """``qmp_capabilities``; its reply is awaited as a whole line (a loaded machine can
        take longer than :meth:`read`'s quiet time to answer)."""
        self.send(b'{"execute": "qmp_capabilities"}\n')
        reply = self.read_lines(1)
        assert reply == b'{"return": {}}\r\n', reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Endpoint:
    """A named QMP endpoint listening on ``path``."""

    name: str
    version: str
    path: str

    @property
    def is_qemu(self) -> bool:
        return self.name.startswith("qemu")


def socket_dir() -> str:
    """A short private directory for sockets (unix socket paths are limited to 107 bytes)."""
    return tempfile.mkdtemp(prefix="qmpsrv-", dir="/tmp")
