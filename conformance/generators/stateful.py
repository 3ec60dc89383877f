"""Generated transaction sequences: a hypothesis ``RuleBasedStateMachine``, run in lockstep on
the target and on the reference model, judged after every step by the selected checks.

One example = a fresh endpoint in a fresh directory with four images (``disk0``/``disk1``
qcow2, ``raw0`` raw, ``bad0`` qcow2 over ``blkdebug`` whose every read fails, so a backup of it
fails) and an unused qcow2 overlay node ``ov0``, then up to ``STEPS`` rules:

* ``write``: guest writes through ``human-monitor-command`` ``qemu-io``;
* ``add_bitmap``: a standalone ``block-dirty-bitmap-add``;
* ``transaction``: 1-4 actions of all twelve kinds, valid and invalid mixed, with
  ``completion-mode`` sometimes ``grouped``;
* ``bitmap_command``: a standalone clear/enable/disable/remove/merge;
* ``backup_transaction``: 1-3 backups with free job ids (taken ones sometimes), node or new-file
  targets, sync modes with the bitmaps the target shows, ``grouped`` or ``individual``, sources
  including ``bad0`` (its job fails: grouped siblings must be cancelled), sometimes followed by a
  failing action (the prepared jobs must be discarded). On every target, real QEMU included, and
  deterministic there: the recorder lets the jobs run to their end within the step, each job's
  events are kept together (QEMU interleaves two jobs' events by timing), a job of ``bad0`` has
  one request in flight, grouped siblings of a failing job are held at their first request
  until the failure cancels them and then released, and a grouped transaction of several jobs
  is given up on after a few seconds (its rollback deadlocks QEMU: a known deviation);
* ``snapshot_transaction``: external snapshots (``blockdev-snapshot-sync`` with fresh overlay
  names, ``blockdev-snapshot`` onto ``ov0``) and internal ones (new names, or names the target
  already lists), sometimes rolled back by a failing action.

Argument shapes follow the QAPI types of each action (the endpoint's derived schema validates
every reply); names are *steered*: most draws pick names that exist (nodes, the bitmaps the
target currently shows, snapshot names, job ids), some pick names that do not (``nope``), so
most transactions reach deep into prepare and some fail early. When helper A's strategy
compiler (``conformance.schema.strategies``) is importable, one action in eight is drawn from the
endpoint's full derived ``transaction`` schema instead (steered the same way): shapes no one
thought of, mostly refused by QAPI validation.

A step whose findings no known deviation explains fails the example; hypothesis then shrinks it
to a minimal sequence, which is saved as a reproducer. Seeds (``--seed``) make runs repeat
exactly (no example database is used).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import hypothesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from conformance import rules as qemu_rules
from conformance.checks.base import CheckContext, CheckFunction, Finding, Verdict, verdict
from conformance.deviations import Deviation, mark
from conformance.endpoints import EndpointError, JSONObject, LaunchOptions
from conformance.history import History, Recorder
from conformance.observe import Normalizer
from conformance.scenario import HANG_TIMEOUT, Scenario, SetupCommand, Step
from conformance.state import bitmap_index

#: hypothesis' runner, typed here (some hypothesis releases leave it unannotated).
run_machine: Callable[..., None] = run_state_machine_as_test

#: Rules per example (hypothesis' ``stateful_step_count``).
STEPS = 10
#: Images every example starts with: file name -> (format, size).
IMAGES = {
    "a.qcow2": ("qcow2", "64M"),
    "b.qcow2": ("qcow2", "64M"),
    "c.raw": ("raw", "64M"),
    "d.qcow2": ("qcow2", "64M"),
}
OVERLAY = ("ov.qcow2", "qcow2", "64M")
NODES = ("disk0", "disk1", "raw0")
MISSING = "nope"
BITMAP_NAMES = ("b0", "b1", "b2", "b3")
GRANULARITIES = (512, 4096, 65536, 1048576, 1000, 2**31)
SYNC_MODES = ("full", "top", "bitmap", "incremental")
BITMAP_MODES = ("on-success", "never", "always")
#: The node whose reads all fail (blkdebug): a backup of it fails after it started.
FAILING = "bad0"
JOB_IDS = ("j0", "j1", "j2")
#: ``x-perf`` of every backup of ``bad0``: one request in flight, so where the failing job
#: stops does not depend on which of its parallel requests real QEMU finished first (with the
#: default 64 workers a 64M full backup of ``bad0`` ends at offset len - 64k or len - 1M).
FAILING_PERF: JSONObject = {"max-workers": 1}
#: ``speed`` of the grouped siblings of a failing job: held after their first request until the
#: failure cancels them (a full-speed sibling would race it), then released (see the rule).
HELD_SPEED = 1
SNAPSHOT_NAMES = ("s0", "s1")
SNAPSHOT_KINDS = frozenset(
    {"blockdev-snapshot", "blockdev-snapshot-sync", "blockdev-snapshot-internal-sync"}
)

Progress = Callable[[str, int, int], None]


def _image_node(driver: str, name: str, file: JSONObject) -> JSONObject:
    """``blockdev-add`` arguments of a format node ``name`` over ``file``."""
    return {"driver": driver, "node-name": name, "file": file}


def setup_steps() -> list[Step]:
    """The first steps of every example: the nodes on the template images."""
    steps = []
    blockdevs: list[JSONObject] = [
        _image_node("qcow2", "disk0", {"driver": "file", "filename": "{dir}/a.qcow2"}),
        _image_node("qcow2", "disk1", {"driver": "file", "filename": "{dir}/b.qcow2"}),
        _image_node("raw", "raw0", {"driver": "file", "filename": "{dir}/c.raw"}),
        _image_node("qcow2", "ov0", {"driver": "file", "filename": "{dir}/ov.qcow2"}),
        _image_node(
            "qcow2",
            FAILING,
            {
                "driver": "blkdebug",
                "image": {"driver": "file", "filename": "{dir}/d.qcow2"},
                "inject-error": [{"event": "read_aio", "errno": 5}],
            },
        ),
    ]
    for index, blockdev in enumerate(blockdevs):
        steps.append(Step(index, "execute", "blockdev-add", blockdev))
    # Start with bitmaps that have bits, so the first transactions already reach deep.
    steps.append(
        Step(len(steps), "execute", "block-dirty-bitmap-add", {"node": "disk0", "name": "b0"})
    )
    steps.append(
        Step(
            len(steps),
            "execute",
            "block-dirty-bitmap-add",
            {"node": "disk1", "name": "b1", "granularity": 4096},
        )
    )
    steps.append(Step(len(steps), "io", {"node": "disk0", "cmd": "write -P 0x5a 0 128k"}))
    steps.append(Step(len(steps), "io", {"node": "disk1", "cmd": "write -P 0x5a 1M 64k"}))
    steps.append(Step(len(steps), "io", {"node": FAILING, "cmd": "write -P 0x5a 0 64k"}))
    return steps


def setup_commands() -> tuple[SetupCommand, ...]:
    """The host commands that create the images (what a reproducer runs before replaying)."""
    commands = [
        f"qemu-img create -f {fmt} {{dir}}/{name} {size}" for name, (fmt, size) in IMAGES.items()
    ]
    name, fmt, size = OVERLAY
    commands.append(f"qemu-img create -f {fmt} {{dir}}/{name} {size}")
    return tuple(SetupCommand(c) for c in commands)


def make_templates(directory: Path) -> None:
    """Create the images once per run (examples copy them: much faster than qemu-img)."""
    for command in setup_commands():
        argv = command.run.replace("{dir}", str(directory)).split()
        subprocess.run(argv, check=True, capture_output=True, timeout=60)


@dataclass
class GenerationState:
    """Shared by every example of one generation run (the state machine class holds it)."""

    info: Any
    selected: dict[str, CheckFunction]
    deviations: Sequence[Deviation]
    features: frozenset[str]
    templates: Path
    version: str
    compiler: Any = None
    examples: int = 0
    transactions: int = 0
    steps: int = 0
    #: Transactions with a backup action run on the target; jobs the target created.
    backup_transactions: int = 0
    jobs: int = 0
    #: Per check: examined operations, across all examples.
    examined: dict[str, int] = field(default_factory=dict)
    #: Per check: reasons it was n/a somewhere.
    reasons: dict[str, set[str]] = field(default_factory=dict)
    #: Expected findings (known deviations) seen, per check.
    expected: dict[str, list[Finding]] = field(default_factory=dict)
    #: The most recent failing example (hypothesis' last replay is the minimal one).
    failure: tuple[History, History | None, list[Finding]] | None = None
    progress: Progress | None = None
    max_examples: int = 0


def _program(steps: list[Step], label: str) -> Scenario:
    return Scenario(
        name=label,
        area="generated",
        path=Path("generated"),
        description="a generated transaction sequence (hypothesis, shrunk)",
        versions=("7.2", "10.0"),
        setup=setup_commands(),
        drives=(),
        blockdevs=(),
        steps=tuple(steps),
    )


class _Run:
    """One example's endpoints and recorders (target and model in lockstep)."""

    def __init__(self, shared: GenerationState) -> None:
        from conformance.runner import model_target  # noqa: PLC0415 - avoids an import cycle

        self.shared = shared
        self.steps: list[Step] = []
        self.dirs: list[Path] = []
        self.endpoints: list[Any] = []
        target_dir = self._workdir()
        target = shared.info.target.start(target_dir, LaunchOptions())
        self.endpoints.append(target)
        self.history = History(_program([], "sequence"), shared.info.target.label, shared.version)
        self.recorder = Recorder(target, self.history, Normalizer(target_dir))
        self.model_history: History | None = None
        self.model_recorder: Recorder | None = None
        oracle = model_target(shared.version)
        if oracle is not None and "differential" in shared.selected:
            model_dir = self._workdir()
            model = oracle.start(model_dir, LaunchOptions())
            self.endpoints.append(model)
            self.model_history = History(_program([], "sequence"), oracle.label, shared.version)
            self.model_recorder = Recorder(model, self.model_history, Normalizer(model_dir))
        self.recorder.start()
        if self.model_recorder is not None:
            self.model_recorder.start()
        for step in setup_steps():
            self.run(step, judge=False)

    def _workdir(self) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="qc-gen-")).resolve()
        for name in [*IMAGES, OVERLAY[0]]:
            source = self.shared.templates / name
            if name.endswith(".raw"):  # all zeros: a sparse file of the same size, not a copy
                with (directory / name).open("wb") as raw:
                    raw.truncate(source.stat().st_size)
            else:
                shutil.copy(source, directory / name)
        self.dirs.append(directory)
        return directory

    @property
    def alive(self) -> bool:
        return self.recorder.alive

    def state(self) -> JSONObject:
        """The state names are steered by: the model's (deterministic, so hypothesis replays an
        example exactly even where the target's timing varies), else the target's."""
        history = self.model_history or self.history
        for op in reversed(history.operations):
            if op.state is not None:
                return op.state
        return history.initial_state or {}

    def run(self, step: Step, *, judge: bool = True) -> None:
        """Run one step on the target and the model (nothing once the target is gone: rules
        still draw their data first, so every example draws the same way on replay)."""
        if not self.alive:
            return
        step = dataclasses.replace(step, index=len(self.steps))
        self.steps.append(step)
        program = _program(self.steps, "sequence")
        self.history.program = program
        op = self.recorder.step(step)
        self.shared.steps += 1
        if op.is_transaction() and any(a["type"] in qemu_rules.JOB_KINDS for a in op.actions()):
            self.shared.backup_transactions += 1
        self.shared.jobs += sum(
            1
            for e in op.events
            if e.get("event") == "JOB_STATUS_CHANGE"
            and (e.get("data") or {}).get("status") == "created"
        )
        if self.model_recorder is not None and self.model_history is not None:
            self.model_history.program = program
            if self.model_recorder.alive:
                self.model_recorder.step(step)
        if judge:
            self.judge()

    def _verdicts(self, model_missing: str = "") -> Iterator[tuple[str, Verdict]]:
        """Every selected check's verdict on the example so far, findings marked with the
        known deviations that explain them."""
        shared = self.shared
        info = shared.info
        ctx = CheckContext(
            model=self.model_history,
            model_missing=model_missing,
            is_qemu=info.kind == "qemu",
            is_reference=info.kind in ("reference", "reference-socket"),
            schema=info.schema,
            schema_missing=info.schema_missing,
            model_features=shared.features,
        )
        for name, function in shared.selected.items():
            result = function(self.history, ctx)
            mark(
                result.findings,
                shared.deviations,
                kind=info.kind,
                version=shared.version,
                program="generated/sequence",
            )
            yield name, result

    def judge(self) -> None:
        shared = self.shared
        missing = "" if self.model_history else f"no reference model for {shared.version}"
        unexpected = [f for _, result in self._verdicts(missing) for f in result.unexpected]
        if unexpected:
            shared.failure = (self.history, self.model_history, unexpected)
            raise AssertionError("\n".join(f.explain() for f in unexpected))

    def finish(self) -> None:
        """Account the example's verdicts (only once it ended without failure)."""
        shared = self.shared
        for name, result in self._verdicts():
            shared.examined[name] = shared.examined.get(name, 0) + result.examined
            shared.expected.setdefault(name, []).extend(f for f in result.findings if f.deviation)
            if result.reason:
                shared.reasons.setdefault(name, set()).add(result.reason)

    def close(self) -> None:
        for endpoint in self.endpoints:
            with contextlib.suppress(EndpointError):
                endpoint.close()
        for directory in self.dirs:
            shutil.rmtree(directory, ignore_errors=True)


