"""The runner: targets x programs → histories → verdicts (+ reproducers for every failure).

:func:`run` is what ``qmp-conformance run``, the Python API and the pytest plugin call. For each
target it first *probes* the endpoint (greeting → version, ``query-qmp-schema`` → derived
schema and capabilities); a target that cannot start is an endpoint error (exit code 2). Then
every selected curated scenario that applies to the target's version is recorded on the target
and on the reference model of that version (:mod:`conformance.history`), the selected checks
judge the pair, known deviations mark what is expected, and every failing program gets a
replayable reproducer (:mod:`conformance.reproducer`). Generated sequences come from
:mod:`conformance.generators` (``max_examples > 0``).
"""

from __future__ import annotations

import fnmatch
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance import checks as checks_mod
from conformance import deviations as deviations_mod
from conformance import reproducer
from conformance.checks.base import CheckContext, CheckFunction, Verdict
from conformance.endpoints import (
    EndpointError,
    JSONObject,
    LaunchOptions,
    ReferenceEndpoint,
    Target,
    reference_importable,
)
from conformance.history import History, record
from conformance.qmp_schema import DerivedSchema
from conformance.scenario import Scenario, load_scenarios

Progress = Callable[[str, int, int], None]


class TargetUnavailable(Exception):
    """A target could not be probed (the endpoint does not start or does not speak QMP)."""


@dataclass
class TargetInfo:
    """What the probe learned about a target."""

    target: Target
    version: str
    schema: DerivedSchema | None
    schema_missing: str = ""
    commands: frozenset[str] = frozenset()
    #: Set for variants of the reference (broken-engine tests): passed to the model? never.
    greeting: JSONObject = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.target.kind


@dataclass
class ProgramResult:
    """One program on one target: its verdicts, and where its reproducer is."""

    target: str
    kind: str
    version: str
    program: str
    description: str
    verdicts: dict[str, Verdict]
    seconds: float
    reproducer: str | None = None
    history: History | None = field(default=None, repr=False)
    #: For generated programs: how many examples ran, and the seed.
    examples: int = 0
    seed: int | None = None
    #: For generated programs: transactions with a backup action sent to the target, and the
    #: jobs the target created (``JOB_STATUS_CHANGE`` ``created``), shrinking included.
    backup_transactions: int = 0
    jobs: int = 0

    @property
    def failed(self) -> bool:
        """Whether any verdict failed unexpectedly."""
        return any(v.outcome == "fail" for v in self.verdicts.values())

    def to_json(self) -> JSONObject:
        """JSON form for reports."""
        return {
            "target": self.target,
            "kind": self.kind,
            "version": self.version,
            "program": self.program,
            "description": self.description,
            "seconds": round(self.seconds, 4),
            "reproducer": self.reproducer,
            "examples": self.examples,
            "seed": self.seed,
            "backup_transactions": self.backup_transactions,
            "jobs": self.jobs,
            "verdicts": {name: v.to_json() for name, v in self.verdicts.items()},
        }


