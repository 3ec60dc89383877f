"""``transaction``: hands the action list to the engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reference import engine
from reference.actions import Context
from reference.commands import command

if TYPE_CHECKING:
    from reference.machine import Machine


@command("transaction")
def transaction(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Runs the actions atomically."""
    ctx = Context(layer=machine.layer, profile=machine.profile)
    try:
        engine.run(ctx, args["actions"], args.get("properties"))
    finally:
        for event in ctx.events:
            machine.emit(event["event"], event["data"])
    return {}
