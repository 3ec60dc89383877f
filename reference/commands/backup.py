"""``blockdev-backup`` and ``drive-backup`` as commands: one-action transactions (§1.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reference.commands import command
from reference.commands.transaction import run_actions

if TYPE_CHECKING:
    from reference.machine import Machine


@command("blockdev-backup")
def blockdev_backup(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """The transaction ``[{type: blockdev-backup, data: args}]``."""
    run_actions(machine, [{"type": "blockdev-backup", "data": args}], None)
    return {}


@command("drive-backup")
def drive_backup(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """The transaction ``[{type: drive-backup, data: args}]``."""
    run_actions(machine, [{"type": "drive-backup", "data": args}], None)
    return {}
