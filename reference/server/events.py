"""QMP events: wall-clock timestamps and delivery to every negotiated session.

Tutorial::

    hub = EventHub()
    hub.subscribe(session_a.deliver)        # each session decides whether it may receive
    hub.broadcast(make_event("STOP"))       # -> {"timestamp": {...}, "event": "STOP"}

QEMU (``monitor_qapi_event_emit()``) sends an event to every QMP monitor that has left
capabilities negotiation and to no other; :meth:`.session.Session.deliver` applies that rule.
An event without data has no ``data`` member at all (real QEMU's ``STOP``).
This module must not decide *which* events happen: the machine reports them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["EventHub", "make_event", "timestamp"]

Event = dict[str, Any]


def timestamp(now: float | None = None) -> dict[str, int]:
    """qmp-spec "Asynchronous events": ``{"seconds": s, "microseconds": us}`` of the wall clock."""
    micros = int((time.time() if now is None else now) * 1_000_000)
    return {"seconds": micros // 1_000_000, "microseconds": micros % 1_000_000}


def make_event(name: str, data: dict[str, Any] | None = None) -> Event:
    """An event stamped now; ``data`` is left out when ``None``, as QEMU does."""
    event: Event = {"timestamp": timestamp(), "event": name}
    if data is not None:
        event["data"] = data
    return event


class EventHub:
    """Fans events out to subscribers in subscription order."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Event], None]] = []

    def subscribe(self, deliver: Callable[[Event], None]) -> None:
        """Start delivering events to ``deliver``."""
        self._subscribers.append(deliver)

    def unsubscribe(self, deliver: Callable[[Event], None]) -> None:
        """Stop delivering events to ``deliver`` (unknown subscribers are ignored)."""
        if deliver in self._subscribers:
            self._subscribers.remove(deliver)

    def broadcast(self, event: Event) -> None:
        """Hand ``event`` to every subscriber; a missing timestamp is added."""
        if "timestamp" not in event:
            event = {"timestamp": timestamp(), **event}
        for deliver in list(self._subscribers):
            deliver(event)