# --- argument strategies (steered names) -------------------------------------------------------


def _bitmap_names(state: JSONObject) -> list[tuple[str, str]]:
    return sorted(bitmap_index(state))


@st.composite
def _node(draw: st.DrawFn, allow_missing: bool = True) -> str:
    if allow_missing and draw(st.integers(0, 9)) == 0:
        return MISSING
    return draw(st.sampled_from(NODES))


@st.composite
def _node_and_bitmap(draw: st.DrawFn, existing: list[tuple[str, str]]) -> tuple[str, str]:
    """Mostly an existing (node, bitmap); sometimes any node with any name."""
    if existing and draw(st.integers(0, 9)) < 8:
        return draw(st.sampled_from(existing))
    return draw(_node()), draw(st.sampled_from((*BITMAP_NAMES, MISSING)))


@st.composite
def _merge_source(draw: st.DrawFn, existing: list[tuple[str, str]], node: str) -> Any:
    src_node, name = draw(_node_and_bitmap(existing))
    if draw(st.booleans()):
        return name if src_node == node else {"node": src_node, "name": name}
    return {"node": src_node, "name": name}


@st.composite
def action_data(draw: st.DrawFn, kind: str, state: JSONObject, serial: int) -> JSONObject:
    """The ``data`` of one action of ``kind``, steered toward what exists in ``state``."""
    existing = _bitmap_names(state)
    if kind == "abort":
        return {}
    if kind == "block-dirty-bitmap-add":
        data: JSONObject = {"node": draw(_node()), "name": draw(st.sampled_from(BITMAP_NAMES))}
        if draw(st.booleans()):
            data["granularity"] = draw(st.sampled_from(GRANULARITIES))
        if draw(st.integers(0, 3)) == 0:
            data["persistent"] = draw(st.booleans())
        if draw(st.integers(0, 3)) == 0:
            data["disabled"] = draw(st.booleans())
        return data
    if kind in (
        "block-dirty-bitmap-remove",
        "block-dirty-bitmap-clear",
        "block-dirty-bitmap-enable",
        "block-dirty-bitmap-disable",
    ):
        node, name = draw(_node_and_bitmap(existing))
        return {"node": node, "name": name}
    if kind == "block-dirty-bitmap-merge":
        node, target = draw(_node_and_bitmap(existing))
        count = (
            draw(st.integers(0, 3)) if draw(st.integers(0, 19)) == 0 else draw(st.integers(1, 3))
        )
        sources = [draw(_merge_source(existing, node)) for _ in range(count)]
        return {"node": node, "target": target, "bitmaps": sources}
    if kind in ("blockdev-backup", "drive-backup"):
        device = draw(_node())
        data = {"device": device, "sync": draw(st.sampled_from(SYNC_MODES))}
        if kind == "blockdev-backup":
            data["target"] = draw(st.sampled_from((*NODES, "ov0", MISSING)))
        else:
            data["target"] = f"{{dir}}/backup{serial}.qcow2"
            data["format"] = "qcow2"
        if draw(st.booleans()):
            data["job-id"] = draw(st.sampled_from(("j0", "j1")))
        if data["sync"] in ("bitmap", "incremental") or draw(st.integers(0, 3)) == 0:
            _, data["bitmap"] = draw(
                _node_and_bitmap([b for b in existing if b[0] == device] or existing)
            )
            if data["sync"] != "incremental" and draw(st.booleans()):
                data["bitmap-mode"] = draw(st.sampled_from(BITMAP_MODES))
        return data
    if kind == "blockdev-snapshot":
        return {"node": draw(_node()), "overlay": draw(st.sampled_from(("ov0", "disk1", MISSING)))}
    if kind == "blockdev-snapshot-sync":
        data = {"node-name": draw(_node()), "snapshot-file": f"{{dir}}/snap{serial}.qcow2"}
        if draw(st.integers(0, 4)) > 0:
            data["snapshot-node-name"] = f"snap{serial}"
        data["format"] = "qcow2"
        return data
    if kind == "blockdev-snapshot-internal-sync":
        return {"device": draw(_node()), "name": draw(st.sampled_from(("t0", "t1", "")))}
    raise ValueError(f"unknown action kind {kind}")


