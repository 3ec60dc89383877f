"""Differential tests over every curated scenario (``conformance/scenarios/<area>/``).

Every scenario runs on every version it applies to: QEMU must meet the scenario's expectations
and be stable across runs; the reference must produce QEMU's transcript; on both, every message
must conform to the schema derived from the endpoint's own introspection.
"""

from __future__ import annotations

import pytest

from conformance.scenario import Scenario

from .support import (
    TranscriptCache,
    assert_qemu_is_stable,
    assert_qemu_meets_expectations,
    assert_qemu_messages_match_schema,
    assert_reference_matches_qemu,
    assert_reference_messages_match_schema,
    cases,
)

CASES = cases()


@pytest.mark.qemu
@pytest.mark.parametrize(("scenario", "version"), CASES)
def test_qemu_meets_expectations(
    scenario: Scenario, version: str, transcripts: TranscriptCache
) -> None:
    assert_qemu_meets_expectations(scenario, version, transcripts)


@pytest.mark.qemu
@pytest.mark.parametrize(("scenario", "version"), CASES)
def test_qemu_is_stable(scenario: Scenario, version: str, transcripts: TranscriptCache) -> None:
    assert_qemu_is_stable(scenario, version, transcripts)


@pytest.mark.qemu
@pytest.mark.parametrize(("scenario", "version"), CASES)
def test_reference_matches_qemu(
    scenario: Scenario, version: str, transcripts: TranscriptCache
) -> None:
    assert_reference_matches_qemu(scenario, version, transcripts)


@pytest.mark.qemu
@pytest.mark.parametrize(("scenario", "version"), CASES)
def test_qemu_messages_match_schema(
    scenario: Scenario, version: str, transcripts: TranscriptCache
) -> None:
    assert_qemu_messages_match_schema(scenario, version, transcripts)


@pytest.mark.parametrize(("scenario", "version"), CASES)
def test_reference_messages_match_schema(
    scenario: Scenario, version: str, transcripts: TranscriptCache
) -> None:
    assert_reference_messages_match_schema(scenario, version, transcripts)
