"""One synchronous interface for talking QMP to any endpoint.

An *endpoint* is something that answers QMP: a real ``qemu-system-x86_64`` we launch, the
reference engine in this process, the reference's QMP server we launch, or a socket somebody
else runs. The conformance suite only ever talks to endpoints through :class:`Endpoint`, so it
can never lean on the internals of any one of them (the reference is reached through its public
``reference.machine.Machine`` API only, in :class:`ReferenceEndpoint`).

Contract of :meth:`Endpoint.execute`: it returns the *full* reply, ``{"return": ...}`` or
``{"error": {"class": ..., "desc": ...}}``; a QMP error is data, never an exception. Exceptions
are reserved for the endpoint itself misbehaving::

    EndpointError
     +-- EndpointUnavailable   the endpoint cannot be started here (binary or engine missing)
     +-- EndpointUnsupported   cannot do what the scenario needs (-drive on a socket)
     +-- EndpointCrashed       the process died; carries the signal (e.g. SIGSEGV) and stderr
     +-- EndpointHung          no reply within the timeout; the process is killed
     +-- EndpointStreamBroken  the QMP stream broke with the process alive; it is killed

Every endpoint owns a ``workdir``: the directory its images live in. Scenarios create their
images there before the endpoint starts (see :class:`LaunchOptions`), so command-line style
options (``-drive``, ``-blockdev``) can refer to them.

This module must not interpret replies: normalizing them is :mod:`conformance.observe`'s job.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from qemu.qmp.legacy import QEMUMonitorProtocol

JSONObject = dict[str, Any]
Version = tuple[int, int, int]

#: QEMU 10.0 as installed by the distribution.
DEFAULT_QEMU_10_BINARY = "qemu-system-x86_64"
#: QEMU 7.2 unpacked under /opt (see scripts/install-qemu.sh).
DEFAULT_QEMU_7_2_BINARY = "/opt/qemu-7.2/usr/bin/qemu-system-x86_64"
#: The 7.2 build looks for its modules and firmware under /usr unless told otherwise.
QEMU_7_2_ENV = {"QEMU_MODULE_DIR": "/opt/qemu-7.2/usr/lib/x86_64-linux-gnu/qemu"}
QEMU_7_2_ARGS = ("-L", "/opt/qemu-7.2/usr/share/qemu")

#: Seconds to wait for one QMP reply before declaring the endpoint hung.
COMMAND_TIMEOUT = 30.0
#: Seconds to wait for a launched process to open its QMP socket.
START_TIMEOUT = 15.0
#: Seconds one connection attempt to a socket somebody else runs waits for the QMP greeting.
GREETING_TIMEOUT = 3.0
#: How a launched endpoint serves QMP. ``wait=on``: the process accepts our one connection
#: before it sets its monitor up, so it never accepts while its monitor I/O thread is still
#: taking the socket over. With ``wait=off`` a client that connects as soon as the socket
#: exists races that handover (QEMU 7.2 and 10.0): under load QEMU then greeted twice or never
#: (measured: known-deviations.yaml, ``qmp-stream-broken``).
QMP_SERVER_OPTIONS = "server=on,wait=on"
#: The start of QEMU's monitor reply to bytes that are not one JSON value.
JSON_PARSE_ERROR = "JSON parse error"
#: How the text of an :class:`EndpointStreamBroken` begins (recorded as a step's failure).
STREAM_BROKEN = "QMP stream broken"
#: Seconds a ``settle`` may take, and the polling interval of real-time endpoints.
SETTLE_TIMEOUT = 30.0
SETTLE_POLL = 0.01
#: A held job is quiet once what it shows stays the same over this many reads, this many seconds
#: apart, within the timeout (see :meth:`Endpoint.quiesce`).
QUIET_READS = 3
QUIET_POLL = 0.05
QUIET_TIMEOUT = 3.0
#: Virtual nanoseconds the in-process reference advances its clock per ``settle`` poll, and
#: the most it lets pass in one settle (a job QEMU finishes in milliseconds of wall-clock time
#: finishes here too; a rate-limited one stays where it is, as on QEMU).
REFERENCE_SETTLE_STEP_NS = 1_000_000
REFERENCE_SETTLE_LIMIT_NS = 10_000_000_000


class EndpointError(Exception):
    """Root of every error raised by an endpoint itself (never by a QMP error reply)."""


class EndpointUnavailable(EndpointError):
    """The endpoint cannot be started on this machine (missing binary, engine not importable)."""


class EndpointUnsupported(EndpointError):
    """The endpoint cannot provide what was asked (``-drive`` options on an attached socket)."""


class EndpointCrashed(EndpointError):
    """The endpoint's process died.

    ``signal`` is the signal that killed it (``signal.SIGSEGV``) or ``None`` when it exited;
    ``returncode`` is the raw status; ``stderr`` what it printed; ``command`` the command in
    flight, if any.
    """

    def __init__(
        self,
        returncode: int | None,
        stderr: str,
        command: str | None = None,
    ) -> None:
        self.returncode = returncode
        self.signal: signal.Signals | None = (
            signal.Signals(-returncode) if returncode is not None and returncode < 0 else None
        )
        self.stderr = stderr
        self.command = command
        how = self.signal.name if self.signal is not None else f"exit status {returncode}"
        during = f" during {command!r}" if command else ""
        tail = stderr.strip().splitlines()[-3:]
        super().__init__(
            f"endpoint died ({how}){during}" + (f": {' | '.join(tail)}" if tail else "")
        )


class EndpointHung(EndpointError):
    """No reply came within the timeout."""

    def __init__(self, command: str, timeout: float, stderr: str = "") -> None:
        self.command = command
        self.timeout = timeout
        self.stderr = stderr
        super().__init__(f"no reply to {command!r} within {timeout:g}s")


class EndpointStreamBroken(EndpointError):
    """The QMP stream broke while the process still runs.

    Either the endpoint answered a command with a JSON parse error (every message is serialised
    here with :func:`json.dumps`, so the bytes it parsed were not the bytes sent), or the
    connection failed (the server closed it, or ``qemu.qmp`` dropped it on a reply that belongs
    to no command). Seen twice with QEMU 7.2 in loaded full runs; the process is killed, the
    step is recorded as lost, and ``known-deviations.yaml`` (``qmp-stream-broken``) names it.
    """

    def __init__(self, command: str, detail: str, stderr: str = "") -> None:
        self.command = command
        self.detail = detail
        self.stderr = stderr
        super().__init__(f"{STREAM_BROKEN} during {command!r} with the process alive: {detail}")


@dataclass(frozen=True)
class LaunchOptions:
    """What a scenario needs from an endpoint before its first QMP command.

    ``drives`` are ``-drive`` option sets (``{"id": "drv0", "if": "none", "file": ...}``) and
    ``blockdevs`` are ``-blockdev`` option trees, already expanded (no ``{dir}`` left). An endpoint
    that cannot honour them raises :class:`EndpointUnsupported`.
    """

    drives: Sequence[Mapping[str, Any]] = ()
    blockdevs: Sequence[Mapping[str, Any]] = ()


class Endpoint(ABC):
    """A thing that answers QMP. Use as a context manager; :meth:`close` is idempotent."""

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir: Path = (
            Path(tempfile.mkdtemp(prefix="qmp-endpoint-")) if workdir is None else workdir
        )
        self.workdir = self.workdir.resolve()

    @property
    @abstractmethod
    def version(self) -> Version:
        """The QEMU version the endpoint announces in its QMP greeting."""

    @abstractmethod
    def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> JSONObject:
        """Run one command; return the full reply (``return`` or ``error``)."""

    @abstractmethod
    def take_events(self) -> list[JSONObject]:
        """Return and forget every event received so far, oldest first."""

    def wait_for_exit(self, timeout: float = 10.0) -> None:  # noqa: B027 - optional hook
        """After ``quit``: wait until the endpoint has really finished (files closed)."""

    @contextlib.contextmanager
    def command_timeout(self, seconds: float) -> Iterator[None]:
        """Within the block, a command without a reply after ``seconds`` raises EndpointHung.

        Only endpoints that can wait for a reply (processes, sockets) honour it; the in-process
        reference always answers at once.
        """
        yield

    def settle(self, done: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> bool:
        """Let time pass until ``done()`` holds (e.g. a block job reached a state).

        Returns whether it held within ``timeout`` seconds. A real-time endpoint (a process or
        socket) just polls; an endpoint with a deterministic clock (the in-process reference)
        overrides this to advance its clock instead, so both stop at the same point of a job's
        life. ``done`` may itself run query commands on the endpoint.
        """
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(SETTLE_POLL)
        return True

    def quiesce(
        self,
        read: Callable[[], Any],
        ready: Callable[[Any], bool] = lambda _: True,
        timeout: float = QUIET_TIMEOUT,
        reads: int = QUIET_READS,
    ) -> bool:
        """Poll ``read()`` until it gives the same value ``reads`` times in a row,
        :data:`QUIET_POLL` seconds apart, and ``ready`` accepts that value; whether it did
        within ``timeout`` seconds.

        A rate-limited job on real QEMU that has reached its wait condition may still be in
        the middle of one loop iteration: block-copy takes a chunk off its copy bitmap, asks
        block status (which can wait on metadata I/O of a backing chain), then gives the chunk
        back and sleeps for the rate limit. A query in that window shows the chunk as taken.
        Waiting for a quiet state leaves that window behind. An endpoint with a deterministic
        clock never moves between commands and overrides this to return at once.
        """
        deadline = time.monotonic() + timeout
        last, same = read(), 1
        while same < reads or not ready(last):
            if time.monotonic() > deadline:
                return False
            time.sleep(QUIET_POLL)
            value = read()
            last, same = value, same + 1 if value == last else 1
        return True

    def _close_endpoint(self) -> None:  # noqa: B027 - optional hook
        """Release the endpoint's own resources (process, connection)."""

    def close(self) -> None:
        """Stop the endpoint and remove a workdir it created itself."""
        try:
            self._close_endpoint()
        finally:
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self._own_workdir = False

    @property
    def version_label(self) -> str:
        """``"10.0"``: major.minor, the granularity scenarios name versions in."""
        return f"{self.version[0]}.{self.version[1]}"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _version_from_greeting(greeting: Mapping[str, Any]) -> Version:
    qemu = greeting["QMP"]["version"]["qemu"]
    return (int(qemu["major"]), int(qemu["minor"]), int(qemu["micro"]))


