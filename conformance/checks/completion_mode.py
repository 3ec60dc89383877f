"""``completion-mode``: grouped jobs live and die together; individual jobs do not; grouped is
refused for actions that cannot join a job transaction, as the version says.

Rules, per ``transaction`` step:

1. ``grouped`` with an action other than ``blockdev-backup``/``drive-backup`` must fail. From 8.1
   QEMU checks up front (``abort`` included) with "transaction", so the error names the first
   such kind; up to 8.0 it checks inside each action's prepare with "Transaction" and lets
   ``abort`` fail as itself, so the error is the first refused kind's (or an earlier action's
   own failure) (SEMANTICS.md §1.4).
2. ``grouped`` jobs created by one successful transaction: if any of them failed or was
   cancelled, none may complete successfully (one failing job cancels every sibling, §4.4).
3. ``individual`` jobs: a job that fails does not cancel its siblings; no job created by the
   transaction ends cancelled unless somebody cancelled it.

Job outcomes come from the events of the step and of the steps after it (the recorder lets
time pass until the jobs settle, or the scenario's ``wait`` steps do): a job's outcome is its
first ``BLOCK_JOB_COMPLETED``/``BLOCK_JOB_CANCELLED`` after the transaction that created it.
Where the endpoint (the reference before the jobs feature) answers that it does not implement
a job action, the job rules are not applicable for that step, and the verdict says so.
"""

from __future__ import annotations

from conformance import rules
from conformance.checks.base import NOT_APPLICABLE, CheckContext, Finding, Verdict, verdict
from conformance.history import History, Operation

NAME = "completion-mode"


def _job_outcomes(later: Operation | list[Operation], jobs: list[str]) -> dict[str, str]:
    """job id -> ``completed``, ``failed``, ``cancelled`` or ``unfinished``.

    ``later``: the transaction's operation and every operation after it, in order (or the
    transaction's operation alone).
    """
    ops = [later] if isinstance(later, Operation) else later
    outcome = dict.fromkeys(jobs, "unfinished")
    for event in (event for op in ops for event in op.events):
        data = event.get("data") or {}
        job = str(data.get("device") or data.get("id"))
        if outcome.get(job) != "unfinished":
            continue
        if event.get("event") == "BLOCK_JOB_COMPLETED":
            outcome[job] = "failed" if "error" in data else "completed"
        elif event.get("event") == "BLOCK_JOB_CANCELLED":
            outcome[job] = "cancelled"
    return outcome


def _user_cancelled(later: list[Operation]) -> bool:
    """Whether somebody cancelled a job (``job-cancel``/``block-job-cancel``) after the step."""
    return any(op.command in ("job-cancel", "block-job-cancel") for op in later[1:])


def _grouped_refusal(op: Operation, version: str) -> list[str]:
    rule = rules.grouped_rule(version)
    kinds = [str(a.get("type")) for a in op.actions()]
    refused = [
        k for k in kinds if k not in rules.JOB_KINDS and (k != "abort" or rule.refuses_abort)
    ]
    error = op.error()
    if op.outcome == "return":
        offending = refused or [k for k in kinds if k not in rules.JOB_KINDS]
        return [f"grouped transaction with {offending[0]!r} succeeded"]
    if error is None:
        return []
    desc = str(error.get("desc"))
    if rules.is_argument_error(desc):
        return []  # the arguments were refused before the transaction ran at all
    if rule.up_front:
        want = rule.message(refused[0]) if refused else None
        if want is not None and desc != want:
            return [f"error {desc!r}, expected the up-front refusal {want!r}"]
        return []
    if "completion-mode = grouped" in desc:
        allowed = {rule.message(k) for k in refused}
        if desc not in allowed:
            return [f"error {desc!r} is not one of {sorted(allowed)}"]
    return []


def check(history: History, ctx: CheckContext) -> Verdict:
    """Judge every transaction with ``grouped`` or with job actions."""
    findings: list[Finding] = []
    examined = 0
    unsupported: set[str] = set()
    for position, op in enumerate(history.operations):
        if not op.is_transaction() or op.outcome in ("crashed", "hung"):
            continue
        error = op.error() or {}
        missing = rules.not_implemented_kind(str(error.get("desc", "")))
        if missing is not None and missing in rules.JOB_KINDS:
            unsupported.add(missing)
            continue
        properties = op.arguments.get("properties")
        mode = properties.get("completion-mode") if isinstance(properties, dict) else None
        kinds = [str(a.get("type")) for a in op.actions()]
        problems: list[str] = []
        because = ""
        if mode == "grouped" and any(k not in rules.JOB_KINDS for k in kinds):
            examined += 1
            problems = _grouped_refusal(op, history.version)
            because = (
                "only backup actions can join a grouped job transaction; QEMU "
                f"{history.version} refuses the others "
                + ("up front" if rules.grouped_rule(history.version).up_front else "in prepare")
            )
        elif op.outcome == "return" and sum(k in rules.JOB_KINDS for k in kinds) >= 1:
            examined += 1
            jobs = [
                str(a["data"].get("job-id") or a["data"].get("device"))
                for a in op.actions()
                if a.get("type") in rules.JOB_KINDS and isinstance(a.get("data"), dict)
            ]
            later = history.operations[position:]
            outcome = _job_outcomes(later, jobs)
            bad = [j for j, o in outcome.items() if o in ("failed", "cancelled")]
            good = [j for j, o in outcome.items() if o == "completed"]
            if mode == "grouped" and bad and good:
                problems = [f"jobs {good} completed although {bad} failed or were cancelled"]
                because = "in grouped mode one failing job must cancel every sibling"
            elif mode != "grouped":
                cancelled = [j for j, o in outcome.items() if o == "cancelled"]
                failed = any(o == "failed" for o in outcome.values())
                if cancelled and failed and not _user_cancelled(later):
                    problems = [f"jobs {cancelled} were cancelled when a sibling failed"]
                    because = "in individual mode jobs finish independently"
        if problems:
            findings.append(
                Finding(
                    NAME,
                    op.index,
                    op.message,
                    expected=f"completion-mode {mode or 'individual'} honoured",
                    seen="; ".join(problems),
                    because=because,
                    subject=" | ".join(problems),
                )
            )
    result = verdict(
        NAME, findings, examined, "no grouped transaction and no transaction with backup jobs"
    )
    if unsupported:
        note = f"the endpoint does not implement {', '.join(sorted(unsupported))}"
        if result.status == NOT_APPLICABLE:
            result.reason = f"{note}: job rules not applicable"
        else:
            result.reason = f"{note}: job rules not applicable to those steps"
    return result
