"""Benchmarks of issue 2, printed side by side with real QEMU in one run.

    python benches/bench_core.py [--qemu BINARY] [--seconds S]

1. Dirty bitmap on a 1 TiB disk at 64 KiB granularity (16 Mi bits): sha256, merge, count.
   QEMU column: ``x-debug-block-dirty-bitmap-sha256`` and ``block-dirty-bitmap-merge`` on a
   1 TiB ``null-co`` node through QMP (includes one QMP round trip), ``count`` via
   ``query-named-block-nodes``.
2. Transactions per second (add + remove of a bitmap in one transaction, then a standalone
   remove to reset): through the in-process API, through the reference's QMP socket
   (``qmp-reference``), and through QEMU's QMP socket.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from reference import Machine
from reference._core import Bitmap

TIB = 1 << 40
GRAN = 64 << 10


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    """Best wall time of ``repeat`` runs, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def rate(step: Callable[[], object], seconds: float) -> float:
    """Operations per second of ``step`` over about ``seconds``."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


@contextlib.contextmanager
def qmp_process(
    argv: list[str], env: dict[str, str] | None = None
) -> Iterator[QEMUMonitorProtocol]:
    """Starts ``argv`` with a QMP unix socket and yields a connected legacy client."""
    tmp = Path(tempfile.mkdtemp())
    sock = tmp / "qmp.sock"
    proc = subprocess.Popen(
        [*argv, "-M", "none", "-nodefaults", "-display", "none",
         "-qmp", f"unix:{sock},server=on,wait=off"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        qmp = QEMUMonitorProtocol(str(sock))
        qmp.connect(negotiate=True)
        yield qmp
        qmp.close()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def txn_args() -> dict[str, Any]:
    return {
        "actions": [
            {"type": "block-dirty-bitmap-add", "data": {"node": "n0", "name": "t"}},
            {"type": "block-dirty-bitmap-clear", "data": {"node": "n0", "name": "t"}},
        ]
    }


def qmp_cycle(cmd: Callable[..., Any]) -> Callable[[], None]:
    def step() -> None:
        cmd("transaction", **txn_args())
        cmd("block-dirty-bitmap-remove", node="n0", name="t")

    return step


def setup_bitmaps(cmd: Callable[..., Any]) -> None:
    cmd("blockdev-add", driver="null-co", **{"node-name": "n0"}, size=TIB)
    for name in ("a", "b"):
        cmd("block-dirty-bitmap-add", node="n0", name=name, granularity=GRAN)
    # dirty every 7th chunk: 1 TiB null-co writes cost nothing but mark the bitmaps
    cmd("human-monitor-command", **{"command-line": 'qemu-io n0 "write -z 0 64k"'})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--qemu", default=os.environ.get("QEMU_10_BINARY", "qemu-system-x86_64"))
    p.add_argument("--seconds", type=float, default=2.0)
    a = p.parse_args()
    have_qemu = shutil.which(a.qemu) is not None

    rows: list[tuple[str, str, str]] = []

    # 1. bitmap operations on 1 TiB / 64 KiB
    x, y = Bitmap(TIB, GRAN), Bitmap(TIB, GRAN)
    for off in range(0, TIB, 7 * GRAN * 1024):
        x.set(off, GRAN * 100)
    ours = {"sha256": timed(x.sha256), "merge": timed(lambda: y.merge(x)), "count": timed(x.count)}
    theirs: dict[str, str] = {}
    if have_qemu:
        with qmp_process([a.qemu]) as q:
            setup_bitmaps(q.cmd)
            args = {"node": "n0", "name": "a"}
            theirs["sha256"] = (
                f"{timed(lambda: q.cmd('x-debug-block-dirty-bitmap-sha256', **args)):.2f} ms"
            )
            merge = timed(
                lambda: q.cmd("block-dirty-bitmap-merge", node="n0", target="b", bitmaps=["a"])
            )
            theirs["merge"] = f"{merge:.2f} ms"
            theirs["count"] = f"{timed(lambda: q.cmd('query-named-block-nodes')):.2f} ms"
    for op, ms in ours.items():
        rows.append((f"bitmap {op} (1 TiB / 64 KiB)", f"{ms:.2f} ms", theirs.get(op, "n/a")))

    # 2. transactions per second
    m = Machine("10.0")
    m.execute("blockdev-add", {"driver": "null-co", "node-name": "n0"})

    def in_process() -> None:
        m.execute("transaction", txn_args())
        m.execute("block-dirty-bitmap-remove", {"node": "n0", "name": "t"})

    inproc = rate(in_process, a.seconds)
    with qmp_process([sys.executable, "-m", "reference.cli"]) as r:
        r.cmd("blockdev-add", driver="null-co", **{"node-name": "n0"})
        ref_sock = rate(qmp_cycle(r.cmd), a.seconds)
    qemu_sock = "n/a"
    if have_qemu:
        with qmp_process([a.qemu]) as q:
            q.cmd("blockdev-add", driver="null-co", **{"node-name": "n0"})
            qemu_sock = f"{rate(qmp_cycle(q.cmd), a.seconds):.0f} /s"
    rows.append(("transaction add+clear, remove: in-process", f"{inproc:.0f} /s", "-"))
    rows.append(("transaction add+clear, remove: QMP socket", f"{ref_sock:.0f} /s", qemu_sock))

    width = max(len(r[0]) for r in rows)
    qemu_label = "QEMU " + (a.qemu if have_qemu else "(absent)")
    print(f"{'benchmark':<{width}}  {'reference':>14}  {qemu_label:>14}")
    for name, ours_s, theirs_s in rows:
        print(f"{name:<{width}}  {ours_s:>14}  {theirs_s:>14}")
    socket.setdefaulttimeout(None)


if __name__ == "__main__":
    main()