@dataclass
class RunResult:
    """A whole run."""

    targets: list[TargetInfo]
    checks: list[str]
    results: list[ProgramResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seed: int | None = None

    @property
    def exit_code(self) -> int:
        """0 every check holds (expected deviations allowed), 1 a check failed, 2 endpoint error."""
        if self.errors:
            return 2
        return 1 if any(r.failed for r in self.results) else 0

    def matrix(self) -> dict[str, dict[str, dict[str, int]]]:
        """target -> check -> outcome -> count."""
        table: dict[str, dict[str, dict[str, int]]] = {}
        for result in self.results:
            row = table.setdefault(result.target, {})
            for name, v in result.verdicts.items():
                cell = row.setdefault(name, {})
                cell[v.outcome] = cell.get(v.outcome, 0) + 1
        return table

    def to_json(self) -> JSONObject:
        """JSON form (the JSON report)."""
        return {
            "checks": self.checks,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
            "errors": self.errors,
            "targets": [
                {"label": t.target.label, "kind": t.kind, "version": t.version}
                for t in self.targets
            ],
            "matrix": self.matrix(),
            "results": [r.to_json() for r in self.results],
        }


def probe(target: Target) -> TargetInfo:
    """Start the target once: version from the greeting, schema from ``query-qmp-schema``."""
    workdir = Path(tempfile.mkdtemp(prefix="qc-probe-"))
    try:
        with target.start(workdir, LaunchOptions()) as endpoint:
            schema = DerivedSchema.of(endpoint)
            note = ""
            if schema is None:
                schema = DerivedSchema.recorded(endpoint.version_label)
                note = "the endpoint has no query-qmp-schema" + (
                    ": judged by real QEMU's recorded schema of its version" if schema else ""
                )
            commands = frozenset(schema.document["commands"]) if schema is not None else frozenset()
            return TargetInfo(target, endpoint.version_label, schema, note, commands)
    except (EndpointError, OSError) as error:
        raise TargetUnavailable(f"{target.label}: {error}") from error
    finally:
        import shutil  # noqa: PLC0415 - only for the probe's scratch directory

        shutil.rmtree(workdir, ignore_errors=True)


def select_scenarios(patterns: Sequence[str] | None, root: Path | None = None) -> list[Scenario]:
    """Curated scenarios whose id (``area/name``) or path matches one of the glob patterns."""
    scenarios = load_scenarios() if root is None else load_scenarios(root=root)
    if not patterns:
        return scenarios
    chosen = []
    for scenario in scenarios:
        candidates = (scenario.id, str(scenario.path), scenario.area, scenario.name)
        if any(fnmatch.fnmatch(c, p) or c == p for p in patterns for c in candidates):
            chosen.append(scenario)
    return chosen


def model_features() -> frozenset[str]:
    """``reference.FEATURES``, or nothing when the reference cannot be imported."""
    if reference_importable() is not None:
        return frozenset()
    import reference  # noqa: PLC0415 - optional dependency of the suite

    return frozenset(reference.FEATURES)


def model_target(version: str) -> Target | None:
    """The pristine in-process reference of ``version`` (the differential oracle), if any."""
    if reference_importable() is not None:
        return None
    from reference.compat import PROFILES  # noqa: PLC0415 - optional dependency

    if version not in PROFILES:
        return None
    return Target(
        f"model:{version}",
        lambda workdir, launch: ReferenceEndpoint(version, workdir=workdir, launch=launch),
        version,
        "reference",
    )


def judge(  # noqa: PLR0917 - the inputs of a verdict, all required
    history: History,
    model: History | None,
    info: TargetInfo,
    selected: dict[str, CheckFunction],
    deviations: Sequence[deviations_mod.Deviation],
    features: frozenset[str],
    model_missing: str = "",
) -> dict[str, Verdict]:
    """Run the selected checks on one history and mark known deviations."""
    ctx = CheckContext(
        model=model,
        model_missing=model_missing,
        is_qemu=info.kind == "qemu",
        is_reference=info.kind in ("reference", "reference-socket"),
        schema=info.schema,
        schema_missing=info.schema_missing,
        model_features=features,
    )
    verdicts: dict[str, Verdict] = {}
    for name, function in selected.items():
        if history.unsupported is not None:
            verdicts[name] = Verdict(name, "n/a", reason=f"not applicable: {history.unsupported}")
            continue
        if history.start_failure is not None and name != "liveness":
            verdicts[name] = Verdict(name, "n/a", reason="the endpoint did not start")
            continue
        verdict = function(history, ctx)
        deviations_mod.mark(
            verdict.findings,
            deviations,
            kind=info.kind,
            version=history.version,
            program=history.program.id,
        )
        verdicts[name] = verdict
    return verdicts


@dataclass
class RunOptions:
    """Everything ``qmp-conformance run`` can be told."""

    checks: list[str] = field(default_factory=list)
    scenarios: list[str] | None = None
    max_examples: int = 0
    seed: int | None = None
    workers: int = 1
    report_dir: Path | None = None
    deviations_file: Path | None = None
    #: Only generated sequences (no curated scenarios).
    generated_only: bool = False
    progress: Progress | None = None


def run_program(  # noqa: PLR0917 - the runner's internal step, called in one place
    program: Scenario,
    info: TargetInfo,
    selected: dict[str, CheckFunction],
    deviations: Sequence[deviations_mod.Deviation],
    features: frozenset[str],
    report_dir: Path | None,
) -> ProgramResult:
    """Record one program on the target and on the model, judge it, save a reproducer."""
    started = time.monotonic()
    history = record(program, info.target.start, label=info.target.label, version=info.version)
    model: History | None = None
    missing = ""
    oracle = model_target(info.version)
    if oracle is None:
        missing = f"no reference model for QEMU {info.version}"
    elif "differential" in selected and history.start_failure is None:
        model = record(program, oracle.start, label=oracle.label, version=info.version)
    verdicts = judge(history, model, info, selected, deviations, features, missing)
    result = ProgramResult(
        info.target.label,
        info.kind,
        info.version,
        program.id,
        program.description.strip(),
        verdicts,
        time.monotonic() - started,
        history=history,
    )
    findings = [f for v in verdicts.values() for f in v.findings]
    if findings and report_dir is not None:
        result.reproducer = str(
            reproducer.save(report_dir, history, model, findings[0], all_findings=findings)
        )
    return result


def run(targets: Sequence[Target], options: RunOptions | None = None) -> RunResult:
    """Run the suite on every target; never raises for endpoint trouble (see ``errors``)."""
    options = options or RunOptions()
    started = time.monotonic()
    selected = checks_mod.select(options.checks)
    deviations = deviations_mod.load(options.deviations_file or deviations_mod.DEFAULT_FILE)
    features = model_features()
    result = RunResult([], list(selected), seed=options.seed)
    infos: list[TargetInfo] = []
    for target in targets:
        try:
            infos.append(probe(target))
        except TargetUnavailable as error:
            result.errors.append(str(error))
    result.targets = infos
    programs = [] if options.generated_only else select_scenarios(options.scenarios)
    jobs = [(p, i) for i in infos for p in programs if i.version in p.versions or not _known(i)]
    total = len(jobs)
    done = 0
    lock = threading.Lock()

    def one(job: tuple[Scenario, TargetInfo]) -> ProgramResult:
        nonlocal done
        program, info = job
        outcome = run_program(program, info, selected, deviations, features, options.report_dir)
        with lock:
            done += 1
            if options.progress is not None:
                options.progress(f"{info.target.label} {program.id}", done, total)
        return outcome

    if options.workers > 1:
        with ThreadPoolExecutor(max_workers=options.workers) as pool:
            result.results = list(pool.map(one, jobs))
    else:
        result.results = [one(job) for job in jobs]
    if options.max_examples > 0:
        from conformance.generators.stateful import generate  # noqa: PLC0415 - heavy import

        for info in infos:
            result.results.append(
                generate(
                    info,
                    selected,
                    deviations,
                    features,
                    max_examples=options.max_examples,
                    seed=options.seed,
                    report_dir=options.report_dir,
                    progress=options.progress,
                )
            )
    result.seconds = time.monotonic() - started
    return result


def _known(info: TargetInfo) -> bool:
    from conformance.scenario import KNOWN_VERSIONS  # noqa: PLC0415

    return info.version in KNOWN_VERSIONS


def run_conformance(
    target: str | Target | Sequence[str | Target] = "reference",
    *,
    checks: Sequence[str] = (),
    scenarios: Sequence[str] | None = None,
    max_examples: int = 0,
    seed: int | None = None,
    workers: int = 1,
    report_dir: str | Path | None = None,
    reports: Sequence[str] = (),
) -> RunResult:
    """The Python API: run the suite against ``target`` (a spec like ``"qemu:7.2"`` or a
    :class:`~conformance.endpoints.Target`, or several) and return the :class:`RunResult`.

    ``reports`` (``json``, ``junit``, ``html``) are written to ``report_dir`` (required then).
    Example::

        from conformance import run_conformance
        result = run_conformance("reference", max_examples=100, seed=1)
        assert result.exit_code == 0, result.results
    """
    from conformance.endpoints import parse_target  # noqa: PLC0415
    from conformance.report import write_reports  # noqa: PLC0415

    items: list[Any] = [target] if isinstance(target, str | Target) else list(target)
    parsed = [parse_target(t) if isinstance(t, str) else t for t in items]
    directory = Path(report_dir) if report_dir is not None else None
    options = RunOptions(
        checks=list(checks),
        scenarios=list(scenarios) if scenarios is not None else None,
        max_examples=max_examples,
        seed=seed,
        workers=workers,
        report_dir=directory,
    )
    outcome = run(parsed, options)
    if reports:
        if directory is None:
            raise ValueError("reports need a report_dir")
        write_reports(outcome, directory, list(reports))
    return outcome