def _hold(data: JSONObject) -> None:
    """Hold a backup after its first request (``speed`` 1), with more than one request to make:
    ``sync`` full of a 64M node (a top/bitmap/incremental backup may have a single request, which
    ends the job's work at once and races the sibling's failure on real QEMU). A bitmap keeps
    its part as ``full`` allows: incremental becomes bitmap-mode on-success; never (meaningless
    with full) drops the bitmap."""
    data["speed"] = HELD_SPEED
    data["sync"] = "full"
    if "bitmap" in data:
        mode = data.setdefault("bitmap-mode", "on-success")
        if mode == "never":
            del data["bitmap"], data["bitmap-mode"]


def _jobs(state: JSONObject) -> set[str]:
    return {str(job.get("id")) for job in state.get("jobs") or []}


def _internal_snapshots(state: JSONObject) -> list[tuple[str, str]]:
    nodes = state.get("nodes") or {}
    return sorted(
        (str(node), str(name))
        for node, info in nodes.items()
        if isinstance(info, dict)
        for name in info.get("snapshots") or []
    )


@st.composite
def backup_data(
    draw: st.DrawFn,
    kind: str,
    state: JSONObject,
    serial: int,
    taken: set[str],
) -> JSONObject:
    """A backup steered deep: a free job id (rarely a taken one), an existing bitmap of the
    source for the bitmap modes, a node target of the same size or a new file; the source is
    often ``bad0`` (its job fails, one request at a time)."""
    existing = _bitmap_names(state)
    device = draw(st.sampled_from((*NODES, FAILING, FAILING)))
    free = [j for j in JOB_IDS if j not in taken]
    if free and draw(st.integers(0, 9)) > 0:
        job = draw(st.sampled_from(free))
    else:
        job = draw(st.sampled_from(JOB_IDS))
    taken.add(job)
    data: JSONObject = {
        "job-id": job,
        "device": device,
        "sync": draw(st.sampled_from(("full", "full", "top", "bitmap", "incremental"))),
    }
    if kind == "blockdev-backup":
        target = draw(st.sampled_from(("ov0", *[n for n in NODES if n != device])))
        data["target"] = target
    else:
        data["target"] = f"{{dir}}/backup{serial}.qcow2"
        data["format"] = "qcow2"
    if device == FAILING:
        data["x-perf"] = dict(FAILING_PERF)
    if data["sync"] in ("bitmap", "incremental"):
        own = [b for b in existing if b[0] == device]
        data["bitmap"] = draw(st.sampled_from(own))[1] if own else "b0"
        if data["sync"] == "bitmap":
            data["bitmap-mode"] = draw(st.sampled_from(BITMAP_MODES))
    return data


