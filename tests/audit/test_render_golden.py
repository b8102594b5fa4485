"""Golden files: record streams -> JSON Lines events.

Two inputs, each replayed through the file reader, the grouper and the renderer with
``policy.pol`` as the policy to locate rules in:

* ``doc-examples.log``: the exact record bodies of the kernel notes (§4 examples: admin guide,
  cover letter) plus records built from audit.c's formats;
* ``kernel-truth``: built here from the audit bodies the real lab kernels emitted, as recorded
  in ``tests/corpus/truth/<series>.json`` (one record per kind of body, placeholders filled in).

``IPED_WRITE_GOLDEN=1`` rewrites the ``*.jsonl`` files and FAILS each test that wrote one: a
run in that mode proves nothing, so it can never pass; review ``git diff``, then run again
without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from iped.audit.explain import PolicyIndex
from iped.audit.files import iter_file, iter_log_text
from iped.audit.group import Grouper
from iped.audit.records import RawRecord
from iped.audit.render import event_objects
from tests.helpers.paths import AUDIT_GOLDEN
from tests.lab import SERIES
from tests.lab.corpus.truth import load_truth

GOLDEN = AUDIT_GOLDEN
CASES = sorted(p.stem for p in GOLDEN.glob("*.log"))
KERNEL_TRUTH = "kernel-truth"
#: Fixed values for the run-varying placeholders of the truth (the rest come from its _facts).
_PLACEHOLDER = re.compile(r"\{(pid|ino|sha256:[^}|]+|fact:[^}|]+)(\|upper)?\}")
_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')


def render(path: Path) -> str:
    return render_records(iter_file(path))


def render_records(records: Iterable[RawRecord]) -> str:
    index = PolicyIndex.from_file(GOLDEN / "policy.pol")
    grouper = Grouper(2.0)
    events = []
    for rec in records:
        events.extend(grouper.feed(rec, rec.timestamp))
    events.extend(grouper.flush())
    lines = [json.dumps(obj, sort_keys=True) for e in events for obj in event_objects(e, index)]
    # file names relative to the golden dir, so the output does not depend on the checkout path
    return "\n".join(lines).replace(str(GOLDEN) + "/", "") + "\n"


def check_golden(expected_path: Path, got: str) -> None:
    """Compare ``got`` with the golden file; with IPED_WRITE_GOLDEN=1 write it and fail."""
    if os.environ.get("IPED_WRITE_GOLDEN"):
        changed = not expected_path.exists() or expected_path.read_text() != got
        expected_path.write_text(got)
        pytest.fail(f"IPED_WRITE_GOLDEN: wrote {expected_path} ({'changed' if changed else 'unchanged'}); "
                    "review git diff, then run without IPED_WRITE_GOLDEN", pytrace=False)
    assert got == expected_path.read_text()


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    check_golden(GOLDEN / f"{case}.jsonl", render(GOLDEN / f"{case}.log"))


def kernel_truth_log() -> str:
    """An audit log of the bodies the lab kernels really emitted (the corpus truth).

    One record per kind of body (series, type, op, hook, result, errno, enforcing, known
    path), the first in sorted order; placeholders get fixed values: a blob digest is the
    sha256 of its label, a fact its recorded value, ``|upper`` upper-cases either.
    """
    chosen: dict[tuple[str, ...], tuple[str, dict[str, str]]] = {}
    for series in SERIES:
        truth = load_truth(series)
        bodies = {audit for key, record in truth.items() if not key.startswith("_")
                  for step in record["steps"] for audit in step.get("audit", ())}
        for body in sorted(bodies):
            rtype = body.split(" ", 1)[0]
            fields = dict(_FIELD.findall(body))
            kind = (series, rtype, *(fields.get(k, "") for k in ("ipe_op", "ipe_hook", "res", "errno", "enforcing")),
                    str(fields.get("path") == "?"))
            chosen.setdefault(kind, (body, truth["_facts"]))
    lines = []
    for serial, (_kind, (body, facts)) in enumerate(sorted(chosen.items()), 1000):
        rtype, _, text = body.partition(" ")
        lines.append(f"type={rtype} msg=audit({1700001000 + serial}.000:{serial}): {_fill(text, facts)}")
    return "\n".join(lines) + "\n"


def _fill(text: str, facts: dict[str, str]) -> str:
    def value(m: re.Match[str]) -> str:
        name, upper = m.group(1), bool(m.group(2))
        if name == "pid":
            filled = "4242"
        elif name == "ino":
            filled = "77"
        elif name.startswith("sha256:"):
            filled = hashlib.sha256(name.encode()).hexdigest()
        else:
            filled = facts[name.removeprefix("fact:")]
        return filled.upper() if upper else filled

    filled = _PLACEHOLDER.sub(value, text)
    assert "{" not in filled.replace("{}", ""), f"unfilled placeholder in a truth body: {filled}"
    return filled


def test_golden_from_kernel_truth() -> None:
    log = kernel_truth_log()
    records = list(iter_log_text(log))
    assert len(records) == len(log.splitlines()) >= 20, "the truth holds too few kinds of audit body"
    assert {r.type for r in records} >= {1420, 1421, 1422, 1404}
    check_golden(GOLDEN / f"{KERNEL_TRUTH}.jsonl", render_records(records))


def test_golden_cases_exist() -> None:
    assert "doc-examples" in CASES


def test_writing_golden_files_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    golden = tmp_path / "case.jsonl"
    golden.write_text("old\n")
    monkeypatch.setenv("IPED_WRITE_GOLDEN", "1")
    for content in ("new\n", "new\n"):  # a change, then no change: both fail
        with pytest.raises(pytest.fail.Exception, match="IPED_WRITE_GOLDEN: wrote"):
            check_golden(golden, content)
        assert golden.read_text() == content
    monkeypatch.delenv("IPED_WRITE_GOLDEN")
    check_golden(golden, "new\n")
    with pytest.raises(AssertionError):
        check_golden(golden, "other\n")
