"""Recording an endpoint's messages and checking them against its derived schema."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.endpoints import ReferenceEndpoint, parse_target
from conformance.scenario import load_scenarios, run_scenario
from conformance.schema.messages import (
    Exchange,
    Recording,
    RecordingEndpoint,
    SchemaChecker,
    recording_factory,
)

from .support import derived


def _checker(source: str = "reference:10.0") -> SchemaChecker:
    return SchemaChecker(derived(source))


def test_recording_endpoint_records_and_forwards() -> None:
    with RecordingEndpoint(ReferenceEndpoint("10.0")) as endpoint:
        assert endpoint.version[:2] == (10, 0)
        reply = endpoint.execute(
            "blockdev-add", {"driver": "null-co", "node-name": "n0", "size": 1 << 20}
        )
        assert reply == {"return": {}}
        endpoint.execute("block-dirty-bitmap-add", {"node": "n0", "name": "b0"})
        endpoint.execute("block-dirty-bitmap-add", {"node": "n0", "name": "b0"})  # an error
        endpoint.execute("query-named-block-nodes")
        endpoint.execute("quit")
        endpoint.take_events()
        recording = endpoint.recording
    assert [e.command for e in recording.exchanges] == [
        "blockdev-add",
        "block-dirty-bitmap-add",
        "block-dirty-bitmap-add",
        "query-named-block-nodes",
        "quit",
    ]
    assert "error" in recording.exchanges[2].reply
    assert [e["event"] for e in recording.events] == ["SHUTDOWN"]
    checker = _checker()
    assert checker.problems(recording) == []
    assert checker.checked == 5  # four successful commands and one event


def _exchange(command: str, arguments: Any, returned: Any) -> Exchange:
    return Exchange(command, arguments, {"return": returned})


@pytest.mark.parametrize(
    ("exchange", "fragment"),
    [
        (_exchange("block-dirty-bitmap-add", {"node": "n0"}, {}), "'name' is a required"),
        (_exchange("block-dirty-bitmap-add", {"node": "n0", "name": "b", "x": 1}, {}), "'x'"),
        (
            _exchange("block-dirty-bitmap-add", {"node": "n", "name": "b", "granularity": -1}, {}),
            "granularity",
        ),
        (_exchange("query-version", None, {"qemu": {}}), "return"),
        (_exchange("query-named-block-nodes", None, [{"node-name": 1}]), "return"),
        (_exchange("no-such-command", None, {}), "not in the endpoint's schema"),
    ],
    ids=["missing", "unexpected", "out-of-range", "bad-return", "bad-nested-return", "unknown"],
)
def test_bad_successful_exchanges_are_reported(exchange: Exchange, fragment: str) -> None:
    problems = _checker("recorded:10.0").exchange_problems(exchange)
    assert len(problems) == 1
    assert fragment in problems[0]


def test_error_replies_are_not_checked() -> None:
    exchange = Exchange("block-dirty-bitmap-add", {"bogus": 1}, {"error": {"class": "X"}})
    assert _checker().exchange_problems(exchange) == []


def test_events_are_checked() -> None:
    checker = _checker("recorded:7.2")
    good = {"event": "SHUTDOWN", "data": {"guest": False, "reason": "host-qmp-quit"}}
    assert checker.event_problems(good) == []
    assert checker.event_problems({**good, "data": {"guest": "no", "reason": "x"}})
    assert checker.event_problems({"event": "NO_SUCH_EVENT"})
    # an event with no data members is checked against {}
    stop = {"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}
    assert checker.event_problems(stop) == []


def test_recording_factory_records_a_whole_scenario_run() -> None:
    scenario = next(s for s in load_scenarios("transactions") if not s.requires)
    recording = Recording()
    start = recording_factory(parse_target("reference:10.0").start, recording)
    run_scenario(scenario, start, version="10.0")
    executed = [s for s in scenario.steps if s.kind == "execute" and s.applies_to("10.0")]
    assert len(recording.exchanges) >= len(executed)
    assert _checker().problems(recording) == []


class _MarkedEndpoint(ReferenceEndpoint):
    marker = "inner attribute"


def test_recording_endpoint_reaches_the_inner_endpoints_attributes() -> None:
    inner = _MarkedEndpoint("7.2")
    with RecordingEndpoint(inner) as endpoint:
        assert endpoint.version_label == "7.2"
        assert endpoint.workdir == inner.workdir
        assert endpoint.marker == "inner attribute"
