"""The pytest plugin: run the conformance suite inside your own test run.

Installing the package registers it (``pytest11`` entry point); without the package installed,
enable it with ``-p conformance.pytest_plugin``. Then::

    pytest --qmp-target=qemu --qmp-target=reference:7.2 --qmp-checks=atomicity,liveness \\
           --qmp-scenarios='transactions/*' --qmp-max-examples=100 --qmp-seed=1

Without ``--qmp-target`` the plugin does nothing. With it, one test item per target x program x
check is added to the session: ``pass`` passes, ``fail`` fails with the explanations and the
reproducer's path, ``xfail`` (only known deviations) is reported as xfail, ``n/a`` as a skip
with its reason. The fixture ``qmp_conformance`` gives tests the Python API
(:func:`conformance.run_conformance`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from conformance.checks.base import Verdict

_RESULTS_KEY = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--qmp-*`` options."""
    group = parser.getgroup("qmp-conformance", "QMP transaction conformance suite")
    group.addoption("--qmp-target", action="append", default=[], help="endpoint (repeatable)")
    group.addoption("--qmp-checks", default="", help="comma-separated checks (default all)")
    group.addoption("--qmp-scenarios", action="append", default=None, help="scenario id globs")
    group.addoption("--qmp-max-examples", type=int, default=0, help="generated sequences")
    group.addoption("--qmp-seed", type=int, default=None, help="seed of generated sequences")
    group.addoption("--qmp-report-dir", default=None, help="where reproducers are saved")


class ConformanceItem(pytest.Item):
    """One verdict of the suite as a test."""

    def __init__(self, *, verdict: Verdict, reproducer: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verdict = verdict
        self.reproducer = reproducer
        if verdict.outcome == "xfail":
            ids = sorted({f.deviation or "" for f in verdict.findings})
            self.add_marker(pytest.mark.xfail(reason=f"known deviation {', '.join(ids)}"))

    def runtest(self) -> None:
        """Turn the verdict into a test outcome."""
        outcome = self.verdict.outcome
        if outcome == "n/a":
            pytest.skip(f"not applicable: {self.verdict.reason}")
        if outcome in ("fail", "xfail"):
            text = "\n".join(f.explain() for f in self.verdict.findings)
            if self.reproducer:
                text += f"\nreproducer: {self.reproducer}"
            raise AssertionError(text)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        """The explanations, not a traceback."""
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Where the item comes from (the suite, not a file of the user's)."""
        return Path(__file__), None, self.name


def _run(config: pytest.Config) -> Any:
    from conformance.endpoints import parse_target  # noqa: PLC0415 - heavy, only when used
    from conformance.runner import RunOptions, run  # noqa: PLC0415

    checks = [c for c in str(config.getoption("qmp_checks")).split(",") if c]
    report_dir = config.getoption("qmp_report_dir") or tempfile.mkdtemp(prefix="qmp-conformance-")
    targets = [parse_target(t) for t in config.getoption("qmp_target")]
    options = RunOptions(
        checks=checks,
        scenarios=config.getoption("qmp_scenarios"),
        max_examples=int(config.getoption("qmp_max_examples")),
        seed=config.getoption("qmp_seed"),
        report_dir=Path(report_dir),
    )
    return run(targets, options)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Append one item per target x program x check when ``--qmp-target`` is given."""
    if not config.getoption("qmp_target"):
        return
    result = _run(config)
    config.stash[_RESULTS_KEY] = result
    for error in result.errors:
        raise pytest.UsageError(f"qmp-conformance: {error}")
    for program in result.results:
        for name, verdict in program.verdicts.items():
            items.append(
                ConformanceItem.from_parent(
                    session,
                    name=f"qmp[{program.target}][{program.program}][{name}]",
                    verdict=verdict,
                    reproducer=program.reproducer,
                )
            )


@pytest.fixture
def qmp_conformance() -> Callable[..., Any]:
    """The Python API, :func:`conformance.run_conformance`."""
    from conformance import run_conformance  # noqa: PLC0415

    return run_conformance


def verdicts(items: Iterable[pytest.Item]) -> list[Verdict]:
    """The verdicts behind the plugin's items (for tests of the plugin)."""
    return [item.verdict for item in items if isinstance(item, ConformanceItem)]
