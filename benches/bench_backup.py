"""Backup benchmark of issue 5, the reference and real QEMU side by side in one run.

    python benches/bench_backup.py [--qemu BINARY] [--size-mib N] [--dirty-percent P]

1. Full backup (``sync: full``) of a qcow2 image of random data (1 GiB by default) to a new,
   empty qcow2 target of the same size.
2. Incremental backup (``sync: incremental`` = bitmap + on-success) after guest writes of random
   data to P% (default 10%) of the 64 KiB clusters, to another new qcow2 target.

QEMU column: ``blockdev-backup`` through QMP, timed from sending the command to the
BLOCK_JOB_COMPLETED event (the guest writes go through ``qemu-io`` on a ``-drive`` device and are
not timed). Reference column: the Rust backup job of ``reference._core`` in process: job
creation, start and ``advance(0)`` (which runs a speed-0 job to completion), same images, same
writes. The sides run alternately (reference, QEMU, QEMU, reference), each on a fresh copy
of the source read once beforehand (page cache), with dirty pages synced before each timed
backup; each side's best time is shown. Every full target must equal the source (``qemu-img
compare``), the reference's incremental target must hold the written clusters, and
``qemu-img check`` must find the reference's targets clean.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from reference._core import Graph

CLUSTER = 64 << 10
MIB = 1 << 20


def sh(*argv: str) -> str:
    """Runs a command, failing loudly; returns its stdout."""
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return out.stdout


def make_source(path: Path, size: int) -> None:
    """A qcow2 image of ``size`` bytes of random data (every cluster allocated)."""
    raw = path.with_suffix(".raw")
    with raw.open("wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(os.urandom(n))
            left -= n
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path))
    raw.unlink()


def new_target(path: Path, size: int) -> None:
    sh("qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size))


def warm(path: Path) -> None:
    """Reads the file once so both sides start from the page cache."""
    with path.open("rb") as f:
        while f.read(16 * MIB):
            pass


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / MIB / seconds


# ---- QEMU ----------------------------------------------------------------------------------


class Qemu:
    """A QEMU process with the source as device ``drv0`` (node ``disk0``)."""

    def __init__(self, binary: str, source: Path, tmp: Path) -> None:
        self.sock = tmp / "qmp.sock"
        drive = f"if=none,id=drv0,file={source},format=qcow2,node-name=disk0"
        self.proc = subprocess.Popen(
            [binary, "-M", "none", "-nodefaults", "-display", "none",
             "-qmp", f"unix:{self.sock},server=on,wait=off", "-drive", drive],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(200):
            if self.sock.exists():
                break
            time.sleep(0.05)
        self.qmp = QEMUMonitorProtocol(str(self.sock))
        self.qmp.connect(negotiate=True)

    def cmd(self, command: str, **args: Any) -> Any:
        return self.qmp.cmd_raw(command, args)

    def add_target(self, node: str, path: Path) -> None:
        self.cmd(
            "blockdev-add",
            driver="qcow2",
            **{"node-name": node},
            file={"driver": "file", "filename": str(path)},
        )

    def backup(self, **args: Any) -> tuple[float, dict[str, Any]]:
        """Runs one backup; returns (seconds, BLOCK_JOB_COMPLETED data)."""
        os.sync()
        t0 = time.perf_counter()
        r = self.cmd("blockdev-backup", **args)
        if "error" in r:
            raise RuntimeError(r["error"])
        while True:
            ev = self.qmp.pull_event(wait=True)
            if ev is not None and ev["event"] == "BLOCK_JOB_COMPLETED":
                dt = time.perf_counter() - t0
                data: dict[str, Any] = ev["data"]
                if "error" in data:
                    raise RuntimeError(data["error"])
                return dt, data

    def write(self, offset: int, pattern: int) -> None:
        line = f'qemu-io drv0 "write -P {pattern} {offset} {CLUSTER}"'
        self.cmd("human-monitor-command", **{"command-line": line})

    def close(self) -> None:
        """Quits QEMU (which flushes the targets' metadata) and waits for it."""
        with contextlib.suppress(EOFError, ConnectionError):
            self.cmd("quit")
        with contextlib.suppress(EOFError, ConnectionError):
            self.qmp.close()
        self.proc.wait(timeout=60)


def run_qemu(
    binary: str, source: Path, tmp: Path, size: int, dirty: list[int]
) -> tuple[float, float, Path]:
    full, inc = tmp / "qemu-full.qcow2", tmp / "qemu-inc.qcow2"
    new_target(full, size)
    new_target(inc, size)
    q = Qemu(binary, source, tmp)
    try:
        q.add_target("tfull", full)
        t_full, _ = q.backup(device="disk0", target="tfull", sync="full", **{"job-id": "full"})
        q.cmd("block-dirty-bitmap-add", node="disk0", name="b0")
        for k, c in enumerate(dirty):
            q.write(c * CLUSTER, 1 + k % 250)
        q.add_target("tinc", inc)
        t_inc, _ = q.backup(
            device="disk0", target="tinc", sync="incremental", bitmap="b0", **{"job-id": "inc"}
        )
    finally:
        q.close()
    return t_full, t_inc, full


# ---- reference -----------------------------------------------------------------------------


def ref_backup(g: Graph, **args: Any) -> float:
    os.sync()
    t0 = time.perf_counter()
    g.backup_create(**args)
    g.job_start(str(args["job_id"]))
    events = g.advance(0)
    dt = time.perf_counter() - t0
    done = [e for e in events if e.name == "BLOCK_JOB_COMPLETED"]
    if len(done) != 1 or "error" in done[0].data:
        raise RuntimeError(f"reference backup did not complete: {events}")
    return dt


def run_reference(
    source: Path, tmp: Path, size: int, dirty: list[int]
) -> tuple[float, float, Path, Path]:
    full, inc = tmp / "ref-full.qcow2", tmp / "ref-inc.qcow2"
    new_target(full, size)
    new_target(inc, size)
    g = Graph()
    g.add_file("src-file", str(source), False)
    g.add_format("disk0", "qcow2", "src-file", False)
    g.add_backend("drv0", "disk0")
    g.add_file("tfull-file", str(full), False)
    g.add_format("tfull", "qcow2", "tfull-file", False)
    t_full = ref_backup(
        g, job_id="full", source="disk0", target="tfull", sync="full", filter_node_name="#f1"
    )
    g.bitmap_add("disk0", "b0", CLUSTER, True, False)
    for k, c in enumerate(dirty):
        g.write("disk0", c * CLUSTER, bytes([1 + k % 250]) * CLUSTER)
    g.add_file("tinc-file", str(inc), False)
    g.add_format("tinc", "qcow2", "tinc-file", False)
    t_inc = ref_backup(
        g,
        job_id="inc",
        source="disk0",
        target="tinc",
        sync="bitmap",
        bitmap="b0",
        bitmap_mode="on-success",
        filter_node_name="#f2",
    )
    for c in dirty[:64]:
        want = g.read("disk0", c * CLUSTER, CLUSTER)
        if g.read("tinc", c * CLUSTER, CLUSTER) != want:
            raise RuntimeError(f"incremental target differs at cluster {c}")
    g.close_all()
    return t_full, t_inc, full, inc


def compare(a: Path, b: Path) -> bool:
    return (
        subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], check=False).returncode == 0
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--qemu", default=os.environ.get("QEMU_10_BINARY", "qemu-system-x86_64"))
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--dirty-percent", type=float, default=10.0)
    a = p.parse_args()
    size = a.size_mib * MIB
    clusters = size // CLUSTER
    rng = random.Random(5)
    dirty = sorted(rng.sample(range(clusters), int(clusters * a.dirty_percent / 100)))

    best: dict[str, list[float]] = {"ref": [], "qemu": []}
    identical = {"ref": True, "qemu": True}
    tmp = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    try:
        base = tmp / "base.qcow2"
        make_source(base, size)
        # Alternate the sides (ref, qemu, qemu, ref) and keep each side's best run, so page
        # cache growth and other load on the machine hit both alike.
        for side in ("ref", "qemu", "qemu", "ref"):
            run = tmp / side
            run.mkdir()
            src = run / "src.qcow2"
            shutil.copyfile(base, src)
            warm(src)
            if side == "qemu":
                t_full, t_inc, full = run_qemu(a.qemu, src, run, size, dirty)
            else:
                t_full, t_inc, full, inc = run_reference(src, run, size, dirty)
                for image in (full, inc):
                    sh("qemu-img", "check", "-q", str(image))
            identical[side] &= compare(base, full)
            prev = best[side] or [t_full, t_inc]
            best[side] = [min(prev[0], t_full), min(prev[1], t_inc)]
            shutil.rmtree(run)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    inc_bytes = len(dirty) * CLUSTER
    rows: list[tuple[str, int, float, float]] = [
        (
            f"full backup, {a.size_mib} MiB random qcow2 -> new qcow2",
            size,
            best["ref"][0],
            best["qemu"][0],
        ),
        (
            f"incremental, {a.dirty_percent:g}% clusters dirty",
            inc_bytes,
            best["ref"][1],
            best["qemu"][1],
        ),
    ]
    width = max(len(r[0]) for r in rows)
    head = f"{'benchmark':<{width}}  {'reference':>20}  {'QEMU ' + a.qemu:>20}  {'ratio':>6}"
    print(head)
    for name, nbytes, ours, theirs in rows:
        o, t = mbps(nbytes, ours), mbps(nbytes, theirs)
        ref_col = f"{o:.0f} MiB/s ({ours:.2f} s)"
        qemu_col = f"{t:.0f} MiB/s ({theirs:.2f} s)"
        print(f"{name:<{width}}  {ref_col:>20}  {qemu_col:>20}  {o / t:>6.2f}")
    for side in ("ref", "qemu"):
        ok = "yes" if identical[side] else "NO"
        print(f"{side}: full target identical to the source (qemu-img compare): {ok}")


if __name__ == "__main__":
    main()
