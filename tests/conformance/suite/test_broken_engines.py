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

CURATED = [
    "transactions/*",
    "bitmaps/*lookup_errors",
    "jobs/grouped_two_jobs_second_fails",
    "jobs/rollback_backup_by_failing_second_backup",
    "jobs/two_backups_commit_order_by_version",
    "snapshots/overlay_transaction_abort_restores",
    "snapshots/sync_two_drives_second_fails",
    "snapshots/internal_transaction_abort_deletes",
]

#: Mutations of jobs and snapshots -> what the finding of the expected check must show.
JOB_AND_SNAPSHOT_MUTATIONS = {
    "grouped-not-cancelling-siblings": "['j0'] completed although ['j1'] failed",
    "backup-leaks-after-rollback": "'id': 'j0'",
    "commit-order-of-other-version": "events: [{'event': 'JOB_STATUS_CHANGE'",
    "overlay-undo-skipped": "devices/drv0: 'base' -> 'ov'",
    "snapshot-sync-undo-skipped": "nodes/s0: appeared",
    "internal-snapshot-undo-skipped": "snapshots: ['keep'] -> ['keep', 't1', 't2']",
}


def test_at_least_twelve_variants_defined() -> None:
    observable = [m for m in MUTATIONS if m.requires <= reference.FEATURES]

    assert len(observable) >= 12


def test_job_and_snapshot_variants_are_observable_now() -> None:
    observable = {m.name for m in MUTATIONS if m.requires <= reference.FEATURES}

    assert observable >= set(JOB_AND_SNAPSHOT_MUTATIONS)


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
    evidence = JOB_AND_SNAPSHOT_MUTATIONS.get(mutation.name)
    if evidence is not None:
        shown = [f for f in caught if evidence in f.seen]
        assert shown, f"{mutation.name}: no finding shows {evidence!r}: {caught}"
        caught = shown
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
    # header + 14 setup messages + a short shrunk tail
    assert len(lines) <= 1 + 14 + 6