def _deadlock_timeout(arguments: JSONObject) -> float | None:
    """:data:`HANG_TIMEOUT` for a grouped transaction of two or more backups, else ``None``:
    rolling such a transaction back deadlocks real QEMU (known deviation
    ``grouped-backups-rollback-deadlocks``), so the reply is given up on sooner than the
    endpoint's command timeout."""
    properties = arguments.get("properties") or {}
    actions = arguments.get("actions") or []
    jobs = sum(1 for a in actions if a.get("type") in qemu_rules.JOB_KINDS)
    grouped = properties.get("completion-mode") == "grouped"
    return HANG_TIMEOUT if grouped and jobs > 1 else None


#: Relative weights of the kinds in generated transactions (bitmaps first: the reference's core).
KIND_WEIGHTS = {
    "abort": 1,
    "block-dirty-bitmap-add": 4,
    "block-dirty-bitmap-remove": 3,
    "block-dirty-bitmap-clear": 3,
    "block-dirty-bitmap-enable": 3,
    "block-dirty-bitmap-disable": 3,
    "block-dirty-bitmap-merge": 3,
    "blockdev-backup": 1,
    "blockdev-snapshot": 1,
    "blockdev-snapshot-internal-sync": 1,
    "blockdev-snapshot-sync": 1,
    "drive-backup": 1,
}
_WEIGHTED = [kind for kind, weight in KIND_WEIGHTS.items() for _ in range(weight)]
assert set(KIND_WEIGHTS) == set(qemu_rules.ACTION_KINDS)


