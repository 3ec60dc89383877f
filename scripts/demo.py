"""Starts ``qmp-reference`` on a unix socket and runs a demo transaction with ``qemu.qmp``."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="qmp-demo-"))
    image, sock = work / "disk.qcow2", work / "qmp.sock"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "reference.cli", "-M", "none", "-nodefaults", "-display", "none",
         "-qmp", f"unix:{sock},server=on,wait=off"], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        qmp = QEMUMonitorProtocol(str(sock))
        print("greeting:", json.dumps(qmp.connect(negotiate=True)))
        steps = [
            ("blockdev-add", {"driver": "qcow2", "node-name": "disk0",
                              "file": {"driver": "file", "filename": str(image)}}),
            ("block-dirty-bitmap-add", {"node": "disk0", "name": "b0"}),
            ("human-monitor-command", {"command-line": 'qemu-io disk0 "write -P 0x5a 0 64k"'}),
            ("transaction", {"actions": [
                {"type": "block-dirty-bitmap-clear", "data": {"node": "disk0", "name": "b0"}},
                {"type": "block-dirty-bitmap-add", "data": {"node": "disk0", "name": "b1"}},
                {"type": "abort", "data": {}}]}),
            ("query-named-block-nodes", {"flat": True}),
            ("transaction", {"actions": [
                {"type": "block-dirty-bitmap-clear", "data": {"node": "disk0", "name": "b0"}}]}),
            ("query-named-block-nodes", {"flat": True}),
        ]  # fmt: skip
        for command, args in steps:
            reply = qmp.cmd_raw(command, args)
            if command == "query-named-block-nodes":
                reply = {n["node-name"]: n.get("dirty-bitmaps", []) for n in reply["return"]}
            print(f"-> {command} {json.dumps(args)}\n<- {json.dumps(reply)}")
        qmp.cmd("quit")
        qmp.close()
    finally:
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
