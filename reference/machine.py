"""The in-process reference endpoint: ``Machine(version).execute(command, arguments)``.

No sockets: tests, fuzzers and other tools use this directly as a fake QEMU; the QMP server in
``reference.server`` puts a socket in front of it. A Machine emulates one QEMU version (a
profile from ``reference.compat``) and never raises for a QMP-level problem: every reply is
``{"return": ...}`` or ``{"error": {"class": ..., "desc": ...}}``.

Example::

    m = Machine("10.0")
    m.execute("blockdev-add", {"driver": "null-co", "node-name": "n0"})
    m.execute("block-dirty-bitmap-add", {"node": "n0", "name": "b0"})
    m.execute("transaction", {"actions": [{"type": "abort", "data": {}}]})
    # -> {"error": {"class": "GenericError", "desc": "Transaction aborted using Abort action"}}
"""

from __future__ import annotations

import time
import traceback
from contextlib import AbstractContextManager
from typing import Any, Protocol

from reference import jobs
from reference.block import BlockLayer, drive_qcow2_options
from reference.commands import COMMANDS, load_all
from reference.compat import VersionProfile, profile
from reference.errors import COMMAND_NOT_FOUND, GENERIC, QMPError
from reference.qapi import QAPIError, UnknownCommand, load_schema

load_all()


class EngineVariant(Protocol):
    """Test-only: a deliberately wrong engine (``reference.testing.mutations``).

    ``applied()`` changes the engine for the duration of one command; the conformance suite's
    broken-engine tests use it to prove that their checks catch each kind of mistake.
    """

    def applied(self) -> AbstractContextManager[None]:
        """The context in which the engine is wrong."""
        ...


