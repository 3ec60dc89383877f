"""``human-monitor-command`` with the ``qemu-io`` subset tests use for guest-like I/O.

What real QEMU does (confirmed on 7.2 and 10.0): qemu-io's own output (``wrote ...``, ``read
...``, ``write failed: ...``, pattern mismatches) goes to QEMU's stdout, and the command returns
``""``; only HMP-level failures (unknown node, read-only node) come back in the return string,
CRLF-terminated. We print qemu-io's output to our stdout likewise when ``echo_qemu_io`` is set.
"""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING, Any

from reference import _core
from reference.block import strerror
from reference.commands import command
from reference.errors import QMPError

if TYPE_CHECKING:
    from reference.machine import Machine

_SUFFIXES = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_UNITS = [
    (1 << 60, "EiB"),
    (1 << 50, "PiB"),
    (1 << 40, "TiB"),
    (1 << 30, "GiB"),
    (1 << 20, "MiB"),
    (1 << 10, "KiB"),
]


def cvtnum(text: str) -> int:
    """qemu-io's number syntax: decimal/hex/octal with an optional k/M/G/T/P suffix."""
    suffix = text[-1:].lower()
    scale = _SUFFIXES.get(suffix, 1)
    digits = text[:-1] if suffix in _SUFFIXES else text
    return int(digits, 0) * scale


def cvtstr(value: float) -> str:
    """qemu-io's size rendering: ``64 KiB``, ``1.500 KiB``, ``5 bytes``."""
    suffix = "bytes"
    for unit, name in _UNITS:
        if value >= unit:
            value, suffix = value / unit, name
            break
    text = f"{value:f}"
    if ".000" in text:
        return f"{text.split('.000', maxsplit=1)[0]} {suffix}"
    return f"{text[:-3]} {suffix}"


def _report(verb: str, offset: int, count: int) -> str:
    return (
        f"{verb} {count}/{count} bytes at offset {offset}\n"
        f"{cvtstr(count)}, 1 ops; 00.00 sec ({cvtstr(count)}/sec and 1.0000 ops/sec)\n"
    )


def qemu_io(machine: Machine, node: str, line: str) -> str:
    """Runs one qemu-io command on ``node``; returns what qemu-io prints."""
    argv = shlex.split(line)
    if not argv:
        return ""
    verb, rest = argv[0], argv[1:]
    pattern: int | None = None
    zeroes = False
    while rest and rest[0].startswith("-") and len(rest[0]) > 1 and not rest[0][1].isdigit():
        flag = rest.pop(0)
        if flag == "-P" and rest:
            pattern = cvtnum(rest.pop(0)) & 0xFF
        elif flag == "-z":
            zeroes = True
    minimum = {"write": 2, "read": 2, "discard": 2, "flush": 0}.get(verb)
    if minimum is None:
        return f'command "{verb}" not found\n'
    if len(rest) < minimum:
        return f"bad argument count {len(rest)} to {verb}, expected at least {minimum} arguments\n"
    graph = machine.layer.graph
    try:
        if verb == "flush":
            graph.flush(node)
            return ""
        offset, count = cvtnum(rest[0]), cvtnum(rest[1])
        if verb == "write":
            if zeroes:
                graph.write_zeroes(node, offset, count)
            else:
                graph.write(node, offset, bytes([0xCD if pattern is None else pattern]) * count)
            return _report("wrote", offset, count)
        if verb == "discard":
            if node in machine.layer.unmap:
                graph.discard(node, offset, count)
            return _report("discard", offset, count)
        data = graph.read(node, offset, count)
        out = ""
        if pattern is not None and data != bytes([pattern]) * count:
            out = f"Pattern verification failed at offset {offset}, {count} bytes\n"
        return out + _report("read", offset, count)
    except _core.ImageError as e:
        _, errno = e.args
        return f"{verb} failed: {strerror(errno)}\n"


@command("human-monitor-command")
def human_monitor_command(machine: Machine, args: dict[str, Any]) -> str:
    """The HMP subset: ``qemu-io [-d] DEVICE "COMMAND"`` and ``info version``."""
    try:
        argv = shlex.split(args["command-line"])
    except ValueError as e:
        raise QMPError(f"Invalid command line: {e}") from None
    if argv[:2] == ["info", "version"]:
        return f"{'.'.join(map(str, machine.profile.version))}{machine.profile.package}\r\n"
    if not argv or argv[0] != "qemu-io":
        return f"unknown command: '{argv[0] if argv else ''}'\r\n"
    words = [w for w in argv[1:] if w != "-d"]
    if len(words) != 2:
        return "qemu-io: expects a device and a command\r\n"
    device, line = words
    layer = machine.layer
    try:
        node = layer.backend_root(device) or layer.device_or_node(None, device)
    except QMPError as e:
        return f"Error: {e.desc}\r\n"
    info = layer.graph.node(node)
    assert info is not None
    if node in layer.crashing_reads and shlex.split(line)[:1] == ["read"]:
        raise QMPError(
            f"Reads through copy-on-read node '{node}' whose bottom is its own file child "
            "crash QEMU; refused"
        )
    if info.read_only and shlex.split(line)[:1] in (["write"], ["discard"]):
        return "Block node is read-only\r\n"
    output = qemu_io(machine, node, line)
    if machine.echo_qemu_io and output:
        sys.stdout.write(output)
        sys.stdout.flush()
    return ""
