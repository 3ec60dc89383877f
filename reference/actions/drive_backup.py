"""``drive-backup``: create (or open) the target image, then back up as blockdev-backup does
(SEMANTICS.md §2.8).

Prepare: resolve ``device`` (``Device has no medium`` without a driver), drain it, refuse a
source busy with another job, pick the format (the source's unless ``mode`` is ``existing``,
where it is probed), rewrite sync ``top`` without a backing file to ``full``, create the image
(``absolute-paths``), open it and create the job. The target node belongs to the job: it leaves
the graph when the job is gone. A created file stays on disk after a rollback.
"""

from __future__ import annotations

from typing import Any

from reference import _core, backup, jobs
from reference.actions.blockdev_backup import BlockdevBackup
from reference.block import FILTER_DRIVERS, strerror
from reference.errors import QMPError

#: errno of the core's own messages: QEMU's option checks and unknown formats (ENOTSUP), and
#: another user's lock on the file (EAGAIN).
_OWN_MESSAGE_ERRNOS = (95, 11)


def create_image(
    filename: str,
    fmt: str,
    size: int,
    backing_file: str | None = None,
    backing_format: str | None = None,
) -> None:
    """``bdrv_img_create``, with QEMU's messages (the backing file is only recorded)."""
    try:
        _core.create_image(fmt, filename, size, backing_file, backing_format)
    except _core.ImageError as e:
        message, errno = e.args
        if errno in _OWN_MESSAGE_ERRNOS:
            raise QMPError(str(message)) from None
        raise QMPError(f"Could not create '{filename}': {strerror(errno)}") from None


class DriveBackup(BlockdevBackup):
    """One backup job into an image file QEMU creates or opens."""

    kind = "drive-backup"
    _target: str | None = None

    def prepare(self) -> None:
        layer = self.ctx.layer
        source = layer.lookup(self.data["device"])
        info = layer.graph.node(source)
        assert info is not None
        self.drain(source)
        backup.op_blocker(layer, source)
        data: dict[str, Any] = dict(self.data)
        mode = data.pop("mode", "absolute-paths")
        fmt = data.pop("format", None)
        filename: str = data["target"]
        if fmt is None and mode != "existing":
            fmt = info.driver
        # The image the target is created over: sync top, the source's backing (filters
        # skipped; none: plain full); sync none, the source itself, which then becomes the
        # opened target's backing node in place of the one its header names.
        backing: str | None = None
        if data["sync"] == "top":
            backing = self._cow_backing(source)
            if backing is None:
                data["sync"] = "full"
        elif data["sync"] == "none":
            backing = source
        if mode != "existing":
            assert fmt is not None
            if backing is None:
                create_image(filename, fmt, info.length)
            else:
                backing_info = layer.graph.node(backing)
                assert backing_info is not None
                create_image(
                    filename,
                    fmt,
                    info.length,
                    layer.filename(backing_info),
                    backing_info.driver,
                )
            self.graph_locks(jobs.LOCKS_CREATE.get(fmt, 0))
        options: dict[str, Any] = {
            "driver": fmt or layer.probe_format(filename),
            "file": {"driver": "file", "filename": filename},
            "discard": "unmap",
        }
        if data["sync"] == "none" and options["driver"] == "qcow2":
            options["backing"] = None
        before = len(layer.graph.nodes())
        target = layer.open_blockdev(options, root=False)
        self._target = target
        self.owned_target_nodes = len(layer.graph.nodes()) - before
        # Opened without its backing: the probe and the file child.
        self.graph_locks(jobs.LOCKS_FORMAT_PROBE + jobs.LOCKS_PER_CHILD)
        if data["sync"] == "none":
            try:
                layer.attach_backing(target, source)
            except QMPError:
                layer.close_implicit(target)
                self._target = None
                raise
            self.graph_locks(jobs.LOCKS_PER_CHILD)
        self.data = data
        self.create(source, target)
        layer.job_targets[self._job or ""] = target

    def _cow_backing(self, node: str) -> str | None:
        """QEMU's ``bdrv_cow_bs(bdrv_skip_filters(node))``: the backing node below any filters."""
        layer = self.ctx.layer
        info = layer.graph.node(node)
        while info is not None and info.driver in FILTER_DRIVERS:
            info = layer.filtered_child(info)
        return None if info is None else layer.backing_child(info.name)

    def abort(self) -> None:
        super().abort()
        if self._target is not None and self._job is None:
            self.ctx.layer.close_implicit(self._target)
