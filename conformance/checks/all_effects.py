"""``all-effects``: a successful transaction shows every action's effect, and nothing else.

For every ``transaction`` that returned success, the check predicts the state from the state
before and the actions, in list order (later actions see earlier effects, SEMANTICS.md §1.6):

* ``block-dirty-bitmap-add``: the bitmap exists, empty, recording unless ``disabled``, with the
  given ``persistent`` and ``granularity``;
* ``-remove``: the bitmap is gone; ``-clear``: its count is 0; ``-enable``/``-disable``: its
  ``recording`` flag; ``-merge``: the target's count is at least each source's (same
  granularity);
* ``blockdev-backup``/``drive-backup``: a job with that id was created (``JOB_STATUS_CHANGE
  created``); ``blockdev-snapshot-internal-sync``: the snapshot is listed on the device's node;
  ``blockdev-snapshot``: the device now shows the overlay; ``blockdev-snapshot-sync``: the
  snapshot file exists (and the named node);
* ``abort`` can never succeed.

Bitmaps that no action names must be exactly as before ("nothing else"), except on nodes a
backup or snapshot action touched (their I/O legitimately changes recording bitmaps). The state
after the step includes the whole lives of the jobs the transaction started, so a bitmap the
actions name on a job's source or target node is judged without its count (the job's copying
writes to the target, or its sync bitmap, change it after the transaction).
"""

from __future__ import annotations

from typing import Any

from conformance import rules
from conformance.checks.base import CheckContext, Finding, Verdict, verdict
from conformance.endpoints import JSONObject
from conformance.history import History, Operation
from conformance.state import bitmap_index

NAME = "all-effects"

Key = tuple[str, str]


def _resolve(state: JSONObject, name: Any) -> str:
    """A device name means its root node (QEMU's bitmap lookup tries devices first)."""
    devices = state.get("devices") or {}
    text = str(name)
    if devices.get(text):
        return str(devices[text])
    return text


class _Prediction:
    """What the state after a successful transaction must show."""

    def __init__(self, before: JSONObject) -> None:
        self.before = before
        self.bitmaps: dict[Key, dict[str, Any] | None] = {}
        self.known = bitmap_index(before)
        self.untouched_nodes: set[str] = set(before.get("nodes") or {})
        self.named: set[Key] = set()
        self.jobs: list[str] = []
        #: Nodes a job of the transaction reads or writes (bitmap counts move with the job).
        self.job_nodes: set[str] = set()
        self.snapshots: list[tuple[str, str]] = []
        self.files: list[str] = []
        self.nodes: list[str] = []
        self.device_shows: list[tuple[str, str]] = []
        #: device -> its root node as the actions so far left it (``None``: an auto-named one).
        self.roots: dict[str, str | None] = {
            str(d): str(n) for d, n in (before.get("devices") or {}).items() if n
        }
        self.abort = False
        self.notes: list[str] = []

    def _current(self, key: Key) -> dict[str, Any] | None:
        if key in self.bitmaps:
            return self.bitmaps[key]
        known = self.known.get(key)
        if known is None:
            return None
        return {"count_min": known.get("count"), "granularity": known.get("granularity")}

    def apply(self, action: JSONObject) -> None:
        kind = str(action.get("type"))
        data = action.get("data") if isinstance(action.get("data"), dict) else {}
        assert isinstance(data, dict)
        if kind == "abort":
            self.abort = True
            return
        if kind.startswith("block-dirty-bitmap-"):
            self._bitmap(kind, data)
            return
        device = data.get("device") or data.get("node") or data.get("node-name")
        if device is not None:
            self.untouched_nodes.discard(_resolve(self.before, device))
        if kind in rules.JOB_KINDS:
            self.jobs.append(str(data.get("job-id") or data.get("device")))
            if device is not None:
                self.job_nodes.add(_resolve(self.before, device))
            target = data.get("target")
            if isinstance(target, str):
                self.untouched_nodes.discard(target)
                self.job_nodes.add(_resolve(self.before, target))
        elif kind == "blockdev-snapshot-internal-sync":
            device = str(data.get("device"))
            # The snapshot goes to the device's root at this point of the transaction: an
            # overlay an earlier action added gets it, one a later action adds does not.
            self.snapshots.append((self.roots.get(device, device) or device, str(data.get("name"))))
        elif kind == "blockdev-snapshot":
            self.device_shows.append((str(data.get("node")), str(data.get("overlay"))))
            self._new_root(str(data.get("node")), str(data.get("overlay")))
        elif kind == "blockdev-snapshot-sync":
            self.files.append(str(data.get("snapshot-file", "")).removeprefix("{dir}/"))
            overlay = data.get("snapshot-node-name")
            if overlay:
                self.nodes.append(str(overlay))
            base = str(data.get("device") or data.get("node-name"))
            self._new_root(self.roots.get(base, base) or base, str(overlay) if overlay else None)

    def _new_root(self, node: str, overlay: str | None) -> None:
        """Every device whose root was ``node`` now has ``overlay`` as its root."""
        for device, root in self.roots.items():
            if root == node:
                self.roots[device] = overlay

    def _bitmap(self, kind: str, data: JSONObject) -> None:
        target_name = data.get("target") if kind.endswith("merge") else data.get("name")
        key = (_resolve(self.before, data.get("node")), str(target_name))
        self.named.add(key)
        current = self._current(key)
        if kind.endswith("-add"):
            added: dict[str, Any] = {
                "count": 0,
                "recording": not data.get("disabled", False),
                "persistent": bool(data.get("persistent", False)),
            }
            if "granularity" in data:
                added["granularity"] = data["granularity"]
            self.bitmaps[key] = added
        elif kind.endswith("-remove"):
            self.bitmaps[key] = None
        elif current is None:
            self.notes.append(f"{kind} on {key} which did not exist before")
        elif kind.endswith("-clear"):
            self.bitmaps[key] = {**_keep(current), "count": 0}
        elif kind.endswith("-enable") or kind.endswith("-disable"):
            self.bitmaps[key] = {**current, "recording": kind.endswith("-enable")}
        elif kind.endswith("-merge"):
            floor = _count(current)
            exact_zero = current.get("count") == 0
            for source in data.get("bitmaps") or []:
                if isinstance(source, str):
                    src_key = (key[0], source)
                elif isinstance(source, dict):
                    src_key = (_resolve(self.before, source.get("node")), str(source.get("name")))
                else:
                    continue
                src = self._current(src_key)
                if src is None:
                    exact_zero = False
                    continue
                if src.get("count") != 0:
                    exact_zero = False
                if src.get("granularity") == current.get("granularity"):
                    floor = max(floor, _count(src))
                elif _count(src) > 0:
                    floor = max(floor, 1)  # other granularity: some bit is set, how many varies
            merged = _keep(current)
            if exact_zero:
                merged["count"] = 0
            else:
                merged["count_min"] = floor
            self.bitmaps[key] = merged


