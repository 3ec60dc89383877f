"""The HTML report: one self-contained page (inline CSS, no scripts, no external resources).

A matrix of targets x checks (counts per outcome), then per target a table of programs x checks
(one coloured cell per verdict, the reason on hover), then every finding explained with its
reproducer's lines inline, so the page alone is enough to understand and replay a failure.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from conformance.runner import ProgramResult, RunResult

STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #bbb;padding:2px 6px;font-size:13px;text-align:left}
.pass{background:#c8efc8}.fail{background:#f5b5b5}.xfail{background:#f8e3a6}
.na{background:#e4e4e4;color:#555}
pre{background:#f4f4f4;padding:6px;overflow-x:auto;font-size:12px}
h3{margin-bottom:.2em}
"""


def _css_class(outcome: str) -> str:
    return "na" if outcome == "n/a" else outcome


def _reproducer_text(result: ProgramResult) -> str:
    if not result.reproducer:
        return ""
    path = Path(result.reproducer)
    try:
        text = path.read_text()
    except OSError:
        return f"<p>reproducer: {escape(str(path))} (missing)</p>"
    return f"<p>reproducer <code>{escape(str(path))}</code>:</p><pre>{escape(text)}</pre>"


def render_html(result: RunResult) -> str:
    """The page as text."""
    out: list[str] = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>qmp-conformance report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>qmp-conformance report</h1>",
        f"<p>{len(result.results)} programs, {result.seconds:.1f}s, exit code "
        f"{result.exit_code}; seed {result.seed}</p>",
    ]
    for error in result.errors:
        out.append(f"<p class='fail'>endpoint error: {escape(error)}</p>")
    out.append("<h2>Targets x checks</h2><table><tr><th>target</th>")
    out += [f"<th>{escape(c)}</th>" for c in result.checks]
    out.append("</tr>")
    for target, row in result.matrix().items():
        out.append(f"<tr><th>{escape(target)}</th>")
        for check in result.checks:
            counts = row.get(check, {})
            worst = next((o for o in ("fail", "xfail", "pass", "n/a") if counts.get(o)), "n/a")
            text = ", ".join(f"{n} {o}" for o, n in counts.items())
            out.append(f"<td class='{_css_class(worst)}'>{escape(text)}</td>")
        out.append("</tr>")
    out.append("</table>")
    targets = list(dict.fromkeys(r.target for r in result.results))
    for target in targets:
        out.append(f"<h2>{escape(target)}: programs x checks</h2><table><tr><th>program</th>")
        out += [f"<th>{escape(c)}</th>" for c in result.checks]
        out.append("</tr>")
        for r in (r for r in result.results if r.target == target):
            anchor = escape(f"{r.target}-{r.program}")
            name = escape(r.program)
            link = (
                f"<a href='#{anchor}'>{name}</a>"
                if r.reproducer or any(v.findings for v in r.verdicts.values())
                else name
            )
            out.append(f"<tr><td title='{escape(r.description)}'>{link}</td>")
            for check in result.checks:
                v = r.verdicts.get(check)
                if v is None:
                    out.append("<td></td>")
                    continue
                out.append(
                    f"<td class='{_css_class(v.outcome)}' title='{escape(v.reason)}'>"
                    f"{escape(v.outcome)}</td>"
                )
            out.append("</tr>")
        out.append("</table>")
    out.append("<h2>Findings</h2>")
    any_finding = False
    for r in result.results:
        findings = [f for v in r.verdicts.values() for f in v.findings]
        if not findings:
            continue
        any_finding = True
        anchor = escape(f"{r.target}-{r.program}")
        out.append(f"<h3 id='{anchor}'>{escape(r.target)} — {escape(r.program)}</h3>")
        out.append(f"<p>{escape(r.description)}</p><ul>")
        for f in findings:
            css = "xfail" if f.deviation else "fail"
            out.append(f"<li class='{css}'>{escape(f.explain())}</li>")
        out.append("</ul>")
        out.append(_reproducer_text(r))
    if not any_finding:
        out.append("<p>None: every check holds wherever it applies.</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