class _QMPConnection:
    """A blocking QMP client over ``qemu.qmp``'s legacy shim, with timeouts."""

    def __init__(self, address: str | tuple[str, int], timeout: float = COMMAND_TIMEOUT) -> None:
        self._qmp = QEMUMonitorProtocol(address)
        self._qmp.settimeout(timeout)
        self.greeting: JSONObject = {}
        self._open = False

    def connect(self, timeout: float = GREETING_TIMEOUT) -> JSONObject:
        # qemu.qmp's legacy connect() waits for the greeting without a timeout; a QEMU that
        # accepted the connection before its monitor was ready never sends one (seen with 7.2
        # under load), which would block forever. Time out instead, so the caller retries.
        client = self._qmp._qmp
        client.await_greeting = True
        client.negotiate = True
        try:
            self._qmp._sync(client.connect(self._qmp._address), timeout)
        except BaseException:
            # Drop the half-open connection, or QEMU (one client at a time) keeps serving it.
            with contextlib.suppress(Exception):
                self._qmp._sync(client.disconnect(), timeout)
            raise
        greeting = self._qmp._get_greeting()
        self._open = True
        self.greeting = dict(greeting or {})
        return self.greeting

    def settimeout(self, seconds: float) -> None:
        self._qmp.settimeout(seconds)

    def execute(self, command: str, arguments: Mapping[str, Any] | None) -> JSONObject:
        message: JSONObject = {"execute": command}
        if arguments is not None:
            message["arguments"] = dict(arguments)
        return dict(self._qmp.cmd_obj(message))

    def take_events(self) -> list[JSONObject]:
        events: list[JSONObject] = []
        while True:
            event = self._qmp.pull_event(wait=False)
            if event is None:
                return events
            events.append(dict(event))

    def close(self) -> None:
        if self._open:
            self._open = False
            # The peer may already be gone (crash, kill): a failed goodbye is not news.
            with contextlib.suppress(Exception):
                self._qmp.close()


