"""Whole-process behaviour, differential: ``qemu-system-x86_64`` and ``qmp-reference`` launched
with the same arguments must behave alike (quit, signals, wait=on, one client at a time, pretty
output, stdio, command-line errors).  Program names are normalized in messages.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from .support import Wire, normalize, qemu_process, reference_process

Launcher = Callable[..., contextlib.AbstractContextManager[subprocess.Popen[bytes]]]
pytestmark = pytest.mark.qemu


@pytest.fixture(params=["10.0", "7.2"])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def both(version: str) -> Iterator[tuple[str, Launcher]]:
    yield "qemu", lambda args, path=None: qemu_process(version, args, path)
    yield "reference", lambda args, path=None: reference_process(version, args, path)


def prog_neutral(text: bytes) -> bytes:
    """Drop the program name and QEMU's "from pid ..." detail of signal messages."""
    text = re.sub(rb"^(qemu-system-x86_64|qmp-reference): ", b"PROG: ", text, flags=re.M)
    return re.sub(rb" from pid \d+ \(.*\)", b"", text)


def test_quit_sends_shutdown_then_reply_then_closes(version: str, tmp_sock_dir: str) -> None:
    results = {}
    for name, launch in both(version):
        path = f"{tmp_sock_dir}/{name}.sock"
        with launch(["-qmp", f"unix:{path},server=on,wait=off"], path) as process:
            with Wire(path) as wire:
                wire.greeting()
                wire.negotiate()
                wire.send(b'{"execute": "quit", "id": 9}')
                received = normalize(wire.read(quiet=3))
                eof = wire.eof
            status = process.wait(10)
        results[name] = (received, eof, status, os.path.exists(path))

    assert results["qemu"][0].startswith(b'{"timestamp": {"seconds": S, "microseconds": U}, "event')
    assert results["reference"] == results["qemu"]


def test_sigterm_sends_shutdown_host_signal_and_exits_0(version: str, tmp_sock_dir: str) -> None:
    results = {}
    for name, launch in both(version):
        path = f"{tmp_sock_dir}/{name}.sock"
        with launch(["-qmp", f"unix:{path},server=on,wait=off"], path) as process:
            with Wire(path) as wire:
                wire.greeting()
                wire.negotiate()
                process.send_signal(signal.SIGTERM)
                received = normalize(wire.read(quiet=3))
            status = process.wait(10)
            assert process.stderr is not None
            stderr = prog_neutral(process.stderr.read())
        results[name] = (received, status, stderr, os.path.exists(path))

    assert b'"reason": "host-signal"' in results["qemu"][0]
    assert results["reference"] == results["qemu"]


def test_wait_on_blocks_until_a_client_connects(version: str, tmp_sock_dir: str) -> None:
    results = {}
    for name, launch in both(version):
        path = f"{tmp_sock_dir}/{name}.sock"
        second = f"{tmp_sock_dir}/{name}-2.sock"
        args = ["-qmp", f"unix:{path},server", "-qmp", f"unix:{second},server=on,wait=off"]
        with launch(args, path) as process:
            time.sleep(0.5)
            second_before_client = os.path.exists(second)
            with Wire(path) as wire:
                greeting = wire.greeting()
                wire.negotiate()
                wire.send(b'{"execute": "quit"}')
                wire.read(quiet=3)
            process.wait(10)
            assert process.stderr is not None
            stderr = prog_neutral(process.stderr.read()).replace(path.encode(), b"PATH")
        results[name] = (second_before_client, greeting.startswith(b'{"QMP"'), stderr)

    assert results["qemu"][0] is False
    assert results["reference"] == results["qemu"]


def test_second_client_waits_until_first_leaves(version: str, tmp_sock_dir: str) -> None:
    results = {}
    for name, launch in both(version):
        path = f"{tmp_sock_dir}/{name}.sock"
        with launch(["-qmp", f"unix:{path},server=on,wait=off"], path):
            first = Wire(path)
            first.greeting()
            with Wire(path) as second:
                before = second.read(quiet=0.5)
                second.send(b'{"execute": "qmp_capabilities"}\n')
                queued = second.read(quiet=0.5)
                first.close()
                after = second.read(quiet=1)
        results[name] = (
            before,
            queued,
            after.count(b"\r\n"),
            after.endswith(b'{"return": {}}\r\n'),
        )

    assert results["qemu"] == (b"", b"", 2, True)
    assert results["reference"] == results["qemu"]


