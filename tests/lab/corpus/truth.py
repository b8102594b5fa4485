"""The recorded truth (``tests/corpus/truth/<series>.json``): reading, writing, comparing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.lab.corpus.cases import CORPUS_DIR, Case
from tests.lab.corpus.template import expand

TRUTH_DIR = CORPUS_DIR / "truth"
RESULTS_FILE = "corpus-results.json"
#: Key of each case's truth record holding :func:`case_digest` of the case it was recorded from.
INPUT_DIGEST = "input_sha256"


def compare(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between a truth record and an observed one (empty: equal)."""
    diffs: list[str] = []
    if "error" in actual:
        diffs.append(f"run error: {actual['error']}")
    exp_steps = expected.get("steps", [])
    act_steps = actual.get("steps", [])
    if len(exp_steps) != len(act_steps):
        diffs.append(f"{len(act_steps)} steps ran, truth has {len(exp_steps)}")
    for i, (e, a) in enumerate(zip(exp_steps, act_steps, strict=False), 1):
        for key in sorted(set(e) | set(a)):
            if e.get(key) != a.get(key):
                diffs.append(
                    f"step {i} ({e.get('step')}): {key}\n"
                    f"    truth:    {json.dumps(e.get(key), ensure_ascii=False)}\n"
                    f"    observed: {json.dumps(a.get(key), ensure_ascii=False)}"
                )
    return diffs


def dump_json(data: Mapping[str, Any]) -> str:
    """The diff-friendly on-disk form: sorted keys, indent=1, trailing newline."""
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def truth_path(series: str) -> Path:
    return TRUTH_DIR / f"{series}.json"


def load_truth(series: str) -> dict[str, Any]:
    """The recorded truth of one series: ``_meta``, ``_facts`` and one key per case id."""
    data: dict[str, Any] = json.loads(truth_path(series).read_text())
    return data


def truth_from_results(doc: Mapping[str, Any], cases: Sequence[Case]) -> dict[str, Any]:
    """Turn a guest's ``corpus-results.json`` into the truth file's layout.

    Each case record gets the :func:`case_digest` of ``cases``' case of that id, so truth
    recorded from an older version of a case is recognised (:func:`stale_truth`).
    """
    meta = {k: v for k, v in doc["meta"].items() if k != "seconds"}
    facts = dict(doc["facts"])
    by_id = {case.id: case for case in cases}
    records = {case_id: {**record, INPUT_DIGEST: case_digest(by_id[case_id], facts)}
               for case_id, record in doc["cases"].items()}
    return {"_meta": meta, "_facts": facts, **records}


def case_digest(case: Case, facts: Mapping[str, str]) -> str:
    """sha256 of ``case`` as the kernel receives it: every field, with paths and policy texts
    expanded against ``facts`` (the truth's ``_facts``).  Only the description is left out."""
    steps = []
    for step in case.steps:
        fields = dataclasses.asdict(step)
        fields["path"] = expand(step.path, case, facts)
        if step.blob is not None:
            fields["blob"]["text"] = expand(step.blob.text, case, facts)
        steps.append(fields)
    doc = {**dataclasses.asdict(case), "description": None, "steps": steps}
    text = json.dumps(doc, sort_keys=True, default=lambda value: value.hex())  # bytes: step data
    return hashlib.sha256(text.encode()).hexdigest()


def stale_truth(case: Case, truth: Mapping[str, Any]) -> str:
    """Why ``truth`` (one series' truth file) cannot judge ``case``, or "" when it can."""
    record = truth.get(case.id)
    if record is None:
        return f"no truth for {case.id}: record it (python -m tests.lab.record_truth)"
    recorded, current = record.get(INPUT_DIGEST), case_digest(case, truth["_facts"])
    if recorded != current:
        return (f"the truth for {case.id} was recorded from another version of the case ({INPUT_DIGEST} "
                f"{recorded}, the case now {current}): re-record it (python -m tests.lab.record_truth)")
    return ""
