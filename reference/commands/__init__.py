"""The QMP commands other than ``transaction``'s actions, grouped by subject.

Each handler takes the machine and the (already schema-checked) arguments and returns the
command's ``return`` value or raises :class:`reference.errors.QMPError`. ``COMMANDS`` is filled
by the ``@command`` decorator as the subject modules are imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reference.machine import Machine

Handler = Callable[["Machine", dict[str, Any]], Any]

#: Every command the reference implements, by QMP name.
COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    """Registers a handler for the QMP command ``name``."""

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = handler
        return handler

    return register


def load_all() -> None:
    """Imports every subject module so that all handlers are registered."""
    # Imported here, not at the top: the subject modules import ``command`` from this module.
    from reference.commands import (  # noqa: F401, PLC0415
        backup,
        bitmaps,
        block,
        core,
        hmp,
        jobs,
        snapshots,
        transaction,
    )
