"""The checker agrees with every QEMU-verified step of the curated scenarios.

For each ``execute`` step of every scenario (all areas), on each version the step runs on:
if the scenario expects one of the input visitor's messages, ``check_arguments`` raises exactly
that error; if it expects a return value, ``check_arguments`` accepts the arguments. Errors of
other shapes come from the commands themselves and only require that we accept the arguments.
"""

from __future__ import annotations

import pytest

from conformance.scenario import Scenario, Step, load_scenarios
from reference.qapi import QAPIError, load_schema

from .test_differential import CHECKER_MESSAGE

AREAS = ("qapi", "bitmaps", "blockdev", "persistence", "transactions")
#: Messages shaped like the input visitor's that a command raises itself, after its lookups
#: (``block_resize`` checks ``size`` once the node is found: scenario blockdev/resize_errors).
COMMAND_RAISED = frozenset({"Parameter 'size' expects a >0 size"})


def _steps() -> list[object]:
    params: list[object] = []
    for area in AREAS:
        for scenario in load_scenarios(area):
            for step in scenario.steps:
                if step.kind != "execute" or not isinstance(step.body, str):
                    continue
                for version in step.versions or scenario.versions:
                    params.append(
                        pytest.param(
                            scenario, step, version, id=f"{scenario.id}#{step.index}@{version}"
                        )
                    )
    return params


@pytest.mark.parametrize(("scenario", "step", "version"), _steps())
def test_checker_agrees_with_scenario(scenario: Scenario, step: Step, version: str) -> None:
    schema = load_schema(version)
    if not schema.has_command(step.body):
        pytest.skip(f"{step.body} is not in our schema")
    expect = step.expect or {}
    error = expect.get("error")
    desc = str(error.get("desc", "")) if isinstance(error, dict) else ""
    checker_error = CHECKER_MESSAGE.match(desc) is not None and desc not in COMMAND_RAISED

    try:
        schema.check_arguments(step.body, step.arguments or {})
        raised = None
    except QAPIError as err:
        raised = {"class": err.error_class, "desc": err.desc}

    if checker_error:
        assert raised == error
    else:
        assert raised is None
