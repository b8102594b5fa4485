"""The lab's own checks, on the host without booting anything: what makes a lab run count as
green must really fail when the guest's results do not prove what they claim."""

from __future__ import annotations

from pathlib import Path

from tests.lab.guest import GuestOutput, expected_guest_tests, junit_key

BOOT = "tests.lab_guest.test_boot_guest"


def _junit(outdir: Path, cases: dict[str, str]) -> GuestOutput:
    """A guest-junit.xml as pytest writes it: ``{junit key: "passed" | "skipped" | "failure"}``."""
    body = []
    for key, outcome in cases.items():
        classname, name = key.split("::")
        inner = "" if outcome == "passed" else f'<{outcome} message="{outcome} here">details</{outcome}>'
        body.append(f'<testcase classname="{classname}" name="{name}" time="0.1">{inner}</testcase>')
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "guest-junit.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">'
        + "".join(body) + "</testsuite></testsuites>"
    )
    return GuestOutput(outdir)


def test_host_expects_every_guest_test() -> None:
    expected = expected_guest_tests()
    modules = {key.split("::")[0] for key in expected}
    on_disk = {f"tests.lab_guest.{p.stem}" for p in (Path(__file__).parent / "lab_guest").glob("test_*.py")}
    assert modules == on_disk, (modules, on_disk)
    assert f"{BOOT}::test_untrusted_signer_policy_rejected" in expected
    assert f"{BOOT}::test_enrolled_signer_policy_loads[rsa]" in expected


def test_all_passed_is_the_only_green(tmp_path: Path) -> None:
    expected = [f"{BOOT}::a", f"{BOOT}::b"]
    assert _junit(tmp_path, dict.fromkeys(expected, "passed")).unpassed(expected) == []


def test_a_skipped_guest_test_is_a_problem(tmp_path: Path) -> None:
    expected = [f"{BOOT}::a", f"{BOOT}::b"]
    problems = _junit(tmp_path, {expected[0]: "passed", expected[1]: "skipped"}).unpassed(expected)
    assert len(problems) == 1 and problems[0].startswith(f"{BOOT}::b: skipped"), problems


def test_a_failed_guest_test_is_a_problem(tmp_path: Path) -> None:
    expected = [f"{BOOT}::a"]
    problems = _junit(tmp_path, {expected[0]: "failure"}).unpassed(expected)
    assert len(problems) == 1 and problems[0].startswith(f"{BOOT}::a: failed"), problems


def test_a_guest_test_that_never_ran_is_a_problem(tmp_path: Path) -> None:
    expected = [f"{BOOT}::a", f"{BOOT}::b"]
    problems = _junit(tmp_path, {expected[0]: "passed"}).unpassed(expected)
    assert problems == [f"{BOOT}::b: did not run in the guest"]


def test_an_empty_guest_run_is_a_problem(tmp_path: Path) -> None:
    expected = [f"{BOOT}::a"]
    assert _junit(tmp_path, {}).unpassed(expected) == [f"{BOOT}::a: did not run in the guest"]
    assert GuestOutput(tmp_path / "nothing").unpassed(expected)[0].startswith("no guest junit results")


def test_an_empty_expectation_is_a_problem(tmp_path: Path) -> None:
    problems = _junit(tmp_path, {f"{BOOT}::a": "passed"}).unpassed([])
    assert problems and "expects no guest test" in problems[0], problems


def test_an_unexpected_guest_test_is_a_problem(tmp_path: Path) -> None:
    problems = _junit(tmp_path, {f"{BOOT}::a": "passed", f"{BOOT}::extra": "passed"}).unpassed([f"{BOOT}::a"])
    assert problems == [f"{BOOT}::extra: ran in the guest but the host does not expect it"]


def test_junit_key_matches_what_junit_records() -> None:
    assert junit_key("tests/lab_guest/test_x.py::test_y[p-1]") == "tests.lab_guest.test_x::test_y[p-1]"
    assert junit_key("tests/lab_guest/test_x.py::Cls::test_y") == "tests.lab_guest.test_x.Cls::test_y"
