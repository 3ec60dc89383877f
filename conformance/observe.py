"""The normalized observation of an endpoint: replies, events and block-node state.

Two endpoints that behave the same must produce *identical* normalized data, and one endpoint
run twice must too (the stability check in ``tests/differential`` proves the latter for real
QEMU). So this module removes exactly what is accidental and keeps everything else.

What is rewritten (the value is kept, its accidental part replaced):

* the endpoint's workdir path, wherever it occurs inside a string (file names, ``json:{...}``
  pseudo file names, error messages) → ``{dir}``;
* auto-generated node names ``#blockNNN`` → ``#block<k>``, k numbering them in order of first
  appearance in the transcript (QEMU's global counter depends on everything the process did
  before, e.g. how many nodes ``-drive`` created and deleted);
* ``qemu-io`` timing lines in ``human-monitor-command`` output (``... 00.00 sec (x MiB/sec and
  y ops/sec)``) → ``<timing>``.

What is dropped, and why:

* ``timestamp`` of every event: wall-clock time;
* ``actual-size`` (in ``image`` and nested ``backing-image``, and in ``qemu-img info``): the
  host file system's allocation (``st_blocks``), which depends on the file system, not on QEMU;
* ``extent-size-hint`` in ``format-specific`` of type ``file``: only reported on file systems
  that support extent size hints (XFS), so host dependent.

What is masked (the key and the value's type kept, the value replaced):

* ``date-sec``, ``date-nsec``, ``vm-clock-sec``, ``vm-clock-nsec`` of an internal snapshot
  (``SnapshotInfo``: any mapping with ``vm-state-size``): the wall clock and the running VM's
  virtual clock when the snapshot was taken. An integer becomes ``"<int>"``; anything else is
  kept, so a wrong type still shows;
* the DATE and VM_CLOCK columns of ``qemu-img snapshot -l`` (``2026-11-27 02:46:32``,
  ``0000:00:00.003``) → ``<date>``, ``<vm-clock>``.

What is kept on purpose although it might look accidental:

* list order everywhere: QEMU's bitmap lists are newest-first and node lists in creation order;
  an implementation that orders differently is wrong;
* ``dirty-flag``: the qcow2 header's dirty bit, a deterministic function of what was done;
* ``virtual-size`` of ``file`` nodes (the image file's length): determined by qcow2's
  allocation, which an implementation writing qcow2 must reproduce;
* ``active`` (10.0 only): compared per version, so its absence in 7.2 is not a difference.

This module only reads what endpoints report; it never changes endpoint state except for the
``x-debug-block-dirty-bitmap-sha256`` queries an observation makes (read-only).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from conformance.endpoints import Endpoint, JSONObject

AUTO_NODE_NAME = re.compile(r"#block[0-9]+")
QEMU_IO_TIMING = re.compile(r"[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{2} sec \([^)]*\)")
SNAPSHOT_LIST_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
SNAPSHOT_LIST_VM_CLOCK = re.compile(r"[0-9]{4}:[0-9]{2}:[0-9]{2}\.[0-9]{3}")

#: Keys dropped wherever they occur (see the module docstring for the reasons).
DROPPED_KEYS = frozenset({"actual-size"})
#: Keys dropped from the event envelope.
DROPPED_EVENT_KEYS = frozenset({"timestamp"})
#: Clock readings of an internal snapshot (``SnapshotInfo``), masked to ``"<int>"``.
SNAPSHOT_CLOCK_KEYS = frozenset({"date-sec", "date-nsec", "vm-clock-sec", "vm-clock-nsec"})


class Normalizer:
    """Normalizes everything one endpoint produced during one scenario run.

    Stateful: ``#blockNNN`` names are numbered in the order this normalizer first sees them, so
    one normalizer must see a whole transcript, in order.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = str(workdir)
        self._auto_names: dict[str, str] = {}

    def _auto_name(self, match: re.Match[str]) -> str:
        name = match.group(0)
        if name not in self._auto_names:
            self._auto_names[name] = f"#block<{len(self._auto_names)}>"
        return self._auto_names[name]

    def text(self, text: str) -> str:
        """Normalize one string (paths, auto node names, qemu-io timings)."""
        if self.workdir:
            text = text.replace(self.workdir, "{dir}")
        text = AUTO_NODE_NAME.sub(self._auto_name, text)
        text = SNAPSHOT_LIST_DATE.sub("<date>", text)
        text = SNAPSHOT_LIST_VM_CLOCK.sub("<vm-clock>", text)
        return QEMU_IO_TIMING.sub("<timing>", text)

    def value(self, value: Any) -> Any:
        """Normalize any JSON value recursively, dropping host-dependent fields."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, Mapping):
            return self._mapping(value)
        return value

    def _mapping(self, mapping: Mapping[str, Any]) -> JSONObject:
        result: JSONObject = {}
        is_file_specific = mapping.get("type") == "file" and isinstance(mapping.get("data"), dict)
        is_snapshot_info = "vm-state-size" in mapping
        for key, item in mapping.items():
            if key in DROPPED_KEYS:
                continue
            if is_snapshot_info and key in SNAPSHOT_CLOCK_KEYS and type(item) is int:
                result[key] = "<int>"
                continue
            kept = item
            if is_file_specific and key == "data":
                kept = {k: v for k, v in item.items() if k != "extent-size-hint"}
            result[self.text(key)] = self.value(kept)
        return result

    def reply(self, reply: Mapping[str, Any]) -> JSONObject:
        """Normalize a full QMP reply."""
        return self._mapping(reply)

    def event(self, event: Mapping[str, Any]) -> JSONObject:
        """Normalize an event: drop its timestamp, normalize its data."""
        return self._mapping({k: v for k, v in event.items() if k not in DROPPED_EVENT_KEYS})

    def events(self, events: Iterable[Mapping[str, Any]]) -> list[JSONObject]:
        """Normalize a list of events, keeping their order."""
        return [self.event(event) for event in events]


def _find_node(named: list[JSONObject], block: list[JSONObject], name: str) -> JSONObject | None:
    """The query-named-block-nodes entry of node ``name``, or of device ``name``'s root node."""
    for entry in named:
        if entry.get("node-name") == name:
            return entry
    for device in block:
        if device.get("device") == name and "inserted" in device:
            root = device["inserted"].get("node-name")
            for entry in named:
                if entry.get("node-name") == root:
                    return entry
    return None


