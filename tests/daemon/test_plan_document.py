"""``after`` in ``iped plan --json``: every kind of step applied on paper, as the kernel would."""

from __future__ import annotations

import errno

from iped.daemon.actual import ActualState, LoadedPolicy
from iped.daemon.declared import DeclError
from iped.daemon.plan import Plan, Step, StepKind
from iped.daemon.plan_document import plan_document
from iped.emulator.policy_parser import Version

OLD = LoadedPolicy("old", Version(1, 0, 0), True, "a" * 64, "b" * 64)
KEPT = LoadedPolicy("kept", Version(3, 0, 0), False, "c" * 64, None)
ACTUAL = ActualState((KEPT, OLD), enforce=False, success_audit=False)


def test_every_step_kind_lands_in_after() -> None:
    plan = Plan((
        Step(StepKind.ENFORCE, value=True),
        Step(StepKind.LOAD, name="new", version=Version(2, 0, 0), text_digest="d" * 64, blob_digest="e" * 64),
        Step(StepKind.UPDATE, name="kept", version=Version(3, 0, 1), old_version=Version(3, 0, 0),
             text_digest="f" * 64, blob_digest="0" * 64),
        Step(StepKind.ACTIVATE, name="new", version=Version(2, 0, 0)),
        Step(StepKind.DELETE, name="old", version=Version(1, 0, 0)),
        Step(StepKind.SUCCESS_AUDIT, value=True),
    ))
    doc = plan_document(ACTUAL, plan, "emulator")
    assert (doc["schema_version"], doc["outcome"]) == (2, "would-apply")
    assert doc["before"] == {"active": "old", "enforce": False, "success_audit": False, "policies": [
        {"name": "kept", "version": "3.0.0", "text_digest": "c" * 64, "blob_digest": None, "active": False},
        {"name": "old", "version": "1.0.0", "text_digest": "a" * 64, "blob_digest": "b" * 64, "active": True},
    ]}
    assert doc["after"] == {"active": "new", "enforce": True, "success_audit": True, "policies": [
        {"name": "kept", "version": "3.0.1", "text_digest": "f" * 64, "blob_digest": "0" * 64, "active": False},
        {"name": "new", "version": "2.0.0", "text_digest": "d" * 64, "blob_digest": "e" * 64, "active": True},
    ]}
    assert [s["kind"] for s in doc["steps"]] == ["enforce", "load", "update", "activate", "delete", "success_audit"]


def test_a_rejected_plan_leaves_after_as_before() -> None:
    problem = DeclError("/etc/iped/policies.d/old.p7s", 1, errno.ESTALE, "anti-rollback")
    doc = plan_document(ACTUAL, Plan((), (problem,)), "kernel")
    assert doc["outcome"] == "rejected" and doc["after"] == doc["before"]
    assert doc["reasons"] == [str(problem)] and doc["errors"][0]["errno_name"] == "ESTALE"


def test_nothing_to_do_is_unchanged() -> None:
    doc = plan_document(ACTUAL, Plan(()), "kernel")
    assert doc["outcome"] == "unchanged" and doc["after"] == doc["before"] and doc["steps"] == []
