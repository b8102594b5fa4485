"""docs/security.md: every test a row names exists (a renamed test must not leave a row unheld)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.helpers.paths import ROOT

#: `tests/x.py::name`, or `::name` for another test of the file named last
_REF = re.compile(r"`(tests/[\w/]+\.py)?::(\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_named_test_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    named: list[tuple[str, str]] = []
    for line in text.splitlines():
        current: str | None = None  # each row names its file before its first `::test`
        for m in _REF.finditer(line):
            current = m.group(1) or current
            assert current is not None, f"{m.group(0)} names no file: {line}"
            named.append((current, m.group(2)))
    assert len(named) > 20
    missing = [f"{f}::{t}" for f, t in named if t not in _tests_in(ROOT / f)]
    assert missing == []
