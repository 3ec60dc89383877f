"""The observable state of an endpoint, as the checks compare it.

One :func:`snapshot` is what the issue calls "the observable state": every block node with its
backing chain, its dirty bitmaps (flags, count and content hash) and internal snapshots; every
device and the node it shows; every job; and the files in the run's working directory. It is
taken after every step of a recorded run (:mod:`conformance.history`), so a check compares the
state before and after any step.

The projection is deliberately narrower than ``observe.observe`` (which keeps whole query entries
for the curated scenarios' ``observe`` steps): it keeps exactly the facts a transaction may change,
so that an implementation that differs in, say, I/O throttling fields is judged on what matters.

A query the endpoint does not have (``query-jobs`` on an endpoint without jobs) is recorded as
``None``: "not observable here", which checks report as not applicable, never as equal.

This module only reads: it sends query commands and lists the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conformance.endpoints import Endpoint, JSONObject
from conformance.observe import Normalizer

#: Keys of a ``BlockDirtyInfo`` kept in the projection (all of them QEMU reports).
BITMAP_KEYS = ("name", "recording", "persistent", "busy", "granularity", "count", "inconsistent")


def _query(endpoint: Endpoint, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
    """The ``return`` of a query, or ``None`` when the endpoint does not have that command."""
    reply = endpoint.execute(command, arguments)
    if "error" in reply:
        return None
    return reply["return"]


def _backing(entry: Mapping[str, Any]) -> str | None:
    """The backing file name a node reports (``image.backing-filename``), if any."""
    image = entry.get("image") or {}
    name = image.get("backing-filename")
    return str(name) if name is not None else None


def _snapshots(entry: Mapping[str, Any]) -> list[str]:
    image = entry.get("image") or {}
    return [str(s.get("name")) for s in image.get("snapshots") or []]


def _bitmaps(endpoint: Endpoint, entry: Mapping[str, Any]) -> list[JSONObject]:
    result: list[JSONObject] = []
    for info in entry.get("dirty-bitmaps") or []:
        bitmap: JSONObject = {key: info[key] for key in BITMAP_KEYS if key in info}
        if "name" in info:
            digest = endpoint.execute(
                "x-debug-block-dirty-bitmap-sha256",
                {"node": entry["node-name"], "name": info["name"]},
            )
            bitmap["sha256"] = digest.get("return", {}).get("sha256")
        result.append(bitmap)
    return result


def _files(workdir: Path) -> list[str]:
    try:
        return sorted(
            str(path.relative_to(workdir))
            for path in workdir.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )
    except OSError:
        return []


def _structural_key(entry: Mapping[str, Any]) -> tuple[str, str, str, bool]:
    """What a node is, independent of its (possibly auto-generated) name and listing order."""
    return (
        str(entry.get("drv")),
        str(entry.get("file")),
        str(_backing(entry)),
        bool(entry.get("ro")),
    )


def snapshot(endpoint: Endpoint, normalizer: Normalizer) -> JSONObject:
    """The normalized observable state of ``endpoint``::

    {"nodes": {NODE: {"driver", "ro", "backing", "bitmaps": [...], "snapshots": [...]}},
     "devices": {DEVICE: ROOT_NODE | None},
     "jobs": [{"id", "type", "status"}] | None,
     "files": [relative paths in the workdir]}
    """
    named = _query(endpoint, "query-named-block-nodes", {"flat": True}) or []
    # Number auto-named nodes (#blockNNN) in an order that does not depend on how the endpoint
    # lists its nodes (the listing order is compared where a scenario observes it, not here).
    for entry in sorted(named, key=_structural_key):
        normalizer.text(str(entry.get("node-name")))
    nodes: dict[str, Any] = {}
    for entry in named:
        nodes[str(entry.get("node-name"))] = {
            "driver": entry.get("drv"),
            "ro": entry.get("ro"),
            "backing": _backing(entry),
            "bitmaps": _bitmaps(endpoint, entry),
            "snapshots": _snapshots(entry),
        }
    block = _query(endpoint, "query-block")
    devices: dict[str, Any] | None = None
    if block is not None:
        devices = {
            str(d.get("device") or d.get("qdev")): (d.get("inserted") or {}).get("node-name")
            for d in block
        }
    jobs_reply = _query(endpoint, "query-jobs")
    jobs = (
        None
        if jobs_reply is None
        else [
            {"id": j.get("id"), "type": j.get("type"), "status": j.get("status")}
            for j in jobs_reply
        ]
    )
    raw = {"nodes": nodes, "devices": devices, "jobs": jobs, "files": _files(endpoint.workdir)}
    result: JSONObject = normalizer.value(raw)
    return result


def bitmap_index(state: Mapping[str, Any]) -> dict[tuple[str, str], JSONObject]:
    """``(node, bitmap name) -> bitmap`` for every named bitmap of a snapshot."""
    index: dict[tuple[str, str], JSONObject] = {}
    for node, info in state.get("nodes", {}).items():
        for bitmap in info.get("bitmaps", []):
            if "name" in bitmap:
                index[(node, str(bitmap["name"]))] = bitmap
    return index


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Every path at which two snapshots differ, as ``path: before -> after`` lines.

    ``None`` on either side of a top-level key means "not observable" and is skipped.
    """
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[str] = []
        for key in list(before) + [k for k in after if k not in before]:
            sub = f"{path}/{key}" if path else str(key)
            if key not in before:
                found.append(f"{sub}: appeared ({_short(after[key])})")
            elif key not in after:
                found.append(f"{sub}: disappeared (was {_short(before[key])})")
            elif not path and (before[key] is None or after[key] is None):
                continue
            else:
                found += differences(before[key], after[key], sub)
        return found
    if _named_list(before) and _named_list(after) and before != after and (before or after):
        old = {str(item["name"]): item for item in before}
        new = {str(item["name"]): item for item in after}
        found = differences(old, new, path)
        if not found:  # same members, other order (QEMU lists newest first)
            found = [f"{path}: order {list(old)} -> {list(new)}"]
        return found
    if before != after:
        return [f"{path}: {_short(before)} -> {_short(after)}"]
    return []


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict) and "name" in item for item in value
    )


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def workdir_of(endpoint: Endpoint) -> str:
    """The endpoint's working directory as a string (for reports)."""
    return os.fspath(endpoint.workdir)
