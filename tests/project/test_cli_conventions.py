"""README "Command-line conventions", checked against every verb's argument declarations: one
spelling per idea in exactly the verbs the table names, the same metavar everywhere, and each
earlier spelling still accepted, hidden from --help, with one warning line on stderr."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from iped.cli import Verb, build_parser, load_verb, main
from tests.helpers.paths import ROOT

README = (ROOT / "README.md").read_text()


@dataclass(frozen=True)
class Convention:
    idea: str
    option: str | None  # None: the verb alone (``iped apply``)
    metavar: str | None
    verbs: dict[str, str | None]  # verb -> its metavar when the table says "(`M` only)"
    earlier: tuple[str, str] | None  # (verb, old spelling: an option, or a positional's metavar)


def _conventions() -> list[Convention]:
    section = README.split("## Command-line conventions\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| idea ")]
    out = []
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        idea, spelling, verbs_cell, earlier_cell = cells
        words = spelling.strip("`").replace("\\|", "|").split()
        option, metavar = (None, None) if words[0] == "iped" else (words[0], words[1] if len(words) > 1 else None)
        verbs: dict[str, str | None] = {}
        if verbs_cell.startswith("every verb but "):
            excluded = set(re.findall(r"[a-z-]+", verbs_cell.removeprefix("every verb but ")) ) - {"and"}
            verbs = {v.value: None for v in Verb if v.value not in excluded}
        else:
            for part in re.split(r"[,;]", verbs_cell):
                m = re.fullmatch(r"\s*([a-z-]+)(?:\s+\(`([^`]+)` only\))?\s*", part)
                assert m, (row, part)
                verbs[m.group(1)] = m.group(2)
        earlier = None
        if earlier_cell:
            old = earlier_cell.strip("`").removeprefix("iped ").split()
            earlier = (old[0], old[1])
        out.append(Convention(idea, option, metavar, verbs, earlier))
    return out


CONVENTIONS = _conventions()


def _parser(verb: Verb) -> argparse.ArgumentParser:
    parser = build_parser(verb, load_verb(verb))
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[verb.value]  # type: ignore[no-any-return]


def _options(verb: Verb) -> dict[str, argparse.Action]:
    return {s: a for a in _parser(verb)._actions for s in a.option_strings}


def test_the_table_is_read() -> None:
    assert {c.option for c in CONVENTIONS} >= {"--policy", "--config", "--source", "--denials-only", "--no-daemon",
                                               "--json", None}
    assert all(set(c.verbs) <= {v.value for v in Verb} for c in CONVENTIONS)


@pytest.mark.parametrize("convention", [c for c in CONVENTIONS if c.option], ids=lambda c: c.option)
def test_one_spelling_in_exactly_the_verbs_named(convention: Convention) -> None:
    assert convention.option is not None
    having = set()
    for verb in Verb:
        action = _options(verb).get(convention.option)
        if action is None or action.help == argparse.SUPPRESS:
            continue
        having.add(verb.value)
        if verb.value in convention.verbs:
            expected = convention.verbs[verb.value] or convention.metavar
            assert action.metavar == expected, (verb.value, action.metavar, expected)
    assert having == set(convention.verbs), f"{convention.option}: the README's verbs differ from the declarations"


def test_source_defaults_to_the_journal_history_everywhere_it_has_a_default() -> None:
    for verb in ("audit", "survey", "suggest"):
        action = _options(Verb(verb))["--source"]
        assert action.help is not None and "default: the journal's history" in action.help, verb
        assert action.default in (None, "journal"), verb  # audit's None: journal, or auto with --follow


def test_every_hidden_option_is_an_earlier_spelling_the_readme_lists() -> None:
    listed = {c.earlier for c in CONVENTIONS if c.earlier}
    for verb in Verb:
        for action in _parser(verb)._actions:
            if action.help != argparse.SUPPRESS or action.option_strings == ["--debug"]:
                continue
            spelling = action.option_strings[0] if action.option_strings else action.metavar
            assert (verb.value, spelling) in listed, (verb.value, spelling)


@pytest.mark.parametrize("convention", [c for c in CONVENTIONS if c.earlier], ids=lambda c: " ".join(c.earlier or ()))
def test_earlier_spelling_works_warns_and_is_hidden(convention: Convention,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert convention.earlier is not None
    verb_word, old = convention.earlier
    verb = Verb(verb_word)
    parser = build_parser(verb, load_verb(verb))
    new = convention.option
    takes_value = convention.metavar is not None or convention.verbs.get(verb_word) is not None
    value = ["x.file"] if takes_value else []
    canonical = vars(parser.parse_args([verb_word, *([new] if new else []), *value]))
    assert capsys.readouterr().err == ""
    given = vars(parser.parse_args([verb_word, *([] if not old.startswith("-") else [old]), *value]))
    warning = capsys.readouterr().err
    said = old if old.startswith("-") else f"{verb_word} {old}"
    assert re.fullmatch(rf"iped: warning: {re.escape(said)} is deprecated, use \S.*\n", warning), warning
    assert (new or f"iped {verb_word}") in warning
    if old.startswith("-"):
        assert given == canonical
    else:  # a positional now an option: the value reaches the verb, which takes either
        assert "x.file" in given.values()
    assert main([verb_word, "--help"]) == 0
    help_text = capsys.readouterr().out
    if old.startswith("-"):
        assert not re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", help_text), help_text
    else:
        assert f"[{old}]" not in help_text and f" {old}\n" not in help_text, help_text


def test_check_config_reads_the_same_file_either_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "iped.toml"
    config.write_text("[daemon]\nhistroy = 3\n")
    assert main(["check-config", "--config", str(config)]) == 1
    by_option = capsys.readouterr()
    assert main(["check-config", str(config)]) == 1
    by_positional = capsys.readouterr()
    assert by_positional.err == "iped: warning: check-config FILE is deprecated, use --config FILE\n" + by_option.err
    assert "histroy" in by_option.err
    assert main(["check-config", "--config", str(config), str(config)]) == 2
    assert "give the configuration once" in capsys.readouterr().err
