"""The standalone ``block-dirty-bitmap-*`` commands and the sha256 debug command.

They share their checks with the transaction actions (``reference.bitmaps``) but are not
transactions: no drain, no undo state (SEMANTICS.md §1.5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reference import bitmaps
from reference.commands import command
from reference.errors import QMPError

if TYPE_CHECKING:
    from reference.machine import Machine


@command("block-dirty-bitmap-add")
def add(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Creates a bitmap."""
    bitmaps.add(
        machine.layer,
        args["node"],
        args["name"],
        args.get("granularity"),
        persistent=args.get("persistent", False),
        disabled=args.get("disabled", False),
    )
    return {}


@command("block-dirty-bitmap-remove")
def remove(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Removes a bitmap at once (from the image too, if persistent)."""
    node = bitmaps.prepare_remove(machine.layer, args["node"], args["name"])
    machine.layer.graph.bitmap_take(node, args["name"])
    return {}


@command("block-dirty-bitmap-clear")
def clear(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Clears a bitmap in place."""
    bitmaps.prepare_clear(machine.layer, args["node"], args["name"])
    return {}


@command("block-dirty-bitmap-enable")
def enable(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Starts recording."""
    bitmaps.set_enabled(machine.layer, args["node"], args["name"], True)
    return {}


@command("block-dirty-bitmap-disable")
def disable(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Stops recording."""
    bitmaps.set_enabled(machine.layer, args["node"], args["name"], False)
    return {}


@command("block-dirty-bitmap-merge")
def merge(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Merges sources into the target."""
    bitmaps.merge(machine.layer, args["node"], args["target"], args["bitmaps"])
    if not args["bitmaps"]:
        raise QMPError(bitmaps.EMPTY_MERGE_REFUSAL)
    return {}


@command("x-debug-block-dirty-bitmap-sha256")
def sha256(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """SHA-256 of the bitmap's words (no state checks)."""
    return {"sha256": bitmaps.sha256(machine.layer, args["node"], args["name"])}
