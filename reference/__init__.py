"""The reference implementation of QEMU's QMP ``transaction`` and the block layer around it.

``Machine`` is the in-process endpoint; ``reference.server`` serves it over QMP sockets and
``qmp-reference`` launches it with QEMU's command line. ``reference._core`` (Rust) is private.
"""

from reference.errors import QMPError
from reference.machine import Machine

#: Block-layer features beyond dirty bitmaps that this reference implements. Scenarios name
#: what they need (``requires:``); the differential tests compare only what is implemented and
#: say so when they skip. The snapshots issue adds ``blockdev-snapshot*``, ``backing-chains``
#: and ``image-locking``.
FEATURES: frozenset[str] = frozenset(
    {"bitmaps", "persistent-bitmaps", "transaction", "blockdev-backup", "drive-backup"}
)

__all__ = ["FEATURES", "Machine", "QMPError"]
