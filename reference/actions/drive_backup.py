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

from reference import _core
from reference.actions.blockdev_backup import BlockdevBackup
from reference.block import strerror
from reference.errors import QMPError

#: errno of the core's own messages: QEMU's option checks and unknown formats (ENOTSUP), and
#: another user's lock on the file (EAGAIN).
_OWN_MESSAGE_ERRNOS = (95, 11)


def create_image(filename: str, fmt: str, size: int) -> None:
    """``bdrv_img_create`` without a backing file, with QEMU's messages."""
    try:
        _core.create_image(fmt, filename, size)
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
        if any(source in (job.target, job.filter_node) for job in layer.graph.jobs()):
            raise QMPError(f"Node '{source}' is busy: block device is in use by block job: backup")
        data: dict[str, Any] = dict(self.data)
        mode = data.pop("mode", "absolute-paths")
        fmt = data.pop("format", None)
        filename: str = data["target"]
        if fmt is None and mode != "existing":
            fmt = info.driver
        if data["sync"] == "none":
            raise QMPError("drive-backup with sync 'none' is not implemented by this reference")
        if data["sync"] == "top":
            data["sync"] = "full"  # no backing file in this reference's graphs
        if mode != "existing":
            assert fmt is not None
            create_image(filename, fmt, info.length)
        options: dict[str, Any] = {
            "driver": fmt or layer.probe_format(filename),
            "file": {"driver": "file", "filename": filename},
            "discard": "unmap",
        }
        target = layer.open_blockdev(options, root=False)
        self._target = target
        self.data = data
        self.create(source, target)
        layer.job_targets[self._job or ""] = target

    def abort(self) -> None:
        super().abort()
        if self._target is not None and self._job is None:
            self.ctx.layer.close_implicit(self._target)
