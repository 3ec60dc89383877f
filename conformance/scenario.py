"""Scenarios stated once as data, run on any endpoint, checked and compared.

A scenario is a YAML file under ``conformance/scenarios/<area>/NAME.yaml``::

    description: what it shows, and where the fact comes from
    versions: ["7.2", "10.0"]          # optional, default: all of KNOWN_VERSIONS
    setup:                             # run on the host in the endpoint's workdir, before start
      - qemu-img create -f qcow2 {dir}/a.qcow2 64M
      - {run: "qemu-io -c 'sigraise 9' {dir}/a.qcow2", may_fail: true}
    drives:                            # optional: -drive option sets (Machine.add_drive)
      - {id: drv0, if: none, file: "{dir}/a.qcow2", format: qcow2}
    blockdevs:                         # optional: -blockdev option trees
      - {driver: null-co, node-name: n0}
    steps:
      - execute: block-dirty-bitmap-add
        arguments: {node: disk0, name: b0}
        expect: {return: {}}
      - io: {node: disk0, cmd: "write -P 0x5a 0 64k"}     # human-monitor-command qemu-io
      - observe: [disk0]
        expect: {bitmaps: {disk0: [{name: b0, count: 65536}]}}
      - run: "qemu-img info -U --output=json {dir}/a.qcow2"   # host tool, output recorded
        json: true

Block jobs (backup) run in the background, so what a step sees depends on time. Two keys make
job scenarios deterministic on every endpoint:

* ``wait: {jobs: {JOB_ID: STATUS, ...}}`` — as its own step, or as a key of an
  ``execute``/``io`` step (applied after the reply): let time pass until ``query-jobs`` shows
  every listed job in that ``status`` (``null``: the job is gone; a mapping instead of a
  status: every key must match the job's ``query-jobs`` entry, e.g.
  ``{status: running, current-progress: 65536}``), then record every event
  received up to that point. Real QEMU is polled in real time; the in-process reference
  advances its deterministic clock (:meth:`Endpoint.settle`). The entry records
  ``settled: false`` when the state was not reached within the endpoint's limit (a failure).
  A job waited for as ``running`` (held by ``speed``) must also be quiet: its progress and
  the counts of bitmaps without a name unchanged over a few polls, and on QEMU 7.2 its copy
  bitmap holding no chunk in flight (:meth:`Endpoint.quiesce`, :func:`_chunks_returned`).
  Any step after which a job could still change state needs a ``wait``, or the job must be
  held still (``speed: 1`` keeps a backup at its first chunk; ``job-pause``; an error with
  ``on-*-error: stop``).
* ``event_order: per-job`` — QEMU orders the events of *different* jobs by timing in places
  (a grouped txn's sibling cancellation); this keeps each job's own sequence and the order of
  the jobs' first appearance, and drops the interleaving.
* ``event_order: per-job-one-drain`` — as ``per-job``, and a job paused and resumed by drains
  (``paused`` then ``running``) several times while it runs shows the first such pair only:
  how many drains meet a running job (one per other job that finishes beside it, ...) is
  timing on real QEMU. Used by generated sequences, whose jobs run side by side unheld.

``expect`` of a ``run`` step may give ``returncode`` (``qemu-img compare`` answers 0 for
identical, 1 for different images); without it any non-zero exit fails unless ``may_fail``.

Step keys common to all kinds: ``versions`` (run the step only there), ``expect``.
``expect`` of an ``execute``/``io`` step: ``return`` (exact, normalized), ``error`` with
``class`` and/or ``desc`` (a string, or a mapping version → string), ``events`` (list of event
names, in order). ``expect`` of an ``observe`` step: ``bitmaps: {NODE: [subset dicts] | null}``
(same length and order; each listed key must match). ``qemu_crashes: true`` (or a list of
versions) on an execute step says real QEMU dies there (recorded as ``crashed``: SIGSEGV, or
SIGABRT for a failed assertion) while a
faithful-but-sane implementation answers a ``GenericError`` (any text), or, where QEMU dies in a
job's end after the step's reply, ends that job with an error (``BLOCK_JOB_COMPLETED`` with
``error`` among the step's events); nothing after that step is compared. ``qemu_hangs`` (same
forms) says real QEMU stops answering there (a deadlock): QEMU must not reply within
:data:`HANG_TIMEOUT` seconds (recorded as ``hung``) and the reference
must answer a ``GenericError``; nothing after that step is compared.

``{dir}`` is replaced everywhere (setup, drives, arguments) by the endpoint's workdir.
The transcript of a run is a list of normalized entries (see :func:`run_scenario`); two
endpoints of the same version are compared entry by entry with :func:`compare_transcripts`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conformance.endpoints import (
    Endpoint,
    EndpointCrashed,
    EndpointFactory,
    EndpointHung,
    JSONObject,
    LaunchOptions,
)
from conformance.observe import Normalizer, observe

SCENARIO_ROOT = Path(__file__).parent / "scenarios"
KNOWN_VERSIONS = ("7.2", "10.0")
STEP_KINDS = ("execute", "io", "observe", "run", "wait")
EVENT_ORDERS = ("per-job", "per-job-one-drain")
#: Seconds a setup or ``run`` command may take.
TOOL_TIMEOUT = 60.0
#: Seconds without a reply after which a ``qemu_hangs`` step counts as hung.
HANG_TIMEOUT = 5.0
#: How real QEMU dies at a ``qemu_crashes`` step: a segmentation fault, or a failed assertion
#: (``abort()``, e.g. ``bdrv_do_drained_end: Assertion `bs->quiesce_counter > 0' failed``).
CRASH_SIGNALS = ("SIGSEGV", "SIGABRT")


class ScenarioError(Exception):
    """A scenario file is malformed (caught at load time, never at run time)."""


@dataclass(frozen=True)
class Step:
    """One step: exactly one of execute/io/observe/run, plus options."""

    index: int
    kind: str
    body: Any
    arguments: Any = None
    expect: Mapping[str, Any] | None = None
    versions: tuple[str, ...] | None = None
    qemu_crashes: tuple[str, ...] = ()
    qemu_hangs: tuple[str, ...] = ()
    json_output: bool = False
    may_fail: bool = False
    #: ``{"jobs": {id: status | None}}``: settle until query-jobs shows this (see module doc).
    wait: Mapping[str, Any] | None = None
    event_order: str | None = None
    #: Seconds to wait for the reply before recording ``hung`` (generated steps that may meet
    #: a known QEMU deadlock; default: the endpoint's command timeout).
    timeout: float | None = None

    def applies_to(self, version: str) -> bool:
        """Whether the step runs on endpoints of ``version``."""
        return self.versions is None or version in self.versions

    def crashes_qemu(self, version: str) -> bool:
        """Whether real QEMU of ``version`` is known to die at this step."""
        return version in self.qemu_crashes

    def hangs_qemu(self, version: str) -> bool:
        """Whether real QEMU of ``version`` is known to stop answering at this step."""
        return version in self.qemu_hangs


@dataclass(frozen=True)
class SetupCommand:
    """A host command run in the workdir before the endpoint starts."""

    run: str
    may_fail: bool = False


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario file."""

    name: str
    area: str
    path: Path
    description: str
    versions: tuple[str, ...]
    setup: tuple[SetupCommand, ...]
    drives: tuple[Mapping[str, Any], ...]
    blockdevs: tuple[Mapping[str, Any], ...]
    steps: tuple[Step, ...]
    #: Block-layer features the scenario exercises beyond bitmaps (``blockdev-backup``,
    #: ``backing-chains``, ...): an endpoint that declares it lacks one is not compared on it.
    requires: frozenset[str] = frozenset()
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def id(self) -> str:
        """``area/name``: how tests and reports name the scenario."""
        return f"{self.area}/{self.name}"


