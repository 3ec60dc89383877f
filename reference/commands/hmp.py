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

from reference import _core, jobs, qemu_io
from reference.block import strerror
from reference.commands import command
from reference.errors import QMPError

#: qemu-io fills every buffer it allocates with this byte (``qemu_io_alloc``): a driver that
#: leaves a read buffer alone (null-co without ``read-zeroes``) shows it.
QEMU_IO_BUFFER_FILL = 0xAB

if TYPE_CHECKING:
    from reference.machine import Machine

_UNITS = [
    (1 << 60, "EiB"),
    (1 << 50, "PiB"),
    (1 << 40, "TiB"),
    (1 << 30, "GiB"),
    (1 << 20, "MiB"),
    (1 << 10, "KiB"),
]


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


def _report(verb: str, request: qemu_io.Request) -> str:
    """qemu-io's report after a successful request (``-q``: none; ``-C``: one CSV line)."""
    if request.quiet:
        return ""
    count = request.count
    if request.csv:
        return f"{count},1,0:00:00.00,0.000,0.000\n"
    return (
        f"{verb} {count}/{count} bytes at offset {request.offset}\n"
        f"{cvtstr(count)}, 1 ops; 00.00 sec ({cvtstr(count)}/sec and 1.0000 ops/sec)\n"
    )


def _dump(data: bytes, offset: int) -> str:
    """``read -v``: 16 bytes a line, hex then the printable ones."""
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i : i + 16]
        text = "".join(chr(b) if chr(b).isalnum() and b < 0x80 else "." for b in chunk)
        lines.append(f"{offset + i:08x}:  {''.join(f'{b:02x} ' for b in chunk)} {text}\n")
    return "".join(lines)


def run_qemu_io(machine: Machine, node: str, line: str, warnings: list[str]) -> str:
    """Runs one qemu-io command on ``node``; returns what qemu-io prints on stdout and appends
    what QEMU says in the monitor's reply to ``warnings``."""
    request = qemu_io.parse(line, machine.profile.qemu_io, warnings)
    if isinstance(request, str):
        return request
    graph = machine.layer.graph
    verb, offset, count = request.verb, request.offset, request.count
    try:
        if verb == "flush":
            graph.flush(node)
            return ""
        if verb == "write":
            if request.zeroes:
                # ``-u`` lets the zeroes unmap (10.0: only on a node that passes discards);
                # a qcow2 cluster keeps its allocation under the zero flag otherwise.
                may_unmap = request.unmap and (
                    node in machine.layer.unmap
                    or not machine.profile.zeroes_unmap_needs_discard_unmap
                )
                graph.write_zeroes(node, offset, count, may_unmap)
            else:
                pattern = 0xCD if request.pattern is None else request.pattern
                graph.write(node, offset, bytes([pattern]) * count)
            return _report("wrote", request)
        if verb == "discard":
            if node in machine.layer.unmap:
                graph.discard(node, offset, count)
            return _report("discard", request)
        data = graph.read(node, offset, count, fill=QEMU_IO_BUFFER_FILL)
    except _core.ImageError as e:
        _, errno = e.args
        return f"{verb} failed: {strerror(errno)}\n"
    out = ""
    if request.pattern is not None:
        start, length = request.pattern_offset, request.pattern_count or 0
        if data[start : start + length] != bytes([request.pattern]) * length:
            out = f"Pattern verification failed at offset {offset + start}, {length} bytes\n"
    if request.dump and not request.quiet:
        out += _dump(data, offset)
    return out + _report("read", request)


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
    if node in layer.crashing_reads and line.split()[:1] == ["read"]:
        raise QMPError(
            f"Reads through copy-on-read node '{node}' whose bottom is its own file child "
            "crash QEMU; refused"
        )
    # A node name gets a temporary BlockBackend, attached and detached (graph changes).
    temporary = layer.backend_root(device) is None
    locks = jobs.LOCKS_BLOCK_BACKEND if temporary else 0
    machine.emit_all(jobs.graph_locks(layer.profile, layer.graph, locks))
    if info.read_only and line.split()[:1] in (["write"], ["discard"]):
        return "Block node is read-only\r\n"
    warnings: list[str] = []
    output = run_qemu_io(machine, node, line, warnings)
    machine.emit_all(jobs.graph_locks(layer.profile, layer.graph, locks))
    if machine.echo_qemu_io and output:
        sys.stdout.write(output)
        sys.stdout.flush()
    return "".join(warnings)
