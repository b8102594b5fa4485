"""When READY=1 is sent (iped.daemon.readiness): the rule alone, without a loop or a notify socket.

The start refusal's wording is tested in test_daemon_systemd_contract.py, the whole daemon's
READY=1 in test_stop_and_ready.py and test_as_deployed.py.
"""

from __future__ import annotations

import errno

import pytest

from iped.daemon.actual import LoadedPolicy
from iped.daemon.readiness import Readiness, after_reconcile, declared_active, startup_refusal
from iped.daemon.reconcile import FailedRead, PlanRecord
from iped.emulator.policy_parser import Version
from iped.outcome import Outcome


def loaded(name: str) -> LoadedPolicy:
    return LoadedPolicy(name, Version(1, 0, 0), True, "sha256:00", None)


def record(outcome: Outcome, active_after: str | None) -> PlanRecord:
    return PlanRecord(time="", trigger="test", outcome=outcome, backend="kernel", steps=(), done=0, failure=None,
                      errors=(), active_before=None, active_after=loaded(active_after) if active_after else None,
                      declared=(), duration_ms=0.0)


@pytest.mark.parametrize(("active_after", "want", "expected"), [
    ("base", "base", True),
    ("other", "base", False),  # some policy active is not the declared one
    (None, "base", False),
    (None, None, True),  # nothing declared active: nothing to wait for
    ("other", None, True),
])
def test_declared_active_reads_the_records_after_state(active_after: str | None, want: str | None,
                                                       expected: bool) -> None:
    assert declared_active(record(Outcome.APPLIED, active_after), want) is expected


def test_first_reconcile_with_the_declared_policy_active_makes_ready_once() -> None:
    first, again = record(Outcome.APPLIED, "base"), record(Outcome.UNCHANGED, "base")
    assert after_reconcile(False, first, "base", "in sync") == Readiness(True, True, "in sync")
    assert after_reconcile(True, again, "base", "in sync") == Readiness(True, False, "in sync")


def test_not_ready_says_why_in_the_status_line() -> None:
    said = after_reconcile(False, record(Outcome.FAILED, "old"), "base", "FAILED: ENOKEY")
    assert said == Readiness(False, False, "NOT READY: declared policy 'base' is not active: FAILED: ENOKEY")


def test_once_ready_every_later_reconcile_sends_ready_even_a_failed_one() -> None:
    """READY=1 also ends a RELOADING=1: a failed reload must not leave systemd reloading."""
    failed = FailedRead("reload", errno.ENOENT, "securityfs gone")
    assert after_reconcile(True, failed, "base", "securityfs gone") == Readiness(True, False, "securityfs gone")
    assert after_reconcile(False, failed, "base", "x").ready is False


def test_a_failed_read_at_start_refuses_the_start_naming_the_errno() -> None:
    refused = startup_refusal(FailedRead("startup", errno.ENOENT, "securityfs gone"), "base")
    assert refused is not None and refused.startswith("FAILED: declared active policy 'base' not activated, failed")
    assert "securityfs gone" in refused
