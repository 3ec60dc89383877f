"""``block-dirty-bitmap-disable`` (§2.5)."""

from __future__ import annotations

from reference.actions.toggle import Toggle


class BlockDirtyBitmapDisable(Toggle):
    """Disables in prepare; abort re-enables if it was enabled."""

    kind = "block-dirty-bitmap-disable"
    target_state = False
