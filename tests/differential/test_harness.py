"""The harness itself: normalization, scenario files, transcript comparison (no QEMU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.endpoints import EndpointStreamBroken, Target, parse_target
from conformance.observe import Normalizer
from conformance.scenario import (
    Transcript,
    check_expectations,
    compare_transcripts,
    load_scenario,
    load_scenarios,
)

from .support import TranscriptCache


def test_normalizer_workdir_and_auto_names_rewritten_in_order() -> None:
    normalizer = Normalizer(Path("/tmp/w"))

    value = normalizer.value(
        {"file": 'json:{"file": "/tmp/w/a.qcow2"}', "nodes": ["#block407", "#block12", "#block407"]}
    )

    assert value == {
        "file": 'json:{"file": "{dir}/a.qcow2"}',
        "nodes": ["#block<0>", "#block<1>", "#block<0>"],
    }


def test_normalizer_host_dependent_fields_dropped() -> None:
    normalizer = Normalizer(Path("/tmp/w"))

    event = normalizer.event({"event": "X", "timestamp": {"seconds": 1}, "data": {}})
    image = normalizer.value(
        {
            "actual-size": 4096,
            "virtual-size": 1,
            "format-specific": {"type": "file", "data": {"extent-size-hint": 1}},
        }
    )

    assert event == {"event": "X", "data": {}}
    assert image == {"virtual-size": 1, "format-specific": {"type": "file", "data": {}}}


def test_scenarios_all_load_with_descriptions() -> None:
    scenarios = load_scenarios()

    assert len(scenarios) >= 90
    assert all(s.description.strip() for s in scenarios)
    assert len({s.id for s in scenarios}) == len(scenarios)


def test_scenarios_each_assert_something() -> None:
    weak = [
        s.id
        for s in load_scenarios()
        if not any(step.expect or step.qemu_crashes or step.kind == "observe" for step in s.steps)
    ]

    assert weak == []


def _crash_scenario_transcripts() -> tuple[Transcript, Transcript]:
    scenario = next(
        s for s in load_scenarios("bitmaps") if s.name == "merge_empty_bitmaps_crashes_qemu"
    )
    crash_index = next(step.index for step in scenario.steps if step.qemu_crashes)
    ok = {"reply": {"return": {}}, "events": []}
    common = [{"step": -1, "events": []}] + [{"step": i, **ok} for i in range(crash_index)]
    qemu = Transcript(
        scenario.id, "qemu", "10.0", [*common, {"step": crash_index, "crashed": "SIGSEGV"}]
    )
    ref = Transcript(
        scenario.id,
        "reference",
        "10.0",
        [
            *common,
            {"step": crash_index, "reply": {"error": {"class": "GenericError", "desc": "x"}}},
        ],
    )
    return qemu, ref


def test_compare_qemu_crash_accepts_any_generic_error() -> None:
    qemu, ref = _crash_scenario_transcripts()
    scenario = next(s for s in load_scenarios("bitmaps") if s.id == qemu.scenario)

    assert compare_transcripts(scenario, ref, qemu) == []
    assert check_expectations(scenario, ref, qemu=False) != []  # the observe expectation fails


def test_compare_detects_a_changed_reply() -> None:
    qemu, ref = _crash_scenario_transcripts()
    scenario = next(s for s in load_scenarios("bitmaps") if s.id == qemu.scenario)
    ref.entries[1] = {"step": 0, "reply": {"error": {"class": "GenericError", "desc": "no"}}}

    problems = compare_transcripts(scenario, ref, qemu)

    assert len(problems) == 1
    assert "step 0" in problems[0]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("reference", "reference"),
        ("reference:7.2", "reference:7.2"),
        ("qemu:7.2", "qemu:7.2"),
        ("unix:/tmp/s", "unix:/tmp/s"),
        ("tcp:localhost:4444", "tcp:localhost:4444"),
    ],
)
def test_parse_target_known_forms_accepted(text: str, label: str) -> None:
    assert parse_target(text).label == label


def test_parse_target_unknown_form_rejected() -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        parse_target("vmware")


@pytest.mark.parametrize(("kind", "xfails"), [("qemu", True), ("reference", False)])
def test_broken_stream_is_the_known_deviation_on_qemu_only(
    tmp_path: Path, kind: str, xfails: bool
) -> None:
    from tests.conformance.suite.fake_qmp import FakeQmpProcess  # noqa: PLC0415

    program_file = tmp_path / "jobs" / "poll.yaml"
    program_file.parent.mkdir()
    program_file.write_text("description: polls\nsteps:\n  - execute: query-status\n")
    target = Target("fake", lambda workdir, launch: FakeQmpProcess("drop", workdir), "7.2", kind)

    if xfails:
        with pytest.raises(pytest.xfail.Exception, match="known deviation qmp-stream-broken"):
            TranscriptCache.fresh(target, load_scenario(program_file), "7.2")
    else:
        with pytest.raises(EndpointStreamBroken, match="QMP stream broken during 'query-"):
            TranscriptCache.fresh(target, load_scenario(program_file), "7.2")