class _ProcessEndpoint(Endpoint):
    """An endpoint that is a child process serving QMP on a unix socket in its workdir."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        workdir: Path | None,
        timeout: float,
        qmp_option: Callable[[Path], Sequence[str]] | None = None,
    ) -> None:
        super().__init__(workdir)
        self._timeout = timeout
        self._sockdir = Path(tempfile.mkdtemp(prefix="qmp-sock-"))
        self.socket_path = self._sockdir / "qmp.sock"
        self._stderr_file = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - lives with self
        option = qmp_option or (lambda path: ["-qmp", f"unix:{path},{QMP_SERVER_OPTIONS}"])
        full_argv = [*argv, *option(self.socket_path)]
        self.argv = full_argv
        try:
            self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
                full_argv,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr_file,
                cwd=self.workdir,
            )
        except FileNotFoundError as error:
            self._process = None
            self.close()
            raise EndpointUnavailable(f"cannot run {argv[0]!r}: {error}") from error
        self._conn = _QMPConnection(str(self.socket_path), timeout)
        try:
            self._wait_for_socket()
            self._connect()
        except BaseException:
            self.close()
            raise
        self._version = _version_from_greeting(self._conn.greeting)

    @property
    def version(self) -> Version:
        return self._version

    @contextlib.contextmanager
    def command_timeout(self, seconds: float) -> Iterator[None]:
        previous = self._timeout
        self._timeout = seconds
        self._conn.settimeout(seconds)
        try:
            yield
        finally:
            self._timeout = previous
            self._conn.settimeout(previous)

    @property
    def stderr(self) -> str:
        """Everything the process printed on stderr so far."""
        self._stderr_file.flush()
        self._stderr_file.seek(0)
        return self._stderr_file.read().decode(errors="replace")

    @property
    def pid(self) -> int | None:
        """The process id, while the process exists."""
        return None if self._process is None else self._process.pid

    def _wait_for_socket(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.socket_path.exists():
            assert self._process is not None
            if self._process.poll() is not None:
                raise EndpointCrashed(self._process.returncode, self.stderr, "startup")
            if time.monotonic() > deadline:
                raise EndpointHung("startup", START_TIMEOUT, self.stderr)
            time.sleep(0.01)

    def _connect(self) -> None:
        # The socket file appears at bind(), a moment before listen(): retry refusals briefly.
        # A process that accepts but never greets would block the client forever: a watchdog
        # kills it at the deadline, and the start is reported as hung.
        deadline = time.monotonic() + START_TIMEOUT
        watchdog = threading.Timer(START_TIMEOUT + 5.0, self._kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            self._connect_until(deadline)
        finally:
            watchdog.cancel()

    def _connect_until(self, deadline: float) -> None:
        while True:
            try:
                # An accepted connection is the one the process waited for (wait=on): it greets
                # once its start is done, however long that takes under load. Dropping it and
                # connecting again would meet the monitor half set up (QMP_SERVER_OPTIONS).
                self._conn.connect(max(deadline - time.monotonic(), 0.1))
                return
            except TimeoutError:
                raise EndpointHung(
                    "startup (no QMP greeting)", START_TIMEOUT, self.stderr
                ) from None
            except Exception:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise EndpointCrashed(
                        self._process.returncode, self.stderr, "startup"
                    ) from None
                if time.monotonic() > deadline:
                    raise
                self._conn.close()
                self._conn = _QMPConnection(str(self.socket_path), self._timeout)
                time.sleep(0.02)

    def _died(self, command: str) -> EndpointCrashed | None:
        """If the process is dead (or dies within a moment), the error describing it."""
        if self._process is None:
            return EndpointCrashed(None, self.stderr, command)
        try:
            self._process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return None
        return EndpointCrashed(self._process.returncode, self.stderr, command)

    def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> JSONObject:
        if self._process is None or self._process.poll() is not None:
            raise self._died(command) or EndpointCrashed(None, self.stderr, command)
        try:
            reply = self._conn.execute(command, arguments)
        except TimeoutError as error:
            self._kill()
            raise EndpointHung(command, self._timeout, self.stderr) from error
        except Exception as error:
            crashed = self._died(command)
            if crashed is not None:
                raise crashed from error
            self._kill()
            raise EndpointStreamBroken(command, repr(error), self.stderr) from error
        desc = str((reply.get("error") or {}).get("desc", ""))
        if desc.startswith(JSON_PARSE_ERROR) and _plain_json([command, arguments]):
            self._kill()
            raise EndpointStreamBroken(command, f"the reply was {desc!r}", self.stderr)
        return reply

    def take_events(self) -> list[JSONObject]:
        try:
            return self._conn.take_events()
        except Exception as error:
            crashed = self._died("take_events")
            if crashed is not None:
                raise crashed from error
            raise

    def wait_for_exit(self, timeout: float = 10.0) -> None:
        if self._process is not None:
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired as error:
                self._kill()
                raise EndpointHung("quit", timeout, self.stderr) from error

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self._process is not None and self._process.poll() is None

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def _close_endpoint(self) -> None:
        if getattr(self, "_conn", None) is not None:
            self._conn.close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._kill()
        shutil.rmtree(self._sockdir, ignore_errors=True)
        self._stderr_file.close()


def _plain_json(value: Any) -> bool:
    """Whether ``value`` serialises to JSON any QMP server parses: no NaN or infinity, no lone
    surrogate in a string (QEMU answers a parse error for those, rightly)."""
    if isinstance(value, str):
        return not any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_plain_json(key) and _plain_json(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return all(_plain_json(item) for item in value)
    return True


def _drive_option_string(options: Mapping[str, Any]) -> str:
    """``{"id": "drv0", "file": "/a,b"}`` → ``id=drv0,file=/a,,b`` (QemuOpts escapes commas)."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value).replace(",", ",,")

    return ",".join(f"{key}={text(value)}" for key, value in options.items())