class Machine:
    """One emulated QEMU: its block layer, its events, its command dispatch."""

    def __init__(
        self,
        version: str = "10.0",
        *,
        echo_qemu_io: bool = False,
        variant: EngineVariant | None = None,
    ) -> None:
        self.profile: VersionProfile = profile(version)
        self.version = version
        self.layer = BlockLayer(self.profile)
        #: Print qemu-io output to stdout, as QEMU does (the launcher sets this).
        self.echo_qemu_io = echo_qemu_io
        #: Set by ``quit``: a server must close after sending the reply.
        self.quit_requested = False
        self._events: list[dict[str, Any]] = []
        self._closed = False
        self._schema = load_schema(version=version)
        #: Test-only hook (None in every real use): see :class:`EngineVariant`.
        self._variant = variant

    # ---- the QMP face ------------------------------------------------------------------------

    def greeting(self) -> dict[str, Any]:
        """The QMP greeting of the emulated version."""
        return {"QMP": {"version": self.profile.version_info, "capabilities": ["oob"]}}

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """Runs one command; returns the full reply (never raises for QMP errors).

        Afterwards the work jobs have due *now* runs (``advance(0)``): QEMU's running jobs
        issue their requests before the next command is read, so a started speed-0 job has
        finished and a rate-limited one has copied its first request. A test-only engine
        variant (``variant=``) applies to both.
        """
        if self._variant is not None:
            with self._variant.applied():
                return self._execute_and_run_jobs(command, arguments)
        return self._execute_and_run_jobs(command, arguments)

    def _execute_and_run_jobs(
        self, command: str, arguments: dict[str, Any] | None
    ) -> dict[str, Any]:
        reply = self._execute(command, arguments)
        if self.layer.graph.jobs():
            self.advance(0)
        return reply

    def _execute(self, command: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        handler = COMMANDS.get(command)
        not_found = QMPError(f"The command {command} has not been found", COMMAND_NOT_FOUND)
        if handler is None:
            return not_found.reply()
        args = {} if arguments is None else arguments
        try:
            self._schema.check_arguments(command, args)
            return {"return": handler(self, args)}
        except UnknownCommand:
            return not_found.reply()
        except QAPIError as e:
            return QMPError(e.desc, e.error_class).reply()
        except QMPError as e:
            return e.reply()
        except Exception as e:  # a bug of ours must answer an error, not kill the endpoint
            detail = "".join(traceback.format_exception_only(e)).strip()
            return QMPError(f"internal error in the reference ({detail})", GENERIC).reply()

    def take_events(self) -> list[dict[str, Any]]:
        """Pending events, oldest first, with QEMU's envelope; the queue is emptied."""
        events, self._events = self._events, []
        return events

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Queues an event stamped with the wall clock, as QEMU stamps them."""
        now = time.time()
        seconds = int(now)
        self._events.append(
            {
                "timestamp": {"seconds": seconds, "microseconds": int((now - seconds) * 1e6)},
                "event": event,
                "data": data,
            }
        )

    def emit_all(self, events: list[dict[str, Any]]) -> None:
        """Queues events given as ``{"event": NAME, "data": {...}}``, in order.

        A job-owned target (drive-backup) leaves the graph with its job's ``null``. Implicit
        nodes whose last parent was a job's filter (an overlay a snapshot put under it) leave
        when the filter does.
        """
        jobs_moved = False
        for event in events:
            self.emit(event["event"], event["data"])
            data = event["data"]
            if event["event"] == "JOB_STATUS_CHANGE":
                jobs_moved = True
            if event["event"] == "JOB_STATUS_CHANGE" and data["status"] == "null":
                target = self.layer.job_targets.pop(str(data["id"]), None)
                if target is not None:
                    self.layer.close_implicit(target)
        if jobs_moved:
            self.layer.close_orphans()

    # ---- the deterministic clock -------------------------------------------------------------

    def advance(self, ns: int) -> None:
        """Moves the block layer's clock forward by ``ns``: jobs progress, their events queue.

        In process nothing moves unless told; the QMP server calls this from a timer in real
        time, the conformance runner's ``wait`` step until the jobs reach the awaited state.
        """
        if self._variant is not None:
            with self._variant.applied():
                self.emit_all(jobs.qmp_events(self.layer.graph.advance(ns)))
            return
        self.emit_all(jobs.qmp_events(self.layer.graph.advance(ns)))

    # ---- command line --------------------------------------------------------------------------

    def add_blockdev(self, options: dict[str, Any]) -> None:
        """``-blockdev``: like blockdev-add; raises QMPError on failure."""
        reply = self.execute("blockdev-add", options)
        if "error" in reply:
            raise QMPError(reply["error"]["desc"], reply["error"]["class"])

    def add_drive(self, options: dict[str, str]) -> None:
        """``-drive if=none,id=X[,file=F][,format=FMT][,node-name=N][,file.node-name=N]
        [,readonly=on][,discard=D][,copy-on-read=on]`` and a qcow2 node's runtime options
        (``l2-cache-size=1k``, ``lazy-refcounts=on``, ...), or with ``driver=D`` and dotted
        options of its children instead of ``file``/``format``."""
        layer = self.layer
        opts = dict(options)
        device = opts.pop("id", None)
        if device is None:
            raise QMPError("drive without id is not supported by this reference")
        iface = opts.pop("if", "none")
        if iface != "none":
            raise QMPError(f"interface '{iface}' is not supported by this reference (use if=none)")
        read_only = opts.pop("readonly", "off") in ("on", "true", "yes")
        if "driver" in opts:
            # ``driver=X`` with dotted child options (``file.driver=qcow2,file.file.filename=F``):
            # the node tree as blockdev-add would take it.
            tree: dict[str, Any] = {}
            for key, value in opts.items():
                *path, leaf = key.split(".")
                branch = tree
                for part in path:
                    branch = branch.setdefault(part, {})
                branch[leaf] = value
            tree["read-only"] = read_only
            _default_protocol(tree)
            layer.graph.add_backend(device, layer.open_blockdev(tree, root=False))
            return
        filename = opts.pop("file", None)
        if filename is None:
            layer.graph.add_backend(device, None)
            return
        fmt = opts.pop("format", None) or layer.probe_format(filename)
        blockdev: dict[str, Any] = {
            "driver": fmt,
            "read-only": read_only,
            "file": {"driver": "file", "filename": filename},
        }
        if "node-name" in opts:
            blockdev["node-name"] = opts.pop("node-name")
        if "discard" in opts:  # the drive's nodes inherit it
            blockdev["discard"] = blockdev["file"]["discard"] = opts.pop("discard")
        if "file.node-name" in opts:
            blockdev["file"]["node-name"] = opts.pop("file.node-name")
        if fmt == "qcow2":
            blockdev |= drive_qcow2_options(opts)
        copy_on_read = opts.pop("copy-on-read", "off") in ("on", "true", "yes")
        root = layer.open_blockdev(blockdev, root=False)
        layer.graph.add_backend(device, root)
        # copy-on-read=on sets the root node's flag, no filter node; a read-only drive only
        # gets QEMU's warning ("disabling copy-on-read on read-only drive").
        if copy_on_read and not read_only:
            layer.graph.set_copy_on_read(root, True)

    # ---- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        """Closes every image (stores persistent bitmaps). Idempotent."""
        if not self._closed:
            self._closed = True
            self.layer.graph.close_all()


def _default_protocol(options: dict[str, Any]) -> None:
    """``-drive`` options naming a ``filename`` without a ``driver`` open the ``file``
    protocol driver, as QEMU picks the protocol from a plain file name; in any child too."""
    if "filename" in options:
        options.setdefault("driver", "file")
    for value in options.values():
        if isinstance(value, dict):
            _default_protocol(value)
