"""Machine-level commands: capabilities, version, the command list, the schema, quit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reference.commands import COMMANDS, command
from reference.qapi import load_schema
from reference.qapi.introspect import introspect

if TYPE_CHECKING:
    from reference.machine import Machine


@command("qmp_capabilities")
def qmp_capabilities(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Accepted in process (there is no negotiation without a connection; the server has one)."""
    return {}


@command("query-version")
def query_version(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """``VersionInfo`` of the emulated QEMU."""
    return machine.profile.version_info


@command("query-commands")
def query_commands(machine: Machine, args: dict[str, Any]) -> list[dict[str, str]]:
    """Every command this endpoint answers."""
    return [{"name": name} for name in sorted(COMMANDS)]


@command("query-qmp-schema")
def query_qmp_schema(machine: Machine, args: dict[str, Any]) -> list[dict[str, Any]]:
    """``SchemaInfo`` of every command, event and type of the emulated version, as QEMU's."""
    return introspect(load_schema(version=machine.version))


@command("quit")
def quit_(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Closes every image (persistent bitmaps are stored) and asks the server to stop."""
    machine.quit_requested = True
    machine.emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
    machine.close()
    return {}
