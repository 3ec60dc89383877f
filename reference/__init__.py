"""The reference implementation of QEMU's QMP ``transaction`` and the block layer around it.

``Machine`` is the in-process endpoint; ``reference.server`` serves it over QMP sockets and
``qmp-reference`` launches it with QEMU's command line. ``reference._core`` (Rust) is private.
"""

from reference.errors import QMPError
from reference.machine import Machine

#: Block-layer features beyond dirty bitmaps that this reference implements. Scenarios name
#: what they need (``requires:``); the differential tests compare only what is implemented and
#: say so when they skip. The jobs issue adds ``blockdev-backup``/``drive-backup``, the
#: snapshots issue ``blockdev-snapshot*``, ``backing-chains`` and ``image-locking``. Not yet:
#: ``job-drain-order`` (10.0: a job being cancelled with its txn does not pause for the graph
#: changes of a sibling that finishes first).
FEATURES: frozenset[str] = frozenset(
    {
        "backing-chains",
        "bitmaps",
        "copy-on-read",
        "blockdev-backup",
        "blockdev-snapshot",
        "blockdev-snapshot-internal-sync",
        "blockdev-snapshot-sync",
        "drive-backup",
        "image-locking",
        "persistent-bitmaps",
        "transaction",
    }
)

__all__ = ["FEATURES", "Machine", "QMPError"]