def _versions(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ScenarioError(f"{where}: versions must be a list of strings like '10.0'")
    unknown = [v for v in value if v not in KNOWN_VERSIONS]
    if unknown:
        raise ScenarioError(f"{where}: unknown versions {unknown}")
    return tuple(value)


def _crash_versions(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, bool):
        return KNOWN_VERSIONS if value else ()
    return _versions(value, where)


def _parse_step(index: int, raw: Any, where: str) -> Step:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where} step {index}: not a mapping")
    kinds = [k for k in STEP_KINDS if k in raw]
    if len(kinds) == 2 and "wait" in kinds:  # ``wait`` as an option of an execute/io step
        kinds.remove("wait")
    if len(kinds) != 1:
        raise ScenarioError(f"{where} step {index}: needs exactly one of {STEP_KINDS}")
    kind = kinds[0]
    allowed = {
        kind,
        "arguments",
        "expect",
        "versions",
        "qemu_crashes",
        "qemu_hangs",
        "json",
        "may_fail",
        "wait",
        "event_order",
    }
    extra = set(raw) - allowed
    if extra:
        raise ScenarioError(f"{where} step {index}: unknown keys {sorted(extra)}")
    body = raw[kind]
    if kind == "io" and not (isinstance(body, dict) and {"node", "cmd"} <= set(body)):
        raise ScenarioError(f"{where} step {index}: io needs node and cmd")
    if kind == "observe" and not (isinstance(body, list) and body):
        raise ScenarioError(f"{where} step {index}: observe needs a list of node names")
    wait = body if kind == "wait" else raw.get("wait")
    if wait is not None:
        if kind not in ("wait", "execute", "io"):
            raise ScenarioError(f"{where} step {index}: only execute/io steps may wait")
        _check_wait(wait, f"{where} step {index}")
    event_order = raw.get("event_order")
    if event_order is not None and event_order not in EVENT_ORDERS:
        raise ScenarioError(f"{where} step {index}: event_order must be one of {EVENT_ORDERS}")
    expect = raw.get("expect")
    if expect is not None and not isinstance(expect, dict):
        raise ScenarioError(f"{where} step {index}: expect must be a mapping")
    if expect is not None:
        unknown = set(expect) - {"return", "error", "events", "bitmaps", "returncode"}
        if unknown:
            raise ScenarioError(f"{where} step {index}: unknown expect keys {sorted(unknown)}")
    versions = raw.get("versions")
    return Step(
        index=index,
        kind=kind,
        body=body,
        arguments=raw.get("arguments"),
        expect=expect,
        versions=None if versions is None else _versions(versions, f"{where} step {index}"),
        qemu_crashes=_crash_versions(raw.get("qemu_crashes", False), f"{where} step {index}"),
        qemu_hangs=_crash_versions(raw.get("qemu_hangs", False), f"{where} step {index}"),
        json_output=bool(raw.get("json", False)),
        may_fail=bool(raw.get("may_fail", False)),
        wait=wait,
        event_order=event_order,
    )


