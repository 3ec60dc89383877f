"""Check what an endpoint was sent and answered against its derived JSON Schemas.

Usage::

    from conformance.schema.messages import RecordingEndpoint, SchemaChecker, derived_schema

    recorder = RecordingEndpoint(endpoint)        # an Endpoint that logs every exchange
    ...                                           # run anything against ``recorder``
    checker = SchemaChecker(derived_schema(recorded_introspection("10.0"), "10.0"))
    problems = checker.problems(recorder.recording)    # [] when everything conforms

What is checked (the issue's "every message the tests send successfully validates"):

* a command whose reply is a ``return``: its arguments (``{}`` when none were sent) against the
  derived ``arguments`` schema, and the returned value against the ``returns`` schema; a
  successful command that the schema does not list is a problem too;
* a command answered with an error: nothing (the suite sends malformed input on purpose);
* every event: its name is in the schema and its ``data`` (``{}`` when absent) validates.

:func:`recording_factory` wraps an :data:`conformance.endpoints.EndpointFactory` so that
scenario runs (``run_scenario``) record as they go, observation queries included.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from conformance.endpoints import (
    SETTLE_TIMEOUT,
    Endpoint,
    EndpointFactory,
    JSONObject,
    LaunchOptions,
    Version,
)
from conformance.schema.jsonschema import DerivedSchema, QAPISource, convert

__all__ = [
    "RECORDED_DIR",
    "Exchange",
    "Recording",
    "RecordingEndpoint",
    "SchemaChecker",
    "derived_schema",
    "qapi_source",
    "recorded_introspection",
    "recording_factory",
]

#: Real QEMU's ``query-qmp-schema`` replies, recorded by ``scripts/record-qmp-schema.py``.
RECORDED_DIR = Path(__file__).resolve().parents[2] / "schema" / "recorded"


@dataclass(frozen=True)
class Exchange:
    """One command and its full reply."""

    command: str
    arguments: Any
    reply: JSONObject


@dataclass
class Recording:
    """Everything one endpoint was sent and sent back, in order."""

    exchanges: list[Exchange] = field(default_factory=list)
    events: list[JSONObject] = field(default_factory=list)


class RecordingEndpoint(Endpoint):
    """Wraps an endpoint; forwards everything and records exchanges and events.

    The wrapped endpoint's own attributes (``pid``, ``stderr``, ``alive()``...) stay reachable.
    """

    def __init__(self, inner: Endpoint, recording: Recording | None = None) -> None:
        super().__init__(inner.workdir)
        self.inner = inner
        self.recording = recording if recording is not None else Recording()

    @property
    def version(self) -> Version:
        return self.inner.version

    def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> JSONObject:
        reply = self.inner.execute(command, arguments)
        sent = None if arguments is None else json.loads(json.dumps(arguments))
        self.recording.exchanges.append(Exchange(command, sent, reply))
        return reply

    def take_events(self) -> list[JSONObject]:
        events = self.inner.take_events()
        self.recording.events.extend(events)
        return events

    def wait_for_exit(self, timeout: float = 10.0) -> None:
        self.inner.wait_for_exit(timeout)

    def settle(self, done: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> bool:
        # The inner endpoint decides how time passes: the in-process reference advances its
        # deterministic clock; polling in real time here would leave its jobs standing still.
        return self.inner.settle(done, timeout)

    def _close_endpoint(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this class does not have.
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def recording_factory(start: EndpointFactory, recording: Recording) -> EndpointFactory:
    """An endpoint factory like ``start`` whose endpoints record into ``recording``."""

    def factory(workdir: Path | None, launch: LaunchOptions) -> Endpoint:
        return RecordingEndpoint(start(workdir, launch), recording)

    return factory


def recorded_introspection(version: str) -> list[JSONObject]:
    """Real QEMU ``version``'s ``query-qmp-schema`` reply as recorded (``schema/recorded``)."""
    data = json.loads((RECORDED_DIR / f"qemu-{version}.json").read_text())
    schema: list[JSONObject] = data["schema"]
    return schema


def qapi_source(version: str) -> QAPISource | None:
    """Our QAPI schema of ``version`` for integer bounds, or ``None`` when it cannot load
    (unknown version, reference not importable)."""
    try:
        from reference.qapi import load_schema  # noqa: PLC0415 - optional dependency
    except Exception:
        return None
    try:
        source: QAPISource = load_schema(version)
    except Exception:
        return None
    return source


def derived_schema(introspection: Sequence[JSONObject], version: str | None) -> DerivedSchema:
    """:func:`convert` with our QAPI's integer bounds when ``version`` is one we know."""
    return convert(introspection, qapi=qapi_source(version) if version else None)


def _errors(validator: jsonschema.Draft202012Validator, value: Any) -> list[str]:
    best = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if best is None:
        return []
    where = "/".join(str(p) for p in best.absolute_path) or "(top)"
    return [f"at {where}: {best.message[:300]}"]


class SchemaChecker:
    """Validates recorded messages against one derived schema."""

    def __init__(self, derived: DerivedSchema) -> None:
        self.derived = derived
        #: How many messages were validated (successful exchanges count once).
        self.checked = 0
        self._validators: dict[tuple[str, str], jsonschema.Draft202012Validator] = {}

    def validator(self, kind: str, name: str) -> jsonschema.Draft202012Validator:
        """The validator of ``kind`` (``arguments``/``returns``/``event``) of ``name``."""
        key = (kind, name)
        if key not in self._validators:
            if kind == "event":
                schema = self.derived["events"][name]
            else:
                schema = self.derived["commands"][name][kind]
            self._validators[key] = jsonschema.Draft202012Validator(schema)
        return self._validators[key]

    def exchange_problems(self, exchange: Exchange) -> list[str]:
        """Problems of one exchange (empty when it conforms or was an error)."""
        reply = exchange.reply
        if "return" not in reply:
            return []
        command = exchange.command
        if command not in self.derived["commands"]:
            return [f"{exchange.command}: succeeded but is not in the endpoint's schema"]
        self.checked += 1
        arguments = {} if exchange.arguments is None else exchange.arguments
        problems = [
            f"{exchange.command} arguments {e}: {json.dumps(arguments)[:300]}"
            for e in _errors(self.validator("arguments", command), arguments)
        ]
        problems += [
            f"{exchange.command} return {e}: {json.dumps(reply['return'])[:300]}"
            for e in _errors(self.validator("returns", command), reply["return"])
        ]
        return problems

    def event_problems(self, event: JSONObject) -> list[str]:
        """Problems of one event message."""
        name = event.get("event")
        if str(name) not in self.derived["events"]:
            return [f"event {name!r} is not in the endpoint's schema"]
        self.checked += 1
        data = event.get("data", {})
        errors = _errors(self.validator("event", str(name)), data)
        return [f"event {name} data {e}: {json.dumps(data)[:300]}" for e in errors]

    def problems(self, recording: Recording) -> list[str]:
        """Every problem of a recording, exchanges first, then events."""
        out: list[str] = []
        for exchange in recording.exchanges:
            out += self.exchange_problems(exchange)
        for event in recording.events:
            out += self.event_problems(event)
        return out
