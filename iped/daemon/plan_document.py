"""``iped plan --json``: the versioned document configuration management shows as its diff.

``before`` is the kernel's state as read back now; ``after`` is that state with the plan's steps
applied on paper by :func:`iped.daemon.apply.state_after`, the same function the executor uses
for the state after a run (a rejected plan writes nothing, so then ``after == before``). Both have
the same shape -- active policy, enforce, success_audit, loaded policies with versions and
digests -- so a tool can diff them field by field (Ansible's ``--diff`` shows exactly this).
"""

from __future__ import annotations

from typing import Any

from iped.daemon.actual import ActualState
from iped.daemon.apply import state_after
from iped.daemon.plan import Plan
from iped.outcome import Outcome

#: bump when a key changes meaning or disappears (adding keys does not bump it);
#: 2: ``boot`` -- what PID 1 loaded at this boot and the boot copy (docs/boot.md)
PLAN_SCHEMA_VERSION = 2


def plan_outcome(plan: Plan) -> Outcome:
    return Outcome.REJECTED if plan.rejected else (Outcome.UNCHANGED if plan.unchanged else Outcome.WOULD_APPLY)


def state_view(state: ActualState) -> dict[str, Any]:
    """The comparable part of the kernel's state; policies as a name-sorted list of records."""
    return {
        "active": state.active.name if state.active else None,
        "enforce": state.enforce,
        "success_audit": state.success_audit,
        "policies": [{"name": p.name, "version": str(p.version), "text_digest": p.text_digest,
                      "blob_digest": p.blob_digest, "active": p.active}
                     for p in sorted(state.policies, key=lambda p: p.name)],
    }


def plan_document(actual: ActualState, plan: Plan, backend: str, boot: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole ``iped plan --json`` document (without ``daemon``, which the caller knows);
    ``boot``: :func:`iped.daemon.bootrecord.boot_facts`."""
    before = state_view(actual)
    after = before if plan.rejected else state_view(state_after(actual, plan.steps))
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "backend": backend,
        "outcome": plan_outcome(plan),
        "before": before,
        "after": after,
        "steps": [s.as_dict() for s in plan.steps],
        "errors": [e.as_dict() for e in plan.errors],
        "reasons": [str(e) for e in plan.errors],
        "boot": boot,
    }
