"""What the daemon owes systemd (found by the system-image lab, tests/lab/system):

* a start whose declared active policy is rejected or refused by the kernel fails at once with
  a status line naming the errno and the file, and an exit status the unit does not restart on;
* (every journal entry carrying a MESSAGE_ID is tested over a whole run in tests/integration/test_as_deployed.py).
"""

from __future__ import annotations

import errno
import re

import pytest

from iped.daemon.apply import StepFailure
from iped.daemon.declared import DeclError
from iped.daemon.plan import Step, StepKind
from iped.daemon.readiness import EXIT_START_REFUSED, startup_refusal
from iped.daemon.reconcile import PlanRecord
from iped.emulator.policy_parser import Version
from iped.errnos import describe_errno
from iped.outcome import Outcome
from tests.helpers.paths import UNIT


def record(outcome: Outcome, failure: StepFailure | None = None, errors: tuple[DeclError, ...] = ()) -> PlanRecord:
    steps = (failure.step,) if failure else ()
    return PlanRecord(time="", trigger="startup", outcome=outcome, backend="kernel", steps=steps, done=0,
                      failure=failure, errors=errors, active_before=None, active_after=None, declared=(),
                      duration_ms=0.0)


def test_kernel_refusal_names_errno_and_file() -> None:
    step = Step(StepKind.LOAD, name="lab_b", version=Version(2, 0, 0), source="/etc/iped/policies.d/lab_b.p7s")
    failure = StepFailure(step, errno.ENOKEY, f"step 1/1 'load lab_b 2.0.0' failed: {describe_errno(errno.ENOKEY)}")
    status = startup_refusal(record(Outcome.FAILED, failure), "lab_b")
    assert status is not None
    assert "ENOKEY" in status and "/etc/iped/policies.d/lab_b.p7s" in status and "'lab_b'" in status


def test_rejected_plan_names_the_file_error() -> None:
    problem = DeclError("/etc/iped/policies.d/x.pol", 2, errno.EBADMSG, "invalid policy")
    status = startup_refusal(record(Outcome.REJECTED, errors=(problem,)), "x")
    assert status is not None and "x.pol:2: EBADMSG" in status


@pytest.mark.parametrize("outcome", [Outcome.APPLIED, Outcome.UNCHANGED])
def test_no_refusal_when_the_plan_went_through(outcome: Outcome) -> None:
    assert startup_refusal(record(outcome), "a") is None
    assert startup_refusal(None, "a") is None


def test_unit_does_not_restart_on_a_refused_start() -> None:
    prevent = re.findall(r"^RestartPreventExitStatus=(.*)$", UNIT.read_text(), re.M)
    assert prevent and str(EXIT_START_REFUSED) in prevent[0].split()
