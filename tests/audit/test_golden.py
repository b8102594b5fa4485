"""Golden files: record streams -> JSON Lines events (regenerate with IPED_WRITE_GOLDEN=1, then review the diff).

Inputs are the exact record bodies of the kernel notes (§4 examples: admin guide, cover letter)
plus records built from audit.c's formats; ``*.log`` is replayed through the file reader, the
grouper and the renderer with ``policy.pol`` as the policy to locate rules in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from iped.audit.explain import PolicyIndex
from iped.audit.files import iter_file
from iped.audit.group import Grouper
from iped.audit.render import event_objects

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.log"))


def render(path: Path) -> str:
    index = PolicyIndex.from_file(GOLDEN / "policy.pol")
    grouper = Grouper(2.0)
    events = []
    for rec in iter_file(path):
        events.extend(grouper.feed(rec, rec.timestamp))
    events.extend(grouper.flush())
    lines = [json.dumps(obj, sort_keys=True) for e in events for obj in event_objects(e, index)]
    # file names relative to the golden dir, so the output does not depend on the checkout path
    return "\n".join(lines).replace(str(GOLDEN) + "/", "") + "\n"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    got = render(GOLDEN / f"{case}.log")
    expected_path = GOLDEN / f"{case}.jsonl"
    if os.environ.get("IPED_WRITE_GOLDEN"):
        expected_path.write_text(got)
    assert got == expected_path.read_text()


def test_golden_cases_exist() -> None:
    assert "doc-examples" in CASES
