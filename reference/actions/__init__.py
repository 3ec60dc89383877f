"""The transaction actions, one module per ``TransactionActionKind``.

``ACTIONS`` maps each kind the reference implements to its class. The engine refuses kinds that
are valid QAPI but not implemented yet with a clear error rather than pretending to run them.
"""

from __future__ import annotations

from reference.actions.abort import Abort
from reference.actions.base import Action, Context
from reference.actions.block_dirty_bitmap_add import BlockDirtyBitmapAdd
from reference.actions.block_dirty_bitmap_clear import BlockDirtyBitmapClear
from reference.actions.block_dirty_bitmap_disable import BlockDirtyBitmapDisable
from reference.actions.block_dirty_bitmap_enable import BlockDirtyBitmapEnable
from reference.actions.block_dirty_bitmap_merge import BlockDirtyBitmapMerge
from reference.actions.block_dirty_bitmap_remove import BlockDirtyBitmapRemove
from reference.actions.blockdev_backup import BlockdevBackup
from reference.actions.blockdev_snapshot import BlockdevSnapshot
from reference.actions.blockdev_snapshot_internal_sync import BlockdevSnapshotInternalSync
from reference.actions.blockdev_snapshot_sync import BlockdevSnapshotSync
from reference.actions.drive_backup import DriveBackup

ACTIONS: dict[str, type[Action]] = {
    cls.kind: cls
    for cls in (
        Abort,
        BlockDirtyBitmapAdd,
        BlockDirtyBitmapRemove,
        BlockDirtyBitmapClear,
        BlockDirtyBitmapEnable,
        BlockDirtyBitmapDisable,
        BlockDirtyBitmapMerge,
        BlockdevBackup,
        DriveBackup,
        BlockdevSnapshot,
        BlockdevSnapshotInternalSync,
        BlockdevSnapshotSync,
    )
}

#: Kinds that may join a grouped job transaction.
GROUPED_KINDS = frozenset({"blockdev-backup", "drive-backup"})

__all__ = ["ACTIONS", "GROUPED_KINDS", "Action", "Context"]
