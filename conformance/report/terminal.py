"""The terminal summary: a targets x checks table, then every failure explained."""

from __future__ import annotations

from conformance.runner import RunResult

#: Cell order in the table.
OUTCOMES = ("pass", "fail", "xfail", "n/a")


def _cell(counts: dict[str, int]) -> str:
    parts = [f"{counts[o]} {o}" for o in OUTCOMES if counts.get(o)]
    return ", ".join(parts) or "-"


def render_summary(result: RunResult, *, verbose: bool = False) -> str:
    """The summary text (ends with the overall verdict and exit code)."""
    lines: list[str] = []
    for info in result.targets:
        lines.append(f"target {info.target.label}: {info.kind}, QEMU {info.version}")
    matrix = result.matrix()
    checks = result.checks
    width = max([len(t) for t in matrix] + [6])
    widths = [max([len(c)] + [len(_cell(matrix[t].get(c, {}))) for t in matrix]) for c in checks]
    lines.append("")
    lines.append(
        "  ".join(
            ["target".ljust(width)] + [c.ljust(w) for c, w in zip(checks, widths, strict=True)]
        )
    )
    for target, row in matrix.items():
        cells = [_cell(row.get(c, {})).ljust(w) for c, w in zip(checks, widths, strict=True)]
        lines.append("  ".join([target.ljust(width), *cells]))
    generated = [r for r in result.results if r.examples]
    for g in generated:
        lines.append(
            f"generated on {g.target}: {g.examples} examples (seed {g.seed}), "
            f"{g.backup_transactions} backup transactions, {g.jobs} jobs"
        )
    failures = [r for r in result.results if r.failed]
    expected = [
        (r, f)
        for r in result.results
        for v in r.verdicts.values()
        for f in v.findings
        if f.deviation
    ]
    if failures:
        lines.append("")
        lines.append(f"FAILURES ({len(failures)} programs):")
        for r in failures:
            lines.append(f"- {r.target} {r.program}")
            for v in r.verdicts.values():
                for f in v.unexpected:
                    lines.append(f"    {f.explain()}")
            if r.reproducer:
                lines.append(f"    reproducer: {r.reproducer}")
    if expected:
        lines.append("")
        ids = sorted({f.deviation or "" for _, f in expected})
        lines.append(
            f"expected failures (known deviations): {len(expected)} findings: {', '.join(ids)}"
        )
        if verbose:
            for r, f in expected:
                lines.append(f"- {r.target} {r.program}: {f.explain()}")
    for error in result.errors:
        lines.append(f"ENDPOINT ERROR: {error}")
    verdict = {0: "all checks hold", 1: "a check failed", 2: "endpoint or usage error"}
    lines.append("")
    lines.append(
        f"{len(result.results)} programs in {result.seconds:.1f}s: "
        f"{verdict[result.exit_code]} (exit {result.exit_code})"
    )
    return "\n".join(lines) + "\n"
