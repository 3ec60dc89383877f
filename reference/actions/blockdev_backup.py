"""``blockdev-backup``: create the job in prepare, start it at commit (SEMANTICS.md §2.7).

Prepare resolves ``device`` and ``target``, drains the source (held until clean) and creates the
job in ``created`` (it joins the transaction's JobTxn when grouped). Commit starts it; abort
cancels a created job (``aborting``, ``concluded``, ``null``, no BLOCK_JOB_CANCELLED); clean
ends the drained section, which lets a started job run.
"""

from __future__ import annotations

from reference import backup, jobs
from reference.actions.base import Action


class BlockdevBackup(Action):
    """One backup job of an existing target node."""

    kind = "blockdev-backup"
    supports_grouped = True
    _source: str | None = None
    _job: str | None = None
    #: Target nodes only the job uses (drive-backup's), closed with its filter.
    owned_target_nodes: int = 0

    def resolve(self) -> tuple[str, str]:
        """The source and target nodes (QEMU's lookup order and messages)."""
        layer = self.ctx.layer
        source = layer.lookup(self.data["device"])
        target = layer.lookup(self.data["target"])
        return source, target

    def prepare(self) -> None:
        source, target = self.resolve()
        self.drain(source)
        self.create(source, target)

    def drain(self, source: str) -> None:
        """bdrv_drained_begin(source), held until clean."""
        self._source = source
        self.ctx.events += jobs.qmp_events(self.ctx.layer.graph.drained_begin(source))

    def create(self, source: str, target: str) -> None:
        """The job, in state ``created``."""
        self._job = backup.create(
            self.ctx.layer,
            source,
            target,
            self.data,
            txn=self.ctx.txn,
            events=self.ctx.events,
            owned_target_nodes=self.owned_target_nodes,
        )

    def commit(self) -> None:
        if self._job is not None:
            self.ctx.events += jobs.apply(lambda: self.ctx.layer.graph.job_start(self._job or ""))

    def abort(self) -> None:
        if self._job is not None:
            job = self._job
            self.ctx.events += jobs.apply(lambda: self.ctx.layer.graph.job_cancel(job, True))

    def clean(self) -> None:
        if self._source is not None:
            source = self._source
            self.ctx.events += jobs.qmp_events(self.ctx.layer.graph.drained_end(source))
