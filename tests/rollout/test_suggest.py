"""``iped suggest``: rules from the files' properties, placed and versioned, verified by replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iped.cli import main
from iped.emulator.policy_parser import parse_policy
from iped.rollout.facts import FactsResolver, load_facts
from iped.rollout.observe import observe
from iped.rollout.policies import next_version, starter_policy
from iped.rollout.suggest import Suggestion, insertion_line, suggest
from iped.rollout.survey import survey
from tests.helpers.policies import policy_text
from tests.rollout.streams import BASE, CAT_DIGEST, DIGEST, ROOTHASH, write_facts, write_period


def _suggest(tmp_path: Path, base: bytes = BASE) -> Suggestion:
    period = write_period(tmp_path)
    obs = observe(str(period.log))
    return suggest(base, "base.pol", obs, load_facts(str(write_facts(tmp_path))), obs.records)


def test_broadest_safe_rule_per_file_and_flags_for_the_rest(tmp_path: Path) -> None:
    result = _suggest(tmp_path)
    assert [r.text for r in result.rules] == [
        "op=EXECUTE boot_verified=TRUE action=ALLOW",
        f"op=EXECUTE dmverity_roothash=sha256:{ROOTHASH} action=ALLOW",  # one rule for ls and cat
        f"op=EXECUTE fsverity_digest=sha256:{DIGEST} action=ALLOW",
        f"op=KMODULE dmverity_roothash=sha256:{ROOTHASH} action=ALLOW",  # per op: a module from the volume
    ]
    volume = result.rules[1]
    assert sorted({o.program for o in volume.needed_by}) == ["/usr/bin/cat", "/usr/bin/ls"]
    # broader (any signed volume) or narrower (cat's own digest): listed, never chosen
    assert volume.alternatives == {"dmverity_signature=TRUE", f"fsverity_digest=sha256:{CAT_DIGEST}"}
    flags = {(f.verdict.observation.program, f.verdict.observation.op, f.kind) for f in result.flagged}
    assert flags == {
        ("/home/u/script", "EXECUTE", "no_property"),
        ("<no file>", "EXECUTE", "no_file"),
        ("<no file>", "KMODULE", "no_file"),
        ("/opt/app/evil", "EXECUTE", "explicit_deny"),
    }
    assert not result.complete and not result.replay.unexpected
    assert {v.observation.key for v in result.replay.still_denied} == {
        f.verdict.observation.key for f in result.flagged
    }


def test_text_is_the_base_plus_commented_rules_with_a_higher_version(tmp_path: Path) -> None:
    result = _suggest(tmp_path)
    parsed = parse_policy(result.text)  # the shared parser of `iped validate`
    assert (parsed.name, str(parsed.version), result.version) == (b"site", "1.0.1", "1.0.1")
    lines = result.text.decode().splitlines()
    base_lines = BASE.decode().splitlines()
    assert lines[0] == base_lines[0].replace("1.0.0", "1.0.1")
    assert lines[1:6] == base_lines[1:6]  # the base's own rules keep precedence: the new ones follow
    rule_at = lines.index(result.rules[1].text)
    comment = lines[lines.index(result.rules[0].text) + 1 : rule_at]
    assert comment[0].startswith("# iped suggest: dmverity_roothash (every file on the dm-verity volume dm-0)")
    assert any("/usr/bin/ls EXECUTE/BPRM_CHECK x5 by /usr/bin/bash, first " in c for c in comment)
    assert any(line.startswith("# iped suggest: NOT ALLOWED /home/u/script EXECUTE/BPRM_CHECK x4: no IPE property")
               for line in lines)  # fmt: skip
    assert not any(line.startswith("DEFAULT") for line in lines[6:])  # no DEFAULT ALLOW is ever suggested


def test_survey_of_the_suggestion_leaves_only_the_flagged(tmp_path: Path) -> None:
    result = _suggest(tmp_path)
    obs = observe(str(write_period(tmp_path).log))
    report = survey(result.text, "new.pol", obs, load_facts(str(write_facts(tmp_path))), obs.records)
    assert {g["program"] for g in report.by_program()} == {"/home/u/script", "<no file>", "/opt/app/evil"}


def test_nothing_to_suggest_keeps_the_base(tmp_path: Path) -> None:
    allow = policy_text("a", "1.0.0")
    result = _suggest(tmp_path, allow)
    assert result.text == allow and result.complete and not result.rules


def test_a_suggestion_run_again_on_itself_prints_it_unchanged(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Only flagged accesses left (nothing a rule can allow): the base, byte for byte, with its
    version -- no needless update, no second copy of the NOT ALLOWED comments."""
    first = _suggest(tmp_path)
    again = _suggest(tmp_path, first.text)
    assert not again.rules and len(again.flagged) == 4
    assert again.text == first.text and again.version == first.version == "1.0.1"
    base = tmp_path / "site.pol"
    base.write_bytes(first.text)
    period = write_period(tmp_path)
    argv = ["suggest", "--base", str(base), "--source", str(period.log), "--facts", str(write_facts(tmp_path))]
    assert main(argv) == 1  # the flagged accesses stay denied
    captured = capsys.readouterr()
    assert captured.out.encode() == first.text
    assert captured.err.count("FLAGGED ") == 4 and "0 new rules in site 1.0.1" in captured.err


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (b"policy_name=a policy_version=0.0.1\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\n", 1),
        (b"policy_name=a policy_version=0.0.1\nop=EXECUTE boot_verified=TRUE action=ALLOW\nDEFAULT action=DENY\n", 2),
        (b"policy_name=a policy_version=0.0.1\nDEFAULT action=DENY\nop=KMODULE boot_verified=TRUE action=ALLOW\n", 3),
    ],
    ids=["defaults only: before them", "rules then DEFAULT: between", "DEFAULT then rules: after the rules"],
)
def test_insertion_line(text: bytes, line: int) -> None:
    assert insertion_line(parse_policy(text)) == line