class ConformanceMachine(RuleBasedStateMachine):
    """The stateful generator; ``shared`` is set on a subclass per generation run."""

    shared: ClassVar[GenerationState]

    def __init__(self) -> None:
        super().__init__()
        self.run: _Run | None = None
        self.serial = 0

    @initialize()
    def start(self) -> None:
        self.shared.examples += 1
        if self.shared.progress is not None and self.shared.examples <= self.shared.max_examples:
            self.shared.progress(
                f"{self.shared.info.target.label} generated",
                self.shared.examples,
                self.shared.max_examples,
            )
        self.run = _Run(self.shared)

    def _live(self) -> _Run:
        assert self.run is not None
        return self.run

    def _action(self, data: st.DataObject, run: _Run, kinds: Sequence[str]) -> JSONObject:
        """One action of a kind drawn from ``kinds``, its data steered by the model's state."""
        kind = data.draw(st.sampled_from(kinds))
        return {"type": kind, "data": data.draw(action_data(kind, run.state(), self.serial))}

    def _transaction(self, run: _Run, arguments: JSONObject, *, jobs: bool = False) -> None:
        """Run one generated transaction. ``jobs``: it may start backups, so their events are
        kept per job and a known QEMU deadlock is recorded as hung (:func:`_deadlock_timeout`)."""
        self.shared.transactions += 1
        if not jobs:
            run.run(Step(0, "execute", "transaction", arguments))
            return
        run.run(
            Step(
                0,
                "execute",
                "transaction",
                arguments,
                event_order="per-job-one-drain",
                timeout=_deadlock_timeout(arguments),
            )
        )

    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        run = self._live()
        node = data.draw(st.sampled_from(NODES))
        offset = data.draw(st.integers(0, 63)) * 65536 + data.draw(st.sampled_from((0, 512, 4096)))
        length = data.draw(st.sampled_from((512, 4096, 65536, 131072)))
        run.run(Step(0, "io", {"node": node, "cmd": f"write -P 0x5a {offset} {length}"}))

    @rule(data=st.data())
    def add_bitmap(self, data: st.DataObject) -> None:
        run = self._live()
        args = data.draw(action_data("block-dirty-bitmap-add", run.state(), self.serial))
        run.run(Step(0, "execute", "block-dirty-bitmap-add", args))

    @rule(data=st.data())
    def bitmap_command(self, data: st.DataObject) -> None:
        run = self._live()
        kind = data.draw(
            st.sampled_from(
                (
                    "block-dirty-bitmap-clear",
                    "block-dirty-bitmap-enable",
                    "block-dirty-bitmap-disable",
                    "block-dirty-bitmap-remove",
                    "block-dirty-bitmap-merge",
                )
            )
        )
        args = data.draw(action_data(kind, run.state(), self.serial))
        run.run(Step(0, "execute", kind, args))

    @rule(data=st.data())
    def transaction(self, data: st.DataObject) -> None:
        run = self._live()
        count = data.draw(st.integers(1, 4))
        actions: list[JSONObject] = []
        for _ in range(count):
            self.serial += 1
            compiler = self.shared.compiler
            if compiler is not None and data.draw(st.integers(0, 7)) == 0:
                drawn = data.draw(compiler)
                actions.append(drawn)
                continue
            actions.append(self._action(data, run, _WEIGHTED))
        arguments: JSONObject = {"actions": actions}
        if data.draw(st.integers(0, 5)) == 0:
            arguments["properties"] = {
                "completion-mode": data.draw(st.sampled_from(("grouped", "individual")))
            }
        self._transaction(run, arguments, jobs=True)

    def _failing_action(self, data: st.DataObject, actions: list[JSONObject]) -> None:
        """Sometimes end with an action that fails, so everything before is rolled back."""
        if data.draw(st.integers(0, 3)) == 0:
            failing = data.draw(
                st.sampled_from(
                    (
                        {"type": "abort", "data": {}},
                        {"type": "block-dirty-bitmap-add", "data": {"node": MISSING, "name": "x"}},
                    )
                )
            )
            actions.append(failing)

    @rule(data=st.data())
    def backup_transaction(self, data: st.DataObject) -> None:
        """Backups only: job ids, targets, bitmaps, sync modes; grouped or individual.

        Deterministic on real QEMU as on the reference's clock: the events of each job are
        kept together (``event_order: per-job``; how QEMU interleaves two jobs' events is
        timing), a job of ``bad0`` runs one request at a time, and in a grouped transaction
        with a job of ``bad0`` every other job is held (``speed`` 1, ``sync`` full: it copies its
        first request, then sleeps) so the failure cancels it at that point on every endpoint, and
        then released (``block-job-set-speed`` 0: QEMU no longer has it; an engine whose
        grouped mode does not cancel siblings lets it complete, which the checks see).
        """
        run = self._live()
        state = run.state()
        taken = _jobs(state)
        actions: list[JSONObject] = []
        for _ in range(data.draw(st.integers(1, 3))):
            self.serial += 1
            kind = data.draw(st.sampled_from(("blockdev-backup", "drive-backup")))
            actions.append(
                {"type": kind, "data": data.draw(backup_data(kind, state, self.serial, taken))}
            )
        held: list[str] = []
        mode = data.draw(st.sampled_from(("grouped", "individual", None)))
        if mode == "grouped" and any(a["data"]["device"] == FAILING for a in actions):
            for action in actions:
                if action["data"]["device"] != FAILING:
                    _hold(action["data"])
                    held.append(str(action["data"]["job-id"]))
        count = len(actions)
        self._failing_action(data, actions)
        if len(actions) > count:
            held = []  # rolled back: no job to release
        arguments: JSONObject = {"actions": actions}
        if mode is not None:
            arguments["properties"] = {"completion-mode": mode}
        self._transaction(run, arguments, jobs=True)
        for job in dict.fromkeys(held):
            release = {"device": job, "speed": 0}
            run.run(
                Step(0, "execute", "block-job-set-speed", release, event_order="per-job-one-drain")
            )

    @rule(data=st.data())
    def snapshot_transaction(self, data: st.DataObject) -> None:
        """External and internal snapshots, fresh overlay names, existing snapshot names."""
        run = self._live()
        state = run.state()
        internal = _internal_snapshots(state)
        actions: list[JSONObject] = []
        for _ in range(data.draw(st.integers(1, 3))):
            self.serial += 1
            kind = data.draw(
                st.sampled_from(
                    (
                        "blockdev-snapshot-internal-sync",
                        "blockdev-snapshot-internal-sync",
                        "blockdev-snapshot-sync",
                        "blockdev-snapshot",
                    )
                )
            )
            node = data.draw(st.sampled_from(("disk0", "disk1")))
            item: JSONObject
            if kind == "blockdev-snapshot-internal-sync":
                if internal and data.draw(st.integers(0, 3)) == 0:
                    node, name = data.draw(st.sampled_from(internal))
                else:
                    name = f"{data.draw(st.sampled_from(SNAPSHOT_NAMES))}-{self.serial}"
                item = {"device": node, "name": name}
            elif kind == "blockdev-snapshot-sync":
                item = {
                    "node-name": node,
                    "snapshot-file": f"{{dir}}/snap{self.serial}.qcow2",
                    "snapshot-node-name": f"snap{self.serial}",
                    "format": "qcow2",
                }
            else:
                item = {"node": node, "overlay": "ov0"}
            actions.append({"type": kind, "data": item})
        self._failing_action(data, actions)
        self._transaction(run, {"actions": actions})

    @rule(data=st.data())
    def bitmap_transaction(self, data: st.DataObject) -> None:
        """Transactions of bitmap actions only (what every endpoint implements), deeper."""
        run = self._live()
        kinds = [k for k in _WEIGHTED if k.startswith("block-dirty-bitmap-")]
        actions: list[JSONObject] = []
        for _ in range(data.draw(st.integers(1, 4))):
            self.serial += 1
            actions.append(self._action(data, run, kinds))
        if data.draw(st.integers(0, 9)) == 0:
            actions.insert(data.draw(st.integers(0, len(actions))), {"type": "abort", "data": {}})
        self._transaction(run, {"actions": actions})

    def teardown(self) -> None:
        if self.run is not None:
            try:
                if self.shared.failure is None or self.shared.failure[0] is not self.run.history:
                    self.run.finish()
            finally:
                self.run.close()
                self.run = None


