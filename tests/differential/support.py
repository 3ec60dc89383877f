"""Shared machinery of the differential tests: parametrization, cached runs, the three checks.

Each ``test_<area>.py`` states, for every scenario of its areas and every version it applies to:

* QEMU meets the scenario's ``expect`` entries (documents QEMU's behaviour);
* QEMU is stable: a second run gives the identical normalized transcript (proves the
  normalization removes everything accidental);
* the reference, emulating the same version, gives the same transcript as QEMU;
* every message of those runs conforms to the endpoint's schema derived from its introspection
  (``conformance.schema``): arguments and returns of successful commands, and events.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import pytest

from conformance.deviations import load
from conformance.endpoints import (
    STREAM_BROKEN,
    EndpointStreamBroken,
    EndpointUnavailable,
    LaunchOptions,
    Target,
    parse_target,
    qemu_binaries,
    qemu_binary_available,
    reference_importable,
)
from conformance.scenario import (
    Scenario,
    Transcript,
    check_expectations,
    compare_transcripts,
    describe,
    load_scenarios,
    run_scenario,
)
from conformance.schema.messages import (
    Recording,
    SchemaChecker,
    derived_schema,
    recorded_introspection,
    recording_factory,
)


def cases() -> list[object]:
    """``pytest.param(scenario, version)`` for every scenario of every area and its versions."""
    return [
        pytest.param(scenario, version, id=f"{scenario.id}@{version}")
        for scenario in load_scenarios()
        for version in scenario.versions
    ]


def qemu_target(version: str) -> Target:
    """The QEMU of ``version``, or skip saying which binary is missing."""
    binary = qemu_binaries()[version]
    if not qemu_binary_available(binary):
        pytest.skip(f"QEMU {version} binary not found: {binary}")
    return parse_target(f"qemu:{version}")


def reference_target(version: str) -> Target:
    """The in-process reference emulating ``version``, or skip saying why it cannot import."""
    reason = reference_importable()
    if reason is not None:
        pytest.skip(reason)
    return parse_target(f"reference:{version}")


def reference_for(scenario: Scenario, version: str) -> Target:
    """The reference emulating ``version``, or skip saying why it cannot run ``scenario``
    (engine not importable, or a feature the scenario ``requires`` not implemented yet)."""
    reference = reference_target(version)
    from reference import FEATURES  # noqa: PLC0415 - importable only once reference_target passed

    missing = sorted(scenario.requires - FEATURES)
    if missing:
        pytest.skip(f"reference does not implement {', '.join(missing)} yet")
    return reference


@dataclass
class TranscriptCache:
    """Transcripts by (endpoint label, scenario id), so each QEMU run happens once per session."""

    runs: dict[tuple[str, str], Transcript] = field(default_factory=dict)
    #: The raw messages of each cached run (for the schema checks), same keys as ``runs``.
    recordings: dict[tuple[str, str], Recording] = field(default_factory=dict)

    def get(self, target: Target, scenario: Scenario, version: str) -> Transcript:
        key = (target.label, scenario.id)
        if key not in self.runs:
            recording = Recording()
            self.runs[key] = self.fresh(target, scenario, version, recording)
            self.recordings[key] = recording
        return self.runs[key]

    def recording(self, target: Target, scenario: Scenario, version: str) -> Recording:
        """What the cached run of ``scenario`` on ``target`` sent and received."""
        self.get(target, scenario, version)
        return self.recordings[(target.label, scenario.id)]

    @staticmethod
    def fresh(
        target: Target, scenario: Scenario, version: str, recording: Recording | None = None
    ) -> Transcript:
        start = target.start if recording is None else recording_factory(target.start, recording)
        try:
            return run_scenario(scenario, start, label=target.label, version=version)
        except EndpointUnavailable as error:
            pytest.skip(str(error))
        except EndpointStreamBroken as error:
            _stream_broken(target, error)
            raise


#: The known deviation of a QMP stream that breaks while QEMU runs on (a race, not replayable).
STREAM_BROKEN_DEVIATION = "qmp-stream-broken"


def _stream_broken(target: Target, error: EndpointStreamBroken) -> None:
    """On an endpoint that known deviation names (real QEMU), the run shows that QEMU defect:
    the test is an expected failure saying so, as ``qmp-conformance`` reports it. On any other
    endpoint (the reference) the caller lets the error fail the test."""
    (deviation,) = [d for d in load() if d.id == STREAM_BROKEN_DEVIATION]
    assert str(error).startswith(STREAM_BROKEN), error
    if target.kind in deviation.targets:
        pytest.xfail(f"known deviation {deviation.id} (QEMU defect, a race): {error}")


def assert_qemu_meets_expectations(
    scenario: Scenario, version: str, transcripts: TranscriptCache
) -> None:
    transcript = transcripts.get(qemu_target(version), scenario, version)
    problems = check_expectations(scenario, transcript, qemu=True)
    assert not problems, "\n".join(problems) + "\n" + describe(scenario, [transcript])


def assert_qemu_is_stable(scenario: Scenario, version: str, transcripts: TranscriptCache) -> None:
    target = qemu_target(version)
    first = transcripts.get(target, scenario, version)
    second = TranscriptCache.fresh(target, scenario, version)
    second.endpoint = f"{target.label} (second run)"
    problems = compare_transcripts(scenario, second, first, key_order=True)
    assert not problems, "\n".join(problems)


def assert_reference_matches_qemu(
    scenario: Scenario, version: str, transcripts: TranscriptCache
) -> None:
    reference = reference_for(scenario, version)
    oracle = transcripts.get(qemu_target(version), scenario, version)
    candidate = transcripts.get(reference, scenario, version)
    problems = check_expectations(scenario, candidate, qemu=False)
    problems += compare_transcripts(scenario, candidate, oracle)
    assert not problems, "\n".join(problems) + "\n" + describe(scenario, [candidate, oracle])


@functools.cache
def qemu_schema_checker(version: str) -> SchemaChecker:
    """Checks against real QEMU's recorded introspection (with our QAPI's integer bounds)."""
    return SchemaChecker(derived_schema(recorded_introspection(version), version))


@functools.cache
def reference_schema_checker(version: str) -> SchemaChecker:
    """Checks against the reference's live ``query-qmp-schema`` reply."""
    with reference_target(version).start(None, LaunchOptions()) as endpoint:
        reply = endpoint.execute("query-qmp-schema")
    return SchemaChecker(derived_schema(reply["return"], version))


def assert_qemu_messages_match_schema(
    scenario: Scenario, version: str, transcripts: TranscriptCache
) -> None:
    recording = transcripts.recording(qemu_target(version), scenario, version)
    problems = qemu_schema_checker(version).problems(recording)
    assert not problems, "\n".join(problems)


def assert_reference_messages_match_schema(
    scenario: Scenario, version: str, transcripts: TranscriptCache
) -> None:
    reference = reference_for(scenario, version)
    recording = transcripts.recording(reference, scenario, version)
    problems = reference_schema_checker(version).problems(recording)
    assert not problems, "\n".join(problems)
