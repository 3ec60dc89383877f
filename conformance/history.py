"""A recorded run: the history of operations the checks judge (Jepsen's "history in").

:func:`record` runs a *program* (a :class:`~conformance.scenario.Scenario`: setup commands,
launch options, steps; curated scenarios and generated sequences are both programs) on one
endpoint and returns a :class:`History`: for every step what was sent, the reply, the events, and
the observable state after it (:mod:`conformance.state`). The state before a step is the state
after the previous one (or the initial state). Checks (:mod:`conformance.checks`) take histories
and return verdicts; they never talk to endpoints themselves.

Jobs: a step with a ``wait`` (or a ``wait`` step) lets the endpoint's time pass until its jobs
are as the scenario says, exactly as :func:`conformance.scenario.run` does. In a program without
any ``wait`` (generated sequences, curated scenarios that leave timing alone), after a step that
created or touched jobs, :func:`record` lets time pass (bounded) until no job is still moving, so
that the events of the jobs' whole lives belong to the step that started them. Time passes
through :meth:`Endpoint.settle`: real time on processes and sockets, the deterministic clock
(``Machine.advance``) on the in-process reference, so jobs progress there too.

This module must not judge: it records, including crashes and hangs (as outcomes, not exceptions).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance import state as state_mod
from conformance.endpoints import (
    STREAM_BROKEN,
    Endpoint,
    EndpointCrashed,
    EndpointError,
    EndpointFactory,
    EndpointHung,
    EndpointStreamBroken,
    EndpointUnsupported,
    JSONObject,
    SocketEndpoint,
)
from conformance.observe import Normalizer, observe
from conformance.scenario import (
    HANG_TIMEOUT,
    Scenario,
    Step,
    Transcript,
    io_arguments,
    launch_options,
    let_held_jobs_rest,
    order_events,
    prepare_workdir,
    reads_state,
    run_host_command,
    settle_jobs,
    substitute,
)

#: Job statuses in which a job still moves on its own.
MOVING_JOB_STATUSES = frozenset({"created", "running", "waiting", "aborting"})
#: Seconds :func:`record` lets pass (real time; virtual on the reference) for jobs to stop moving.
JOB_SETTLE_TIMEOUT = 5.0


@dataclass
class Operation:
    """One step as it happened on one endpoint (all values normalized)."""

    #: The step's index in its program.
    index: int
    #: ``execute``, ``io``, ``run``, ``observe`` or ``wait``.
    kind: str
    #: What was sent: ``{"execute": C, "arguments": A}``, ``{"run": CMD}`` or ``{"observe": [..]}``.
    message: JSONObject
    #: ``return``, ``error``, ``crashed``, ``hung`` (no reply, or the QMP stream broke with the
    #: process alive: ``failure`` says which) or ``done`` (run/observe/wait).
    outcome: str
    reply: JSONObject | None = None
    events: list[JSONObject] = field(default_factory=list)
    #: The observable state after the step (``None`` once the endpoint is gone).
    state: JSONObject | None = None
    #: ``observe``: the scenario observation; ``run``: the host command's result.
    output: Any = None
    #: How the endpoint died (``SIGSEGV``, ``exit status 1``) or why it hung.
    failure: str | None = None
    #: The failed assertion it printed as it died, if any (see :func:`_assertion`).
    assertion: str | None = None
    #: Jobs were still moving when the settle timeout passed.
    unsettled_jobs: bool = False
    #: Whether the jobs reached the step's ``wait`` condition (``None``: no wait).
    settled: bool | None = None
    seconds: float = 0.0

    @property
    def command(self) -> str | None:
        """The QMP command sent (``human-monitor-command`` for io steps)."""
        value = self.message.get("execute")
        return str(value) if value is not None else None

    @property
    def arguments(self) -> JSONObject:
        """The arguments sent (empty mapping when none)."""
        args = self.message.get("arguments")
        return dict(args) if isinstance(args, dict) else {}

    @property
    def stream_broken(self) -> bool:
        """The step is ``hung`` because the QMP stream broke with the process alive."""
        return self.outcome == "hung" and (self.failure or "").startswith(STREAM_BROKEN)

    def error(self) -> JSONObject | None:
        """The QMP error of the reply, if it was one."""
        if self.reply is None:
            return None
        err = self.reply.get("error")
        return dict(err) if isinstance(err, dict) else None

    def is_transaction(self) -> bool:
        """Whether the step was a ``transaction`` command."""
        return self.command == "transaction"

    def actions(self) -> list[JSONObject]:
        """The ``actions`` of a transaction step (only well-formed entries)."""
        actions = self.arguments.get("actions")
        if not isinstance(actions, list):
            return []
        return [a for a in actions if isinstance(a, dict) and isinstance(a.get("type"), str)]

    def to_entry(self) -> JSONObject:
        """The step as a :class:`~conformance.scenario.Transcript` entry."""
        entry: JSONObject = {"step": self.index}
        if self.kind == "run":
            entry.update(self.output or {})
            return entry
        if self.kind == "wait":
            entry["wait"] = self.message["wait"]
            entry["settled"] = self.settled
            entry["events"] = self.events
            return entry
        if self.kind == "observe":
            entry["observe"] = self.message["observe"]
            entry["state"] = self.output
            entry["events"] = self.events
            return entry
        if self.kind == "io":
            entry["io"] = self.message.get("io")
        else:
            entry["execute"] = self.command
        if self.outcome == "crashed":
            entry["crashed"] = self.failure
            return entry
        if self.outcome == "hung":
            entry["hung"] = True
            return entry
        entry["reply"] = self.reply
        if self.settled is not None:
            entry["settled"] = self.settled
        entry["events"] = self.events
        return entry


@dataclass
class History:
    """Everything one endpoint did in one run of one program."""

    program: Scenario
    target: str
    version: str
    initial_state: JSONObject | None = None
    operations: list[Operation] = field(default_factory=list)
    #: Events the endpoint emitted before the first step.
    start_events: list[JSONObject] = field(default_factory=list)
    #: Capabilities the endpoint lacks that this program needed (e.g. human-monitor-command).
    missing: list[str] = field(default_factory=list)
    #: The endpoint could not be started (reason), so nothing was recorded.
    start_failure: str | None = None
    #: The endpoint cannot run this program at all (e.g. ``-drive`` on qemu-storage-daemon).
    unsupported: str | None = None
    seconds: float = 0.0

    def state_before(self, position: int) -> JSONObject | None:
        """The observable state before ``operations[position]``."""
        if position == 0:
            return self.initial_state
        return self.operations[position - 1].state

    def pairs(self) -> Iterator[tuple[int, Operation, JSONObject | None]]:
        """``(position, operation, state before)`` for every operation."""
        for position, op in enumerate(self.operations):
            yield position, op, self.state_before(position)

    def transcript(self) -> Transcript:
        """The history as a scenario transcript (for the expectations and comparisons)."""
        transcript = Transcript(self.program.id, self.target, self.version)
        transcript.entries.append({"step": -1, "events": self.start_events})
        transcript.entries += [op.to_entry() for op in self.operations]
        return transcript

    def to_json(self) -> JSONObject:
        """A JSON-serializable form (for reports)."""
        return {
            "program": self.program.id,
            "target": self.target,
            "version": self.version,
            "missing": self.missing,
            "start_failure": self.start_failure,
            "operations": [
                {
                    "index": op.index,
                    "kind": op.kind,
                    "message": op.message,
                    "outcome": op.outcome,
                    "reply": op.reply,
                    "events": op.events,
                    "failure": op.failure,
                    "assertion": op.assertion,
                }
                for op in self.operations
            ],
        }


def _crash_text(crash: EndpointCrashed) -> str:
    if crash.signal is not None:
        return crash.signal.name
    return f"exit status {crash.returncode}"


#: A failed assertion as glibc prints it, without the program name and source line (which
#: differ between binaries and versions): ``bdrv_do_drained_end: Assertion `...' failed``.
_ASSERTION = re.compile(r"(\w+: Assertion `.*' failed)")


def _assertion(crash: EndpointCrashed) -> str | None:
    found = _ASSERTION.search(crash.stderr)
    return found.group(1) if found else None


class Recorder:
    """Runs steps on one started endpoint and appends them to a :class:`History`."""

    def __init__(
        self,
        endpoint: Endpoint,
        history: History,
        normalizer: Normalizer,
        *,
        auto_settle: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.history = history
        self.normalizer = normalizer
        self.alive = True
        #: The endpoint quit on request (host ``run`` steps may still follow).
        self.quit = False
        #: Settle moving jobs after every step (off when the program has its own ``wait``s).
        self.auto_settle = auto_settle

    def start(self) -> None:
        """Record the events and the state before the first step."""
        self.history.start_events = self.normalizer.events(self.endpoint.take_events())
        self.history.initial_state = self._snapshot()

    def _lost(
        self, op: Operation, error: EndpointCrashed | EndpointHung | EndpointStreamBroken
    ) -> Operation:
        """``op`` ended with the endpoint gone (``crashed``/``hung``): no step runs after it.

        A QMP stream that broke with the process alive (:class:`EndpointStreamBroken`: a JSON
        parse error in reply to a message sent well-formed, or a dropped connection) is ``hung``
        with that text as ``failure``: the endpoint no longer answers what it is sent. It is a
        QEMU defect (known deviation ``qmp-stream-broken``), never retried: a retry would hide
        the same symptom from the reference server."""
        if isinstance(error, EndpointCrashed):
            op.outcome, op.failure = "crashed", _crash_text(error)
            op.assertion = _assertion(error)
        else:
            op.outcome, op.failure = "hung", str(error)
        self.alive = False
        return op

    def _snapshot(self) -> JSONObject | None:
        try:
            let_held_jobs_rest(self.endpoint)
            return state_mod.snapshot(self.endpoint, self.normalizer)
        except (EndpointCrashed, EndpointHung, EndpointStreamBroken):
            self.alive = False
            return None

    def _settle_jobs(self, op: Operation, step: Step) -> None:
        """Let time pass until no job moves; the events of the jobs' lives join ``op`` (in the
        step's event order, applied to all of them)."""

        def still() -> bool:
            reply = self.endpoint.execute("query-jobs")
            jobs = reply.get("return")
            if not isinstance(jobs, list):
                return True
            return not any(job.get("status") in MOVING_JOB_STATUSES for job in jobs)

        op.unsettled_jobs = not self.endpoint.settle(still, JOB_SETTLE_TIMEOUT)
        op.events = order_events(
            step, op.events + self.normalizer.events(self.endpoint.take_events())
        )

    def step(self, step: Step) -> Operation:
        """Run one step, record it, and return the operation."""
        started = time.monotonic()
        op = self._run(step)
        op.seconds = time.monotonic() - started
        self.history.operations.append(op)
        return op

    def _run(self, step: Step) -> Operation:  # noqa: PLR0915 - one branch per step kind
        endpoint = self.endpoint
        workdir = endpoint.workdir
        if step.kind == "run":
            result = run_host_command(step.body, workdir)
            output: JSONObject = {"run": step.body, "returncode": result.returncode}
            stdout: Any = result.stdout
            if step.json_output and result.returncode == 0:
                stdout = json.loads(result.stdout)
            output["stdout"] = self.normalizer.value(stdout)
            if result.returncode != 0:
                output["stderr"] = self.normalizer.text(result.stderr.strip())
            op = Operation(step.index, "run", {"run": step.body}, "done", output=output)
            op.state = self._snapshot() if self.alive else None
            return op
        if step.kind == "wait":
            op = Operation(step.index, "wait", {"wait": dict(step.body)}, "done")
            try:
                op.settled = settle_jobs(endpoint, step.body)
                op.events = order_events(step, self.normalizer.events(endpoint.take_events()))
            except (EndpointCrashed, EndpointHung, EndpointStreamBroken) as error:
                return self._lost(op, error)
            op.state = self._snapshot()
            return op
        if step.kind == "observe":
            op = Operation(step.index, "observe", {"observe": list(step.body)}, "done")
            try:
                let_held_jobs_rest(endpoint)
                op.output = observe(endpoint, step.body, self.normalizer)
                op.events = self.normalizer.events(endpoint.take_events())
            except (EndpointCrashed, EndpointHung, EndpointStreamBroken) as error:
                return self._lost(op, error)
            op.state = self._snapshot()
            return op
        if step.kind == "io":
            command, arguments = "human-monitor-command", io_arguments(step.body)
            message: JSONObject = {"execute": command, "arguments": arguments, "io": step.body}
        else:
            command = str(step.body)
            arguments = substitute(step.arguments, workdir)
            message = {"execute": command}
            if step.arguments is not None:
                message["arguments"] = step.arguments
        op = Operation(step.index, step.kind, self.normalizer.value(message), "return")
        try:
            if reads_state(command):
                let_held_jobs_rest(endpoint)
            if step.hangs_qemu(self.history.version) or step.timeout is not None:
                with endpoint.command_timeout(step.timeout or HANG_TIMEOUT):
                    reply = endpoint.execute(command, arguments)
            else:
                reply = endpoint.execute(command, arguments)
        except (EndpointCrashed, EndpointHung, EndpointStreamBroken) as error:
            return self._lost(op, error)
        op.reply = self.normalizer.reply(reply)
        op.outcome = "error" if "error" in reply else "return"
        if command == "quit" and "error" not in reply:
            with contextlib.suppress(EndpointError):
                endpoint.wait_for_exit()
            self.alive = False
            self.quit = True
            return op
        if (
            step.kind == "io"
            and op.outcome == "error"
            and reply["error"].get("class") == "CommandNotFound"
            and "human-monitor-command" not in self.history.missing
        ):
            self.history.missing.append("human-monitor-command")
        try:
            if step.wait is not None:
                op.settled = settle_jobs(endpoint, step.wait)
            op.events = order_events(step, self.normalizer.events(endpoint.take_events()))
            if self.auto_settle and any(e.get("event") == "JOB_STATUS_CHANGE" for e in op.events):
                self._settle_jobs(op, step)
        except (EndpointCrashed, EndpointHung, EndpointStreamBroken) as error:
            return self._lost(op, error)
        op.state = self._snapshot()
        return op