def qemu_binaries() -> dict[str, str]:
    """Version label → binary, from ``QEMU_10_BINARY`` / ``QEMU_7_2_BINARY`` or the defaults."""
    return {
        "10.0": os.environ.get("QEMU_10_BINARY", DEFAULT_QEMU_10_BINARY),
        "7.2": os.environ.get("QEMU_7_2_BINARY", DEFAULT_QEMU_7_2_BINARY),
    }


def qemu_binary_available(binary: str) -> bool:
    """Whether ``binary`` names an executable (path or on ``PATH``)."""
    return shutil.which(binary) is not None


def _require_program(program: str, what: str) -> None:
    """Raise :class:`EndpointUnavailable` (``"<what> not found: <program>"``) unless it runs."""
    if not qemu_binary_available(program):
        raise EndpointUnavailable(f"{what} not found: {program}")


def _launch_args(launch: LaunchOptions | None, *, blockdev_option: str = "-blockdev") -> list[str]:
    """The command-line options of ``launch``: ``-drive`` option strings, then one
    ``-blockdev`` (qemu-storage-daemon: ``--blockdev``) JSON tree per blockdev."""
    launch = launch or LaunchOptions()
    args: list[str] = []
    for drive in launch.drives:
        args += ["-drive", _drive_option_string(drive)]
    for blockdev in launch.blockdevs:
        args += [blockdev_option, json.dumps(blockdev)]
    return args


