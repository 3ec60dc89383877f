"""``qmp-conformance replay FILE --target T``: run a saved reproducer again.

Prints each step's expected (reference model), originally observed and now observed reply, then
the checks' verdicts on the new run. Exit codes: 0 the checks hold now (not reproduced), 1 a check
fails again (reproduced), 2 usage or endpoint error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from conformance import checks as checks_mod
from conformance import deviations as deviations_mod
from conformance import reproducer
from conformance.endpoints import parse_target
from conformance.history import record
from conformance.runner import TargetUnavailable, judge, model_features, model_target, probe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a reproducer (.jsonl) saved by 'run'")
    parser.add_argument("--target", default="reference", help="endpoint (default: reference)")
    parser.add_argument(
        "--checks", default="", help="comma-separated checks (default: all; the saved one first)"
    )
    parser.add_argument("--deviations", type=Path, default=None, help="known-deviations file")


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 160 else text[:157] + "..."


def main(args: argparse.Namespace) -> int:
    try:
        header, program = reproducer.load(args.file)
        target = parse_target(args.target)
        names = [c.strip() for c in args.checks.split(",") if c.strip()]
        selected = checks_mod.select(names)
        info = probe(target)
    except (ValueError, OSError, TargetUnavailable) as error:
        print(f"qmp-conformance replay: {error}", file=sys.stderr)
        return 2
    deviations = deviations_mod.load(args.deviations or deviations_mod.DEFAULT_FILE)
    print(
        f"replaying {args.file} ({header.get('program')}, saved on {header.get('target')}) "
        f"on {target.label} (QEMU {info.version})"
    )
    print(f"saved finding: {header.get('explanation')}")
    history = record(program, target.start, label=target.label, version=info.version)
    oracle = model_target(info.version)
    model = (
        record(program, oracle.start, label=oracle.label, version=info.version)
        if oracle is not None
        else None
    )
    saved = [json.loads(line) for line in args.file.read_text().splitlines()[1:] if line.strip()]
    for op in history.operations:
        line = saved[op.index] if op.index < len(saved) else {}
        now = op.reply if op.outcome not in ("crashed", "hung") else {op.outcome: op.failure}
        sent = {k: v for k, v in line.items() if k not in ("expected", "observed")}
        print(f"step {op.index}: {_short(sent)}")
        if "expected" in line:
            print(f"  expected: {_short(line['expected'])}")
            print(f"  observed: {_short(line['observed'])}")
        print(f"  now:      {_short(now)}")
    missing = "" if oracle is not None else f"no reference model for QEMU {info.version}"
    verdicts = judge(history, model, info, selected, deviations, model_features(), missing)
    failed = False
    known: set[str] = set()
    for name, verdict in verdicts.items():
        print(f"{name}: {verdict.outcome}" + (f" ({verdict.reason})" if verdict.reason else ""))
        for finding in verdict.findings:
            print(f"  {finding.explain()}")
            if finding.deviation:
                known.add(finding.deviation)
        failed = failed or verdict.outcome == "fail"
    if failed:
        print("reproduced: a check fails")
    elif known:
        print(f"reproduced as expected: known deviation {', '.join(sorted(known))}")
    else:
        print("not reproduced: every check holds")
    return 1 if failed else 0
