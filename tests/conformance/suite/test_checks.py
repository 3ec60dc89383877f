"""Each check on hand-made histories: it reports what breaks its rule, and only that."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conformance.checks import CHECKS, CheckContext, select
from conformance.history import History, Operation
from conformance.qmp_schema import DerivedSchema
from conformance.scenario import Scenario, Step


def _program(steps: int = 1) -> Scenario:
    return Scenario(
        name="hand",
        area="unit",
        path=Path("hand"),
        description="hand-made",
        versions=("7.2", "10.0"),
        setup=(),
        drives=(),
        blockdevs=(),
        steps=tuple(Step(i, "execute", "transaction", {"actions": []}) for i in range(steps)),
    )


def _bitmap(name: str, count: int = 0, recording: bool = True, busy: bool = False) -> Any:
    return {
        "name": name,
        "recording": recording,
        "persistent": False,
        "busy": busy,
        "granularity": 65536,
        "count": count,
        "sha256": f"h{count}",
    }


def _state(*bitmaps: Any, files: list[str] | None = None) -> dict[str, Any]:
    node = {"driver": "qcow2", "ro": False, "backing": None, "snapshots": []}
    return {
        "nodes": {"disk0": {**node, "bitmaps": list(bitmaps)}},
        "devices": {},
        "jobs": [],
        "files": files or ["a.qcow2"],
    }


def _history(before: Any, *ops: Operation, version: str = "10.0") -> History:
    history = History(_program(len(ops)), "unit", version, initial_state=before)
    history.operations = list(ops)
    return history


def _txn(actions: list[Any], reply: Any, after: Any, **extra: Any) -> Operation:
    arguments: dict[str, Any] = {"actions": actions, **extra}
    outcome = "error" if "error" in reply else "return"
    message = {"execute": "transaction", "arguments": arguments}
    return Operation(0, "execute", message, outcome, reply=reply, state=after)


ABORTED = {"error": {"class": "GenericError", "desc": "Transaction aborted using Abort action"}}
CLEAR = {"type": "block-dirty-bitmap-clear", "data": {"node": "disk0", "name": "b0"}}
ABORT = {"type": "abort", "data": {}}


def test_atomicity_failed_transaction_changed_bitmap_reported_with_because() -> None:
    history = _history(
        _state(_bitmap("b0", 65536)), _txn([CLEAR, ABORT], ABORTED, _state(_bitmap("b0", 0)))
    )

    verdict = CHECKS["atomicity"](history, CheckContext())

    assert verdict.status == "fail"
    finding = verdict.findings[0]
    assert "nodes/disk0/bitmaps/b0/count: 65536 -> 0" in finding.seen
    assert "rolled back" in finding.because
    assert finding.step == 0


def test_atomicity_snapshot_file_left_on_disk_is_qemus_exception() -> None:
    snap = {
        "type": "blockdev-snapshot-sync",
        "data": {"node-name": "disk0", "snapshot-file": "{dir}/s.qcow2"},
    }
    before, after = _state(), _state(files=["a.qcow2", "s.qcow2"])
    other = _state(files=["a.qcow2", "x.qcow2"])

    allowed = CHECKS["atomicity"](
        _history(before, _txn([snap, ABORT], ABORTED, after)), CheckContext()
    )
    stray = CHECKS["atomicity"](
        _history(before, _txn([snap, ABORT], ABORTED, other)), CheckContext()
    )

    assert allowed.status == "pass"
    assert stray.status == "fail"
    assert "x.qcow2" in stray.findings[0].seen


def test_atomicity_without_failed_transaction_not_applicable() -> None:
    history = _history(_state(), _txn([], {"return": {}}, _state()))

    verdict = CHECKS["atomicity"](history, CheckContext())

    assert verdict.status == "n/a"
    assert "no failed transaction" in verdict.reason


def test_all_effects_clear_without_effect_reported() -> None:
    history = _history(
        _state(_bitmap("b0", 65536)), _txn([CLEAR], {"return": {}}, _state(_bitmap("b0", 65536)))
    )

    verdict = CHECKS["all-effects"](history, CheckContext())

    assert verdict.status == "fail"
    assert "b0 count = 65536, not 0" in verdict.findings[0].seen


def test_all_effects_accepted_abort_and_untouched_bitmap_change_reported() -> None:
    before = _state(_bitmap("b0", 65536), _bitmap("b9", 4096))
    after = _state(_bitmap("b0", 0), _bitmap("b9", 0))

    verdict = CHECKS["all-effects"](
        _history(before, _txn([CLEAR, ABORT], {"return": {}}, after)), CheckContext()
    )

    seen = verdict.findings[0].seen
    assert "'abort' action was accepted" in seen
    assert "b9 changed although no action named it" in seen


def test_all_effects_clear_then_merge_expects_merged_bits() -> None:
    merge = {
        "type": "block-dirty-bitmap-merge",
        "data": {"node": "disk0", "target": "b0", "bitmaps": ["b1"]},
    }
    before = _state(_bitmap("b0", 65536), _bitmap("b1", 131072))
    good = _state(_bitmap("b0", 131072), _bitmap("b1", 131072))
    bad = _state(_bitmap("b0", 0), _bitmap("b1", 131072))

    ok = CHECKS["all-effects"](
        _history(before, _txn([CLEAR, merge], {"return": {}}, good)), CheckContext()
    )
    wrong = CHECKS["all-effects"](
        _history(before, _txn([CLEAR, merge], {"return": {}}, bad)), CheckContext()
    )

    assert ok.status == "pass"
    assert wrong.status == "fail"


def test_all_effects_added_bitmap_on_a_backup_target_counts_the_jobs_writes() -> None:
    backup = {
        "type": "blockdev-backup",
        "data": {"job-id": "j0", "device": "disk1", "target": "disk0", "sync": "full"},
    }
    add = {"type": "block-dirty-bitmap-add", "data": {"node": "disk0", "name": "b1"}}
    created = [{"event": "JOB_STATUS_CHANGE", "data": {"id": "j0", "status": "created"}}]
    after = _state(_bitmap("b1", 67108864))
    copied = _txn([backup, add], {"return": {}}, after)
    copied.events = created
    no_job = _txn([add], {"return": {}}, after)

    ok = CHECKS["all-effects"](_history(_state(), copied), CheckContext())
    wrong = CHECKS["all-effects"](_history(_state(), no_job), CheckContext())

    assert ok.status == "pass"
    assert wrong.status == "fail"
    assert "b1 count = 67108864, not 0" in wrong.findings[0].seen


def test_completion_mode_grouped_refusal_per_version() -> None:
    grouped = {"properties": {"completion-mode": "grouped"}}
    desc = "Action 'abort' does not support transaction property completion-mode = grouped"
    new = {"error": {"class": "GenericError", "desc": desc}}

    up_front = CHECKS["completion-mode"](
        _history(_state(), _txn([ABORT], new, _state(), **grouped)), CheckContext()
    )
    wrong_10 = CHECKS["completion-mode"](
        _history(_state(), _txn([ABORT], ABORTED, _state(), **grouped)), CheckContext()
    )
    right_72 = CHECKS["completion-mode"](
        _history(_state(), _txn([ABORT], ABORTED, _state(), **grouped), version="7.2"),
        CheckContext(),
    )
    accepted = CHECKS["completion-mode"](
        _history(_state(), _txn([CLEAR], {"return": {}}, _state(), **grouped)), CheckContext()
    )

    assert up_front.status == "pass"
    assert wrong_10.status == "fail"
    assert "up-front refusal" in wrong_10.findings[0].seen
    assert right_72.status == "pass"
    assert accepted.status == "fail"
    assert "succeeded" in accepted.findings[0].seen


def test_completion_mode_argument_error_comes_before_the_grouped_refusal() -> None:
    # QEMU 10.0 parses every action's arguments before the transaction runs: a bad argument is
    # refused as such, before the up-front grouped refusal (confirmed on QEMU 10.0.2).
    grouped = {"properties": {"completion-mode": "grouped"}}
    add = {"type": "block-dirty-bitmap-add", "data": {"node": "x", "name": "b", "granularity": -1}}
    bad = {"error": {"class": "GenericError", "desc": "Parameter 'granularity' expects uint32_t"}}
    other = {"error": {"class": "GenericError", "desc": "Bitmap already exists: b"}}

    parsed = CHECKS["completion-mode"](
        _history(_state(), _txn([add], bad, _state(), **grouped)), CheckContext()
    )
    handler = CHECKS["completion-mode"](
        _history(_state(), _txn([add], other, _state(), **grouped)), CheckContext()
    )

    assert parsed.status == "pass"
    assert handler.status == "fail"
    assert "up-front refusal" in handler.findings[0].seen


def test_completion_mode_grouped_job_completing_beside_failed_sibling_reported() -> None:
    backup = [
        {
            "type": "blockdev-backup",
            "data": {"device": "d0", "target": "t0", "sync": "full", "job-id": "j0"},
        },
        {
            "type": "blockdev-backup",
            "data": {"device": "d1", "target": "t1", "sync": "full", "job-id": "j1"},
        },
    ]
    op = _txn(backup, {"return": {}}, _state(), properties={"completion-mode": "grouped"})
    op.events = [
        {"event": "BLOCK_JOB_COMPLETED", "data": {"device": "j1", "error": "Input/output error"}},
        {"event": "BLOCK_JOB_COMPLETED", "data": {"device": "j0"}},
    ]

    verdict = CHECKS["completion-mode"](_history(_state(), op), CheckContext())

    assert verdict.status == "fail"
    assert "one failing job must cancel every sibling" in verdict.findings[0].because


def test_liveness_crash_reported_with_sequence() -> None:
    op = Operation(
        0, "execute", {"execute": "block-dirty-bitmap-merge"}, "crashed", failure="SIGSEGV"
    )

    verdict = CHECKS["liveness"](_history(_state(), op), CheckContext())

    assert verdict.status == "fail"
    assert "SIGSEGV" in verdict.findings[0].seen
    assert "block-dirty-bitmap-merge" in verdict.findings[0].because


def test_schema_reply_of_wrong_shape_reported() -> None:
    schema = DerivedSchema.recorded("10.0")
    assert schema is not None
    good = Operation(0, "execute", {"execute": "query-block"}, "return", reply={"return": []})
    bad = Operation(
        1, "execute", {"execute": "query-block"}, "return", reply={"return": [{"x": 1}]}
    )

    ok = CHECKS["schema"](_history(_state(), good), CheckContext(schema=schema))
    wrong = CHECKS["schema"](_history(_state(), good, bad), CheckContext(schema=schema))

    assert ok.status == "pass"
    assert wrong.status == "fail"
    assert wrong.findings[0].step == 1


def test_differential_state_divergence_from_model_reported() -> None:
    before = _state(_bitmap("b0", 65536))
    target = _history(before, _txn([CLEAR, ABORT], ABORTED, _state(_bitmap("b0", 0))))
    model = _history(before, _txn([CLEAR, ABORT], ABORTED, before))

    verdict = CHECKS["differential"](target, CheckContext(model=model))

    assert verdict.status == "fail"
    assert "state nodes/disk0/bitmaps/b0/count: 65536 -> 0" in verdict.findings[0].seen


def test_select_unknown_check_named_in_error() -> None:
    try:
        select(["atomicity", "nope"])
    except ValueError as error:
        assert "nope" in str(error)
    else:
        raise AssertionError("unknown check accepted")
