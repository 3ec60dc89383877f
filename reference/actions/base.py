"""The shape every transaction action has (QEMU's ``TransactionActionDrv``).

``prepare`` does the action's work at once and remembers what undoing it takes; ``abort`` undoes
it (it also runs for the action that failed, so it must cope with a half-done prepare);
``commit`` finalizes what cannot be undone later; ``clean`` releases what prepare held, in both
outcomes. The engine decides the order of each phase (``reference.engine``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from reference import jobs
from reference.block import BlockLayer
from reference.compat import VersionProfile


@dataclass
class Context:
    """What an action may touch: the block layer and the emulated version's profile."""

    layer: BlockLayer
    profile: VersionProfile
    #: The transaction's ``completion-mode``.
    completion_mode: str = "individual"
    #: Events emitted while the transaction runs (appended in emission order).
    events: list[dict[str, Any]] = field(default_factory=list)
    #: The JobTxn that backup jobs of a ``grouped`` transaction join (None: each job alone).
    txn: int | None = None
    #: Overlays that ``blockdev-snapshot-sync`` actions of this transaction opened and inserted.
    new_overlays: set[str] = field(default_factory=set)


class Action:
    """Base of the transaction actions; subclasses set ``kind`` and override the hooks."""

    #: The ``TransactionActionKind`` this class implements.
    kind: ClassVar[str]
    #: Whether the action can join a grouped job transaction (only the backups can).
    supports_grouped: ClassVar[bool] = False
    #: The node this action holds drained from prepare to clean (snapshot actions).
    _drained_node: str | None = None

    def __init__(self, ctx: Context, data: dict[str, Any]) -> None:
        self.ctx = ctx
        self.data = data

    def prepare(self) -> None:
        """Do the work now; raise QMPError to fail the transaction."""

    def commit(self) -> None:
        """Make the work final (the transaction succeeded)."""

    def abort(self) -> None:
        """Undo whatever ``prepare`` did (the transaction failed)."""

    def clean(self) -> None:
        """Release what ``prepare`` held, after commit or abort."""

    def qemu_crash(self) -> str | None:
        """Why real QEMU of this version dies rolling this action back, if it does (asked
        before the rollback; the engine then answers that as the transaction's error)."""
        return None

    def commit_crash(self) -> str | None:
        """Why real QEMU of this version dies committing this action, if it does (asked once
        every action has prepared; the engine then rolls back and answers that as the error)."""
        return None

    def drain_node(self, node: str) -> None:
        """``bdrv_drained_begin(node)`` in prepare, held until :meth:`end_drain` in clean:
        running jobs that use the node or one of its parents pause (their events are the
        transaction's)."""
        self._drained_node = node
        self.ctx.events += jobs.qmp_events(self.ctx.layer.graph.drained_begin(node))

    def graph_locks(self, count: int) -> None:
        """``count`` graph changes under the graph write lock: where the profile drains
        everything for each, every running job not already held pauses and resumes once."""
        self.ctx.events += jobs.graph_locks(self.ctx.profile, self.ctx.layer.graph, count)

    def end_drain(self) -> None:
        """``bdrv_drained_end`` of the node :meth:`drain_node` drained, if any."""
        node = self._drained_node
        if node is not None:
            self._drained_node = None
            self.ctx.events += jobs.qmp_events(self.ctx.layer.graph.drained_end(node))
