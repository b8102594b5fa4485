"""``iped plan --json``: the versioned document configuration management shows as its diff.

``before`` is the kernel's state as read back now; ``after`` is that state with the plan's steps
applied on paper (a rejected plan writes nothing, so then ``after == before``). Both have the same
shape -- active policy, enforce, success_audit, loaded policies with versions and digests -- so a
tool can diff them field by field (Ansible's ``--diff`` shows exactly this).
"""

from __future__ import annotations

from typing import Any

from iped.daemon.plan import Plan, StepKind
from iped.daemon.state import ActualState

#: bump when a key changes meaning or disappears (adding keys does not bump it)
PLAN_SCHEMA_VERSION = 1


def plan_outcome(plan: Plan) -> str:
    return "rejected" if plan.rejected else ("unchanged" if plan.unchanged else "would-apply")


def state_view(actual: ActualState) -> dict[str, Any]:
    """The comparable part of the kernel's state."""
    return {
        "active": next((p.name for p in actual.policies if p.active), None),
        "enforce": actual.enforce,
        "success_audit": actual.success_audit,
        "policies": {p.name: {"version": str(p.version), "text_digest": p.text_digest, "blob_digest": p.blob_digest}
                     for p in actual.policies},
    }


def predicted_after(before: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """``before`` with every step of ``plan`` applied, in order, as the kernel would."""
    after = {**before, "policies": {k: dict(v) for k, v in before["policies"].items()}}
    policies: dict[str, dict[str, Any]] = after["policies"]
    for step in plan.steps:
        match step.kind:
            case StepKind.ENFORCE:
                after["enforce"] = bool(step.value)
            case StepKind.SUCCESS_AUDIT:
                after["success_audit"] = bool(step.value)
            case StepKind.LOAD | StepKind.UPDATE:
                assert step.name is not None
                policies[step.name] = {"version": str(step.version), "text_digest": step.text_digest,
                                       "blob_digest": step.blob_digest}
            case StepKind.ACTIVATE:
                after["active"] = step.name
            case StepKind.DELETE:
                policies.pop(step.name or "", None)
    return after


def _listed(view: dict[str, Any]) -> dict[str, Any]:
    """Policies as a name-sorted list (JSON readers prefer lists of records to maps keyed by name)."""
    return {**view, "policies": [{"name": n, **v, "active": n == view["active"]}
                                 for n, v in sorted(view["policies"].items())]}


def plan_document(actual: ActualState, plan: Plan, backend: str) -> dict[str, Any]:
    """The whole ``iped plan --json`` document (without ``daemon``, which the caller knows)."""
    before = state_view(actual)
    after = before if plan.rejected else predicted_after(before, plan)
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "backend": backend,
        "outcome": plan_outcome(plan),
        "before": _listed(before),
        "after": _listed(after),
        "steps": [s.as_dict() for s in plan.steps],
        "errors": [e.as_dict() for e in plan.errors],
        "reasons": [str(e) for e in plan.errors],
    }