def _names_created(value: Any) -> set[str]:
    """Every ``node-name``/``snapshot-node-name`` a program's arguments would create."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("node-name", "snapshot-node-name") and isinstance(item, str):
                found.add(item)
            found |= _names_created(item)
    elif isinstance(value, list):
        for item in value:
            found |= _names_created(item)
    return found


def _guard_foreign(program: Scenario, history: History) -> str | None:
    """On an endpoint someone else runs: refuse a program whose node names are taken there."""
    created: set[str] = set()
    for step in program.steps:
        if step.kind == "execute":
            created |= _names_created(step.arguments)
    taken = sorted(created & set((history.initial_state or {}).get("nodes") or {}))
    if taken:
        return f"node names {taken} already exist on the attached endpoint"
    return None


def _remove_created(endpoint: Endpoint, initial: JSONObject | None) -> None:
    """Delete the nodes the program created on an attached endpoint (parents first)."""
    before = set((initial or {}).get("nodes") or {})
    for _ in range(8):
        reply = endpoint.execute("query-named-block-nodes", {"flat": True})
        names = [str(n.get("node-name")) for n in reply.get("return", [])]
        ours = [n for n in names if n not in before and not n.startswith("#")]
        if not ours:
            return
        for name in reversed(ours):
            endpoint.execute("blockdev-del", {"node-name": name})


def record(
    program: Scenario,
    start: EndpointFactory,
    *,
    label: str,
    version: str | None = None,
) -> History:
    """Run ``program`` on a fresh endpoint from ``start`` and return its history.

    ``version`` selects version-specific steps (default: the endpoint's own). Setup commands run
    in a fresh directory that is removed afterwards, with the endpoint. An endpoint that cannot
    start gives a history with ``start_failure`` set (the liveness check reports it).
    """
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"qc-{program.name[:20]}-")).resolve()
    history = History(program, label, version or "?")
    try:
        prepare_workdir(program, workdir)
        try:
            endpoint = start(workdir, launch_options(program, workdir))
        except EndpointUnsupported as error:
            history.unsupported = str(error)
            return history
        except EndpointError as error:
            history.start_failure = str(error)
            return history
        with endpoint:
            history.version = version or endpoint.version_label
            own_waits = any(s.kind == "wait" or s.wait is not None for s in program.steps)
            recorder = Recorder(endpoint, history, Normalizer(workdir), auto_settle=not own_waits)
            recorder.start()
            foreign = isinstance(endpoint, SocketEndpoint)
            if foreign:
                history.unsupported = _guard_foreign(program, history)
                if history.unsupported is not None:
                    return history
            for step in program.steps:
                if not step.applies_to(history.version):
                    continue
                if not recorder.alive and not (recorder.quit and step.kind == "run"):
                    break
                if foreign and step.kind == "execute" and step.body == "quit":
                    continue  # never stop an endpoint somebody else runs
                recorder.step(step)
            if foreign and recorder.alive:
                with contextlib.suppress(EndpointError):
                    _remove_created(endpoint, history.initial_state)
        return history
    finally:
        history.seconds = time.monotonic() - started
        shutil.rmtree(workdir, ignore_errors=True)
