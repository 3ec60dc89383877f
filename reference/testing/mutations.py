"""Deliberately wrong variants of the transaction engine, for the suite's broken-engine tests.

Each :class:`Mutation` is one classic mistake (undo skipped for one action kind, undo in the
wrong order, the other version's commit order or grouped check, a bitmap restored to the wrong
content, an error class or message changed, ``abort`` accepted, ...). It is applied per Machine
through the one test-only hook ``Machine(version, variant=mutation)``: ``applied()`` patches the
engine, an action class or a lookup for the duration of one command, so a pristine Machine in
the same process (the suite's differential oracle) is unaffected. Single-threaded use only.

``expected_checks`` names the checks that must report the mutation; ``requires`` the reference
features without which the mistake cannot be observed (the job and snapshot mistakes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from reference import backup, bitmaps, engine
from reference.actions import base
from reference.actions.abort import Abort
from reference.actions.block_dirty_bitmap_add import BlockDirtyBitmapAdd
from reference.actions.block_dirty_bitmap_clear import BlockDirtyBitmapClear
from reference.actions.block_dirty_bitmap_disable import BlockDirtyBitmapDisable
from reference.actions.block_dirty_bitmap_enable import BlockDirtyBitmapEnable
from reference.actions.block_dirty_bitmap_merge import BlockDirtyBitmapMerge
from reference.actions.block_dirty_bitmap_remove import BlockDirtyBitmapRemove
from reference.actions.blockdev_backup import BlockdevBackup
from reference.actions.blockdev_snapshot import BlockdevSnapshot
from reference.actions.blockdev_snapshot_internal_sync import BlockdevSnapshotInternalSync
from reference.actions.blockdev_snapshot_sync import BlockdevSnapshotSync
from reference.commands import transaction as transaction_command
from reference.compat import PROFILES, VersionProfile
from reference.errors import QMPError

Patch = Callable[[ExitStack], None]


@dataclass(frozen=True)
class Mutation:
    """One wrong engine variant; pass it as ``Machine(version, variant=...)``."""

    name: str
    description: str
    patch: Patch = field(repr=False)
    expected_checks: frozenset[str]
    requires: frozenset[str] = frozenset()

    @contextmanager
    def _applied(self) -> Iterator[None]:
        with ExitStack() as stack:
            self.patch(stack)
            yield

    def applied(self) -> AbstractContextManager[None]:
        """The context in which the engine is wrong."""
        return self._applied()


def _noop(self: Any) -> None:
    """An undo, commit or prepare that does nothing."""


def _method(cls: type[base.Action], name: str, value: Callable[..., None]) -> Patch:
    def patch(stack: ExitStack) -> None:
        stack.enter_context(mock.patch.object(cls, name, value))

    return patch


def _merge_abort_clears(self: BlockDirtyBitmapMerge) -> None:
    """Rolls the merge target back to *empty* instead of its content before."""
    if self._saved is not None:
        node, before = self._saved
        if before is not None:
            self.ctx.layer.graph.bitmap_clear(node, self.data["target"])


def _profile_patch(change: Callable[[VersionProfile], VersionProfile]) -> Patch:
    """Run transactions with a changed version profile."""

    def patch(stack: ExitStack) -> None:
        real = base.Context

        def context(layer: Any, profile: VersionProfile) -> base.Context:
            return real(layer=layer, profile=change(profile))

        stack.enter_context(mock.patch.object(transaction_command, "Context", context))

    return patch


def _other_version(profile: VersionProfile) -> VersionProfile:
    return next(p for name, p in PROFILES.items() if name != profile.name)


def _other_commit_order(profile: VersionProfile) -> VersionProfile:
    other = _other_version(profile)
    return dataclasses.replace(
        profile, commit_order=other.commit_order, clean_order=other.clean_order
    )


def _other_grouped_check(profile: VersionProfile) -> VersionProfile:
    other = _other_version(profile)
    return dataclasses.replace(
        profile, grouped_check=other.grouped_check, grouped_word=other.grouped_word
    )


def _toggle_defect_fixed(profile: VersionProfile) -> VersionProfile:
    return dataclasses.replace(profile, toggle_abort_uses_unrecorded_state=False)


def _list_order(stack: ExitStack) -> None:
    # The engine's abort loop walks ``reversed(started)``: make it walk list order.
    stack.enter_context(mock.patch.object(engine, "reversed", list, create=True))


def _grouped_everywhere(stack: ExitStack) -> None:
    from reference import actions  # noqa: PLC0415

    every = frozenset(actions.ACTIONS)
    stack.enter_context(mock.patch.object(engine, "GROUPED_KINDS", every))
    for cls in actions.ACTIONS.values():
        stack.enter_context(mock.patch.object(cls, "supports_grouped", True))


def _jobs_without_txn(stack: ExitStack) -> None:
    """Backups of a grouped transaction are created outside its JobTxn: each on its own."""
    real = backup.create

    def create(*args: Any, **kwargs: Any) -> str:
        kwargs["txn"] = None
        return real(*args, **kwargs)

    stack.enter_context(mock.patch.object(backup, "create", create))


def _lookup_error(change: Callable[[QMPError], QMPError]) -> Patch:
    real = bitmaps.lookup

    def lookup(layer: Any, node: str, name: str) -> Any:
        try:
            return real(layer, node, name)
        except QMPError as error:
            raise change(error) from None

    def patch(stack: ExitStack) -> None:
        stack.enter_context(mock.patch.object(bitmaps, "lookup", lookup))

    return patch


def _other_class(error: QMPError) -> QMPError:
    return QMPError(error.desc, "DeviceNotFound")


def _other_text(error: QMPError) -> QMPError:
    return QMPError(error.desc.replace("Dirty bitmap", "Bitmap"), error.error_class)


def _clear_without_clearing(self: BlockDirtyBitmapClear) -> None:
    bitmaps.lookup(self.ctx.layer, self.data["node"], self.data["name"])


def _does_nothing(
    name: str,
    action: type[base.Action],
    hook: str,
    shows: str,
    *,
    check: str,
    requires: frozenset[str] = frozenset(),
) -> Mutation:
    """``action``'s ``hook`` (prepare, commit or abort) replaced by one that does nothing;
    ``shows`` says what is then seen, ``check`` which check must report it."""
    return Mutation(
        name,
        f"{action.kind}'s {hook} does nothing: {shows}",
        _method(action, hook, _noop),
        frozenset({check}),
        requires,
    )


MUTATIONS: tuple[Mutation, ...] = (
    _does_nothing(
        "clear-undo-skipped",
        BlockDirtyBitmapClear,
        "abort",
        "a rolled-back clear stays cleared",
        check="atomicity",
    ),
    _does_nothing(
        "add-undo-skipped",
        BlockDirtyBitmapAdd,
        "abort",
        "a rolled-back add leaves the bitmap",
        check="atomicity",
    ),
    _does_nothing(
        "remove-undo-skipped",
        BlockDirtyBitmapRemove,
        "abort",
        "the bitmap stays busy after rollback",
        check="atomicity",
    ),
    _does_nothing(
        "merge-undo-skipped",
        BlockDirtyBitmapMerge,
        "abort",
        "the target keeps the merged bits",
        check="atomicity",
    ),
    Mutation(
        "merge-undo-wrong-content",
        "block-dirty-bitmap-merge's abort restores the target to empty, not to its old bits",
        _method(BlockDirtyBitmapMerge, "abort", _merge_abort_clears),
        frozenset({"atomicity"}),
    ),
    _does_nothing(
        "enable-undo-skipped",
        BlockDirtyBitmapEnable,
        "abort",
        "a rolled-back enable stays enabled",
        check="atomicity",
    ),
    _does_nothing(
        "disable-undo-skipped",
        BlockDirtyBitmapDisable,
        "abort",
        "a rolled-back disable stays disabled",
        check="atomicity",
    ),
    Mutation(
        "undo-order-wrong",
        "abort runs oldest first instead of newest first (and 10.0 commits in list order)",
        _list_order,
        frozenset({"atomicity"}),
    ),
    _does_nothing(
        "remove-commit-skipped",
        BlockDirtyBitmapRemove,
        "commit",
        "a committed remove leaves the bitmap",
        check="all-effects",
    ),
    Mutation(
        "clear-not-applied",
        "block-dirty-bitmap-clear's prepare only looks the bitmap up: success without clearing",
        _method(BlockDirtyBitmapClear, "prepare", _clear_without_clearing),
        frozenset({"all-effects"}),
    ),
    Mutation(
        "abort-action-accepted",
        "the abort action's prepare succeeds: a transaction with 'abort' commits",
        _method(Abort, "prepare", _noop),
        frozenset({"all-effects"}),
    ),
    Mutation(
        "grouped-accepted-for-all",
        "completion-mode grouped is accepted for every action kind",
        _grouped_everywhere,
        frozenset({"completion-mode"}),
    ),
    Mutation(
        "grouped-check-of-other-version",
        "completion-mode grouped is refused the way the other QEMU version does it",
        _profile_patch(_other_grouped_check),
        frozenset({"completion-mode"}),
    ),
    Mutation(
        "error-class-changed",
        "bitmap lookup errors answer class DeviceNotFound instead of GenericError",
        _lookup_error(_other_class),
        frozenset({"differential"}),
    ),
    Mutation(
        "error-message-changed",
        "bitmap lookup errors say 'Bitmap ...' instead of 'Dirty bitmap ...'",
        _lookup_error(_other_text),
        frozenset({"differential"}),
    ),
    Mutation(
        "toggle-abort-defect-fixed",
        "a failed transactional enable restores the recorded state: correct, but not what "
        "QEMU does (its abort uses a state never recorded)",
        _profile_patch(_toggle_defect_fixed),
        frozenset({"differential"}),
    ),
    Mutation(
        "grouped-not-cancelling-siblings",
        "completion-mode grouped creates the backups without a job transaction: a failing "
        "job does not cancel its siblings",
        _jobs_without_txn,
        frozenset({"completion-mode"}),
        requires=frozenset({"blockdev-backup"}),
    ),
    Mutation(
        "backup-leaks-after-rollback",
        "a prepared backup is not discarded when a later action fails: its job stays",
        _method(BlockdevBackup, "abort", _noop),
        frozenset({"atomicity"}),
        requires=frozenset({"blockdev-backup"}),
    ),
    _does_nothing(
        "overlay-undo-skipped",
        BlockdevSnapshot,
        "abort",
        "the overlay stays above the node after rollback",
        check="atomicity",
        requires=frozenset({"blockdev-snapshot"}),
    ),
    _does_nothing(
        "snapshot-sync-undo-skipped",
        BlockdevSnapshotSync,
        "abort",
        "the new overlay stays the device's root after rollback",
        check="atomicity",
        requires=frozenset({"blockdev-snapshot-sync"}),
    ),
    _does_nothing(
        "internal-snapshot-undo-skipped",
        BlockdevSnapshotInternalSync,
        "abort",
        "the internal snapshot stays after rollback",
        check="atomicity",
        requires=frozenset({"blockdev-snapshot-internal-sync"}),
    ),
    Mutation(
        "commit-order-of-other-version",
        "commit and clean run in the other version's order (visible in backup jobs' events)",
        _profile_patch(_other_commit_order),
        frozenset({"differential"}),
        requires=frozenset({"blockdev-backup"}),
    ),
)


def by_name(name: str) -> Mutation:
    """The mutation called ``name``; KeyError lists the names."""
    for mutation in MUTATIONS:
        if mutation.name == name:
            return mutation
    raise KeyError(f"no mutation {name!r}; choose from {', '.join(m.name for m in MUTATIONS)}")


__all__ = ["MUTATIONS", "Mutation", "by_name"]
