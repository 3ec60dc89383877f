"""The reference implementation of QEMU's QMP ``transaction`` and the block layer around it.

``Machine`` is the in-process endpoint; ``reference.server`` serves it over QMP sockets and
``qmp-reference`` launches it with QEMU's command line. ``reference._core`` (Rust) is private.
"""

from reference.errors import QMPError
from reference.machine import Machine

__all__ = ["Machine", "QMPError"]
