"""A QMP stream that breaks with the process alive: the endpoint says so, the recorder ends the
step as ``hung`` with that text, and only real QEMU gets the known deviation for it.

The process here is a small fake QMP server (no QEMU needed): it greets, negotiates, then
answers ``query-status`` (and ``block-dirty-bitmap-add``) as the broken QEMU 7.2 monitor answered
a ``query-jobs``, or drops the connection at the first command after the negotiation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.checks import liveness
from conformance.checks.base import CheckContext
from conformance.deviations import load, mark
from conformance.endpoints import (
    QMP_SERVER_OPTIONS,
    EndpointStreamBroken,
    LaunchOptions,
)
from conformance.history import record
from conformance.scenario import load_scenario

from .fake_qmp import PARSE_ERROR, FakeQmpProcess


def test_launched_endpoints_wait_for_their_client() -> None:
    assert QMP_SERVER_OPTIONS == "server=on,wait=on"


@pytest.mark.parametrize("mode", ["parse-error", "extra-error", "drop"])
def test_broken_stream_raises_and_kills_the_process(tmp_path: Path, mode: str) -> None:
    endpoint = FakeQmpProcess(mode, tmp_path)
    try:
        with pytest.raises(EndpointStreamBroken, match="QMP stream broken during 'query-status'"):
            endpoint.execute("query-status")
            endpoint.execute("query-status")  # extra-error: the first one was answered

        assert not endpoint.alive()
    finally:
        endpoint.close()


def test_parse_error_for_a_lone_surrogate_is_a_reply(tmp_path: Path) -> None:
    # QEMU rightly refuses "\ud800" with a JSON parse error: that is data, not a broken stream.
    endpoint = FakeQmpProcess("parse-error", tmp_path)
    try:
        reply = endpoint.execute("block-dirty-bitmap-add", {"node": "\ud800", "name": "b0"})

        assert reply == {"error": {"class": "GenericError", "desc": PARSE_ERROR}}
        assert endpoint.alive()
    finally:
        endpoint.close()


def test_recorder_ends_the_step_hung_and_only_qemu_gets_the_deviation(tmp_path: Path) -> None:
    program_file = tmp_path / "jobs" / "poll.yaml"
    program_file.parent.mkdir()
    program_file.write_text(
        "description: polls\nsteps:\n  - execute: query-status\n  - execute: query-block\n"
    )
    program = load_scenario(program_file)

    def start(workdir: Path | None, launch: LaunchOptions) -> FakeQmpProcess:
        return FakeQmpProcess("parse-error", workdir)

    history = record(program, start, label="fake", version="7.2")
    findings = liveness.check(history, CheckContext()).findings
    mark(findings, load(), kind="qemu", version="7.2", program=program.id)
    as_reference = liveness.check(history, CheckContext()).findings
    mark(as_reference, load(), kind="reference", version="7.2", program=program.id)

    assert [(op.index, op.outcome, op.stream_broken) for op in history.operations] == [
        (0, "hung", True)
    ]
    assert [f.deviation for f in findings] == ["qmp-stream-broken"]
    assert [f.deviation for f in as_reference] == [None]
