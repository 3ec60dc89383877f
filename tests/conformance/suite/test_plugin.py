"""The pytest plugin: ``pytest -p conformance.pytest_plugin --qmp-target=...``."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_plugin_adds_one_item_per_program_and_check(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="def test_own():\n    assert True\n")

    result = pytester.runpytest_subprocess(
        "-p",
        "conformance.pytest_plugin",
        "--qmp-target=reference",
        "--qmp-scenarios=transactions/full_rollback",
        "--qmp-scenarios=transactions/failing_several_kinds",
        "--qmp-checks=atomicity,liveness",
    )

    # own test + 2 programs x 2 checks; the toggle defect is an xfail, full_rollback's pass
    result.assert_outcomes(passed=4, xfailed=1)


def test_plugin_reports_a_broken_engine_as_failure(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "-p",
        "conformance.pytest_plugin",
        "--qmp-target=mutant:clear-undo-skipped",
        "--qmp-scenarios=transactions/full_rollback",
        "--qmp-checks=atomicity",
    )

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*[[]atomicity[]] step*because*"])


def test_plugin_inert_without_target(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="def test_own(qmp_conformance):\n    assert qmp_conformance\n")

    result = pytester.runpytest_subprocess("-p", "conformance.pytest_plugin")

    result.assert_outcomes(passed=1)
