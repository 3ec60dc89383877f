"""``block-dirty-bitmap-enable`` (§2.5).

Note: when the lookup fails inside a transaction, QEMU 7.2 and 10.0 run the abort hook on a
bitmap that was never found and die (SIGSEGV); here abort simply has nothing to undo.
"""

from __future__ import annotations

from reference.actions.toggle import Toggle


class BlockDirtyBitmapEnable(Toggle):
    """Enables in prepare; abort disables again if it was disabled."""

    kind = "block-dirty-bitmap-enable"
    target_state = True
