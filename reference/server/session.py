"""One QMP connection's state: capabilities negotiation, then commands.

A :class:`Session` is what QEMU's ``MonitorQMP`` is per connected client: it starts in
:attr:`Runstate.NEGOTIATION` (only ``qmp_capabilities`` exists), moves to
:attr:`Runstate.COMMAND` on a successful ``qmp_capabilities`` and to :attr:`Runstate.CLOSED`
when the connection ends.  It turns each decoded message into at most one reply; it never does
I/O and never touches other sessions (events reach it through :meth:`Session.deliver`).

Spec: qmp-spec "Capabilities Negotiation" and "Out-of-band execution"; exact texts from
``monitor/qmp.c``, ``monitor/qmp-cmds-control.c`` and ``qapi/qmp-dispatch.c``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum
from typing import Any, Final, Protocol

from .errors import StateError
from .protocol import ABSENT, COMMAND_NOT_FOUND, GENERIC_ERROR, Request, error_reply, parse_request
from .qjson import JSONParseError, qdict_items

__all__ = ["ALLOW_OOB", "QMP_CAPABILITIES", "Engine", "Runstate", "Session"]

#: ``qapi/control.json`` ``QMPCapability``: every capability QEMU knows.
QMP_CAPABILITIES: Final = ("oob",)
#: Commands whose schema says ``'allow-oob': true`` (``qapi/migration.json``).
ALLOW_OOB: Final = frozenset({"migrate-recover", "migrate-pause"})

logger = logging.getLogger(__name__)

_NEGOTIATION_DESC: Final = "Expecting capabilities negotiation with 'qmp_capabilities'"


class Engine(Protocol):
    """What the server needs from the machine (``reference.machine.Machine``)."""

    version: str
    quit_requested: bool

    def greeting(self) -> dict[str, Any]:
        """The ``{"QMP": {...}}`` greeting."""
        ...

    def execute(self, command: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        """``{"return": X}`` or ``{"error": {"class": C, "desc": D}}``."""
        ...

    def take_events(self) -> list[dict[str, Any]]:
        """Drain the events that happened since the last call."""
        ...


class Runstate(Enum):
    """Where a session is in its life (QEMU: which ``QmpCommandList`` it dispatches to)."""

    NEGOTIATION = "negotiation"
    COMMAND = "command"
    CLOSED = "closed"


class Session:
    """Per-connection QMP state.

    ``send`` receives events as they are delivered; replies are returned by :meth:`handle`
    so that the caller can order them after the events the command caused.
    """

    def __init__(self, engine: Engine, send: Callable[[dict[str, Any]], None]) -> None:
        self.engine = engine
        self.runstate = Runstate.NEGOTIATION
        self.capabilities: frozenset[str] = frozenset()
        self._send = send
        greeting = engine.greeting()
        self._greeting = greeting
        self.offered = frozenset(greeting.get("QMP", {}).get("capabilities", []))

    def require(self, state: Runstate) -> None:
        """Raise :class:`StateError` unless the session is in ``state``."""
        if self.runstate is not state:
            raise StateError(self.runstate, state)

    def greeting(self) -> dict[str, Any]:
        """The greeting to send first (QEMU sends it when the connection opens)."""
        self.require(Runstate.NEGOTIATION)
        return self._greeting

    def close(self) -> None:
        """The connection is gone: deliver nothing more."""
        self.runstate = Runstate.CLOSED

    def deliver(self, event: dict[str, Any]) -> None:
        """Send ``event`` if this session may receive events (only after negotiation)."""
        if self.runstate is Runstate.COMMAND:
            self._send(event)

    def handle(self, message: Any) -> dict[str, Any] | None:
        """The reply to one decoded message (a JSON value or a :class:`JSONParseError`)."""
        if self.runstate is Runstate.CLOSED:
            return None
        if isinstance(message, JSONParseError):
            return error_reply(GENERIC_ERROR, message.desc)
        request = parse_request(message, allow_oob="oob" in self.capabilities)
        if not isinstance(request, Request):
            return request
        reply = self._dispatch(request)
        if self.runstate is Runstate.NEGOTIATION:
            error = reply.get("error")
            if isinstance(error, dict) and error.get("class") == COMMAND_NOT_FOUND:
                reply = error_reply(COMMAND_NOT_FOUND, _NEGOTIATION_DESC)
        if request.id is not ABSENT:
            reply = {**reply, "id": request.id}
        return reply

    def _dispatch(self, request: Request) -> dict[str, Any]:
        command = request.command
        if request.oob and command not in self._command_names():
            return error_reply(COMMAND_NOT_FOUND, f"The command {command} has not been found")
        if request.oob and command not in ALLOW_OOB:
            return error_reply(GENERIC_ERROR, f"The command {command} does not support OOB")
        if command == "qmp_capabilities":
            return self._qmp_capabilities(request.arguments)
        if self.runstate is Runstate.NEGOTIATION:
            return error_reply(COMMAND_NOT_FOUND, _NEGOTIATION_DESC)
        try:
            return self.engine.execute(command, request.arguments)
        except Exception as exc:  # a bug in the engine must not take the monitor down
            logger.exception("engine failed on %r", command)
            return error_reply(GENERIC_ERROR, f"internal error: {exc}")

    def _command_names(self) -> frozenset[str]:
        """Every command this session can run (the engine's own ``query-commands``)."""
        reply = self.engine.execute("query-commands", None)
        names = {c["name"] for c in reply.get("return", []) if isinstance(c, dict) and "name" in c}
        return frozenset(names | {"qmp_capabilities"})

    def _qmp_capabilities(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """``qmp_qmp_capabilities()`` after QAPI's argument visitor."""
        wanted: list[str] = []
        if "enable" in arguments:
            enable = arguments["enable"]
            if not isinstance(enable, list):
                desc = "Invalid parameter type for 'enable', expected: array"
                return error_reply(GENERIC_ERROR, desc)
            for index, item in enumerate(enable):
                if not isinstance(item, str):
                    desc = f"Invalid parameter type for 'enable[{index}]', expected: string"
                    return error_reply(GENERIC_ERROR, desc)
                if item not in QMP_CAPABILITIES:
                    # Sic: QEMU's visitor names list members 'null' here (7.2 and 10.0).
                    desc = f"Parameter 'null' does not accept value '{item}'"
                    return error_reply(GENERIC_ERROR, desc)
                wanted.append(item)
        for name, _ in qdict_items(arguments):
            if name != "enable":
                return error_reply(GENERIC_ERROR, f"Parameter '{name}' is unexpected")
        if self.runstate is Runstate.COMMAND:
            desc = "Capabilities negotiation is already complete, command ignored"
            return error_reply(COMMAND_NOT_FOUND, desc)
        unavailable = [cap for cap in wanted if cap not in self.offered]
        if unavailable:
            return error_reply(GENERIC_ERROR, f"Capability {', '.join(unavailable)} not available")
        self.capabilities = frozenset(wanted)
        self.runstate = Runstate.COMMAND
        return {"return": {}}
