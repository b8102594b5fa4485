"""The recorded truth (``tests/corpus/truth/<series>.json``): reading, writing, comparing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.lab.corpus.cases import CORPUS_DIR

TRUTH_DIR = CORPUS_DIR / "truth"
RESULTS_FILE = "corpus-results.json"


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


def truth_from_results(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a guest's ``corpus-results.json`` into the truth file's layout."""
    meta = {k: v for k, v in doc["meta"].items() if k != "seconds"}
    return {"_meta": meta, "_facts": dict(doc["facts"]), **doc["cases"]}