def _check_wait(wait: Any, where: str) -> None:
    if not isinstance(wait, dict) or set(wait) != {"jobs"} or not isinstance(wait["jobs"], dict):
        raise ScenarioError(f"{where}: wait must be {{jobs: {{JOB_ID: STATUS | null}}}}")
    for job, status in wait["jobs"].items():
        if not isinstance(job, str) or not (status is None or isinstance(status, (str, dict))):
            raise ScenarioError(f"{where}: wait: bad job condition {job!r}: {status!r}")


def load_scenario(path: Path) -> Scenario:
    """Parse and validate one scenario file."""
    raw = yaml.safe_load(path.read_text())
    where = str(path)
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: not a mapping")
    extra = set(raw) - {
        "description",
        "versions",
        "requires",
        "setup",
        "drives",
        "blockdevs",
        "steps",
    }
    if extra:
        raise ScenarioError(f"{where}: unknown keys {sorted(extra)}")
    if not isinstance(raw.get("description"), str):
        raise ScenarioError(f"{where}: description missing")
    setup: list[SetupCommand] = []
    for item in raw.get("setup") or []:
        if isinstance(item, str):
            setup.append(SetupCommand(item))
        elif isinstance(item, dict) and isinstance(item.get("run"), str):
            setup.append(SetupCommand(item["run"], bool(item.get("may_fail", False))))
        else:
            raise ScenarioError(f"{where}: bad setup entry {item!r}")
    steps = raw.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ScenarioError(f"{where}: steps missing")
    return Scenario(
        name=path.stem,
        area=path.parent.name,
        path=path,
        description=raw["description"],
        versions=_versions(raw.get("versions", list(KNOWN_VERSIONS)), where),
        setup=tuple(setup),
        drives=tuple(raw.get("drives") or ()),
        blockdevs=tuple(raw.get("blockdevs") or ()),
        requires=frozenset(raw.get("requires") or ()),
        steps=tuple(_parse_step(i, step, where) for i, step in enumerate(steps)),
        raw=raw,
    )


