"""The lab itself works: each stock kernel boots with IPE active, trusts the enrolled test
signers through ``.platform``, and takes policies they sign (and only those).

The policy loads happen inside the guest (tests/lab_guest/test_boot_guest.py); here their
junit results are checked, with the guest's logs attached to any failure.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.lab import SERIES, guest
from tests.lab.keys import ENROLLED, UNTRUSTED_SIGNER
from tests.lab.vm import GuestResult, LabGuestRun

pytestmark = pytest.mark.parametrize("series", SERIES)

GUEST_MODULE = "tests.lab_guest.test_boot_guest"


def _facts(run: GuestResult) -> dict[str, Any]:
    try:
        return run.output.facts()
    except (OSError, ValueError) as exc:
        pytest.fail(f"guest left no usable facts.json ({exc})\n{run.tail()}", pytrace=False)


def _guest_case(run: GuestResult, name: str, module: str = GUEST_MODULE) -> None:
    """Fail unless the guest test ``module::name`` passed, quoting its failure and the guest logs."""
    try:
        cases = run.output.junit()
    except (OSError, ValueError) as exc:
        pytest.fail(f"no guest junit results ({exc})\n{run.output.log('guest-pytest.log')}\n{run.tail()}",
                    pytrace=False)
    case = cases.get(f"{module}::{name}")
    if case is None:
        pytest.fail(f"guest test {name} did not run; guest ran: {sorted(cases)}\n{run.tail()}", pytrace=False)
    if case.outcome != "passed":
        pytest.fail(f"guest test {name} {case.outcome} on {run.release}:\n{case.message}\n"
                    f"{run.output.log('guest-pytest.log')}", pytrace=False)


def test_kernel_boots_and_runs_the_guest(lab_guest_run: LabGuestRun, series: str) -> None:
    run = lab_guest_run(series)
    facts = _facts(run)
    assert str(facts["uname_r"]) == run.release, run.tail()
    assert run.release.startswith(f"{series}."), f"series {series} booted {run.release}"
    assert "steps.json" in {p.name for p in run.outdir.iterdir()}, run.tail()


def test_ipe_is_an_active_lsm(lab_guest_run: LabGuestRun, series: str) -> None:
    run = lab_guest_run(series)
    lsm = str(_facts(run)["lsm"]).split(",")
    assert "ipe" in lsm, f"/sys/kernel/security/lsm = {lsm}\n{run.tail()}"


def test_ipe_securityfs_present(lab_guest_run: LabGuestRun, series: str) -> None:
    run = lab_guest_run(series)
    facts = _facts(run)
    assert facts["ipe_securityfs"] is True, run.tail()
    files = set(facts["ipe_files"])
    assert {"new_policy", "policies", "enforce", "success_audit"} <= files, files


def test_platform_keyring_holds_the_enrolled_signers(lab_guest_run: LabGuestRun, series: str) -> None:
    run = lab_guest_run(series)
    lines = _facts(run)["platform_keyring"]
    assert isinstance(lines, list), f"could not read .platform: {lines}\n{run.tail()}"
    text = "\n".join(str(line) for line in lines)
    for signer in ENROLLED:
        assert f" {signer.common_name}: " in text, f"{signer.common_name!r} not in .platform:\n{text}"
    assert UNTRUSTED_SIGNER.common_name not in text, text


@pytest.mark.parametrize("signer", ["rsa", "ec"])
def test_policy_signed_by_enrolled_signer_loads(lab_guest_run: LabGuestRun, series: str, signer: str) -> None:
    _guest_case(lab_guest_run(series), f"test_enrolled_signer_policy_loads[{signer}]")


def test_policy_signed_by_untrusted_signer_is_rejected_with_enokey(
    lab_guest_run: LabGuestRun, series: str
) -> None:
    _guest_case(lab_guest_run(series), "test_untrusted_signer_policy_rejected")


def test_journald_source_reads_the_kernels_records(lab_guest_run: LabGuestRun, series: str) -> None:
    """systemd-journald in the guest stores the real kernel's IPE records; iped reads a denial
    from the journal with its rule and policy line and resumes from its cursor
    (tests/lab_guest/test_journal_kernel.py). Must pass, not merely not fail."""
    _guest_case(lab_guest_run(series), "test_denial_from_the_journal_with_rule_line_and_cursor",
                "tests.lab_guest.test_journal_kernel")


def test_every_guest_test_passed(lab_guest_run: LabGuestRun, series: str, expected_guest_tests: list[str]) -> None:
    """Every test in tests/lab_guest ran in the guest and passed: a failure, a skip, a test
    that never ran and an empty guest run all fail here."""
    run = lab_guest_run(series)
    problems = run.output.unpassed(expected_guest_tests)
    assert not problems, "\n\n".join(problems) + "\n" + run.output.log("guest-pytest.log")


@pytest.fixture(scope="module")
def expected_guest_tests() -> list[str]:
    return guest.expected_guest_tests()
