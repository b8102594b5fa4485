"""The lab's own checks, on the host without booting anything: what makes a lab run count as
green must really fail when the guest's results do not prove what they claim."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.paths import TESTS
from tests.lab import SERIES
from tests.lab.corpus.cases import Case, Step, load_cases
from tests.lab.corpus.normalise import Normaliser, fact_placeholders
from tests.lab.corpus.truth import compare, load_truth, stale_truth
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
    on_disk = {f"tests.lab_guest.{p.stem}" for p in (TESTS / "lab_guest").glob("test_*.py")}
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


# --------------------------------------------------------------------------- corpus truth


def _case_with(predicate: Callable[[Step], bool]) -> tuple[Case, int]:
    """The first corpus case having a step that satisfies ``predicate``, and that step's index."""
    for case in load_cases():
        for index, step in enumerate(case.steps):
            if predicate(step):
                return case, index
    raise AssertionError("no corpus case has such a step")


def _with_step(case: Case, index: int, step: Step) -> Case:
    return dataclasses.replace(case, steps=(*case.steps[:index], step, *case.steps[index + 1:]))


@pytest.mark.parametrize("series", SERIES)
def test_truth_was_recorded_from_the_current_cases(series: str) -> None:
    truth = load_truth(series)
    stale = [problem for case in load_cases() if (problem := stale_truth(case, truth))]
    assert not stale, "\n".join(stale[:5])


def test_an_edited_case_is_stale_truth() -> None:
    truth = load_truth("7")
    case, i = _case_with(lambda s: s.verb == "write" and s.blob is not None)
    assert stale_truth(case, truth) == ""
    blob = case.steps[i].blob
    assert blob is not None
    for changed in (dataclasses.replace(blob, text=blob.text + "\n"), dataclasses.replace(blob, sign="ec")):
        edited = _with_step(case, i, dataclasses.replace(case.steps[i], blob=changed))
        assert "recorded from another version of the case" in stale_truth(edited, truth)

    case, i = _case_with(lambda s: s.verb == "write" and s.data is not None)
    edited = _with_step(case, i, dataclasses.replace(case.steps[i], data=(case.steps[i].data or b"") + b"0"))
    assert stale_truth(edited, truth)
    assert stale_truth(dataclasses.replace(case, description="reworded"), truth) == ""


def test_a_fact_used_by_a_case_is_part_of_its_fingerprint() -> None:
    truth = load_truth("7")
    case, _ = _case_with(lambda s: s.blob is not None and "{fact:" in s.blob.text)
    texts = "".join(step.blob.text for step in case.steps if step.blob is not None)
    fact = next(key for key in truth["_facts"] if "{fact:" + key in texts)
    moved = {**truth, "_facts": {**truth["_facts"], fact: truth["_facts"][fact] + "0"}}
    assert stale_truth(case, truth) == "" and stale_truth(case, moved)


def test_digests_normalise_case_sensitively() -> None:
    norm = Normaliser()
    blob = b"policy blob"
    norm.add_blob("a", blob)
    digest = hashlib.sha256(blob).hexdigest()
    assert norm.apply(f"policy_digest=sha256:{digest.upper()}".encode()) == b"policy_digest=sha256:{sha256:a|upper}"
    assert norm.apply(f"policy_digest=sha256:{digest}".encode()) == b"policy_digest=sha256:{sha256:a}"

    fact_placeholders(norm, {"tmpfs.digest": "ab" * 32})
    assert norm.apply(("AB" * 32).encode()) == b"{fact:tmpfs.digest|upper}"
    assert norm.apply(("ab" * 32).encode()) == b"{fact:tmpfs.digest}"

    # a hex-case change in what the kernel prints is a difference in the comparison
    def record(text: str) -> dict[str, object]:
        return {"steps": [{"step": "read x", "result": "0", "data": norm.apply(text.encode()).decode()}]}
    assert compare(record(digest.upper()), record(digest))
