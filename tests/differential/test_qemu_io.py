"""qemu-io through ``human-monitor-command``: the same command lines on real QEMU and on the
reference print the same lines (timings normalized) and leave the same image bytes.

The lines cover qemu-io's number syntax (suffixes, hex, fractions, octal-looking decimals,
overflow), pattern bytes, GNU getopt (clustered flags, attached arguments, options after the
operands, ``--``), argument counts, flag combinations, the request size limit, pattern checks
with ``-s``/``-l``, reads and writes past the end, and commands qemu-io does not have. Every line
that writes is followed by reads that verify what it wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from qemu.qmp import ConnectError
from qemu.qmp.legacy import QEMUMonitorProtocol

from conformance.endpoints import QEMU_7_2_ARGS, QEMU_7_2_ENV, qemu_binaries, qemu_binary_available
from reference import Machine

LINES = [
    "write -P 0x5a 3M+4k 64k",
    "write 0 -1",
    "write abc 64k",
    "write 0 64q",
    "write 0 0x",
    "write 0x1k 4k",
    "write 1e3 512",
    "write 0 1.5",
    "write 0 99999999999999999999",
    "write 0 9E",
    "write 0 3G",
    "read 0 3G",
    "discard 0 3G",
    "write 010 4k",
    "read -P 0xcd 10 4k",
    "write -P 0x21 1.5k 512",
    "read -P 0x21 1536 512",
    "write -P 0x22 0x1000 4k",
    "read -P 0x22 4k 4k",
    "write -P 0x23 +8k 4k",
    "read -P 0x23 8k 4k",
    "write -P 0x24 0 0.5k",
    "write -P 0x25 4b 4B",
    "read -v 0 16",
    "write -P 0x26 0 1.0001k",
    "read -P 0x26 0 1k",
    "write -P 300 0 4k",
    "write -P zz 0 4k",
    "write -P -1 0 4k",
    "write -P 010 64k 4k",
    "read -P 8 64k 4k",
    "write -P 0x5 0 4k -P 0x6",
    "read -P 6 0 4k",
    "write 0 4k -P 0x27",
    "read -P 0x27 0 4k",
    "write -P0x28 0 4k",
    "read -qP 0x28 0 4k",
    "write -qP 0x29 0 4k",
    "read -P 0x29 -s 1k -l 1k 0 4k",
    "read -P 0x29 -s 5k 0 4k",
    "read -P 0 -l 99999 0 4k",
    "read -s 1 0 4k",
    "read -P 0x28 0 4k",
    "write -z 0 4k",
    "read -P 0 0 4k",
    "write -z -u 8k 4k",
    "write -u 0 4k",
    "write -P 0x5a -z 0 4k",
    "write -f -P 0x2a 12k 4k",
    "read -CP 0x2a 12k 4k",
    "write -r -P 0x2b 16k 4k",
    "read -r -P 0x2b 16k 4k",
    "write -- 20k 512",
    "read -P 0xcd 20k 512",
    "write -Q 0 4k",
    "read -a 0 4k",
    "discard -x 0 4k",
    "discard 0 4k 5",
    "discard -q 0 64k",
    "write -P 0x5a 4M 512",
    "write -P 0x5a 4095k 4k",
    "read 4M 512",
    "read 0 0",
    "write 0 0",
    "write -P 5",
    "write '0' 4k",
    "write 0",
    "read -P 0x5a 0",
    "write 0 4k 5",
    "flush x",
    "flush",
    "frob 1",
]

_TIMING = re.compile(r"^(.*ops); \d+\.\d+ sec \(.*\)$")
_CSV = re.compile(r"^(\d+,\d+),.*$")


def _normalized(output: str) -> list[str]:
    """qemu-io's output lines without timings (the one accidental part)."""
    lines = []
    for line in output.splitlines():
        lines.append(_CSV.sub(r"\1", _TIMING.sub(r"\1", line)))
    return lines


def _hmp(line: str) -> dict[str, object]:
    node, _, command = line.partition(": ") if ": " in line else ("disk0", "", line)
    return {"command-line": f'qemu-io {node} "{command}"'}


def _on_qemu(
    version: str,
    image: Path,
    blockdevs: list[dict[str, object]] | None = None,
    lines: list[str] = LINES,
) -> tuple[list[str], list[object]]:
    binary = qemu_binaries()[version]
    if not qemu_binary_available(binary):
        pytest.skip(f"QEMU {version} binary not found: {binary}")
    env = dict(os.environ)
    argv = [binary]
    if binary.startswith("/opt/qemu-7.2/"):
        env.update(QEMU_7_2_ENV)
        argv += QEMU_7_2_ARGS
    sock = image.parent / "qmp.sock"
    out = image.parent / "stdout"
    argv += ["-M", "none", "-nodefaults", "-display", "none"]
    argv += ["-qmp", f"unix:{sock},server=on,wait=off"]
    with out.open("wb") as stdout:
        process = subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        qmp = QEMUMonitorProtocol(str(sock))
        while True:
            # The socket file appears before QEMU listens on it: retry until it accepts.
            try:
                qmp.connect()
                break
            except ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
                qmp = QEMUMonitorProtocol(str(sock))
        for blockdev in blockdevs or [_blockdev(image)]:
            qmp.cmd_raw("blockdev-add", blockdev)
        replies = [qmp.cmd_raw("human-monitor-command", _hmp(line)) for line in lines]
        # QEMU may close the socket before its reply to quit is read (then closing raises too).
        with contextlib.suppress(EOFError):
            qmp.cmd_raw("quit")
        with contextlib.suppress(EOFError):
            qmp.close()
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return _normalized(out.read_text()), [r.get("return", r.get("error")) for r in replies]