class QemuEndpoint(_ProcessEndpoint):
    """A real ``qemu-system-*`` started with ``-M none -nodefaults -display none``.

    A binary under ``/opt/qemu-7.2`` automatically gets the module directory and ``-L`` it needs.
    """

    def __init__(
        self,
        binary: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        *,
        workdir: Path | None = None,
        launch: LaunchOptions | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        binary = binary or qemu_binaries()["10.0"]
        _require_program(binary, "QEMU binary")
        env = dict(extra_env or {})
        args: list[str] = [binary]
        if binary.startswith("/opt/qemu-7.2/"):
            env = {**QEMU_7_2_ENV, **env}
            args += QEMU_7_2_ARGS
        args += ["-M", "none", "-nodefaults", "-display", "none"]
        args += _launch_args(launch)
        args += extra_args
        self.binary = binary
        super().__init__(args, env, workdir, timeout)


#: qemu-storage-daemon as installed with QEMU 10.0 (Debian's qemu-system-common).
DEFAULT_QSD_BINARY = "qemu-storage-daemon"


class QsdEndpoint(_ProcessEndpoint):
    """``qemu-storage-daemon``: QMP through ``--chardev socket`` + ``--monitor``.

    It has ``--blockdev`` but no ``-drive`` and no ``human-monitor-command`` (so no guest
    writes through qemu-io): scenarios that need either are reported as not applicable.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        workdir: Path | None = None,
        launch: LaunchOptions | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        binary = binary or os.environ.get("QSD_BINARY", DEFAULT_QSD_BINARY)
        _require_program(binary, "qemu-storage-daemon")
        if launch is not None and launch.drives:
            raise EndpointUnsupported("qemu-storage-daemon has no -drive option")
        args = [binary, *_launch_args(launch, blockdev_option="--blockdev")]
        self.binary = binary

        def monitor(path: Path) -> list[str]:
            return [
                "--chardev",
                f"socket,id=qmp0,path={path},{QMP_SERVER_OPTIONS}",
                "--monitor",
                "chardev=qmp0",
            ]

        super().__init__(args, None, workdir, timeout, monitor)


class XemuEndpoint(_ProcessEndpoint):
    """xemu (the original Xbox emulator, a QEMU fork) launched headless with ``-qmp``.

    Documented for users who have it; this machine has no xemu, so it is not tested here. xemu
    takes QEMU's ``-qmp``/``-drive``/``-blockdev`` options; ``-display none`` keeps it headless.
    """

    def __init__(
        self,
        binary: str,
        *,
        workdir: Path | None = None,
        launch: LaunchOptions | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        _require_program(binary, "xemu binary")
        args: list[str] = [binary, "-display", "none"]
        args += _launch_args(launch)
        self.binary = binary
        super().__init__(args, None, workdir, timeout)


class ReferenceSocketEndpoint(_ProcessEndpoint):
    """The reference's QMP server, ``qmp-reference --emulate V``, launched like QEMU."""

    def __init__(
        self,
        version: str = "10.0",
        *,
        program: str | None = None,
        workdir: Path | None = None,
        launch: LaunchOptions | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        program = program or os.environ.get("QMP_REFERENCE_BINARY", "qmp-reference")
        _require_program(program, "reference server")
        args = [program, "--emulate", version, "-M", "none", "-nodefaults", "-display", "none"]
        args += _launch_args(launch)
        super().__init__(args, None, workdir, timeout)


class SocketEndpoint(Endpoint):
    """Attach to an endpoint somebody else runs: ``unix:PATH`` or ``tcp:HOST:PORT``.

    The images of a scenario are created in ``workdir``, which the remote side must be able to
    open under the same path (same host, or a shared mount). Launch options cannot be honoured.
    """

    def __init__(
        self,
        address: str,
        *,
        workdir: Path | None = None,
        launch: LaunchOptions | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        if launch is not None and (launch.drives or launch.blockdevs):
            raise EndpointUnsupported("an attached socket cannot take -drive/-blockdev options")
        super().__init__(workdir)
        self.address = address
        self._conn = _QMPConnection(parse_socket_address(address), timeout)
        try:
            self._conn.connect()
        except Exception as error:
            self.close()
            raise EndpointUnavailable(f"cannot connect to {address}: {error}") from error
        self._version = _version_from_greeting(self._conn.greeting)

    @property
    def version(self) -> Version:
        return self._version

    def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> JSONObject:
        try:
            return self._conn.execute(command, arguments)
        except TimeoutError as error:
            raise EndpointHung(command, COMMAND_TIMEOUT) from error
        except (EOFError, ConnectionError, OSError) as error:
            raise EndpointCrashed(None, "", command) from error

    def take_events(self) -> list[JSONObject]:
        return self._conn.take_events()

    def _close_endpoint(self) -> None:
        if getattr(self, "_conn", None) is not None:
            self._conn.close()


def parse_socket_address(address: str) -> str | tuple[str, int]:
    """``unix:/p`` → ``"/p"``; ``tcp:host:port`` → ``("host", port)``."""
    kind, _, rest = address.partition(":")
    if kind == "unix" and rest:
        return rest
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        if host and port.isdigit():
            return (host, int(port))
    raise ValueError(f"not a socket address (unix:PATH or tcp:HOST:PORT): {address!r}")


class ReferenceEndpoint(Endpoint):
    """The reference engine in this process, through ``reference.machine.Machine`` only.

    Machine's public interface, as used here: ``Machine(version)``, ``greeting()``,
    ``execute(command, arguments)`` (full reply), ``take_events()``, ``close()``, for
    command-line style options ``add_drive(options)`` / ``add_blockdev(options)``, and for
    block jobs ``advance(ns)`` (move the deterministic clock; jobs progress, events queue).
    """

    def __init__(
        self,
        version: str = "10.0",
        *,
        workdir: Path | None = None,
        launch: LaunchOptions | None = None,
        variant: Any = None,
    ) -> None:
        machine_class = load_reference_machine()
        super().__init__(workdir)
        # ``variant``: a test-only engine variant (reference.testing.mutations); None in use.
        self._machine: Any = (
            machine_class(version) if variant is None else machine_class(version, variant=variant)
        )
        self._version = _version_from_greeting(self._machine.greeting())
        launch = launch or LaunchOptions()
        try:
            self._apply_launch(launch)
        except BaseException:
            self.close()
            raise

    def _apply_launch(self, launch: LaunchOptions) -> None:
        # QEMU opens every -blockdev before any -drive (configure_blockdev), whatever the
        # command line order: node lists (newest first) show it.
        for blockdev in launch.blockdevs:
            if hasattr(self._machine, "add_blockdev"):
                self._machine.add_blockdev(dict(blockdev))
                continue
            reply = self._machine.execute("blockdev-add", dict(blockdev))
            if "error" in reply:
                raise EndpointCrashed(1, f"-blockdev: {reply['error'].get('desc')}", "startup")
        for drive in launch.drives:
            if not hasattr(self._machine, "add_drive"):
                raise EndpointUnsupported("reference Machine has no add_drive()")
            self._machine.add_drive(dict(drive))
        self._machine.take_events()

    @property
    def version(self) -> Version:
        return self._version

    def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> JSONObject:
        reply = self._machine.execute(command, None if arguments is None else dict(arguments))
        return dict(reply)

    def take_events(self) -> list[JSONObject]:
        return [dict(event) for event in self._machine.take_events()]

    def settle(self, done: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> bool:
        """Advance the Machine's deterministic clock (``advance(ns)``) until ``done()``."""
        advance = getattr(self._machine, "advance", None)
        elapsed = 0
        while not done():
            if advance is None or elapsed >= REFERENCE_SETTLE_LIMIT_NS:
                return False
            advance(REFERENCE_SETTLE_STEP_NS)
            elapsed += REFERENCE_SETTLE_STEP_NS
        return True

    def quiesce(
        self,
        read: Callable[[], Any],
        ready: Callable[[Any], bool] = lambda _: True,
        timeout: float = QUIET_TIMEOUT,
        reads: int = QUIET_READS,
    ) -> bool:
        """The clock stands still between commands: nothing moves until ``settle`` moves it."""
        return True

    def _close_endpoint(self) -> None:
        machine = getattr(self, "_machine", None)
        if machine is not None:
            self._machine = None
            machine.close()


def load_reference_machine() -> Any:
    """Import ``reference.machine.Machine`` or raise :class:`EndpointUnavailable` saying why."""
    try:
        # Imported by name: the engine is optional here and is written concurrently.
        module = importlib.import_module("reference.machine")
        machine = module.Machine
    except Exception as error:  # ImportError, or the engine failing while it imports
        raise EndpointUnavailable(f"reference engine not importable: {error!r}") from error
    return machine


def reference_importable() -> str | None:
    """``None`` when the reference engine imports, else the reason it does not."""
    try:
        load_reference_machine()
    except EndpointUnavailable as error:
        return str(error)
    return None


#: Starts an endpoint in a given workdir with given launch options.
EndpointFactory = Callable[[Path | None, LaunchOptions], Endpoint]


@dataclass(frozen=True)
class Target:
    """A parsed endpoint description: a label for reports and a factory to start it."""

    label: str
    start: EndpointFactory = field(compare=False)
    #: The emulated/declared version, when known without starting the endpoint.
    version: str | None = None
    #: What it is: ``reference``, ``reference-socket``, ``qemu``, ``qsd``, ``xemu``, ``socket``.
    kind: str = "socket"


def parse_target(text: str) -> Target:
    """Parse ``reference[:V]``, ``reference-socket[:V]``, ``qemu[:PATH]``, ``qsd[:PATH]``,
    ``xemu:PATH``, ``unix:..``, ``tcp:..``.

    ``qemu:7.2`` and ``qemu:10.0`` pick the binaries of :func:`qemu_binaries`.
    """
    kind, _, rest = text.partition(":")
    if kind == "reference":
        version = rest or "10.0"
        return Target(
            text,
            lambda workdir, launch: ReferenceEndpoint(version, workdir=workdir, launch=launch),
            version,
            "reference",
        )
    if kind == "reference-socket":
        version = rest or "10.0"
        return Target(
            text,
            lambda workdir, launch: ReferenceSocketEndpoint(
                version, workdir=workdir, launch=launch
            ),
            version,
            "reference-socket",
        )
    if kind == "qemu":
        binaries = qemu_binaries()
        binary = binaries.get(rest, rest) if rest else binaries["10.0"]
        declared = rest if rest in binaries else None
        return Target(
            text,
            lambda workdir, launch: QemuEndpoint(binary, workdir=workdir, launch=launch),
            declared,
            "qemu",
        )
    if kind == "qsd":
        qsd = rest or None
        return Target(
            text,
            lambda workdir, launch: QsdEndpoint(qsd, workdir=workdir, launch=launch),
            None,
            "qsd",
        )
    if kind == "xemu":
        if not rest:
            raise ValueError("xemu needs its binary: xemu:PATH")
        return Target(
            text,
            lambda workdir, launch: XemuEndpoint(rest, workdir=workdir, launch=launch),
            None,
            "xemu",
        )
    if kind == "mutant":
        # The in-process reference with a deliberately broken engine (reference.testing):
        # ``mutant:NAME[@VERSION]``, to see what the suite reports about a wrong engine.
        name, _, version = rest.partition("@")
        version = version or "10.0"
        mutation = _mutation(name)
        return Target(
            text,
            lambda workdir, launch: ReferenceEndpoint(
                version, workdir=workdir, launch=launch, variant=mutation
            ),
            version,
            "reference",
        )
    if kind in ("unix", "tcp"):
        parse_socket_address(text)  # validate early
        return Target(
            text,
            lambda workdir, launch: SocketEndpoint(text, workdir=workdir, launch=launch),
            None,
            "socket",
        )
    raise ValueError(
        f"unknown endpoint {text!r}: expected reference[:V], reference-socket[:V], "
        "qemu[:PATH|:VERSION], qsd[:PATH], xemu:PATH, unix:PATH, tcp:HOST:PORT or "
        "mutant:NAME[@V]"
    )


def _mutation(name: str) -> Any:
    """A broken-engine variant of the reference by name; ValueError lists the names."""
    try:
        module = importlib.import_module("reference.testing.mutations")
    except Exception as error:
        raise ValueError(f"reference mutations not importable: {error!r}") from error
    try:
        return module.by_name(name)
    except KeyError as error:
        raise ValueError(str(error.args[0])) from None


def free_tcp_port() -> int:
    """A TCP port that was free a moment ago (for tests that start their own servers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
