"""``qmp-conformance run`` and ``replay``: exit codes 0/1/2 and what they print."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.cli import main


def test_run_reference_passes_exit_0(report_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "run",
            "--scenarios",
            "qapi/*",
            "--quiet",
            "--report",
            "json",
            "--report-dir",
            str(report_dir),
        ]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "atomicity" in out and "liveness" in out  # the targets x checks table
    assert (report_dir / "report.json").exists()


def test_run_broken_engine_exit_1_with_explanation(
    report_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run",
            "--target",
            "mutant:add-undo-skipped",
            "--scenarios",
            "transactions/full_rollback",
            "--checks",
            "atomicity",
            "--quiet",
            "--report-dir",
            str(report_dir),
        ]
    )

    out = capsys.readouterr().out
    assert code == 1
    assert "[atomicity]" in out and "b0: appeared" in out and "reproducer:" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--target", "nonsense:x"],
        ["run", "--target", "qemu:/nonexistent/qemu-system-x86_64", "--quiet"],
        ["run", "--checks", "atomicity,nope"],
        ["run", "--report", "pdf"],
        ["replay", "/nonexistent.jsonl"],
    ],
)
def test_usage_or_endpoint_error_exit_2(argv: list[str], report_dir: Path) -> None:
    code = main([*argv, *(["--report-dir", str(report_dir)] if argv[0] == "run" else [])])

    assert code == 2


def test_replay_reproduces_on_the_broken_engine_and_not_on_the_reference(
    report_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(
        [
            "run",
            "--target",
            "mutant:remove-undo-skipped",
            "--scenarios",
            "transactions/full_rollback",
            "--quiet",
            "--report-dir",
            str(report_dir),
        ]
    )
    reproducer = next((report_dir / "reproducers").glob("*.jsonl"))
    capsys.readouterr()

    again = main(["replay", str(reproducer), "--target", "mutant:remove-undo-skipped"])
    again_out = capsys.readouterr().out
    fixed = main(["replay", str(reproducer), "--target", "reference"])
    fixed_out = capsys.readouterr().out

    assert again == 1 and "reproduced: a check fails" in again_out
    assert "expected:" in again_out and "observed:" in again_out and "now:" in again_out
    assert fixed == 0 and "not reproduced" in fixed_out