def _on_reference(
    version: str,
    image: Path,
    capsys: pytest.CaptureFixture[str],
    blockdevs: list[dict[str, object]] | None = None,
    lines: list[str] = LINES,
) -> tuple[list[str], list[object]]:
    machine = Machine(version, echo_qemu_io=True)
    capsys.readouterr()
    for blockdev in blockdevs or [_blockdev(image)]:
        assert "return" in machine.execute("blockdev-add", blockdev)
    replies = [machine.execute("human-monitor-command", _hmp(line)) for line in lines]
    machine.execute("quit")
    machine.close()
    return _normalized(capsys.readouterr().out), [r.get("return", r.get("error")) for r in replies]


def _blockdev(image: Path) -> dict[str, object]:
    file = {"driver": "file", "filename": str(image)}
    return {"driver": "qcow2", "node-name": "disk0", "file": file}


def _image_digest(image: Path) -> str:
    raw = image.with_suffix(".raw")
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True, timeout=60
    )
    return hashlib.sha256(raw.read_bytes()).hexdigest()


@pytest.mark.qemu
@pytest.mark.parametrize("version", ["10.0", "7.2"])
def test_qemu_io_lines_print_and_write_as_on_qemu(
    version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        images = [Path(a) / "a.qcow2", Path(b) / "a.qcow2"]
        for image in images:
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(image), "4M"], check=True
            )
        qemu_out, qemu_replies = _on_qemu(version, images[0])
        ref_out, ref_replies = _on_reference(version, images[1], capsys)
        assert ref_replies == qemu_replies
        assert ref_out == qemu_out
        assert _image_digest(images[1]) == _image_digest(images[0])
        # The sequence exercises what it claims: parse errors, refusals and verified data.
        assert any(line.startswith("Parsing error: argument too large") for line in qemu_out)
        assert any("is not a valid pattern byte" in line for line in qemu_out)


#: null-co nodes: without ``read-zeroes`` (QEMU's default) a read leaves the buffer alone, and
#: qemu-io fills its buffers with 0xab; with it, zeros. Through raw and blkdebug alike; and a
#: blkdebug rule between two raw nodes fires once the upper one's read arms it.
NULL_BLOCKDEVS: list[dict[str, object]] = [
    {"driver": "null-co", "node-name": "n0", "size": 1048576},
    {"driver": "null-co", "node-name": "z0", "size": 1048576, "read-zeroes": True},
    {"driver": "raw", "node-name": "r0", "file": {"driver": "null-co", "read-zeroes": False}},
    {"driver": "blkdebug", "node-name": "d0", "image": "n0"},
    # raw over blkdebug over a format node: raw's read_aio arms the rule, the next read fails.
    {
        "driver": "raw",
        "node-name": "rd",
        "file": {
            "driver": "blkdebug",
            "inject-error": [{"event": "read_aio", "once": True}],
            "image": {"driver": "raw", "file": {"driver": "null-co", "read-zeroes": True}},
        },
    },
]
NULL_LINES = [
    "n0: read -v 0 32",
    "n0: read -P 0xab 0 4k",
    "n0: read -P 0 0 4k",
    "n0: write -P 0x5a 0 4k",
    "n0: read -P 0xab 0 4k",
    "z0: read -v 0 32",
    "z0: read -P 0 0 4k",
    "z0: read -P 0xab 0 4k",
    "r0: read -v 512 16",
    "r0: read -P 0xab 0 64k",
    "d0: read -v 0 16",
    "rd: read -P 0 0 4k",
    "rd: read -P 0 0 4k",
    "rd: write -P 0x5a 0 4k",
]


@pytest.mark.qemu
@pytest.mark.parametrize("version", ["10.0", "7.2"])
def test_null_co_reads_show_the_buffer_qemu_io_filled(
    version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with tempfile.TemporaryDirectory() as a:
        image = Path(a) / "unused"
        qemu_out, qemu_replies = _on_qemu(version, image, NULL_BLOCKDEVS, NULL_LINES)
        ref_out, ref_replies = _on_reference(version, image, capsys, NULL_BLOCKDEVS, NULL_LINES)
        assert ref_replies == qemu_replies
        assert ref_out == qemu_out
        assert any(line.startswith("00000000:  ab ab") for line in qemu_out)
        assert any(line.startswith("Pattern verification failed") for line in qemu_out)
        assert "read failed: Input/output error" in qemu_out
