"""Generated transaction sequences against the reference: 500 examples hold every check, and a
seed makes a run repeat exactly."""

from __future__ import annotations

from pathlib import Path

from conformance import run_conformance


def test_five_hundred_generated_examples_on_reference_hold(report_dir: Path) -> None:
    result = run_conformance(
        "reference", scenarios=["none-at-all"], max_examples=500, seed=1, report_dir=report_dir
    )

    generated = result.results[-1]
    problems = [f.explain() for v in generated.verdicts.values() for f in v.unexpected]
    assert result.exit_code == 0, "\n".join(problems)
    assert generated.examples >= 500
    examined = {name: v.examined for name, v in generated.verdicts.items()}
    assert examined["atomicity"] > 500  # failed transactions judged
    assert examined["all-effects"] > 200  # successful ones judged
    assert examined["differential"] > 5000  # every step compared with the model
    # Backups run to their end on the reference's clock: the job rules judge them (not n/a).
    assert generated.verdicts["completion-mode"].outcome == "pass"
    assert examined["completion-mode"] > 200


def test_generated_backups_alone_catch_grouped_mode_not_cancelling(report_dir: Path) -> None:
    result = run_conformance(
        "mutant:grouped-not-cancelling-siblings",
        scenarios=["none-at-all"],
        checks=["completion-mode"],
        max_examples=200,
        seed=1,
        report_dir=report_dir,
    )

    generated = result.results[-1]
    assert result.exit_code == 1
    assert generated.verdicts["completion-mode"].outcome == "fail"
    finding = generated.verdicts["completion-mode"].unexpected[0]
    assert "in grouped mode one failing job must cancel every sibling" in finding.because
    assert generated.reproducer is not None


def test_same_seed_same_sequences(report_dir: Path) -> None:
    first = run_conformance("reference", scenarios=["none-at-all"], max_examples=15, seed=42)
    second = run_conformance("reference", scenarios=["none-at-all"], max_examples=15, seed=42)

    assert first.results[-1].description == second.results[-1].description
    assert first.results[-1].seed == 42
