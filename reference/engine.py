"""The transaction engine (SEMANTICS.md §1.2-1.4).

1. ``completion-mode: grouped`` is refused for actions that cannot join a job transaction: up
   front for every action (≥ 8.1), or inside each such action's prepare (≤ 8.0), per profile.
2. ``bdrv_drain_all``: running jobs pause and resume once. A grouped transaction makes a JobTxn
   its backup jobs join.
3. Prepare runs in list order; each action applies its effect at once, so later actions see it.
4. The first failure stops the loop. Every started action, the failing one included, is aborted
   newest first; then cleaned. The transaction's error is the failing action's error, unless
   real QEMU of this version dies in that rollback (``Action.qemu_crash``): then an error
   saying so, where QEMU gives no reply at all.
5. Where real QEMU would die committing a prepared action (``Action.commit_crash``), the
   whole transaction is rolled back as in 4 and answers an error saying so instead.
6. On success every action is committed, then cleaned, in the profile's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reference import jobs
from reference.actions import ACTIONS, GROUPED_KINDS, Action, Context
from reference.compat import GroupedCheck, Order
from reference.errors import QMPError


def _ordered(actions: Sequence[Action], order: Order) -> Sequence[Action]:
    return actions if order is Order.LIST else list(reversed(actions))


def _grouped_error(kind: str, word: str) -> QMPError:
    return QMPError(f"Action '{kind}' does not support {word} property completion-mode = grouped")


def run(ctx: Context, actions: list[dict[str, Any]], properties: dict[str, Any] | None) -> None:
    """Runs one transaction; raises the failing action's QMPError after rolling back."""
    profile = ctx.profile
    ctx.completion_mode = (properties or {}).get("completion-mode", "individual")
    grouped = ctx.completion_mode == "grouped"
    if grouped and profile.grouped_check is GroupedCheck.UP_FRONT:
        for spec in actions:
            if spec["type"] not in GROUPED_KINDS:
                raise _grouped_error(spec["type"], profile.grouped_word)

    if grouped:
        ctx.txn = ctx.layer.graph.txn_new()
    # bdrv_drain_all(): every running job is paused and resumed once.
    graph = ctx.layer.graph
    ctx.events += jobs.qmp_events(graph.drained_begin(None))
    ctx.events += jobs.qmp_events(graph.drained_end(None))

    started: list[Action] = []
    try:
        for spec in actions:
            kind = spec["type"]
            cls = ACTIONS.get(kind)
            if cls is None:
                raise QMPError(f"Action '{kind}' is not implemented by this reference")
            action = cls(ctx, spec["data"])
            started.append(action)
            if (
                grouped
                and profile.grouped_check is GroupedCheck.IN_PREPARE
                and not cls.supports_grouped
                and kind != "abort"
            ):
                raise _grouped_error(kind, profile.grouped_word)
            action.prepare()
        for action in started:
            if (reason := action.commit_crash()) is not None:
                raise QMPError(reason)
    except QMPError:
        crashes = [reason for action in started if (reason := action.qemu_crash()) is not None]
        for action in reversed(started):
            action.abort()
        for action in _ordered(started, profile.clean_order):
            action.clean()
        if crashes:
            raise QMPError(crashes[0]) from None
        raise

    for action in _ordered(started, profile.commit_order):
        action.commit()
    for action in _ordered(started, profile.clean_order):
        action.clean()