def observe(endpoint: Endpoint, nodes: Iterable[str], normalizer: Normalizer) -> JSONObject:
    """Snapshot the block-node state of ``nodes`` (node or device names), normalized.

    The result::

        {"node-names": [every node name, in query order],
         "nodes": {NAME: None | {"dirty-bitmaps": [BlockDirtyInfo + "sha256"], "node": entry}},
         "query-block": [...]}

    ``dirty-bitmaps`` keeps QEMU's order and adds each named bitmap's
    ``x-debug-block-dirty-bitmap-sha256``; ``node`` is the node's flat
    ``query-named-block-nodes`` entry without ``dirty-bitmaps``. Unknown names map to ``None``.
    """
    named_reply = endpoint.execute("query-named-block-nodes", {"flat": True})
    block_reply = endpoint.execute("query-block")
    named: list[JSONObject] = list(named_reply.get("return", []))
    block: list[JSONObject] = list(block_reply.get("return", []))
    state: dict[str, Any] = {}
    for name in nodes:
        entry = _find_node(named, block, name)
        if entry is None:
            state[name] = None
            continue
        bitmaps: list[JSONObject] = []
        for info in entry.get("dirty-bitmaps", []):
            bitmap = dict(info)
            if "name" in info:
                digest = endpoint.execute(
                    "x-debug-block-dirty-bitmap-sha256",
                    {"node": entry["node-name"], "name": info["name"]},
                )
                bitmap["sha256"] = digest.get("return", {}).get("sha256", digest.get("error"))
            bitmaps.append(bitmap)
        node = {k: v for k, v in entry.items() if k != "dirty-bitmaps"}
        state[name] = {"dirty-bitmaps": bitmaps, "node": node}
    raw = {
        "node-names": [entry.get("node-name") for entry in named],
        "nodes": state,
        "query-block": block_reply.get("return", block_reply),
    }
    result: JSONObject = normalizer.value(raw)
    return result
