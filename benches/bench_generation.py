"""Generation of ``transaction`` arguments from QEMU 10.0's derived JSON Schema (issue 3).

    python benches/bench_generation.py [--count N] [--batch B] [--recorded FILE]

The schema is ``convert(schema/recorded/qemu-10.0.json)`` (with our QAPI's integer bounds),
``commands.transaction.arguments``. The main run generates ``--count`` objects (default 10,000)
with :mod:`conformance.schema.strategies` under a plain ``@given`` (every health check enabled,
only the deadline off: the machine is shared) drawing ``--batch`` objects per example, and
validates every object with ``jsonschema``'s Draft 2020-12 validator. It prints the generation
rate (validation time excluded) and the rate including validation, by wall clock and by this
process's CPU time (the machine may be shared), next to:

* baseline 1: ``hypothesis_jsonschema.from_schema`` on the whole schema, one object per example;
* baseline 2: one ``from_schema`` per action ``oneOf`` branch under ``st.one_of``;
* the compiled strategy, one object per example (like for like with the baselines).

The baselines run far fewer examples (they are slow) with health checks suppressed (they fail
``too_slow``/``filter_too_much`` otherwise, which is part of why they are baselines).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis_jsonschema
import jsonschema
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conformance.schema.jsonschema import convert  # noqa: E402
from conformance.schema.strategies import Compiler  # noqa: E402
from reference.qapi import load_schema  # noqa: E402

RECORDED = ROOT / "schema" / "recorded" / "qemu-10.0.json"


def transaction_schema(recorded: Path) -> dict[str, Any]:
    """The derived JSON Schema of ``transaction``'s arguments."""
    data = json.loads(recorded.read_text())
    version = "{major}.{minor}".format(**data["version"]["qemu"])
    derived = convert(data["schema"], qapi=load_schema(version))
    schema: dict[str, Any] = derived["commands"]["transaction"]["arguments"]
    return schema


class Clock:
    """Wall and CPU (this process) seconds, so that a loaded machine can be told apart."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def measure(self, fn: Callable[[], None]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu


def run(
    strategy: st.SearchStrategy[Any],
    examples: int,
    per_example: int,
    check: Callable[[Any], None],
    *,
    health_checks: bool = True,
) -> tuple[int, Clock, Clock]:
    """Run ``strategy`` for ``examples`` examples: (objects, total clock, validation clock)."""
    objects = [0]
    checking = Clock()

    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=(Phase.generate,),
        suppress_health_check=() if health_checks else list(HealthCheck),
    )
    @given(strategy)
    def body(value: Any) -> None:
        values = value if per_example > 1 else [value]

        def validate() -> None:
            for item in values:
                check(item)

        checking.measure(validate)
        objects[0] += len(values)

    total = Clock()
    total.measure(body)
    return objects[0], total, checking


def row(label: str, count: int, total: Clock, checking: Clock) -> None:
    """One line: objects per second generating (validation excluded) and in all, wall and CPU."""

    def rate(seconds: float) -> str:
        return f"{count / max(seconds, 1e-9):>9.0f}"

    print(
        f"{label:<42} {count:>7} {rate(total.wall - checking.wall)} {rate(total.wall)}"
        f" {rate(total.cpu - checking.cpu)} {rate(total.cpu)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="objects in the main run")
    parser.add_argument("--batch", type=int, default=25, help="objects drawn per example")
    parser.add_argument("--recorded", type=Path, default=RECORDED)
    parser.add_argument("--baseline-examples", type=int, default=40)
    args = parser.parse_args()

    schema = transaction_schema(args.recorded)
    validator = jsonschema.Draft202012Validator(schema)

    def check(value: Any) -> None:
        validator.validate(value)

    compiler = Compiler()
    single = compiler.compile(schema)
    assert compiler.fallbacks == 0, "transaction left the compiled subset"

    examples = -(-args.count // args.batch)
    batched = st.lists(single, min_size=args.batch, max_size=args.batch)
    objects, total, checking = run(batched, examples, args.batch, check)
    assert objects >= args.count, f"only {objects} objects generated"

    items = schema["properties"]["actions"]["items"]["oneOf"]
    per_branch = st.fixed_dictionaries(
        {"actions": st.lists(st.one_of([hypothesis_jsonschema.from_schema(b) for b in items]))},
        optional={
            "properties": hypothesis_jsonschema.from_schema(schema["properties"]["properties"])
        },
    )
    n = args.baseline_examples
    baselines: list[tuple[str, st.SearchStrategy[Any], int]] = [
        ("from_schema, whole schema (1/example)", hypothesis_jsonschema.from_schema(schema), n),
        ("from_schema per oneOf branch (1/example)", per_branch, n * 4),
    ]
    print(f"transaction arguments from {args.recorded.name}; every object validated (jsonschema)")
    print(f"{'':<50} {'wall clock':^19} {'CPU time':^19}")
    print(
        f"{'strategy':<42} {'objects':>7} {'gen/s':>9} {'+valid/s':>9} {'gen/s':>9} {'+valid/s':>9}"
    )
    for label, strategy, count in baselines:
        try:
            row(label, *run(strategy, count, 1, check, health_checks=False))
        except Exception as error:  # the baseline library failing is a result to print
            print(f"{label:<42} failed: {type(error).__name__}: {error}")
    row("compiled (1/example)", *run(single, 1000, 1, check))
    row(f"compiled ({args.batch}/example): main run", objects, total, checking)
    print(f"main run: {objects} valid objects, no health-check failure (all checks enabled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
