"""The reference implementation of QEMU's QMP ``transaction`` and the block layer around it.

``Machine`` is the in-process endpoint; ``reference.server`` serves it over QMP sockets and
``qmp-reference`` launches it with QEMU's command line. ``reference._core`` (Rust) is private.
"""

from reference.errors import QMPError
from reference.machine import Machine

#: Block-layer features beyond dirty bitmaps that this reference implements. Scenarios name
#: what they need (``requires:``); the differential tests compare only what is implemented and
#: say so when they skip. The jobs issue adds ``blockdev-backup``/``drive-backup``, the
#: snapshots issue ``blockdev-snapshot*``, ``backing-chains`` and ``image-locking``;
#: ``copy-on-read-drive-option``: ``-drive copy-on-read=on`` (the root node's flag, no filter);
#: ``format-over-format-node``: raw over a format node or filter (blkdebug over qcow2);
#: ``job-drain-order``: several jobs pause and resume in QEMU's order when a drained section
#: holds them (job/drain.rs); ``block-status-runs``: a backup sizes each request by the source's
#: block status runs and writes zeroes where they read as zero (graph/status.rs);
#: ``metadata-preallocation``: qcow2 guesses metadata preallocation once per open and its
#: data runs are then looked up in the file (format/qcow2/prealloc.rs), whose nodes keep
#: QEMU's block-status cache (graph/observed.rs).
FEATURES: frozenset[str] = frozenset(
    {
        "backing-chains",
        "bitmaps",
        "block-status-runs",
        "copy-on-read",
        "copy-on-read-drive-option",
        "blockdev-backup",
        "blockdev-snapshot",
        "blockdev-snapshot-internal-sync",
        "blockdev-snapshot-sync",
        "drive-backup",
        "format-over-format-node",
        "image-locking",
        "job-drain-order",
        "metadata-preallocation",
        "persistent-bitmaps",
        "qcow2-host-layout",
        "transaction",
    }
)

__all__ = ["FEATURES", "Machine", "QMPError"]