def _keep(bitmap: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in bitmap.items() if k not in ("count", "count_min")}


def _count(bitmap: dict[str, Any]) -> int:
    value = bitmap.get("count", bitmap.get("count_min", 0))
    return int(value) if isinstance(value, int) else 0


def _judge(op: Operation, before: JSONObject, after: JSONObject) -> list[str]:
    prediction = _Prediction(before)
    for action in op.actions():
        prediction.apply(action)
    problems: list[str] = []
    if prediction.abort:
        problems.append("an 'abort' action was accepted (it must always fail the transaction)")
    seen = bitmap_index(after)
    for (node, name), want in prediction.bitmaps.items():
        have = seen.get((node, name))
        if want is None:
            if have is not None:
                problems.append(f"bitmap {node}/{name} still exists after remove")
            continue
        if have is None:
            problems.append(f"bitmap {node}/{name} missing")
            continue
        for field, value in want.items():
            if field in ("count", "count_min") and node in prediction.job_nodes:
                continue  # the job's own I/O moved it after the transaction
            if field == "count_min":
                if int(have.get("count", 0)) < int(value):
                    problems.append(
                        f"bitmap {node}/{name} count {have.get('count')} < {value} merged in"
                    )
            elif have.get(field) != value:
                problems.append(
                    f"bitmap {node}/{name} {field} = {have.get(field)!r}, not {value!r}"
                )
    old = bitmap_index(before)
    for key, bitmap in old.items():
        if key in prediction.named or key[0] not in prediction.untouched_nodes:
            continue
        if seen.get(key) != bitmap:
            problems.append(
                f"bitmap {key[0]}/{key[1]} changed although no action named it: "
                f"{bitmap} -> {seen.get(key)}"
            )
    created = {
        str(e.get("data", {}).get("id"))
        for e in op.events
        if e.get("event") == "JOB_STATUS_CHANGE" and e.get("data", {}).get("status") == "created"
    }
    problems += [f"no job {job!r} was created" for job in prediction.jobs if job not in created]
    nodes = after.get("nodes") or {}
    for device, name in prediction.snapshots:
        node = device if device in nodes else _resolve(after, device)
        if name not in (nodes.get(node) or {}).get("snapshots", []):
            problems.append(f"internal snapshot {name!r} not listed on {device}")
    for node in prediction.nodes:
        if node not in nodes:
            problems.append(f"snapshot node {node!r} missing")
    for file in prediction.files:
        if file not in (after.get("files") or []):
            problems.append(f"snapshot file {file!r} not created")
    devices_before = before.get("devices") or {}
    for node, overlay in prediction.device_shows:
        for device, root in devices_before.items():
            if root == node and (after.get("devices") or {}).get(device) != overlay:
                problems.append(f"device {device} does not show overlay {overlay!r}")
    return problems


def check(history: History, ctx: CheckContext) -> Verdict:
    """Predict and compare every successful transaction."""
    findings: list[Finding] = []
    examined = 0
    for _position, op, before in history.pairs():
        if not (op.is_transaction() and op.outcome == "return"):
            continue
        if before is None or op.state is None or not op.actions():
            continue
        examined += 1
        problems = _judge(op, before, op.state)
        if problems:
            findings.append(
                Finding(
                    NAME,
                    op.index,
                    op.message,
                    expected="every action's effect visible after the successful transaction",
                    seen="; ".join(problems),
                    because=(
                        "the transaction answered success, so each of its actions must have "
                        "taken effect (and nothing else changed)"
                    ),
                    subject=" | ".join(problems),
                )
            )
    return verdict(NAME, findings, examined, "no successful non-empty transaction in this history")
