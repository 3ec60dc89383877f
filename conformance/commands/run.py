"""``qmp-conformance run``: the suite against one or more endpoints.

Exit codes: 0 every check holds (known deviations are reported as expected failures), 1 a check
failed, 2 usage or endpoint error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conformance.checks import CHECKS, DESCRIPTIONS
from conformance.endpoints import parse_target
from conformance.report import FORMATS, render_summary, write_reports
from conformance.runner import RunOptions, run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    checks = "; ".join(f"{name}: {DESCRIPTIONS[name]}" for name in CHECKS)
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        help="endpoint, repeatable: reference[:V] (default), reference-socket[:V], qemu[:PATH], "
        "qsd[:PATH], xemu:PATH, unix:SOCKET, tcp:HOST:PORT",
    )
    parser.add_argument(
        "--checks", default="", help=f"comma-separated checks (default all). {checks}"
    )
    parser.add_argument(
        "--scenarios",
        action="append",
        default=None,
        help="glob over scenario ids (area/name), repeatable; 'none' runs no curated scenario",
    )
    parser.add_argument(
        "--max-examples", type=int, default=0, help="generated sequences per target (0: none)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the generated sequences")
    parser.add_argument("--workers", type=int, default=1, help="programs run in parallel")
    parser.add_argument("--report", default="", help=f"comma-separated: {', '.join(FORMATS)}")
    parser.add_argument(
        "--report-dir", type=Path, default=Path("conformance-report"), help="reports + reproducers"
    )
    parser.add_argument("--deviations", type=Path, default=None, help="known-deviations file")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--verbose", action="store_true", help="list expected failures too")


def _progress(label: str, done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    bar = "#" * filled + "." * (width - filled)
    sys.stderr.write(f"\r[{bar}] {done}/{total} {label[:60]:<60}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def main(args: argparse.Namespace) -> int:
    try:
        targets = [parse_target(t) for t in (args.target or ["reference"])]
        checks = [c.strip() for c in args.checks.split(",") if c.strip()]
        formats = [f.strip() for f in args.report.split(",") if f.strip()]
        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            raise ValueError(
                f"unknown report format(s) {unknown}; choose from {', '.join(FORMATS)}"
            )
        scenarios = args.scenarios
        generated_only = scenarios == ["none"]
        if args.workers < 1 or args.max_examples < 0:
            raise ValueError("--workers must be >= 1 and --max-examples >= 0")
        options = RunOptions(
            checks=checks,
            scenarios=None if generated_only else scenarios,
            max_examples=args.max_examples,
            seed=args.seed,
            workers=args.workers,
            report_dir=args.report_dir,
            deviations_file=args.deviations,
            generated_only=generated_only,
            progress=None if args.quiet else _progress,
        )
        if checks:
            from conformance.checks import select  # noqa: PLC0415

            select(checks)
    except ValueError as error:
        print(f"qmp-conformance run: {error}", file=sys.stderr)
        return 2
    result = run(targets, options)
    sys.stdout.write(render_summary(result, verbose=args.verbose))
    if formats:
        for path in write_reports(result, args.report_dir, formats):
            print(f"report: {path}")
    return result.exit_code
