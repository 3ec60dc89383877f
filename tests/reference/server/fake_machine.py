"""A stand-in for ``reference.machine.Machine`` with exactly the interface the server uses.

Used only when the real engine cannot be imported, so that the server's tests run on their own.
It knows ``query-commands``, ``query-block``, ``query-status``, ``stop``, ``cont`` and ``quit``.
"""

from __future__ import annotations

import time
from typing import Any

_VERSIONS = {
    "10.0": {"major": 10, "minor": 0, "micro": 2},
    "7.2": {"major": 7, "minor": 2, "micro": 22},
}


class FakeMachine:
    """Implements the engine interface documented in ``reference.server.session.Engine``."""

    def __init__(self, version: str = "10.0") -> None:
        self.version = version
        self.quit_requested = False
        self.closed = False
        self._events: list[dict[str, Any]] = []
        self._running = True

    def greeting(self) -> dict[str, Any]:
        qemu = _VERSIONS[self.version]
        version = {"qemu": qemu, "package": "fake"}
        return {"QMP": {"version": version, "capabilities": ["oob"]}}

    def emit(self, name: str, data: dict[str, Any] | None = None) -> None:
        now = time.time()
        event: dict[str, Any] = {
            "timestamp": {"seconds": int(now), "microseconds": int(now % 1 * 1e6)},
            "event": name,
        }
        if data is not None:
            event["data"] = data
        self._events.append(event)

    def execute(self, command: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        del arguments
        if command == "query-commands":
            names = ["query-commands", "query-block", "query-status", "stop", "cont", "quit"]
            return {"return": [{"name": n} for n in names]}
        if command == "query-block":
            return {"return": []}
        if command == "query-status":
            status = "running" if self._running else "paused"
            return {"return": {"status": status, "running": self._running}}
        if command in ("stop", "cont"):
            self._running = command == "cont"
            self.emit("STOP" if command == "stop" else "RESUME")
            return {"return": {}}
        if command == "quit":
            self.quit_requested = True
            self.emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
            return {"return": {}}
        desc = f"The command {command} has not been found"
        return {"error": {"class": "CommandNotFound", "desc": desc}}

    def take_events(self) -> list[dict[str, Any]]:
        events, self._events = self._events, []
        return events

    def add_blockdev(self, options: dict[str, Any]) -> None:
        raise ValueError("the fake machine has no block layer")

    def add_drive(self, options: dict[str, str]) -> None:
        raise ValueError("the fake machine has no block layer")

    def close(self) -> None:
        self.closed = True
