"""Measure what a qcow2 node writes to its file node, as a dirty bitmap there sees it.

Creates a qcow2 image, opens it over a separately added ``file`` node with a 512-byte
granularity bitmap on that node, runs the given steps and prints, after each, the bitmap's
count and sha256 (and, on real QEMU, the dirty extents, read through an NBD export of a copy of
the bitmap). Used to find when QEMU's write-back metadata cache writes L2 tables and refcount
blocks (``rust/blockcore/src/format/qcow2/cache.rs``).

    python scripts/measure-metadata-writes.py --target qemu:10.0 \\
        'io:write -P 0x5a 0 64k' clear 'io:flush'
    python scripts/measure-metadata-writes.py --target reference:10.0 \\
        --create-opt cluster_size=512 --size 1M 'io:write 0 120k' clear \\
        'qmp:blockdev-del:{"node-name": "disk0"}'

Steps: ``io:CMD`` (``qemu-io disk0 "CMD"`` through ``human-monitor-command``), ``qmp:NAME:JSON``
(a command and its arguments), ``clear`` (clears the bitmap; prints nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

QEMU_7_2 = "/opt/qemu-7.2/usr/bin/qemu-system-x86_64"


class Monitor(Protocol):
    """Runs one QMP command; returns its ``return`` or its ``error``."""

    def cmd(self, name: str, args: dict[str, Any]) -> Any: ...

    def close(self) -> None: ...


class QemuMonitor:
    """Real QEMU (no guest) over a QMP unix socket."""

    def __init__(self, version: str, sock: Path) -> None:
        argv = ["qemu-system-x86_64"]
        env = dict(os.environ)
        if version == "7.2":
            argv = [QEMU_7_2, "-L", "/opt/qemu-7.2/usr/share/qemu"]
            env["QEMU_MODULE_DIR"] = "/opt/qemu-7.2/usr/lib/x86_64-linux-gnu/qemu"
        argv += ["-M", "none", "-nodefaults", "-display", "none"]
        argv += ["-qmp", f"unix:{sock},server=on,wait=off"]
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(500):
            if sock.exists():
                break
            time.sleep(0.01)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(sock))
        self.file = self.sock.makefile("rw")
        self.file.readline()
        self.cmd("qmp_capabilities", {})

    def cmd(self, name: str, args: dict[str, Any]) -> Any:
        self.file.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" not in reply:
                return reply.get("return", reply.get("error"))

    def close(self) -> None:
        self.cmd("quit", {})
        self.proc.wait(10)


class ReferenceMonitor:
    """The reference, in process."""

    def __init__(self, version: str) -> None:
        from reference import Machine  # noqa: PLC0415 - only this target needs it

        self.machine = Machine(version)

    def cmd(self, name: str, args: dict[str, Any]) -> Any:
        reply = self.machine.execute(name, args)
        return reply.get("return", reply.get("error"))

    def close(self) -> None:
        return None


def extents(mon: Monitor, workdir: Path) -> list[tuple[int, int]]:
    """The dirty extents of ``file0``'s bitmap ``b`` (real QEMU: a copy on a null-co node of
    the same length, exported over NBD and read with ``qemu-img map``)."""
    nodes = mon.cmd("query-named-block-nodes", {})
    size = next(n["image"]["virtual-size"] for n in nodes if n["node-name"] == "file0")
    mon.cmd("blockdev-add", {"driver": "null-co", "node-name": "cp", "size": size})
    # Disabled: an NBD export refuses to publish a bitmap that may still change.
    copy = {"node": "cp", "name": "c", "granularity": 512, "disabled": True}
    mon.cmd("block-dirty-bitmap-add", copy)
    mon.cmd(
        "block-dirty-bitmap-merge",
        {"node": "cp", "target": "c", "bitmaps": [{"node": "file0", "name": "b"}]},
    )
    sock = workdir / "nbd.sock"
    mon.cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(sock)}}})
    mon.cmd("block-export-add", {"type": "nbd", "id": "e", "node-name": "cp", "bitmaps": ["c"]})
    opts = f"driver=nbd,server.type=unix,server.path={sock},export=cp"
    opts += ",x-dirty-bitmap=qemu:dirty-bitmap:c"
    out = subprocess.run(
        ["qemu-img", "map", "--output=json", "--image-opts", opts],
        capture_output=True,
        text=True,
        check=True,
    )
    mon.cmd("block-export-del", {"id": "e"})
    time.sleep(0.05)
    mon.cmd("nbd-server-stop", {})
    mon.cmd("blockdev-del", {"node-name": "cp"})
    # x-dirty-bitmap reports dirty areas as holes.
    return [(e["start"], e["length"]) for e in json.loads(out.stdout) if not e["data"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="qemu:10.0", help="qemu:V or reference:V")
    parser.add_argument("--size", default="64M")
    parser.add_argument("--create-opt", default="", help="qemu-img create -o options")
    parser.add_argument("--file-options", default="{}", help="more file node options (JSON)")
    parser.add_argument("--qcow2-options", default="{}", help="more qcow2 node options (JSON)")
    parser.add_argument("steps", nargs="+")
    ns = parser.parse_args()
    kind, version = ns.target.split(":")
    workdir = Path(tempfile.mkdtemp())
    image = workdir / "a.qcow2"
    create = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if ns.create_opt:
        create += ["-o", ns.create_opt]
    subprocess.run([*create, str(image), ns.size], check=True)
    mon: Monitor
    mon = (
        QemuMonitor(version, workdir / "qmp.sock") if kind == "qemu" else ReferenceMonitor(version)
    )
    try:
        file0 = {"driver": "file", "node-name": "file0", "filename": str(image)}
        disk0 = {"driver": "qcow2", "node-name": "disk0", "file": "file0"}
        mon.cmd("blockdev-add", file0 | json.loads(ns.file_options))
        mon.cmd("blockdev-add", disk0 | json.loads(ns.qcow2_options))
        mon.cmd("block-dirty-bitmap-add", {"node": "file0", "name": "b", "granularity": 512})
        for step in ns.steps:
            if step == "clear":
                mon.cmd("block-dirty-bitmap-clear", {"node": "file0", "name": "b"})
                continue
            if step.startswith("io:"):
                line = f'qemu-io disk0 "{step[3:]}"'
                reply = mon.cmd("human-monitor-command", {"command-line": line})
            else:
                _, name, args = step.split(":", 2)
                reply = mon.cmd(name, json.loads(args))
            if reply not in ({}, ""):
                print(f"  {reply}")
            nodes = mon.cmd("query-named-block-nodes", {})
            count = next(
                b["count"]
                for n in nodes
                if n["node-name"] == "file0"
                for b in n.get("dirty-bitmaps", [])
            )
            digest = mon.cmd("x-debug-block-dirty-bitmap-sha256", {"node": "file0", "name": "b"})
            shown = ""
            if kind == "qemu" and count:
                shown = " ".join(f"{s:#x}+{n:#x}" for s, n in extents(mon, workdir))
            print(f"{step:40} count={count:<8} sha256={digest['sha256'][:12]} {shown}")
    finally:
        mon.close()


if __name__ == "__main__":
    main()
