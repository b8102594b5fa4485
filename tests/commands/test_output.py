"""How verbs print a result (iped.commands.output): JSON with --json, else the text for people,
from one place for every verb that prints a document."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import pytest

from iped.commands.output import show

COMMANDS = Path(__file__).resolve().parents[1] / "iped" / "commands"


def test_show_prints_the_document_as_json_or_renders_it(capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"outcome": "applied", "b": [1], "a": "é"}
    show(argparse.Namespace(json=True), doc, lambda d: "never")
    out = capsys.readouterr().out
    assert json.loads(out) == doc and out == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    show(argparse.Namespace(json=False), doc, lambda d: f"outcome {d['outcome']}")
    assert capsys.readouterr().out == "outcome applied\n"


def test_no_verb_dumps_its_document_by_hand() -> None:
    """``json.dumps(..., indent=2)`` (the document form) is output.print_json's alone; the JSON
    lines of survey, suggest, explain and the audit stream are another format (and boot-check's
    record a file, not output)."""
    offenders = []
    for path in sorted(COMMANDS.glob("*.py")):
        if path.name == "output.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "dumps"
                    and any(k.arg == "indent" and ast.literal_eval(k.value) == 2 for k in node.keywords)):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
