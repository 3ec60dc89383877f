"""The conformance suite: talks QMP to any endpoint and judges what ``transaction`` does there.

Rooms: :mod:`conformance.endpoints` (launch or attach to an endpoint), :mod:`conformance.observe`
and :mod:`conformance.state` (normalized observation), :mod:`conformance.scenario` (curated
scenarios as data), :mod:`conformance.history` (recorded runs), :mod:`conformance.checks` (the
named checks: history in, verdict with a "because" out), :mod:`conformance.generators`
(hypothesis state machine), :mod:`conformance.runner` (targets x programs), :mod:`conformance.
reproducer` (replayable QMP scripts), :mod:`conformance.deviations` (known QEMU deviations),
:mod:`conformance.report` (terminal, JSON, JUnit, HTML), :mod:`conformance.pytest_plugin`.

The Python API is :func:`run_conformance`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conformance.runner import RunResult


def run_conformance(target: Any = "reference", **options: Any) -> RunResult:
    """Run the suite; see :func:`conformance.runner.run_conformance` for the options."""
    from conformance.runner import run_conformance as run  # noqa: PLC0415 - keep import light

    return run(target, **options)


__all__ = ["run_conformance"]
