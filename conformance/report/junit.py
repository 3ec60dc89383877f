"""The JUnit XML report: one testsuite per target, one testcase per program x check.

``fail`` → ``<failure>`` with the explanations; ``n/a`` → ``<skipped>`` with the reason (it is
visible, never a silent pass); ``xfail`` (only known deviations) → a passing testcase whose
``system-out`` names the deviations.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from conformance.runner import RunResult


def render_junit(result: RunResult) -> str:
    """The run as JUnit XML text."""
    root = ET.Element("testsuites", name="qmp-conformance", time=f"{result.seconds:.3f}")
    by_target: dict[str, list[ET.Element]] = {}
    counts: dict[str, dict[str, int]] = {}
    for program in result.results:
        cases = by_target.setdefault(program.target, [])
        count = counts.setdefault(program.target, {"tests": 0, "failures": 0, "skipped": 0})
        for name, verdict in program.verdicts.items():
            case = ET.Element(
                "testcase",
                classname=f"{program.target}.{program.program}",
                name=name,
                time=f"{program.seconds / max(len(program.verdicts), 1):.4f}",
            )
            count["tests"] += 1
            outcome = verdict.outcome
            if outcome == "fail":
                count["failures"] += 1
                failure = ET.SubElement(
                    case, "failure", message=verdict.unexpected[0].explain()[:500], type=name
                )
                failure.text = "\n".join(f.explain() for f in verdict.findings)
                if program.reproducer:
                    failure.text += f"\nreproducer: {program.reproducer}"
            elif outcome == "n/a":
                count["skipped"] += 1
                ET.SubElement(case, "skipped", message=f"not applicable: {verdict.reason}")
            elif outcome == "xfail":
                out = ET.SubElement(case, "system-out")
                out.text = "\n".join(f.explain() for f in verdict.findings)
            cases.append(case)
    for target, cases in by_target.items():
        count = counts[target]
        suite = ET.SubElement(
            root,
            "testsuite",
            name=target,
            tests=str(count["tests"]),
            failures=str(count["failures"]),
            skipped=str(count["skipped"]),
            errors="0",
        )
        suite.extend(cases)
    for error in result.errors:
        suite = ET.SubElement(root, "testsuite", name="endpoints", tests="1", errors="1")
        case = ET.SubElement(suite, "testcase", classname="endpoints", name="probe")
        ET.SubElement(case, "error", message=error)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