def test_next_version_carries_and_touches_only_the_header() -> None:
    text = (
        b"# policy_version=9.9.9 in a comment\r\npolicy_name=a policy_version=1.2.65535 # note\r\nDEFAULT action=ALLOW"
    )
    out = next_version(text)
    assert out == text.replace(b"1.2.65535", b"1.3.0")
    assert str(parse_policy(out).version) == "1.3.0"
    with pytest.raises(OverflowError):
        next_version(b"policy_name=a policy_version=65535.65535.65535\nDEFAULT action=ALLOW\n")


def test_cli_writes_a_policy_that_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    period = write_period(tmp_path)
    base = tmp_path / "base.pol"
    base.write_bytes(BASE)
    common = ["--base", str(base), "--source", str(period.log), "--facts", str(write_facts(tmp_path))]
    assert main(["suggest", *common]) == 1  # flagged accesses stay denied
    captured = capsys.readouterr()
    out = tmp_path / "new.pol"
    out.write_text(captured.out)
    assert "verification: 23 records (10 distinct) replayed" in captured.err and "0 unexpected" in captured.err
    assert main(["validate", str(out)]) == 0
    assert "OK policy_name=site policy_version=1.0.1" in capsys.readouterr().out
    assert main(["suggest", *common, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["policy"]["version"] == "1.0.1" and len(doc["rules"]) == 4 and len(doc["flagged"]) == 4
    assert doc["verification"]["still_denied"] == {"records": 8, "distinct": 4}
    assert doc["rules"][1]["needed_by"][0]["by"] == ["/usr/bin/bash"]


def test_starter_json_is_a_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suggest", "--starter", "--name", "web", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["starter"] is True
    assert doc["policy"] == {"name": "web", "version": "0.0.1", "text": starter_policy("web").decode()}


def test_starter_is_the_base_when_nothing_is_declared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suggest", "--starter", "--name", "web"]) == 0
    starter = capsys.readouterr().out.encode()
    assert starter == starter_policy("web") and parse_policy(starter).name == b"web"
    period = write_period(tmp_path)
    facts = str(write_facts(tmp_path))
    assert (
        main(["suggest", "--config", str(tmp_path / "none.toml"), "--source", str(period.log), "--facts", facts]) == 2
    )
    assert main(["suggest", "--name", "../x", "--source", str(period.log)]) == 2
    assert "--name" in capsys.readouterr().err


def test_denials_of_files_that_cannot_be_resolved_are_flagged_unknown(tmp_path: Path) -> None:
    """Under BASE no property can change EXECUTE's or KMODULE's decision (every rule denies, as the
    defaults do): the denial is known, but with no properties to build a rule from it is flagged."""
    period = write_period(tmp_path)
    obs = observe(str(period.log))
    result = suggest(BASE, "base.pol", obs, FactsResolver({}), obs.records)
    assert result.base.unknown == [] and result.rules == ()
    kinds = {f.verdict.observation.program: f.kind for f in result.flagged}
    assert kinds["/usr/bin/ls"] == "unknown" and kinds["<no file>"] == "no_file"
    assert result.replay.unexpected == ()
