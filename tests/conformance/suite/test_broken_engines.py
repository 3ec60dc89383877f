"""The suite catches broken engines: every deliberately wrong variant of the reference engine
(``reference.testing.mutations``, applied through ``Machine(version, variant=...)``) is reported
by one of the checks it breaks, with an explanation in that check's words.

Variants whose mistake is only observable with a feature the reference lacks (jobs) are skipped
with that reason until the feature lands; then they run here unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import reference
from conformance import run_conformance
from conformance.checks.base import Finding
from reference.testing.mutations import MUTATIONS, Mutation

#: Words each check's explanation must contain (its rule, in words).
BECAUSE = {
    "atomicity": "must have been rolled back",
    "all-effects": "each of its actions must have taken effect",
    "completion-mode": "grouped",
    "differential": "QEMU",
}

CURATED = ["transactions/*", "bitmaps/*lookup_errors"]


def test_at_least_twelve_variants_defined() -> None:
    observable = [m for m in MUTATIONS if m.requires <= reference.FEATURES]

    assert len(observable) >= 12


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_broken_engine_reported_with_explanation(mutation: Mutation, report_dir: Path) -> None:
    missing = sorted(mutation.requires - reference.FEATURES)
    if missing:
        pytest.skip(f"{mutation.name} is observable only with {', '.join(missing)}")

    result = run_conformance(f"mutant:{mutation.name}", scenarios=CURATED, report_dir=report_dir)

    assert result.exit_code == 1
    caught: list[Finding] = [
        finding
        for program in result.results
        for name, verdict in program.verdicts.items()
        if name in mutation.expected_checks and verdict.outcome == "fail"
        for finding in verdict.unexpected
    ]
    assert caught, f"{mutation.name}: none of {sorted(mutation.expected_checks)} failed"
    finding = caught[0]
    assert BECAUSE[finding.check] in finding.because or BECAUSE[finding.check] in finding.seen
    assert finding.explain().startswith(f"[{finding.check}] step ")
    assert all(r.reproducer for r in result.results if r.failed)


def test_generated_sequences_alone_catch_a_broken_engine_and_shrink(report_dir: Path) -> None:
    result = run_conformance(
        "mutant:clear-undo-skipped",
        scenarios=["none-at-all"],
        max_examples=150,
        seed=7,
        report_dir=report_dir,
    )

    generated = result.results[-1]
    assert generated.program == "generated/sequences"
    assert result.exit_code == 1
    failing = [v for v in generated.verdicts.values() if v.outcome == "fail"]
    assert failing
    assert generated.reproducer is not None
    lines = Path(generated.reproducer).read_text().splitlines()
    # header + 11 setup messages + a short shrunk tail
    assert len(lines) <= 1 + 11 + 6
