"""``transaction``: hands the action list to the engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reference import engine
from reference.actions import Context
from reference.commands import command

if TYPE_CHECKING:
    from reference.machine import Machine


def run_actions(
    machine: Machine, actions: list[dict[str, Any]], properties: dict[str, Any] | None
) -> None:
    """Runs a transaction; its events are emitted whether it succeeds or not."""
    ctx = Context(layer=machine.layer, profile=machine.profile)
    try:
        engine.run(ctx, actions, properties)
    finally:
        machine.emit_all(ctx.events)


@command("transaction")
def transaction(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Runs the actions atomically."""
    run_actions(machine, args["actions"], args.get("properties"))
    return {}
