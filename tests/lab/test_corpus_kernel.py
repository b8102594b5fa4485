"""Real kernels against the recorded corpus truth: one item per case per kernel series.

The guest ran every case in one process (``tests.lab.corpus.in_guest.run_kernel``, the first step of
``python -m tests.lab.guest``) and left ``corpus-results.json`` in its out dir; each item
compares one case with ``tests/corpus/truth/<series>.json``.  A failure means the kernel's
behaviour drifted from what was recorded: investigate, then re-record deliberately
(``python -m tests.lab.record_truth``).  A missing lab run (kernel download or boot failed, or the
corpus step crashed) fails every item with the reason; nothing is skipped.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.lab import SERIES
from tests.lab.corpus.cases import Case, load_cases
from tests.lab.corpus.truth import RESULTS_FILE, compare, load_truth, stale_truth, truth_path
from tests.lab.vm import LabGuestRun

CASES = load_cases()
_docs: dict[str, dict[str, Any]] = {}


def _results(lab_guest_run: LabGuestRun, series: str) -> dict[str, Any]:
    """The guest's corpus results for ``series`` (booting that kernel once per session)."""
    if series not in _docs:
        run = lab_guest_run(series)
        path = run.outdir / RESULTS_FILE
        if not path.is_file():
            log = run.outdir / "corpus.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.is_file() else run.tail()
            pytest.fail(f"the {series} lab run left no {RESULTS_FILE}; corpus step output:\n{tail}", pytrace=False)
        _docs[series] = json.loads(path.read_text())
    return _docs[series]


@pytest.mark.parametrize("series", SERIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kernel_matches_truth(lab_guest_run: LabGuestRun, case: Case, series: str) -> None:
    doc = _results(lab_guest_run, series)
    assert truth_path(series).exists(), f"{truth_path(series)} missing: run python -m tests.lab.record_truth"
    truth = load_truth(series)
    stale = stale_truth(case, truth)
    assert not stale, f"{series}: {stale}"
    observed = doc["cases"].get(case.id)
    assert observed is not None, f"the guest did not run {case.id} ({doc['meta']})"
    diffs = compare(truth[case.id], observed)
    header = f"{doc['meta'].get('release')} drifted from the recorded truth on {case.id}: {case.description}"
    assert not diffs, header + "\n" + "\n".join(diffs)


@pytest.mark.parametrize("series", SERIES)
def test_kernel_fixtures_and_facts(lab_guest_run: LabGuestRun, series: str) -> None:
    """Every fixture was built, audit sync used markers, and the measured facts have the recorded keys."""
    doc = _results(lab_guest_run, series)
    truth = load_truth(series)
    assert doc["meta"]["fixtures"] == {}, f"fixtures could not be built: {doc['meta']['fixtures']}"
    assert doc["meta"]["audit_sync"] == "marker"
    assert sorted(doc["facts"]) == sorted(truth["_facts"])
