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
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from conformance.endpoints import Endpoint, LaunchOptions, parse_target


def cmd(endpoint: Endpoint, name: str, args: dict[str, Any]) -> Any:
    """Runs one QMP command; returns its ``return`` or its ``error``."""
    reply = endpoint.execute(name, args)
    return reply.get("return", reply.get("error"))


def extents(mon: Endpoint, workdir: Path) -> list[tuple[int, int]]:
    """The dirty extents of ``file0``'s bitmap ``b`` (real QEMU: a copy on a null-co node of
    the same length, exported over NBD and read with ``qemu-img map``)."""
    nodes = cmd(mon, "query-named-block-nodes", {})
    size = next(n["image"]["virtual-size"] for n in nodes if n["node-name"] == "file0")
    cmd(mon, "blockdev-add", {"driver": "null-co", "node-name": "cp", "size": size})
    # Disabled: an NBD export refuses to publish a bitmap that may still change.
    copy = {"node": "cp", "name": "c", "granularity": 512, "disabled": True}
    cmd(mon, "block-dirty-bitmap-add", copy)
    cmd(
        mon,
        "block-dirty-bitmap-merge",
        {"node": "cp", "target": "c", "bitmaps": [{"node": "file0", "name": "b"}]},
    )
    sock = workdir / "nbd.sock"
    cmd(mon, "nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(sock)}}})
    cmd(mon, "block-export-add", {"type": "nbd", "id": "e", "node-name": "cp", "bitmaps": ["c"]})
    opts = f"driver=nbd,server.type=unix,server.path={sock},export=cp"
    opts += ",x-dirty-bitmap=qemu:dirty-bitmap:c"
    out = subprocess.run(
        ["qemu-img", "map", "--output=json", "--image-opts", opts],
        capture_output=True,
        text=True,
        check=True,
    )
    cmd(mon, "block-export-del", {"id": "e"})
    time.sleep(0.05)
    cmd(mon, "nbd-server-stop", {})
    cmd(mon, "blockdev-del", {"node-name": "cp"})
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
    kind = ns.target.split(":")[0]
    workdir = Path(tempfile.mkdtemp())
    image = workdir / "a.qcow2"
    create = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if ns.create_opt:
        create += ["-o", ns.create_opt]
    subprocess.run([*create, str(image), ns.size], check=True)
    with parse_target(ns.target).start(workdir, LaunchOptions()) as mon:
        file0 = {"driver": "file", "node-name": "file0", "filename": str(image)}
        disk0 = {"driver": "qcow2", "node-name": "disk0", "file": "file0"}
        cmd(mon, "blockdev-add", file0 | json.loads(ns.file_options))
        cmd(mon, "blockdev-add", disk0 | json.loads(ns.qcow2_options))
        cmd(mon, "block-dirty-bitmap-add", {"node": "file0", "name": "b", "granularity": 512})
        for step in ns.steps:
            if step == "clear":
                cmd(mon, "block-dirty-bitmap-clear", {"node": "file0", "name": "b"})
                continue
            if step.startswith("io:"):
                line = f'qemu-io disk0 "{step[3:]}"'
                reply = cmd(mon, "human-monitor-command", {"command-line": line})
            else:
                _, name, args = step.split(":", 2)
                reply = cmd(mon, name, json.loads(args))
            if reply not in ({}, ""):
                print(f"  {reply}")
            nodes = cmd(mon, "query-named-block-nodes", {})
            count = next(
                b["count"]
                for n in nodes
                if n["node-name"] == "file0"
                for b in n.get("dirty-bitmaps", [])
            )
            digest = cmd(mon, "x-debug-block-dirty-bitmap-sha256", {"node": "file0", "name": "b"})
            shown = ""
            if kind == "qemu" and count:
                shown = " ".join(f"{s:#x}+{n:#x}" for s, n in extents(mon, workdir))
            print(f"{step:40} count={count:<8} sha256={digest['sha256'][:12]} {shown}")


if __name__ == "__main__":
    main()