def test_client_gone_mid_command_leaves_server_serving(version: str, tmp_sock_dir: str) -> None:
    results = {}
    for name, launch in both(version):
        path = f"{tmp_sock_dir}/{name}.sock"
        with launch(["-qmp", f"unix:{path},server=on,wait=off"], path):
            with Wire(path) as wire:
                wire.greeting()
                wire.send(b'{"execute": "qmp_capabilities"}{"execute": "query-block"}{"exec')
            with Wire(path) as wire:
                greeting = wire.greeting()
                wire.negotiate()
                wire.send(b'{"execute": "query-block"}')
                results[name] = (greeting.startswith(b'{"QMP"'), wire.read_lines(1))

    assert results["qemu"] == (True, b'{"return": []}\r\n')
    assert results["reference"] == results["qemu"]


def test_mon_pretty_output_same_as_qemu(version: str, tmp_sock_dir: str) -> None:
    results = {}
    for name, launch in both(version):
        path = f"{tmp_sock_dir}/{name}.sock"
        args = [
            "-chardev",
            f"socket,id=m0,path={path},server=on,wait=off",
            "-mon",
            "chardev=m0,mode=control,pretty=on",
        ]
        with launch(args, path), Wire(path) as wire:
            wire.greeting()
            steps = [
                b'{"execute": "qmp_capabilities", "id": [1, {}]}',
                b'{"execute": "query-block", "id": {"a": [], "b": "x"}}',
                b'{"execute": "nope"}',
            ]
            received = []
            for step in steps:
                wire.send(step)
                received.append(wire.read())
        results[name] = received

    assert results["qemu"][0] == (
        b'{\r\n    "return": {\r\n    },\r\n    "id": [\r\n        1,\r\n        {\r\n'
        b"        }\r\n    ]\r\n}\r\n"
    )
    assert results["reference"] == results["qemu"]


def test_qmp_stdio_same_as_qemu(version: str) -> None:
    results = {}
    for name, launch in both(version):
        with launch(["-qmp", "stdio"]) as process:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(b'{"execute": "qmp_capabilities"}\n{"execute": "nope", "id": 1}\n')
            process.stdin.write(b'{"execute": "quit"}\n')
            process.stdin.flush()
            out = normalize(process.stdout.read())
            process.wait(10)
        results[name] = (out.split(b"\r\n", 1)[1], process.returncode)

    assert results["reference"] == results["qemu"]


@pytest.mark.parametrize(
    "args",
    [
        ["-foo"],
        ["-qmp"],
        ["-M", "foo"],
        ["-mon", "chardev=nope,mode=control"],
        ["-blockdev", "driver=null-co,node-name"],
        ["-blockdev", "driver=null-co,node-name=a,1x=2"],
        ["-blockdev", "driver=null-co,node-name=a,a.b=1,a=2"],
        ["-blockdev", "driver=null-co,node-name=a,foo.1=x"],
        ["-blockdev", "driver=null-co,node-name=a,read-only=maybe"],
        ["-blockdev", "driver=null-co,node-name=a,size=x"],
        ["-blockdev", '{"driver":"null-co"'],
    ],
    ids=" ".join,
)
def test_command_line_error_same_as_qemu(version: str, args: list[str]) -> None:
    results = {}
    for name, launch in both(version):
        with launch(args) as process:
            status = process.wait(30)
            assert process.stderr is not None
            results[name] = (status, prog_neutral(process.stderr.read()))

    assert results["qemu"][0] == 1
    assert results["reference"] == results["qemu"]


def test_version_names_the_emulated_version(version: str) -> None:
    with reference_process(version, ["-version"]) as process:
        assert process.stdout is not None
        out = process.stdout.read().decode()
        status = process.wait(30)

    micro = {"10.0": "10.0.2", "7.2": "7.2.22"}[version]
    assert status == 0
    assert out.startswith(f"QEMU emulator version {micro} (qmp-reference)\nCopyright (c) 2003-")


def test_tcp_monitor_serves_qmp(version: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with reference_process(version, ["-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"]):
        deadline = time.monotonic() + 15
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with sock:
            greeting = sock.recv(65536)

    assert greeting.startswith(b'{"QMP": {"version": {"qemu": ')
