"""QMP errors as the engine raises them.

Every failure a client can see is a :class:`QMPError` carrying QEMU's error class and ``desc``
verbatim; :meth:`QMPError.reply` turns it into the wire form. Nothing else may escape
``Machine.execute``: an unexpected Python exception is a bug of ours, reported as a
``GenericError`` that says so rather than a crash of the endpoint.
"""

from __future__ import annotations

from typing import Any

GENERIC = "GenericError"
COMMAND_NOT_FOUND = "CommandNotFound"
DEVICE_NOT_ACTIVE = "DeviceNotActive"
DEVICE_NOT_FOUND = "DeviceNotFound"


class QMPError(Exception):
    """An error reply: QEMU's ``class`` and ``desc``."""

    def __init__(self, desc: str, error_class: str = GENERIC) -> None:
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class

    def reply(self) -> dict[str, Any]:
        """The ``{"error": ...}`` reply body."""
        return {"error": {"class": self.error_class, "desc": self.desc}}

    def __repr__(self) -> str:
        return f"QMPError({self.error_class}: {self.desc!r})"