def _action_compiler(info: Any) -> Any:
    """A strategy for one whole action from the endpoint's derived schema, steered; or None."""
    schema = info.schema
    if schema is None:
        return None
    try:
        from conformance.schema.strategies import Compiler  # noqa: PLC0415 - helper A's room
    except ImportError:
        return None
    arguments = schema.command_schema("transaction", "arguments")
    if arguments is None:
        return None
    names = st.sampled_from((*NODES, "ov0", MISSING))
    bitmaps = st.sampled_from((*BITMAP_NAMES, MISSING))
    try:
        compiler = Compiler(
            steer={
                "actions[].data.node": names,
                "actions[].data.device": names,
                "actions[].data.node-name": names,
                "actions[].data.name": bitmaps,
                "actions[].data.target": st.sampled_from(("b0", "disk1", "ov0")),
                "actions[].data.bitmap": bitmaps,
            },
            max_depth=2,
            max_items=3,
        )
        whole = compiler.compile(arguments)
    except Exception:  # an incompatible compiler version: fall back to the hand-made shapes
        return None
    return whole.filter(lambda a: bool(a.get("actions"))).map(lambda a: _confined(a["actions"][0]))


def _confined(action: JSONObject) -> JSONObject:
    """Keep files an action creates inside the example's directory (relative paths would land
    in the current directory of an in-process endpoint); no rate-limited jobs."""
    data = action.get("data")
    if isinstance(data, dict):
        member = qemu_rules.FILE_CREATING.get(str(action.get("type")))
        if member is not None and member in data:
            data[member] = "{dir}/generated.qcow2"
        # A rate limit would keep a job running past the recorder's settle time.
        data.pop("speed", None)
    return action


