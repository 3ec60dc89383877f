"""The server's one error root, and the tree under it.

::

    ServerError                 anything the QMP server or its launcher refuses
     +-- ConfigError            a command line or monitor spec QEMU would reject (exit status 1)
     +-- StateError             an operation in the wrong Runstate (names actual and required)

Protocol-level mistakes by a client (bad JSON, unknown commands) are never exceptions: QEMU
answers them with an error reply, so they are data (see :mod:`.protocol`).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["ConfigError", "ServerError", "StateError"]


class ServerError(Exception):
    """Root of every exception this package raises on purpose."""


class ConfigError(ServerError):
    """A command-line option or monitor specification that QEMU would reject.

    ``str()`` is the message without the program-name prefix; the launcher adds it.
    """


class StateError(ServerError):
    """An operation attempted in a state that does not allow it."""

    def __init__(self, actual: Enum, required: Enum) -> None:
        super().__init__(f"state is {actual.name}, operation requires {required.name}")
        self.actual = actual
        self.required = required
