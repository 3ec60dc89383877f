"""Reports of a run: terminal summary, JSON, JUnit XML, one self-contained HTML page.

:func:`write_reports` writes the requested formats into a directory and returns their paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from conformance.report.html import render_html
from conformance.report.json_report import render_json
from conformance.report.junit import render_junit
from conformance.report.terminal import render_summary
from conformance.runner import RunResult

FORMATS = {
    "json": ("report.json", render_json),
    "junit": ("junit.xml", render_junit),
    "html": ("report.html", render_html),
}


def write_reports(result: RunResult, directory: Path, formats: Sequence[str]) -> list[Path]:
    """Write each format (``json``, ``junit``, ``html``); ValueError names an unknown one."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown}; choose from {', '.join(FORMATS)}")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in formats:
        filename, render = FORMATS[name]
        path = directory / filename
        path.write_text(render(result))
        written.append(path)
    return written


__all__ = [
    "FORMATS",
    "render_html",
    "render_json",
    "render_junit",
    "render_summary",
    "write_reports",
]