def generate(
    info: Any,
    selected: dict[str, CheckFunction],
    deviations: Sequence[Deviation],
    features: frozenset[str],
    *,
    max_examples: int,
    seed: int | None,
    report_dir: Path | None,
    progress: Progress | None = None,
) -> Any:
    """Run the state machine on one target; return a ``ProgramResult`` named ``generated``."""
    from conformance import reproducer  # noqa: PLC0415
    from conformance.runner import ProgramResult  # noqa: PLC0415

    started = time.monotonic()
    templates = Path(tempfile.mkdtemp(prefix="qc-templates-"))
    shared = GenerationState(
        info,
        selected,
        deviations,
        features,
        templates,
        info.version,
        compiler=_action_compiler(info),
        progress=progress,
        max_examples=max_examples,
    )
    machine = type("GeneratedSequences", (ConformanceMachine,), {"shared": shared})
    if seed is not None:
        machine = hypothesis.seed(seed)(machine)
    config = settings(
        max_examples=max_examples,
        stateful_step_count=STEPS,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate, Phase.shrink),
        report_multiple_bugs=False,
        print_blob=False,
    )
    error: str | None = None
    trouble: str | None = None
    try:
        make_templates(templates)
        run_machine(machine, settings=config)
    except AssertionError as failure:
        error = str(failure)
    except HypothesisException as failure:
        # e.g. an endpoint whose replies vary between replays of one example: reported, and
        # the examples that ran before still count.
        trouble = f"generation stopped: {type(failure).__name__}: {str(failure)[:300]}"
    finally:
        shutil.rmtree(templates, ignore_errors=True)
    verdicts: dict[str, Verdict] = {}
    findings_by_check: dict[str, list[Finding]] = {}
    if error is not None and shared.failure is not None:
        for finding in shared.failure[2]:
            findings_by_check.setdefault(finding.check, []).append(finding)
    elif error is not None:
        raise RuntimeError(f"generation failed outside the checks: {error}")
    for name in selected:
        found = findings_by_check.get(name, []) + shared.expected.get(name, [])[:20]
        reason = "; ".join(sorted(shared.reasons.get(name, set())))[:400]
        if trouble is not None:
            reason = f"{trouble}; {reason}" if reason else trouble
        judged = verdict(
            name,
            found,
            shared.examined.get(name, 0) + len(found),
            reason or "nothing generated applied",
        )
        if judged.reason == "" and reason and judged.status != "n/a":
            judged.reason = f"not applicable in some examples: {reason}"
        verdicts[name] = judged
    result = ProgramResult(
        info.target.label,
        info.kind,
        info.version,
        "generated/sequences",
        f"{shared.examples} generated examples, {shared.transactions} transactions, "
        f"{shared.steps} steps (seed {seed})",
        verdicts,
        time.monotonic() - started,
        examples=shared.examples,
        seed=seed,
        backup_transactions=shared.backup_transactions,
        jobs=shared.jobs,
    )
    if shared.failure is not None and report_dir is not None:
        history, model, found = shared.failure
        result.history = history
        result.reproducer = str(
            reproducer.save(report_dir, history, model, found[0], all_findings=found)
        )
    return result
