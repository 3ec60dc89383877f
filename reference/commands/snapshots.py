"""The snapshot commands: the three that are also transaction actions run as one-action
transactions, as QEMU runs them (SEMANTICS.md §1.5); ``blockdev-snapshot-delete-internal-sync``
is standalone only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reference import engine, snapshots
from reference.actions import Context
from reference.commands import command

if TYPE_CHECKING:
    from reference.machine import Machine


def _one_action(machine: Machine, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    ctx = Context(layer=machine.layer, profile=machine.profile)
    try:
        engine.run(ctx, [{"type": kind, "data": args}], None)
    finally:
        for event in ctx.events:
            machine.emit(event["event"], event["data"])
    return {}


@command("blockdev-snapshot")
def blockdev_snapshot(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """An existing node becomes the overlay of another."""
    return _one_action(machine, "blockdev-snapshot", args)


@command("blockdev-snapshot-sync")
def blockdev_snapshot_sync(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """A new overlay image above a node."""
    return _one_action(machine, "blockdev-snapshot-sync", args)


@command("blockdev-snapshot-internal-sync")
def blockdev_snapshot_internal_sync(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """A snapshot inside a qcow2 image."""
    return _one_action(machine, "blockdev-snapshot-internal-sync", args)


@command("blockdev-snapshot-delete-internal-sync")
def blockdev_snapshot_delete_internal_sync(
    machine: Machine, args: dict[str, Any]
) -> dict[str, Any]:
    """Deletes an internal snapshot found by id and/or name; returns its ``SnapshotInfo``."""
    return snapshots.delete_internal(
        machine.layer, args["device"], args.get("id"), args.get("name")
    )
