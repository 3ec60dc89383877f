"""CI: the whole suite against all three targets — the reference, real QEMU 10.0 and 7.2.

Every curated scenario (jobs, snapshots and mixed ones included) runs with every check on each
target, two workers: about 2.5 minutes on 2 shared cores. A few generated sequences run on each
QEMU too, backup transactions and their jobs included. The reference must hold everywhere. On
QEMU every failure must be explained by a known deviation (reported as expected, never skipped)
or be one of the listed model divergences that are reference bugs awaiting a fix
(``PENDING_REFERENCE_FIXES``: not QEMU defects, so not known deviations); the list is exact in
both directions, so a new failure and a fixed one both fail this test. Every known deviation
must still be observed on real QEMU (none is stale).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance import run_conformance
from conformance.deviations import load

from .conftest import require_qemu

pytestmark = pytest.mark.qemu

#: Curated programs where the reference model diverges from real QEMU (differential check):
#: program -> (versions, reason). Reference bugs found by this suite and reported.
#: Empty now: every divergence the suite found has been fixed.
PENDING_REFERENCE_FIXES: dict[str, tuple[tuple[str, ...], str]] = {}


def test_suite_on_reference_qemu_10_and_7_2_only_known_deviations(report_dir: Path) -> None:
    targets = ["reference", require_qemu("10.0"), require_qemu("7.2")]

    result = run_conformance(
        targets, workers=2, report_dir=report_dir, reports=["json", "junit", "html"]
    )

    unexpected = {
        (
            r.kind,
            r.version,
            r.program,
            f.check,
        ): f"{r.program} on {r.kind} {r.version}: {f.explain()}"
        for r in result.results
        for v in r.verdicts.values()
        for f in v.unexpected
    }
    on_reference = [text for (kind, *_), text in unexpected.items() if kind != "qemu"]
    assert on_reference == [], "\n".join(on_reference)
    pending = {
        (version, program)
        for program, (versions, _) in PENDING_REFERENCE_FIXES.items()
        for version in versions
    }
    failing = {(version, program) for (_, version, program, _) in unexpected}
    others = [
        text
        for (_, version, program, check), text in unexpected.items()
        if (version, program) not in pending or check != "differential"
    ]
    assert others == [], "\n".join(others)
    assert failing == pending, f"fixed, remove from PENDING_REFERENCE_FIXES: {pending - failing}"
    seen = {
        f.deviation
        for r in result.results
        if r.kind == "qemu"
        for v in r.verdicts.values()
        for f in v.findings
        if f.deviation
    }
    assert seen == {d.id for d in load() if d.replayable}
    assert {r.version for r in result.results} == {"7.2", "10.0"}
    assert len({r.program for r in result.results}) >= 300


@pytest.mark.parametrize("version", ["10.0", "7.2"])
def test_generated_sequences_on_real_qemu_only_known_deviations(
    version: str, report_dir: Path
) -> None:
    target = require_qemu(version)

    result = run_conformance(
        target, scenarios=["none-at-all"], max_examples=25, seed=11, report_dir=report_dir
    )

    generated = result.results[-1]
    problems = [f.explain() for v in generated.verdicts.values() for f in v.unexpected]
    assert result.exit_code == 0, "\n".join(problems)
    assert generated.examples >= 25
    # Backups are generated on real QEMU too (deterministic there: see backup_transaction),
    # and their jobs really ran and were judged by the job rules.
    assert generated.backup_transactions >= 10
    assert generated.jobs >= 5
    assert generated.verdicts["completion-mode"].examined >= 10


def test_qemu_storage_daemon_judged_with_capabilities_not_applicable(report_dir: Path) -> None:
    from conformance.endpoints import DEFAULT_QSD_BINARY, qemu_binary_available  # noqa: PLC0415

    if not qemu_binary_available(DEFAULT_QSD_BINARY):
        pytest.skip(f"qemu-storage-daemon not found: {DEFAULT_QSD_BINARY}")

    result = run_conformance(
        "qsd", scenarios=["transactions/*", "blockdev/query_block_drive_shape"], workers=2
    )

    assert result.exit_code == 0
    reasons = {v.reason for r in result.results for v in r.verdicts.values() if v.outcome == "n/a"}
    assert any("human-monitor-command" in reason for reason in reasons)
    assert any("no -drive option" in reason for reason in reasons)


def test_reference_socket_target_holds(report_dir: Path) -> None:
    result = run_conformance("reference-socket", scenarios=["transactions/full_*"])

    assert result.exit_code == 0
    assert result.targets[0].kind == "reference-socket"
    assert {v.outcome for r in result.results for v in r.verdicts.values()} <= {"pass", "n/a"}


def test_attached_unix_socket_suite_removes_what_it_created(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415
    import time  # noqa: PLC0415

    from qemu.qmp.legacy import QEMUMonitorProtocol  # noqa: PLC0415

    binary = "qemu-system-x86_64"
    require_qemu("10.0")
    sock = tmp_path / "qmp.sock"
    argv = [binary, "-M", "none", "-nodefaults", "-display", "none"]
    process = subprocess.Popen([*argv, "-qmp", f"unix:{sock},server=on,wait=off"])
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

        result = run_conformance(f"unix:{sock}", scenarios=["transactions/full_*"])

        client = QEMUMonitorProtocol(str(sock))
        client.connect()
        left = client.cmd("query-named-block-nodes")
        client.close()
        assert result.exit_code == 0
        assert result.targets[0].kind == "socket"
        assert left == []
    finally:
        process.terminate()
        process.wait()


def test_known_crash_reproducer_replays_as_expected_on_qemu(
    report_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conformance.cli import main  # noqa: PLC0415

    target = require_qemu("7.2")
    run_conformance(
        target, scenarios=["bitmaps/merge_empty_bitmaps_crashes_qemu"], report_dir=report_dir
    )
    reproducer = next((report_dir / "reproducers").glob("*liveness.jsonl"))
    capsys.readouterr()

    code = main(["replay", str(reproducer), "--target", target])

    out = capsys.readouterr().out
    assert code == 0
    assert '"crashed": "SIGSEGV"' in out
    assert "reproduced as expected: known deviation merge-empty-bitmaps-crashes" in out
