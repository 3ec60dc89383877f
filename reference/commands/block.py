"""Node management and block queries: blockdev-add, blockdev-del, block_resize, query-block,
query-named-block-nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reference import _core, jobs, resize
from reference.commands import command
from reference.errors import QMPError

if TYPE_CHECKING:
    from reference.machine import Machine


@command("blockdev-add")
def blockdev_add(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Opens a node tree; the root becomes owned by the monitor."""
    layer = machine.layer
    before = {info.name for info in layer.graph.nodes()}
    name = layer.open_blockdev(args, root=True)
    layer.monitor_owned.add(name)
    opened = [info.name for info in layer.graph.nodes() if info.name not in before]
    locks = jobs.open_locks(layer.graph, opened)
    machine.emit_all(jobs.graph_locks(layer.profile, layer.graph, locks))
    return {}


@command("blockdev-del")
def blockdev_del(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Closes a monitor-owned node nobody uses (QEMU's check order: find, device, op blockers
    (a backing child's), owner, users)."""
    layer = machine.layer
    name = args["node-name"]
    if layer.graph.node(name) is None:
        raise QMPError(f"Failed to find node with node-name='{name}'")
    parents = layer.graph.parents(name)
    backends = {b for b, _ in layer.graph.backends()}
    if any(p in backends for p, _ in parents):
        raise QMPError(f"Node {name} is in use")
    layer.check_not_backing(name)
    if name not in layer.monitor_owned:
        raise QMPError(f"Node {name} is not owned by the monitor")
    if parents:
        raise QMPError(f"Block device {name} is in use")
    before = len(layer.graph.nodes())
    try:
        layer.close_implicit(name)
    except _core.ImageError as e:
        message, _ = e.args
        raise QMPError(str(message)) from None
    layer.monitor_owned.discard(name)
    closed = before - len(layer.graph.nodes())
    machine.emit_all(jobs.graph_locks(layer.profile, layer.graph, jobs.LOCKS_PER_CLOSE * closed))
    return {}


@command("block_resize")
def block_resize(machine: Machine, args: dict[str, Any]) -> dict[str, Any]:
    """Resizes a device's root node or a named node (``reference.resize`` has QEMU's order)."""
    resize.block_resize(machine, args.get("device"), args.get("node-name"), args["size"])
    return {}


@command("query-named-block-nodes")
def query_named_block_nodes(machine: Machine, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node, newest first; ``flat`` leaves out backing (and filtered) images: no
    ``backing-image``, and ``backing_file_depth`` stays 0."""
    return machine.layer.named_nodes(flat=bool(args.get("flat", False)))


@command("query-block")
def query_block(machine: Machine, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Every device."""
    return machine.layer.block_info()