def scenario_paths(area: str | None = None, root: Path = SCENARIO_ROOT) -> list[Path]:
    """Every scenario file (of one area), sorted."""
    base = root / area if area else root
    return sorted(base.rglob("*.yaml"))


def load_scenarios(area: str | None = None, root: Path = SCENARIO_ROOT) -> list[Scenario]:
    """Every scenario (of one area), sorted by id."""
    return [load_scenario(path) for path in scenario_paths(area, root)]


def substitute(value: Any, workdir: Path) -> Any:
    """Replace ``{dir}`` by ``workdir`` in every string of a JSON-like value."""
    if isinstance(value, str):
        return value.replace("{dir}", str(workdir))
    if isinstance(value, list):
        return [substitute(item, workdir) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, workdir) for key, item in value.items()}
    return value


def _tool_env() -> dict[str, str]:
    # Host tools always come from PATH (QEMU 10.0's qemu-img/qemu-io): both endpoints of a
    # comparison get byte-identical inputs whatever version they emulate.
    return dict(os.environ)


def run_host_command(command: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run one setup/``run`` command (no shell) in ``workdir``."""
    argv = shlex.split(substitute(command, workdir))
    if not argv or shutil.which(argv[0]) is None:
        raise ScenarioError(f"host tool not found: {command!r}")
    return subprocess.run(
        argv,
        cwd=workdir,
        env=_tool_env(),
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )


def prepare_workdir(scenario: Scenario, workdir: Path) -> None:
    """Run the scenario's setup commands in ``workdir``."""
    for command in scenario.setup:
        result = run_host_command(command.run, workdir)
        if result.returncode != 0 and not command.may_fail:
            raise ScenarioError(
                f"{scenario.id}: setup {command.run!r} failed ({result.returncode}): "
                f"{result.stderr.strip()}"
            )


def launch_options(scenario: Scenario, workdir: Path) -> LaunchOptions:
    """The scenario's ``drives``/``blockdevs`` with ``{dir}`` expanded."""
    return LaunchOptions(
        drives=tuple(substitute(dict(d), workdir) for d in scenario.drives),
        blockdevs=tuple(substitute(dict(b), workdir) for b in scenario.blockdevs),
    )


def io_arguments(body: Mapping[str, Any]) -> JSONObject:
    """The ``human-monitor-command`` arguments of an ``io`` shorthand step."""
    return {"command-line": f'qemu-io {body["node"]} "{body["cmd"]}"'}


def _run_step(
    endpoint: Endpoint, step: Step, normalizer: Normalizer, version: str = ""
) -> JSONObject:
    workdir = endpoint.workdir
    entry: JSONObject = {"step": step.index}
    if step.kind == "run":
        result = run_host_command(step.body, workdir)
        entry["run"] = step.body
        entry["returncode"] = result.returncode
        output: Any = result.stdout
        if step.json_output and result.returncode == 0:
            output = json.loads(result.stdout)
        entry["stdout"] = normalizer.value(output)
        if result.returncode != 0:
            entry["stderr"] = normalizer.text(result.stderr.strip())
        return entry
    if step.kind == "wait":
        entry["wait"] = step.body
        entry["settled"] = settle_jobs(endpoint, step.body)
        entry["events"] = order_events(step, normalizer.events(endpoint.take_events()))
        return entry
    if step.kind == "observe":
        entry["observe"] = list(step.body)
        let_held_jobs_rest(endpoint)
        entry["state"] = observe(endpoint, step.body, normalizer)
        entry["events"] = normalizer.events(endpoint.take_events())
        return entry
    if step.kind == "io":
        command, arguments = "human-monitor-command", io_arguments(step.body)
        entry["io"] = normalizer.value(dict(step.body))
    else:
        command = step.body
        arguments = substitute(step.arguments, workdir)
        entry["execute"] = command
    try:
        if reads_state(command):
            let_held_jobs_rest(endpoint)
        if step.hangs_qemu(version):
            with endpoint.command_timeout(HANG_TIMEOUT):
                reply = endpoint.execute(command, arguments)
        else:
            reply = endpoint.execute(command, arguments)
    except EndpointCrashed as crash:
        entry["crashed"] = _died(crash)
        return entry
    except EndpointHung:
        entry["hung"] = True
        return entry
    entry["reply"] = normalizer.reply(reply)
    if command == "quit":
        endpoint.wait_for_exit()
    if step.wait is not None:
        try:
            entry["settled"] = settle_jobs(endpoint, step.wait)
        except EndpointCrashed as crash:  # died after the reply, e.g. in a job's end
            entry["crashed"] = _died(crash)
            return entry
    entry["events"] = order_events(step, normalizer.events(endpoint.take_events()))
    return entry


def _died(crash: EndpointCrashed) -> str | int | None:
    """A transcript's ``crashed``: the signal's name, else the exit status."""
    return crash.signal.name if crash.signal is not None else crash.returncode


def query_jobs(endpoint: Endpoint) -> dict[str, JSONObject]:
    """Job id → ``query-jobs`` entry (empty if the endpoint has no such command)."""
    reply = endpoint.execute("query-jobs")
    return {job["id"]: job for job in reply.get("return", [])}


def job_matches(job: JSONObject | None, want: str | Mapping[str, Any] | None) -> bool:
    """Whether a ``query-jobs`` entry (``None``: no such job) is as a wait condition says."""
    if want is None or job is None:
        return want is None and job is None
    if isinstance(want, str):
        return bool(job.get("status") == want)
    return all(job.get(key) == value for key, value in want.items())


def settle_jobs(endpoint: Endpoint, wait: Mapping[str, Any]) -> bool:
    """Let ``endpoint``'s time pass until its jobs are as ``wait`` says; whether they got so."""
    wanted: Mapping[str, str | Mapping[str, Any] | None] = wait["jobs"]

    def done() -> bool:
        jobs = query_jobs(endpoint)
        return all(job_matches(jobs.get(job), want) for job, want in wanted.items())

    if not endpoint.settle(done):
        return False
    if any(_held(want) for want in wanted.values()):
        return endpoint.quiesce(lambda: _job_traces(endpoint), _chunks_returned) and done()
    return True


def let_held_jobs_rest(endpoint: Endpoint) -> bool:
    """Before state is read: let a held backup put back the chunk it may be looking at.

    The window of :func:`settle_jobs` also opens later: a held job that a step drains goes
    through its loop again (seen in a loaded CI run on QEMU 7.2: right after
    ``blockdev-snapshot-sync`` of a held backup's source, mixed/snapshot_of_backup_source_then_
    job_ends, its copy bitmap lacked a 1 MiB chunk). So every state read first waits until no
    copy bitmap lacks a chunk (no stillness asked); on QEMU 10.0 and the reference that costs
    two queries. Whether the jobs were at rest in time (else the state is read as it is).
    """
    return endpoint.quiesce(lambda: _job_traces(endpoint), _chunks_returned, reads=1)


def reads_state(command: str) -> bool:
    """Whether a step's command only reports state (its reply is compared as state is)."""
    return command.startswith(("query-", "x-debug-"))


def _held(want: str | Mapping[str, Any] | None) -> bool:
    """Whether a wait condition leaves its job running (held by a rate limit)."""
    status = want.get("status") if isinstance(want, Mapping) else want
    return status == "running"


def _job_traces(endpoint: Endpoint) -> tuple[Any, list[int]]:
    """What a running job moves: every job's ``query-block-jobs`` entry, and the count of every
    bitmap without a name (QEMU 7.2 lists a backup's copy bitmap so on its source node)."""
    jobs = endpoint.execute("query-block-jobs").get("return")
    nodes = endpoint.execute("query-named-block-nodes", {"flat": True}).get("return") or []
    counts = [
        int(bitmap.get("count", 0))
        for node in nodes
        for bitmap in node.get("dirty-bitmaps") or []
        if "name" not in bitmap
    ]
    return jobs, counts


def _chunks_returned(traces: tuple[Any, list[int]]) -> bool:
    """Whether every running backup's copy bitmap, where listed, holds no chunk in flight.

    Between requests a held job's copy bitmap counts exactly what is left to copy
    (``len - offset``); while block-copy works on a chunk, that chunk is off the bitmap.
    An endpoint that lists no bitmap without a name (QEMU 10.0 keeps it inside block-copy)
    shows no such window.
    """
    jobs, counts = traces
    if not counts or not isinstance(jobs, list):
        return True
    left = list(counts)
    for job in jobs:
        if job.get("type") != "backup" or job.get("status") != "running":
            continue
        remaining = int(job.get("len", 0)) - int(job.get("offset", 0))
        if remaining not in left:
            return False
        left.remove(remaining)
    return True


def event_job(event: Mapping[str, Any]) -> str | None:
    """The job an event is about (``id`` or, for ``BLOCK_JOB_*``, ``device``), if any."""
    data = event.get("data") or {}
    if "JOB" not in str(event.get("event", "")):
        return None
    job = data.get("id", data.get("device"))
    return job if isinstance(job, str) else None


def order_events(step: Step, events: list[JSONObject]) -> list[JSONObject]:
    """``event_order: per-job``: the events of each job together, jobs in order of first event;
    ``per-job-one-drain``: and each job's repeated drain pauses collapsed to the first."""
    if step.event_order == "per-job-one-drain":
        return _one_drain(_per_job(events))
    if step.event_order != "per-job":
        return events
    return _per_job(events)


def _status(event: Mapping[str, Any]) -> str | None:
    if event.get("event") != "JOB_STATUS_CHANGE":
        return None
    status = (event.get("data") or {}).get("status")
    return status if isinstance(status, str) else None


def _one_drain(events: list[JSONObject]) -> list[JSONObject]:
    """Drop a job's ``paused``/``running`` pair when the job already showed one."""
    seen_pair: set[str] = set()
    dropping: set[str] = set()
    last: dict[str, list[str]] = {}
    kept: list[JSONObject] = []
    for event in events:
        job, status = event_job(event), _status(event)
        if job is None or status is None:
            kept.append(event)
            continue
        if status == "paused" and job in seen_pair and last.get(job, [])[-1:] == ["running"]:
            dropping.add(job)
            continue
        if job in dropping:
            dropping.discard(job)
            if status == "running":
                continue
        history = last.setdefault(job, [])
        if status == "running" and history[-1:] == ["paused"]:
            seen_pair.add(job)
        history.append(status)
        kept.append(event)
    return kept


def _per_job(events: list[JSONObject]) -> list[JSONObject]:
    order: list[str | None] = []
    for event in events:
        job = event_job(event)
        if job not in order:
            order.append(job)
    return sorted(events, key=lambda event: order.index(event_job(event)))


@dataclass
class Transcript:
    """What one endpoint did in one scenario run: normalized entries, in step order."""

    scenario: str
    endpoint: str
    version: str
    entries: list[JSONObject] = field(default_factory=list)

    def by_step(self) -> dict[int, JSONObject]:
        """Entries keyed by step index (the start entry has index -1)."""
        return {int(e["step"]): e for e in self.entries}

    def dump(self) -> str:
        """The transcript as indented JSON (for failure reports and saved artifacts)."""
        return json.dumps(self.entries, indent=1)


def run_scenario(
    scenario: Scenario,
    start: EndpointFactory,
    *,
    label: str = "endpoint",
    version: str | None = None,
) -> Transcript:
    """Run ``scenario`` on a fresh endpoint started by ``start``; return its transcript.

    ``version`` (``"10.0"``) selects the version-specific steps; by default the endpoint's own.
    The endpoint and its workdir are always cleaned up, whatever happens.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"scn-{scenario.name[:20]}-")).resolve()
    try:
        prepare_workdir(scenario, workdir)
        with start(workdir, launch_options(scenario, workdir)) as endpoint:
            version = version or endpoint.version_label
            normalizer = Normalizer(workdir)
            transcript = Transcript(scenario.id, label, version)
            transcript.entries.append(
                {"step": -1, "events": normalizer.events(endpoint.take_events())}
            )
            for step in scenario.steps:
                if not step.applies_to(version):
                    continue
                entry = _run_step(endpoint, step, normalizer, version)
                transcript.entries.append(entry)
                if "crashed" in entry or "hung" in entry:
                    break
            return transcript
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- checking ---------------------------------------------------------------------------------


def _expected_desc(desc: Any, version: str) -> Any:
    if isinstance(desc, dict):
        return desc.get(version, desc.get("default"))
    return desc


def _check_bitmaps(expected: Mapping[str, Any], entry: JSONObject) -> Iterator[str]:
    if "state" not in entry:
        yield f"no observed state in {entry}"
        return
    nodes = entry["state"]["nodes"]
    for node, want in expected.items():
        have = nodes.get(node)
        if want is None:
            if have is not None:
                yield f"node {node!r} exists, expected it absent"
            continue
        if have is None:
            yield f"node {node!r} not found"
            continue
        bitmaps = have["dirty-bitmaps"]
        if len(bitmaps) != len(want):
            yield f"node {node!r}: {len(bitmaps)} bitmaps {bitmaps}, expected {len(want)} {want}"
            continue
        for i, (got, exp) in enumerate(zip(bitmaps, want, strict=True)):
            for key, value in exp.items():
                if got.get(key, None if value is None else "<absent>") != value:
                    yield (
                        f"node {node!r} bitmap #{i}: {key} = {got.get(key, '<absent>')!r}, "
                        f"expected {value!r}"
                    )


def check_expectations(scenario: Scenario, transcript: Transcript, *, qemu: bool) -> list[str]:
    """Every way ``transcript`` violates the scenario's ``expect`` entries (empty: all met).

    ``qemu`` says whether the endpoint is real QEMU: then ``qemu_crashes`` steps must crash
    with one of :data:`CRASH_SIGNALS`; otherwise they must answer a GenericError.
    """
    problems: list[str] = []
    entries = transcript.by_step()
    version = transcript.version
    for step in scenario.steps:
        if not step.applies_to(version):
            continue
        entry = entries.get(step.index)
        where = f"step {step.index} ({step.kind} {step.body!r})"
        if entry is None:
            problems.append(f"{where}: not reached")
            continue
        if step.hangs_qemu(version):
            if qemu and not entry.get("hung"):
                problems.append(f"{where}: expected QEMU to hang, got {entry}")
            if not qemu:
                error = entry.get("reply", {}).get("error")
                if not error or error.get("class") != "GenericError":
                    problems.append(f"{where}: expected a GenericError, got {entry}")
            break
        if "hung" in entry:
            problems.append(f"{where}: endpoint hung")
            continue
        if step.crashes_qemu(version):
            if qemu and entry.get("crashed") not in CRASH_SIGNALS:
                problems.append(f"{where}: expected QEMU to crash {CRASH_SIGNALS}, got {entry}")
            if not qemu and not _answers_crash(entry):
                problems.append(f"{where}: expected a GenericError, got {entry}")
            if qemu:
                break
            continue
        if "crashed" in entry:
            problems.append(f"{where}: endpoint crashed ({entry['crashed']})")
            break
        problems.extend(f"{where}: {p}" for p in _check_step(step, entry, version))
    return problems


def _answers_crash(entry: JSONObject) -> bool:
    """Whether a sane implementation answered, at a step where real QEMU dies, with an error:
    a ``GenericError`` reply, or (QEMU dying in a job's end, after the reply) a job of the
    step ending with an error (``BLOCK_JOB_COMPLETED`` carrying ``error``)."""
    error = entry.get("reply", {}).get("error", {})
    if error.get("class") == "GenericError":
        return True
    return any(
        event.get("event") == "BLOCK_JOB_COMPLETED" and "error" in event.get("data", {})
        for event in entry.get("events", [])
    )


def _check_step(step: Step, entry: JSONObject, version: str) -> Iterator[str]:
    if step.kind == "run":
        want_code = (step.expect or {}).get("returncode")
        if want_code is not None and entry["returncode"] != want_code:
            yield (
                f"host command exit status {entry['returncode']}, expected {want_code}: "
                f"{entry.get('stdout')} {entry.get('stderr', '')}"
            )
        elif want_code is None and entry["returncode"] != 0 and not step.may_fail:
            yield f"host command failed ({entry['returncode']}): {entry.get('stderr')}"
        return
    if entry.get("settled") is False:
        yield f"jobs did not reach {step.wait} in time"
    expect = step.expect
    if not expect:
        return
    if "bitmaps" in expect:
        yield from _check_bitmaps(expect["bitmaps"], entry)
    reply = entry.get("reply", {})
    if "return" in expect:
        if "return" not in reply:
            yield f"expected success, got {reply}"
        elif reply["return"] != expect["return"]:
            yield f"return {reply['return']!r}, expected {expect['return']!r}"
    if "error" in expect:
        want = expect["error"]
        got = reply.get("error")
        if got is None:
            yield f"expected an error {want}, got {reply}"
        else:
            if "class" in want and got.get("class") != want["class"]:
                yield f"error class {got.get('class')!r}, expected {want['class']!r}"
            desc = _expected_desc(want.get("desc"), version)
            if desc is not None and got.get("desc") != desc:
                yield f"error desc {got.get('desc')!r}, expected {desc!r}"
    if "events" in expect:
        names = [event.get("event") for event in entry.get("events", [])]
        if names != list(expect["events"]):
            yield f"events {names}, expected {expect['events']}"


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if type(a) is not type(b):
        return f"{path or '.'}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{path}.{key}: {'<absent>' if key not in a else 'present'} vs " + (
                    "<absent>" if key not in b else "present"
                )
            found = _first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        return None
    return None if a == b else f"{path or '.'}: {a!r} != {b!r}"


def compare_transcripts(
    scenario: Scenario,
    candidate: Transcript,
    oracle: Transcript,
    *,
    oracle_is_qemu: bool = True,
    key_order: bool = False,
) -> list[str]:
    """Differences between ``candidate`` and the ``oracle`` (real QEMU), step by step.

    A ``qemu_crashes`` step is satisfied when the oracle crashed and the candidate answered any
    GenericError, or both crashed (with any of :data:`CRASH_SIGNALS`); comparison stops there.
    ``key_order`` also compares JSON key order.
    """
    steps = {step.index: step for step in scenario.steps}
    problems: list[str] = []
    cand = candidate.by_step()
    for index, want in oracle.by_step().items():
        got = cand.get(index)
        label = (
            "start" if index < 0 else f"step {index} ({steps[index].kind} {steps[index].body!r})"
        )
        if got is None:
            problems.append(f"{label}: missing from {candidate.endpoint}")
            break
        step = steps.get(index)
        if (
            step is not None
            and step.hangs_qemu(oracle.version)
            and oracle_is_qemu
            and "hung" in want
            and "hung" not in got
        ):
            error = got.get("reply", {}).get("error", {})
            if error.get("class") != "GenericError":
                problems.append(
                    f"{label}: QEMU hangs here; expected a GenericError from "
                    f"{candidate.endpoint}, got {got}"
                )
            break
        if (
            step is not None
            and step.crashes_qemu(oracle.version)
            and oracle_is_qemu
            and "crashed" in want
            and "crashed" not in got
        ):
            if not _answers_crash(got):
                problems.append(
                    f"{label}: QEMU crashes here; expected a GenericError (or a job ending "
                    f"with an error) from {candidate.endpoint}, got {got}"
                )
            break
        if (
            step is not None
            and step.crashes_qemu(oracle.version)
            and want.get("crashed") in CRASH_SIGNALS
            and got.get("crashed") in CRASH_SIGNALS
        ):
            break  # both died at a known crash; which signal (7.2: SEGV or ABRT) is chance
        difference = _first_difference(got, want)
        if difference is None and key_order:
            difference = _key_order_difference(got, want)
        if difference is not None:
            problems.append(
                f"{label}: {candidate.endpoint} differs from {oracle.endpoint} at {difference}\n"
                f"  {candidate.endpoint}: {json.dumps(got)[:2000]}\n"
                f"  {oracle.endpoint}: {json.dumps(want)[:2000]}"
            )
            break
    return problems


def _key_order_difference(a: Any, b: Any) -> str | None:
    if json.dumps(a) != json.dumps(b):
        return "JSON key order"
    return None


TranscriptRunner = Callable[[Scenario], Transcript]


def describe(scenario: Scenario, transcripts: Sequence[Transcript]) -> str:
    """A failure report: the scenario and every transcript, as JSON."""
    parts = [f"scenario {scenario.id}: {scenario.description.strip()}"]
    parts += [f"--- {t.endpoint} ({t.version}) ---\n{t.dump()}" for t in transcripts]
    return "\n".join(parts)
