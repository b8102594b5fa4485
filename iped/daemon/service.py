"""What the daemon does, as functions of a :class:`Reconciler`: plan, reload, rollback, status.

The selector loop (:mod:`iped.daemon.loop`) and the command line's no-daemon paths
(``iped plan --no-daemon``, ``iped apply --once``, ``iped rollback`` without a daemon) call these
same functions, so a verb answers the same with or without a daemon. Each returns a typed,
frozen result whose ``as_dict()`` is the JSON the control socket and ``--json`` carry.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iped.daemon.actual import ActualState, read_actual
from iped.daemon.declared import DeclaredState
from iped.daemon.plan import Plan, drift
from iped.daemon.plan_document import plan_document, plan_outcome
from iped.daemon.reconcile import FailedRead, PlanRecord, Reconciler, loaded_dict
from iped.errnos import describe_errno
from iped.outcome import Outcome

STATUS_SCHEMA_VERSION = 2  # 2: "boot" (docs/boot.md)


@dataclass(frozen=True, slots=True)
class PlanPreview:
    """``iped plan``: what a reload would do now, nothing written."""

    backend: str
    actual: ActualState
    plan: Plan
    boot: dict[str, Any] | None = None

    @property
    def outcome(self) -> str:
        return plan_outcome(self.plan)

    def as_dict(self) -> dict[str, Any]:
        return plan_document(self.actual, self.plan, self.backend, self.boot)


def boot_facts(rec: Reconciler, actual: ActualState) -> dict[str, Any]:
    """What PID 1 loaded at this boot and what it loads at the next (docs/boot.md)."""
    from iped.daemon.bootrecord import boot_facts as facts

    return facts(rec.settings.boot, rec.settings.policies.active, actual,
                 rec.boot_copy.as_dict() if rec.boot_copy else None)


def plan(rec: Reconciler) -> PlanPreview:
    _, actual, p = rec.compute()
    return PlanPreview(rec.backend.kind, actual, p, boot_facts(rec, actual))


def reload(rec: Reconciler, trigger: str, record_unchanged: bool = True) -> PlanRecord | FailedRead:
    """Reconcile now; a backend that cannot even be read is a failed record, not an exception."""
    try:
        return rec.reconcile(trigger, record_unchanged)
    except OSError as e:  # the backend itself failed (securityfs gone?)
        failed = FailedRead(trigger, e.errno or errno.EIO, f"reading state failed: {e}")
        rec.reporter.log("error", failed.message)
        return failed


def refresh(rec: Reconciler, trigger: str,
            computed: tuple[DeclaredState, ActualState, Plan] | None = None) -> PlanRecord | None:
    """After a rejected or failed reconcile the files can be put right with no reconcile following
    (a long debounce, a config-management run whose ``iped plan`` answers 9 and stops there):
    the daemon would go on reporting the rejection -- ``in_sync: false``, a drift naming a file
    that is gone, DEGRADED in STATUS= and the metrics. So a plan or status after such a
    reconcile scans afresh; when nothing is left to change it records that as an unchanged
    reconcile (the kernel is not written: the plan has no steps) and returns its record.

    None: the last reconcile left the declared state in effect (nothing to refresh), or the
    declared state still does not match (its fresh drift is what status shows).
    """
    last = rec.last
    if last is None or last.outcome in (Outcome.APPLIED, Outcome.UNCHANGED):
        return None
    decl, actual, p = computed if computed is not None else rec.compute()
    rec.declared = decl
    if not p.unchanged:
        return None
    return rec.reconcile(trigger, record_unchanged=False, computed=(decl, actual, p))


@dataclass(frozen=True, slots=True)
class Health:
    """Is the declared state in effect after the last reconcile, and the one line that says so (or
    why not: errno and file). It is systemd's ``STATUS=`` (``systemctl status``) and ``status_line``
    of ``iped status``, so both always say the same."""

    in_effect: bool
    line: str


def _active_words(rec: Reconciler, record: PlanRecord) -> str:
    a = record.active_after
    enforce = "" if rec.after is None else f", enforce {'on' if rec.after.enforce else 'off'}"
    return (f"active {a.name} {a.version}" if a is not None else "no active policy") + enforce


def health(rec: Reconciler) -> Health:
    """The daemon's state after its last reconcile, for STATUS= and ``iped status``."""
    last = rec.last
    if last is None:
        return Health(False, "starting: first reconcile not done yet")
    if isinstance(last, FailedRead):
        return Health(False, f"DEGRADED: cannot read the IPE state ({last.trigger}): {describe_errno(last.errno)}: "
                             f"{last.message}; nothing written")
    active = _active_words(rec, last)
    if last.outcome in (Outcome.APPLIED, Outcome.UNCHANGED):
        history = rec.plan_log.problems
        warning = f"; WARNING: {history[-1]}" if history else ""
        return Health(True, f"in sync: {active} ({last.outcome}, {last.trigger}){warning}")
    if last.outcome == Outcome.REJECTED:
        return Health(False, f"DEGRADED: declared state rejected ({last.trigger}), kernel untouched, {active} "
                             f"kept: {failure_reason(last)}")
    why = failure_reason(last, rec.declared)
    return Health(False, f"DEGRADED: kernel error ({last.trigger}): {why}; {active} kept")


def failure_reason(record: PlanRecord, declared: DeclaredState | None = None) -> str:
    """Why a failed or rejected reconcile did not reach the declared state: the failed step's
    message with its errno and the file it came from, or the first rejection (file:line, errno)."""
    failure = record.failure
    if failure is None:
        first = str(record.errors[0]) if record.errors else "?"
        more = f" (+{len(record.errors) - 1} more: iped status)" if len(record.errors) > 1 else ""
        return first + more
    why = failure.message
    decl = declared.get(failure.step.name or "") if declared is not None else None
    source = failure.step.source or (str(decl.source) if decl is not None else None)
    return why if source is None or source in why else f"{why} [{source}]"


@dataclass(frozen=True, slots=True)
class RollbackResult:
    """``iped rollback``: the content rolled forward to, where it went, and the reload's record."""

    target: str
    name: str
    from_version: str
    new_version: str
    content_digest: str
    record: PlanRecord | FailedRead | None  # None: dry run

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "name": self.name, "from_version": self.from_version,
                "new_version": self.new_version, "content_digest": self.content_digest,
                "record": {"outcome": Outcome.DRY_RUN} if self.record is None else self.record.as_dict()}


def rollback(rec: Reconciler, dry_run: bool,
             reconcile: Callable[[str], PlanRecord | FailedRead] | None = None) -> RollbackResult:
    """Roll the active policy forward to its previous content (:mod:`iped.daemon.rollback`), then
    reconcile with ``reconcile`` (the loop's, which tells systemd; default :func:`reload`).

    Raises RollbackError (errno + message) when there is nothing to roll back to or no key.
    """
    from iped.daemon.rollback import prepare, write

    prepared = prepare(rec)
    record = None
    if not dry_run:
        write(rec, prepared)
        rec.reporter.log("notice", f"rolled forward {prepared.name} {prepared.current} -> {prepared.new_version} "
                                   f"with the content of sha256:{prepared.from_digest[:16]}, written to "
                                   f"{prepared.target}", "policy_rolled_forward")
        record = reconcile("rollback") if reconcile is not None else reload(rec, "rollback")
    return RollbackResult(str(prepared.target), prepared.name, str(prepared.current), str(prepared.new_version),
                          prepared.from_digest, record)


def status(rec: Reconciler, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The kernel's state, the declared one, the drift between them, the last plans, counters."""
    actual = read_actual(rec.backend)
    decl = rec.declared if rec.declared is not None else rec.scan()
    sources = {p.name: str(p.source) for p in decl.policies}
    lines = drift(decl, actual)
    return {
        "schema_version": STATUS_SCHEMA_VERSION,
        "backend": {"kind": rec.backend.kind, "reason": rec.backend.reason},
        "enforce": actual.enforce,
        "success_audit": actual.success_audit,
        "active": loaded_dict(actual.active),
        "policies": [
            {"name": p.name, "version": str(p.version), "active": p.active, "text_digest": p.text_digest,
             "blob_digest": p.blob_digest, "source": sources.get(p.name),
             "declared": decl.get(p.name) is not None}
            for p in actual.policies
        ],
        "declared": {
            "dir": str(rec.settings.policies.dir),
            "active": decl.active,
            "enforce": decl.enforce,
            "success_audit": decl.success_audit,
            "policies": [{"name": p.name, "version": str(p.version), "source": str(p.source),
                          "text_digest": p.text_digest} for p in decl.policies],
            "errors": [e.as_dict() for e in decl.errors],
        },
        "in_sync": not lines,
        "status_line": health(rec).line,
        "drift": lines,
        "last_plans": rec.plan_log.recent(5),
        "history": {"chain_file": str(rec.plan_log.chain_file), "problems": list(rec.plan_log.problems)},
        "counters": dict(rec.counters),
        "config": str(rec.settings.path) if rec.settings.path else None,
        "pid": os.getpid(),
        "boot": boot_facts(rec, actual),
        **(extra or {}),
    }
